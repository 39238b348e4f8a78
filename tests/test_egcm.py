"""EGCM: Table 5 attention shapes, Eq. 19 normalisation, slot boundaries, memory carry,
ablation switches, short runs on the embedded data (one slot and many) against POP.

The generic model contract runs on EGCM through the registry (tests/test_contract.py, one
slot); :class:`TestEGCMContractWithSlots` runs it again on data with three time slots.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import polyrec
from model_contract import ModelContract, ModelSpec, synthetic_log
from polyrec.data.datasets import load_dataset
from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.splits import time_slots
from polyrec.errors import ConfigError
from polyrec.models import TrainData, build_model
from polyrec.models.egcm import EGCM, CrossBehaviorAttention, gamma_normalize, slot_incidence

DAY = 86400.0
SMALL = {"dim": 8, "n_layers": 1}


def make(
    params: dict[str, Any] | None = None, slots: int = 3, seed: int = 0
) -> tuple[EGCM, TrainData]:
    """EGCM on the contract's synthetic log, its rows spread over ``slots`` slots."""
    log = synthetic_log()
    slot = np.arange(len(log)) % slots if slots > 1 else None
    data = TrainData(log, slot)
    torch.manual_seed(seed)
    model = build_model("egcm", {**SMALL, **(params or {})}, data)
    assert isinstance(model, EGCM)
    return model, data


def first_batch(model: EGCM, data: TrainData) -> Any:
    return next(iter(model.batches(data, 64, torch.Generator().manual_seed(0))))


def tiny_log(rows: list[tuple[int, int, int, float]], n_users: int, n_items: int) -> InteractionLog:
    """(user, item, behavior code, timestamp) rows; behaviors view (0) and buy (1, target)."""
    arr = np.array(rows, dtype=np.float64)
    return InteractionLog(
        user=arr[:, 0].astype(np.int64),
        item=arr[:, 1].astype(np.int64),
        behavior=arr[:, 2].astype(np.int8),
        behaviors=("view", "buy"),
        target="buy",
        user_map=IdMap.range(n_users),
        item_map=IdMap.range(n_items),
        timestamp=arr[:, 3],
    )


# ---------------------------------------------------------------------- A.7 Table 5
@pytest.mark.parametrize("heads", [1, 2])
def test_memory_attention_follows_table5_shapes(heads: int) -> None:
    n_beh, n, d = 3, 5, 8
    torch.manual_seed(0)
    att = CrossBehaviorAttention(d, heads, scale=False)
    x = torch.randn(n_beh, n, d)  # Input (|B| × N × d)
    out, weights = att(x)
    assert out.shape == (n_beh, n, d)  # Output (|B| × N × d)
    assert weights.shape == (n_beh, n_beh, n, heads)  # (|B| × |B| × N × 1) for one head
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(n_beh, n, heads))
    # Table 5 literally, head by head: transformations, extensions, product, reduce-sum,
    # softmax over the second behavior axis, times V, reduce-sum + squeeze
    q, k, v = att.w_q(x), att.w_k(x), att.w_v(x)  # (|B| × N × d)
    dh = d // heads
    outs = []
    for h in range(heads):
        sl = slice(h * dh, (h + 1) * dh)
        qe = q[..., sl].unsqueeze(1)  # (|B| × 1 × N × d)
        ke = k[..., sl].unsqueeze(0)  # (1 × |B| × N × d)
        ve = v[..., sl].unsqueeze(0)  # (1 × |B| × N × d)
        prod = qe * ke
        assert prod.shape == (n_beh, n_beh, n, dh)  # (|B| × |B| × N × d)
        scores = prod.sum(-1, keepdim=True)  # (|B| × |B| × N × 1)
        a = torch.softmax(scores, dim=1)
        torch.testing.assert_close(a[..., 0], weights[..., h])
        weighted = a * ve
        assert weighted.shape == (n_beh, n_beh, n, dh)
        outs.append(weighted.sum(dim=1))  # reduce sum over the second axis + squeeze
    torch.testing.assert_close(out, torch.cat(outs, dim=-1))


def test_attention_scale_divides_scores() -> None:
    torch.manual_seed(0)
    a = CrossBehaviorAttention(8, 2, scale=True)
    b = CrossBehaviorAttention(8, 2, scale=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 4, 8)
    logits_a = torch.log(a(x)[1])
    logits_b = torch.log(b(x)[1])
    # softmax logits differ only by the factor 1/√(d/h) up to a per-softmax constant
    ca = logits_a - logits_a.mean(dim=1, keepdim=True)
    cb = logits_b - logits_b.mean(dim=1, keepdim=True)
    torch.testing.assert_close(ca, cb / math.sqrt(4), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- A.5 Eq. 19
def test_asymmetric_normalisation_matches_eq19_by_hand() -> None:
    # M: user 0 → items 0, 1; user 1 → items 1, 2. D = diag(2, 2), B = diag(1, 2, 1)
    m = slot_incidence(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 2]), np.zeros(4), 2, 3, 1)
    item_to_user, user_to_item = gamma_normalize(m)
    d_inv_m = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])  # D⁻¹M (item → user)
    b_inv_mt = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])  # B⁻¹Mᵀ (user → item)
    np.testing.assert_allclose(item_to_user.toarray(), d_inv_m)
    np.testing.assert_allclose(user_to_item.toarray(), b_inv_mt)
    # the item–item graph Γ(MᵀM) = B⁻¹Mᵀ D⁻¹M
    item_item = np.array([[0.5, 0.5, 0.0], [0.25, 0.5, 0.25], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose((user_to_item @ item_to_user).toarray(), item_item)
    sym_p, sym_q = gamma_normalize(m, "symmetric")
    r = 1 / math.sqrt(2)
    np.testing.assert_allclose(sym_p.toarray(), [[r, 0.5, 0.0], [0.0, 0.5, r]], rtol=1e-6)
    np.testing.assert_allclose(sym_q.toarray(), sym_p.toarray().T)

    # the model's own operators, per behavior (buy: user 0 → item 2, user 1 → item 0)
    rows = [
        (0, 0, 0, 0.0),
        (0, 1, 0, 1.0),
        (1, 1, 0, 2.0),
        (1, 2, 0, 3.0),
        (0, 2, 1, 4.0),
        (1, 0, 1, 5.0),
    ]
    model = build_model("egcm", SMALL, TrainData(tiny_log(rows, 2, 3)))
    assert isinstance(model, EGCM)
    p, q = model.slot_operators(0, "view")
    np.testing.assert_allclose(p.to_dense().numpy(), d_inv_m)
    np.testing.assert_allclose(q.to_dense().numpy(), b_inv_mt)
    p_buy, _ = model.slot_operators(0, "buy")
    np.testing.assert_allclose(p_buy.to_dense().numpy(), [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    # a training batch's pair (user 0, item 1) leaves every graph; Eq. 19's degrees follow
    p_drop, q_drop = model.slot_operators(0, "view", drop=torch.tensor([0 * 3 + 1]))
    np.testing.assert_allclose(p_drop.to_dense().numpy(), [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(q_drop.to_dense().numpy(), [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])


# ---------------------------------------------------------------------- short-term encoder
def test_short_term_encoder_matches_a_dense_reference() -> None:
    """Per slot t and behavior b, with dense D⁻¹M and B⁻¹Mᵀ of that slot graph:
    E^(l+1) = B⁻¹Mᵀ D⁻¹M E^(l) W_l, items σ([E^(0) ∥ E^(1) ∥ E^(2)] W_cat), users
    σ(D⁻¹M items W_u); nodes without a behavior-b interaction in t have zeros."""
    model, data = make({"n_layers": 2}, slots=3)
    log, slot = data.log, data.slot
    assert slot is not None
    e = model.embeddings()
    n_u, n_i, nb = model.n_users, model.n_items, len(model.behaviors)
    item_start = np.cumsum([0, *model._item_sizes])
    slot_start = np.cumsum([0, *model._slot_sizes])
    nodes = model.slot_nodes.numpy()
    with torch.no_grad():
        ego_all = model.item_emb[model.ego_rows]
        for t in range(model.n_slots):
            rows_t = nodes[slot_start[t] : slot_start[t + 1]]
            for b, name in enumerate(model.behaviors):
                g = t * nb + b
                sel = (slot == model.slot_ids[t]) & (log.behavior == log.behavior_code(name))
                m = torch.zeros(n_u, n_i)
                m[log.user[sel], log.item[sel]] = 1.0
                du, di = m.sum(1, keepdim=True), m.sum(0, keepdim=True)
                p, q = m / du.clamp(min=1), (m / di.clamp(min=1)).T
                items_g = torch.nonzero(di[0]).flatten()
                h = torch.zeros(n_i, model.config.dim)
                h[items_g] = ego_all[item_start[g] : item_start[g + 1]]
                layers = [h]
                for w in model.w_layer:
                    h = q @ (p @ h) @ w[g]
                    layers.append(h)
                items = model.act_item(torch.cat(layers, 1) @ model.w_cat[g])
                users = model.act_user(p @ items @ model.w_user[g])
                shorts = e.short[slot_start[t] : slot_start[t + 1], b]
                for node, short in zip(rows_t, shorts, strict=True):
                    if node < n_u:
                        ref = users[node] if du[node] > 0 else torch.zeros_like(short)
                    else:
                        i = node - n_u
                        ref = items[i] if di[0, i] > 0 else torch.zeros_like(short)
                    torch.testing.assert_close(short, ref, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- time slots
def boundary_log(unit: float = 1.0) -> InteractionLog:
    """User 0's views at t0, t0+L−1s, t0+L, t0+2L−1ms, t0+2L and t0+4L (L = 1 day; slot 3
    empty); buys of items 6, 7, 8 (8 = test, 7 = validation, 6 stays in train, slot 0)."""
    t0 = 1.4e9
    rows = [
        (0, 0, 0, t0),
        (0, 1, 0, t0 + DAY - 1),
        (0, 2, 0, t0 + DAY),
        (0, 3, 0, t0 + 2 * DAY - 1e-3),
        (0, 4, 0, t0 + 2 * DAY),
        (0, 5, 0, t0 + 4 * DAY),
        (0, 6, 1, t0 + 10),
        (0, 7, 1, t0 + DAY + 10),
        (0, 8, 1, t0 + 4 * DAY + 10),
    ]
    log = tiny_log(rows, 1, 9)
    assert log.timestamp is not None
    log.timestamp = log.timestamp / unit
    return log


@pytest.mark.parametrize("unit", [1.0, DAY])
def test_slot_assignment_at_boundaries(unit: float) -> None:
    split = time_slots(boundary_log(unit), slot_days=1.0, seconds_per_unit=unit, n_negatives=0)
    assert split.slot is not None
    got = dict(zip(split.train.item.tolist(), split.slot.tolist(), strict=True))
    # [t0, t0+L) → 0, [t0+L, t0+2L) → 1, t0+2L → 2, t0+4L → 4; buy 6 at t0+10 s → 0
    assert got == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 4, 6: 0}


def test_model_slot_graphs_follow_the_split() -> None:
    split = time_slots(boundary_log(), slot_days=1.0, n_negatives=0)
    model = build_model("egcm", SMALL, TrainData(split.train, split.slot))
    assert isinstance(model, EGCM)
    assert model.slot_ids.tolist() == [0, 1, 2, 4]  # the empty slot 3 is skipped
    assert model.n_slots == 4
    views = [model.slot_operators(t, "view")[0].to_dense()[0] for t in range(4)]
    # per slot, user 0's degree counts only that slot's views (Eq. 19 per t and b)
    expected = [{0: 0.5, 1: 0.5}, {2: 0.5, 3: 0.5}, {4: 1.0}, {5: 1.0}]
    for row, exp in zip(views, expected, strict=True):
        nz = {int(i): float(row[i]) for i in torch.nonzero(row).flatten()}
        assert nz == exp
    buys = model.slot_operators(0, "buy")[0].to_dense()[0]
    assert torch.nonzero(buys).flatten().tolist() == [6]


def test_without_slots_the_model_has_one_slot() -> None:
    model, _ = make(slots=1)
    assert model.n_slots == 1 and model.n_groups == len(model.behaviors)


# ---------------------------------------------------------------------- memory
def test_memory_carries_state_across_slots() -> None:
    model, _ = make(slots=3)
    short = model.short_term().detach().requires_grad_()
    mem = model.long_term(short)
    sizes = model._slot_sizes
    first = torch.split(model.slot_nodes, sizes)
    starts = np.cumsum([0, *sizes])
    # a node of the first slot that is also in the last slot: its final memory depends on
    # its first-slot embeddings (carried through the memory), not only on the last slot
    node = next(int(n) for n in first[0] if bool((first[-1] == n).any()))
    row0 = starts[0] + int(torch.nonzero(first[0] == node)[0])
    (grad,) = torch.autograd.grad(mem[node].sum(), short)
    assert float(grad[row0].abs().sum()) > 0
    # a node absent from the last slot keeps the memory it had after its last slot
    only_early = [int(n) for n in first[0] if not any(bool((f == n).any()) for f in first[1:])]
    if only_early:
        n0 = only_early[0]
        r0 = starts[0] + int(torch.nonzero(first[0] == n0)[0])
        (g2,) = torch.autograd.grad(mem[n0].sum(), short)
        assert float(g2[r0].abs().sum()) > 0
        assert float(g2[starts[1] :].abs().sum()) == 0


def test_without_memory_the_long_term_is_the_carried_short_term() -> None:
    model, data = make({"memory": False}, slots=1)
    assert len(model.memory_attention) == 0
    e = model.embeddings()
    # one slot, no memory: Ẽ = Ê for every node of the slot graphs
    torch.testing.assert_close(e.memory[model.slot_nodes], e.short)
    assert set(model.loss(first_batch(model, data))) == set(
        make(slots=1)[0].loss(first_batch(model, data))
    )


def test_zero_value_init_starts_the_memory_as_the_plain_carry() -> None:
    zero, data = make({"memory_value_init": "zero"})
    plain, _ = make({"memory": False})
    ez, ep = zero.embeddings(), plain.embeddings()
    torch.testing.assert_close(ez.short, ep.short)  # same seed: same encoder
    torch.testing.assert_close(ez.memory, ep.memory)  # γ_t = 0 at init
    loss = sum(zero.loss(first_batch(zero, data)).values())
    assert isinstance(loss, torch.Tensor)
    loss.backward()
    att = zero.memory_attention[0]
    assert isinstance(att, CrossBehaviorAttention)
    assert float(att.w_v.weight.grad.abs().sum()) > 0  # and it learns from there


def test_inactive_behaviors_mask_the_long_term_fusion() -> None:
    attend, data = make({"inactive_behaviors": "attend"})
    masked, _ = make({"inactive_behaviors": "mask"})
    assert not attend._mask_inactive() and masked._mask_inactive()
    assert make()[0]._mask_inactive() is False  # auto + memory = attend
    assert make({"memory": False})[0]._mask_inactive() is True  # auto without memory = mask
    ea, em = attend.embeddings(), masked.embeddings()
    torch.testing.assert_close(ea.memory, em.memory)  # same weights, same memory
    # a node that never had some behavior: masked fusion ignores that behavior's memory row
    node = int(torch.nonzero(~attend.ever.all(1) & attend.ever.any(1))[0])
    assert not torch.allclose(
        ea.users[node] if node < attend.n_users else ea.items[node - attend.n_users],
        em.users[node] if node < attend.n_users else em.items[node - attend.n_users],
    )
    b = int(torch.nonzero(~masked.ever[node])[0])
    x = em.memory.transpose(0, 1).clone()
    x[b, node] += 100.0  # the masked behavior's memory does not reach the fused embedding
    fused = masked.fusion(x, masked.ever.T)
    torch.testing.assert_close(
        fused[node], masked.fusion(em.memory.transpose(0, 1), masked.ever.T)[node]
    )
    # the long-term contrast of a behavior covers only users that had it
    batch = first_batch(masked, data)
    ta, tm = attend.loss(batch), masked.loss(batch)
    assert set(ta) == set(tm) and all(torch.isfinite(v) for v in tm.values())


def test_item_bias_adds_a_learned_scalar_to_every_score() -> None:
    plain, data = make()
    assert not hasattr(plain, "bias")  # the appendix's model by default
    biased, _ = make({"item_bias": True})
    e = biased.embeddings()
    with torch.no_grad():
        biased.bias.copy_(torch.linspace(-1.0, 1.0, biased.n_items))
    users, items = biased.final_embeddings()
    torch.testing.assert_close(users @ items.T, e.users @ e.items.T + biased.bias)
    # scoring goes through the same embeddings: the bias reaches every protocol
    biased.prepare_scoring()
    u = torch.arange(3)
    torch.testing.assert_close(biased.scores(u), e.users[u] @ e.items.T + biased.bias)
    batch = first_batch(biased, data)
    with torch.no_grad():
        biased.bias.zero_()
    terms = biased.loss(batch)
    torch.testing.assert_close(terms["bpr"], plain.loss(batch)["bpr"])  # b = 0: same BPR
    terms["bpr"].backward()
    touched = torch.zeros(biased.n_items, dtype=torch.bool)
    touched[batch.pos] = touched[batch.neg] = True
    grad = biased.bias.grad
    assert grad is not None and bool((grad[~touched] == 0).all())
    assert float(grad[batch.pos].sum()) < 0 < float(grad[batch.neg].sum())  # pos up, neg down


# ---------------------------------------------------------------------- ablations (A.8)
def test_loss_terms_are_named_per_behavior() -> None:
    model, data = make()
    terms = model.loss(first_batch(model, data))
    assert set(terms) == {
        "bpr",
        *(f"cl_{span}_{b}" for span in ("short", "long") for b in ("view", "cart", "buy")),
    }
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())


@pytest.mark.parametrize(
    ("params", "absent"),
    [
        ({"short_term_cl": False}, "cl_short_"),
        ({"long_term_cl": False}, "cl_long_"),
    ],
)
def test_contrastive_switches_drop_their_terms(params: dict[str, Any], absent: str) -> None:
    full, data = make()
    ablated, _ = make(params)
    batch = first_batch(full, data)
    t_full, t_abl = full.loss(batch), ablated.loss(batch)
    assert not any(k.startswith(absent) for k in t_abl)
    assert set(t_abl) == {k for k in t_full if not k.startswith(absent)}
    for k in t_abl:  # the remaining terms are unchanged (same seed, same weights)
        torch.testing.assert_close(t_abl[k], t_full[k])


def test_weights_alpha_beta_zeta_scale_the_terms() -> None:
    base, data = make()
    batch = first_batch(base, data)
    t0 = base.loss(batch)
    scaled, _ = make({"alpha": 2.0, "beta": 3.0, "zeta": 0.5})
    t1 = scaled.loss(batch)
    z0 = base.config.zeta
    for k in t0:
        factor = 1.0 if k == "bpr" else (2.0 if "short" in k else 3.0) * 0.5 / z0
        torch.testing.assert_close(t1[k], t0[k] * factor)


def test_behavior_removal() -> None:
    model, data = make({"drop_behaviors": ["view"]})
    assert model.behaviors == ("cart", "buy")
    assert model.n_groups == 3 * 2
    terms = model.loss(first_batch(model, data))
    assert not any(k.endswith("_view") for k in terms)
    purchase_only, _ = make({"drop_behaviors": ["view", "cart"]})
    assert purchase_only.behaviors == ("buy",)
    assert set(purchase_only.loss(first_batch(purchase_only, data))) == {
        "bpr",
        "cl_short_buy",
        "cl_long_buy",
    }
    with pytest.raises(ConfigError, match="target"):
        make({"drop_behaviors": ["buy"]})
    with pytest.raises(ConfigError, match="favourite"):
        make({"drop_behaviors": ["favourite"]})


def test_batch_pairs_are_excluded_from_the_encoder_in_training() -> None:
    model, data = make()
    batch = first_batch(model, data)
    with_pairs, _ = make({"exclude_batch_pairs": False})
    assert not torch.equal(model.loss(batch)["bpr"], with_pairs.loss(batch)["bpr"])
    # scoring always uses the whole training graph
    torch.testing.assert_close(model.final_embeddings()[0], with_pairs.final_embeddings()[0])


def test_heads_must_divide_dim() -> None:
    with pytest.raises(ConfigError, match="n_heads"):
        make({"n_heads": 3})


# ---------------------------------------------------------------------- contract with slots
class TestEGCMContractWithSlots(ModelContract):
    """The scorer contract on data with three time slots (test_contract.py covers one)."""

    @pytest.fixture
    def spec(self) -> ModelSpec:
        return ModelSpec("egcm", SMALL)

    @pytest.fixture
    def data(self) -> TrainData:
        log = synthetic_log()
        return TrainData(log, np.arange(len(log)) % 3)


# ---------------------------------------------------------------------- training runs
# Short runs compare with POP on the validation NDCG@10 of the paper's protocol (A.8: leave-one-out,
# the held-out purchase among sampled negatives; 20 here for speed).
FAST = [
    "eval.ks=[10]",
    "data.n_negatives=20",
    "train.batch_size=1024",
    "train.epochs=3",
    "train.lr=0.01",
    "train.patience=3",
    "train.metric=ndcg@10",
    "train.select_protocol=sampled",
]


@pytest.fixture(scope="module")
def retail_slice(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded Retailrocket data (May–September 2015), 700 of its users drawn at random."""
    log = load_dataset("embedded:retailrocket")
    keep = np.random.default_rng(0).permutation(log.n_users)[:700]
    path = tmp_path_factory.mktemp("retail") / "slice"
    log.select(np.isin(log.user, keep)).save(path)
    return path


@pytest.fixture(scope="module")
def pop_valid(retail_slice: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("pop") / "run"
    res = polyrec.train("pop", retail_slice, protocol="time-slots", overrides=FAST, out=out)
    return res["valid"]["metrics"]


@pytest.mark.parametrize(("slot_days", "n_slots"), [(200.0, 1), (30.0, 5)])
def test_short_run_beats_pop_on_validation(
    slot_days: float, n_slots: int, retail_slice: Path, pop_valid: dict[str, Any], tmp_path: Path
) -> None:
    res = polyrec.train(
        "egcm",
        retail_slice,
        protocol="time-slots",
        overrides=[
            *FAST,
            f"data.slot_days={slot_days}",
        ],
        out=tmp_path / "egcm",
    )
    assert res["protocol"]["split"]["slots"] == n_slots
    key = "ndcg@10"
    assert res["valid"]["metrics"]["sampled"][key] > pop_valid["sampled"][key]
