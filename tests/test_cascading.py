"""MB-CGCN and CRGCN beyond the shared contract (which ``tests/test_contract.py`` runs for both
through the registry): the cascade and the final embeddings recomputed by hand with dense
matrices on a tiny three-behavior log, CRGCN's per-behavior loss terms and weights, the
behavior-chain checks, short training runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contract_base import ModelSpec, fit
from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.synthetic import synthetic_log
from polyrec.data.views import BehaviorBatch, TrainData
from polyrec.errors import ConfigError
from polyrec.models import build_model
from polyrec.models.crgcn import CRGCN
from polyrec.models.mbcgcn import MBCGCN

N_USERS, N_ITEMS = 4, 5
# (user, item, behavior code) with behaviors ("view", "cart", "buy"); user 2 has no cart, user 3
# only views, item 4 is only viewed
EVENTS = [
    (0, 0, 0), (0, 1, 0), (0, 2, 0), (1, 1, 0), (1, 3, 0), (2, 0, 0), (2, 2, 0), (2, 4, 0),
    (3, 3, 0), (3, 4, 0),
    (0, 0, 1), (0, 1, 1), (1, 1, 1), (1, 3, 1),
    (0, 0, 2), (1, 3, 2), (2, 2, 2),
]  # fmt: skip


def tiny_log(behaviors: tuple[str, ...] = ("view", "cart", "buy")) -> InteractionLog:
    """The hand-made log; ``behaviors`` names the codes 0, 1, 2 (the target is always 'buy')."""
    user, item, beh = (np.array(col) for col in zip(*EVENTS, strict=True))
    names = ("view", "cart", "buy")
    codes = np.array([behaviors.index(names[b]) for b in beh], dtype=np.int8)
    return InteractionLog(
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        behavior=codes,
        behaviors=behaviors,
        target="buy",
        user_map=IdMap.range(N_USERS),
        item_map=IdMap.range(N_ITEMS),
        name="hand",
    )


@pytest.fixture
def tiny() -> TrainData:
    return TrainData(tiny_log())


def norm_adj(behavior: str) -> torch.Tensor:
    """D^{-1/2} A D^{-1/2} of one behavior's bipartite graph, dense, computed from EVENTS."""
    code = ("view", "cart", "buy").index(behavior)
    r = np.zeros((N_USERS, N_ITEMS))
    for u, i, b in EVENTS:
        if b == code:
            r[u, i] = 1.0
    a = np.block([[np.zeros((N_USERS, N_USERS)), r], [r.T, np.zeros((N_ITEMS, N_ITEMS))]])
    deg = a.sum(1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    return torch.tensor(inv[:, None] * a * inv[None, :], dtype=torch.float32)


def light_gcn(adj: torch.Tensor, x: torch.Tensor, layers: int, combination: str) -> torch.Tensor:
    """Dense LightGCN block: the mean of layers 0..L, or the last layer."""
    out = [x]
    for _ in range(layers):
        out.append(adj @ out[-1])
    return torch.stack(out).mean(0) if combination == "mean" else out[-1]


def ego(model: MBCGCN | CRGCN) -> torch.Tensor:
    return torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()


def make(name: str, data: TrainData, seed: int = 0, **params: object) -> MBCGCN | CRGCN:
    torch.manual_seed(seed)
    model = build_model(name, {"dim": 6, **params}, data)
    assert isinstance(model, MBCGCN | CRGCN)
    return model


LAYERS = {"view": 1, "cart": 2, "buy": 3}


# --------------------------------------------------------------------------- (a) the cascade
@pytest.mark.parametrize("transform", ["separate", "shared"])
def test_mbcgcn_block_inputs_are_the_transformed_previous_outputs(
    tiny: TrainData, transform: str
) -> None:
    model = make("mbcgcn", tiny, behavior_layers=LAYERS, transform=transform, init="xavier")
    assert isinstance(model, MBCGCN)
    assert model.chain == ("view", "cart", "buy") and model.depths == (1, 2, 3)
    with torch.no_grad():
        inputs, outputs = model.encode()
    w = model.transforms.detach()
    assert w.shape == (2, 2 if transform == "separate" else 1, 6, 6)
    x = ego(model)
    torch.testing.assert_close(inputs[0], x)  # the first block starts from the free embeddings
    for k, behavior in enumerate(model.chain):
        expected = light_gcn(norm_adj(behavior), x, LAYERS[behavior], "mean")
        torch.testing.assert_close(outputs[k], expected)
        if k + 1 < len(model.chain):  # e_{b+1}⁽⁰⁾ = e_b W_b (users by W[0], items by W[-1])
            x = torch.cat([expected[:N_USERS] @ w[k, 0], expected[N_USERS:] @ w[k, -1]])
            torch.testing.assert_close(inputs[k + 1], x)
    if transform == "separate":  # the user and item matrices are distinct parameters
        assert not torch.equal(w[:, 0], w[:, 1])


def test_crgcn_block_inputs_are_the_previous_residual_outputs(tiny: TrainData) -> None:
    model = make("crgcn", tiny, behavior_layers=LAYERS)
    assert isinstance(model, CRGCN)
    with torch.no_grad():
        inputs, outputs = model.cascade(ego(model), model._residual)
        embs = model.encode()
    e = ego(model)
    torch.testing.assert_close(inputs[0], e)
    for k, behavior in enumerate(model.chain):
        out = light_gcn(norm_adj(behavior), e, LAYERS[behavior], "last")
        torch.testing.assert_close(outputs[k], out)
        e = e + F.normalize(out, dim=-1)  # e_b = e_{b-1} + norm(GCN_b(e_{b-1}))
        torch.testing.assert_close(embs[k], e)
        if k + 1 < len(model.chain):
            torch.testing.assert_close(inputs[k + 1], e)
    # user 3 and item 4 have no cart / buy edge: their rows pass those blocks unchanged
    torch.testing.assert_close(embs[2][3], embs[0][3])
    torch.testing.assert_close(embs[2][N_USERS + 4], embs[0][N_USERS + 4])


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("combination", ["last", "mean"])
def test_crgcn_residual_variants(tiny: TrainData, normalize: bool, combination: str) -> None:
    model = make("crgcn", tiny, normalize=normalize, layer_combination=combination, n_layers=2)
    with torch.no_grad():
        embs = model.encode()  # type: ignore[union-attr]
    e = ego(model)
    for k, behavior in enumerate(("view", "cart", "buy")):
        out = light_gcn(norm_adj(behavior), e, 2, combination)
        e = e + (F.normalize(out, dim=-1) if normalize else out)
        torch.testing.assert_close(embs[k], e)


# --------------------------------------------------------------------------- (b) final embeddings
def test_mbcgcn_final_embeddings_sum_the_blocks(tiny: TrainData) -> None:
    """e = Σ_b e_b of the untransformed block outputs; scores are e_uᵀ e_i."""
    model = make("mbcgcn", tiny, behavior_layers=LAYERS, init="xavier")
    assert isinstance(model, MBCGCN)
    w = model.transforms.detach()
    x, total = ego(model), torch.zeros(N_USERS + N_ITEMS, 6)
    for k, behavior in enumerate(("view", "cart", "buy")):
        out = light_gcn(norm_adj(behavior), x, LAYERS[behavior], "mean")
        total = total + out
        if k < 2:
            x = torch.cat([out[:N_USERS] @ w[k, 0], out[N_USERS:] @ w[k, 1]])
    users, items = model.user_item_embeddings()
    torch.testing.assert_close(users, total[:N_USERS])
    torch.testing.assert_close(items, total[N_USERS:])
    with torch.no_grad():
        model.prepare_scoring()
        scores = model.scores(torch.arange(N_USERS))
    torch.testing.assert_close(scores, total[:N_USERS] @ total[N_USERS:].T)


def test_crgcn_scores_use_the_target_block(tiny: TrainData) -> None:
    model = make("crgcn", tiny)
    with torch.no_grad():
        e = model.encode()[-1]  # type: ignore[union-attr]
        model.prepare_scoring()
        scores = model.scores(torch.arange(N_USERS))
    torch.testing.assert_close(scores, e[:N_USERS] @ e[N_USERS:].T)


def test_mbcgcn_gradients_match_a_dense_reference(tiny: TrainData) -> None:
    """The sparse cascade's backward (one symmetric-polynomial node per block) gives autograd's
    gradients of the dense computation, for the embeddings and the transformations."""
    model = make("mbcgcn", tiny, behavior_layers=LAYERS, init="xavier")
    assert isinstance(model, MBCGCN)
    probe = torch.randn(N_USERS, N_ITEMS, generator=torch.Generator().manual_seed(1))
    users, items = model.final_embeddings()
    ((users @ items.T) * probe).sum().backward()
    got = [model.user_emb.weight.grad, model.item_emb.weight.grad, model.transforms.grad]

    u0 = model.user_emb.weight.detach().clone().requires_grad_()
    i0 = model.item_emb.weight.detach().clone().requires_grad_()
    w = model.transforms.detach().clone().requires_grad_()
    x, total = torch.cat([u0, i0]), torch.zeros(N_USERS + N_ITEMS, 6)
    for k, behavior in enumerate(("view", "cart", "buy")):
        out = light_gcn(norm_adj(behavior), x, LAYERS[behavior], "mean")
        total = total + out
        if k < 2:
            x = torch.cat([out[:N_USERS] @ w[k, 0], out[N_USERS:] @ w[k, 1]])
    ((total[:N_USERS] @ total[N_USERS:].T) * probe).sum().backward()
    for g, ref in zip(got, [u0.grad, i0.grad, w.grad], strict=True):
        assert g is not None and ref is not None
        torch.testing.assert_close(g, ref)
    assert float(w.grad.abs().sum()) > 0  # type: ignore[union-attr]


def test_default_chain_moves_the_target_last() -> None:
    data = TrainData(tiny_log(("buy", "view", "cart")))
    for name in ("mbcgcn", "crgcn"):
        assert make(name, data).chain == ("view", "cart", "buy")


def test_a_shorter_chain(tiny: TrainData) -> None:
    model = make("mbcgcn", tiny, behavior_order=["cart", "buy"])
    assert isinstance(model, MBCGCN)
    assert model.chain == ("cart", "buy") and model.transforms.shape[0] == 1
    inputs, outputs = model.encode()
    torch.testing.assert_close(inputs[0].detach(), ego(model))
    torch.testing.assert_close(
        outputs[0].detach(), light_gcn(norm_adj("cart"), ego(model), 3, "mean")
    )
    crgcn = make("crgcn", tiny, behavior_order=["view", "buy"])
    assert crgcn.chain == ("view", "buy")
    batch = next(iter(crgcn.batches(tiny, 8, torch.Generator().manual_seed(0))))
    assert set(crgcn.loss(batch)) == {"bpr_view", "bpr_buy", "reg"}


# --------------------------------------------------------------------------- (c) CRGCN's loss
def by_hand_bpr(model: CRGCN, batch: BehaviorBatch) -> dict[str, torch.Tensor]:
    """Mean −ln σ(e_uᵀe_i − e_uᵀe_j) of each behavior's valid triples, with its embeddings."""
    out = {}
    with torch.no_grad():
        embs = model.encode()
    for k, behavior in enumerate(model.chain):
        e = embs[k]
        vals = []
        for row in range(len(batch.user)):
            if not batch.valid[k, row]:
                continue
            u = int(batch.user[row])
            i, j = int(batch.pos[k, row, 0]), int(batch.neg[k, row, 0])
            x = e[u] @ e[N_USERS + i] - e[u] @ e[N_USERS + j]
            vals.append(-torch.log(torch.sigmoid(x)))
        out[f"bpr_{behavior}"] = torch.stack(vals).mean()
    return out


def test_crgcn_loss_has_one_bpr_term_per_behavior(tiny: TrainData) -> None:
    model = make("crgcn", tiny)
    assert isinstance(model, CRGCN)
    batch = next(iter(model.batches(tiny, 8, torch.Generator().manual_seed(0))))
    assert len(batch.user) == 3  # every buy pair; users 0, 1, 2
    # user 2 has no cart: no cart term for its row; every batch user has a view and a buy
    assert batch.valid.tolist() == [[True] * 3, [u != 2 for u in batch.user.tolist()], [True] * 3]
    with torch.no_grad():
        terms = model.loss(batch)
    assert set(terms) == {"bpr_view", "bpr_cart", "bpr_buy", "reg"}
    expected = by_hand_bpr(model, batch)
    for key, value in expected.items():
        torch.testing.assert_close(terms[key], value)
    # the target's positives are the batch pairs themselves
    assert batch.pos[2, :, 0].tolist() == [{0: 0, 1: 3, 2: 2}[u] for u in batch.user.tolist()]


def test_crgcn_loss_weights_apply(tiny: TrainData) -> None:
    gen = torch.Generator().manual_seed(0)
    plain = make("crgcn", tiny)
    assert isinstance(plain, CRGCN)
    batch = next(iter(plain.batches(tiny, 8, gen)))
    weighted = make("crgcn", tiny, loss_weights={"view": 0.0, "cart": 2.5})
    with torch.no_grad():
        a, b = plain.loss(batch), weighted.loss(batch)
    assert float(b["bpr_view"]) == 0.0
    torch.testing.assert_close(b["bpr_cart"], 2.5 * a["bpr_cart"])
    torch.testing.assert_close(b["bpr_buy"], a["bpr_buy"])  # unnamed: weight 1
    torch.testing.assert_close(b["reg"], a["reg"])


def test_crgcn_reg_forms(tiny: TrainData) -> None:
    batch = next(iter(make("crgcn", tiny).batches(tiny, 8, torch.Generator().manual_seed(0))))
    table = make("crgcn", tiny, reg_form="table", reg=1.0)
    with torch.no_grad():
        got = table.loss(batch)["reg"]
    u, i = table.user_emb.weight, table.item_emb.weight
    torch.testing.assert_close(got, (u.norm() + i.norm()).detach() / N_ITEMS)


# --------------------------------------------------------------------------- (d) bad chains
@pytest.mark.parametrize("name", ["mbcgcn", "crgcn"])
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"behavior_order": ["view", "like", "buy"]}, r"behavior_order: unknown behavior.*'like'"),
        (
            {"behavior_order": ["view", "buy", "cart"]},
            r"behavior_order: .*end with the target.*'buy'",
        ),
        ({"behavior_order": ["view", "view", "buy"]}, r"behavior_order: .*'view'.*more than once"),
        ({"behavior_layers": {"click": 2}}, r"behavior_layers: unknown behavior.*'click'"),
        (
            {"behavior_order": ["cart", "buy"], "behavior_layers": {"view": 2}},
            r"behavior_layers: .*'view'.*not in the behavior chain",
        ),
    ],
)
def test_bad_chain_is_config_error(
    tiny: TrainData, name: str, params: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        build_model(name, params, tiny)


def test_crgcn_loss_weight_outside_the_chain(tiny: TrainData) -> None:
    with pytest.raises(ConfigError, match=r"loss_weights: .*'view'.*not in the behavior chain"):
        build_model("crgcn", {"behavior_order": ["cart", "buy"], "loss_weights": {"view": 1}}, tiny)
    with pytest.raises(ConfigError, match=r"loss_weights: unknown behavior.*'like'"):
        build_model("crgcn", {"loss_weights": {"like": 1}}, tiny)


# --------------------------------------------------------------------------- (e) training
@pytest.mark.parametrize(
    ("name", "params", "lr"),
    [
        ("mbcgcn", {"dim": 16, "behavior_layers": {"view": 1, "cart": 2, "buy": 2}}, 0.01),
        ("crgcn", {"dim": 16}, 0.01),
    ],
)
def test_short_training_lowers_the_loss(name: str, params: dict[str, object], lr: float) -> None:
    data = TrainData(synthetic_log(n_users=80, n_items=100, n_views=1500, seed=3))
    spec = ModelSpec(name, params, lr=lr, batch_size=128, epochs=8)
    torch.manual_seed(0)
    model = build_model(name, params, data)
    means = fit(model, spec, data)
    assert all(np.isfinite(means))
    assert means[-1] < 0.9 * means[0], means
