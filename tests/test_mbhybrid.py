"""MB-Hybrid (polyrec's multi-behavior model): its terms by hand, the training targets that
mirror the split, and the candidate softmax."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from polyrec import losses
from polyrec.config import load_config
from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import TrainData
from polyrec.models.itemknn import knn_similarity
from polyrec.models.mbhybrid import MBHybrid, MBHybridConfig

N_USERS, N_ITEMS = 4, 5
ROOT = Path(__file__).resolve().parents[1]


def tiny(hide: str | None = None) -> TrainData:
    # buys: u0 {0, 1}, u1 {0, 1, 2}, u2 {1, 2}, u3 {3}; views: u0 {2, 4}, u3 {0}; cart: u2 {0}
    rows = [(0, 0, 2), (0, 1, 2), (1, 0, 2), (1, 1, 2), (1, 2, 2), (2, 1, 2), (2, 2, 2),
            (3, 3, 2), (0, 2, 0), (0, 4, 0), (3, 0, 0), (2, 0, 1)]  # fmt: skip
    u, i, b = (np.array(x) for x in zip(*rows, strict=True))
    log = InteractionLog(
        user=u, item=i, behavior=b.astype(np.int8), behaviors=("view", "cart", "buy"),
        target="buy", user_map=IdMap.range(N_USERS), item_map=IdMap.range(N_ITEMS), name="tiny",
    )  # fmt: skip
    return TrainData(log, hide=hide)


# every term on, S the plain cosine of the purchases (the hand computations below)
ALL_TERMS = {"graph": True, "item_bias": True, "behavior_similarity": False, "knn_shrink": 0.0,
             "knn_alpha": 0.5, "knn_other_weight": 0.0}  # fmt: skip


def model(**cfg: object) -> MBHybrid:
    torch.manual_seed(0)
    params = {"dim": 4, "n_layers": 1, "knn_k": 3, "conversion": False, **ALL_TERMS, **cfg}
    return MBHybrid(MBHybridConfig.model_validate(params)).setup(tiny())


def test_defaults_are_the_shipped_choices() -> None:
    """`polyrec train -m mbhybrid` gets the measured configuration: no graph term or item bias,
    each auxiliary behavior's own neighbourhoods, S from the multi-behavior ItemKNN values, one
    learning rate of 5e-3."""
    cfg = load_config(None, [], model="mbhybrid")
    p = cfg.params
    assert isinstance(p, MBHybridConfig)
    assert (p.graph, p.item_bias, p.behavior_similarity, p.weight_lr_scale) == (
        False, False, True, 1.0
    )  # fmt: skip
    assert (p.knn_k, p.knn_shrink, p.knn_alpha, p.knn_other_weight) == (100, 20.0, 0.3, 0.2)
    assert cfg.train.lr == 0.005
    assert load_config(None, ["train.lr=0.01"], model="mbhybrid").train.lr == 0.01
    shipped = load_config(ROOT / "configs" / "mbhybrid-retailrocket.toml")
    assert shipped.params == p and shipped.train.lr == cfg.train.lr


@pytest.mark.parametrize("graph", [True, False])
def test_scores_are_the_sum_of_the_terms_by_hand(graph: bool) -> None:
    m = model(graph=graph)
    data = tiny()
    with torch.no_grad():
        m.beta.copy_(torch.tensor([0.5, 0.25, 2.0]))
        m.gamma.copy_(torch.tensor([0.7, -0.3]))
        m.bias.copy_(torch.arange(N_ITEMS, dtype=torch.float32) / 10)
    s = knn_similarity(data.csr("buy").astype(np.float64), 3)
    expect = np.zeros((N_USERS, N_ITEMS))
    for w, b in zip((0.5, 0.25, 2.0), ("view", "cart", "buy"), strict=True):
        expect += w * (data.csr(b) @ s).toarray()
    expect += 0.7 * data.csr("view").toarray() - 0.3 * data.csr("cart").toarray()
    expect += np.arange(N_ITEMS) / 10
    eu, ei = m.final_embeddings()
    expect += (eu @ ei.T).detach().numpy()
    got = m.scores(torch.arange(N_USERS)).detach().numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    # the pair lookup used in training gives the same values as the scoring rows
    uu, ii = torch.tensor([0, 0, 2, 3, 1]), torch.tensor([2, 4, 0, 0, 3])
    pair = m.pair_scores(uu, ii, eu[uu], ei[ii]).detach().numpy()
    np.testing.assert_allclose(pair, got[uu.numpy(), ii.numpy()], rtol=1e-5, atol=1e-6)


def test_behavior_similarity_adds_each_auxiliary_behaviors_own_neighbourhoods() -> None:
    m = model(graph=False, item_bias=False, history=False, behavior_similarity=True)
    data = tiny()
    assert m.beta.tolist() == pytest.approx([0.1, 0.1, 1.0, 0.0, 0.0])  # β', from 0
    with torch.no_grad():
        m.beta.copy_(torch.tensor([0.5, 0.25, 2.0, 0.6, -0.4]))
    s = knn_similarity(data.csr("buy").astype(np.float64), 3)
    expect = np.zeros((N_USERS, N_ITEMS))
    for w, b in zip((0.5, 0.25, 2.0), ("view", "cart", "buy"), strict=True):
        expect += w * (data.csr(b) @ s).toarray()
    for w, b in zip((0.6, -0.4), ("view", "cart"), strict=True):
        r_b = data.csr(b).astype(np.float64)
        expect += w * (r_b @ knn_similarity(r_b, 3)).toarray()  # co-view, co-cart cosine
    got = m.scores(torch.arange(N_USERS)).detach().numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)


def test_interactions_are_the_own_history_times_every_other_term_by_hand() -> None:
    """interactions: per auxiliary b, R_b ∘ (R_b' S) for every behavior b', then R_view ∘
    R_cart, each weighted after the linear history terms; scoring rows and pairs agree, and
    under hide = 'all' a training purchase loses them with its own history."""
    m = model(graph=False, item_bias=False, interactions=True)
    data = tiny()
    s = knn_similarity(data.csr("buy").astype(np.float64), 3)
    nb = [(data.csr(b) @ s).toarray() for b in ("view", "cart", "buy")]
    own = [data.csr("view").toarray(), data.csr("cart").toarray()]
    inter = [r * n for r in own for n in nb] + [own[0] * own[1]]
    assert m.n_history == 2 + 7
    w_inter = np.array([0.3, -0.2, 1.5, 0.4, 0.6, -1.0, 2.0])
    with torch.no_grad():
        m.beta.copy_(torch.tensor([0.5, 0.25, 2.0]))
        m.gamma.copy_(torch.tensor([0.7, -0.3, *w_inter]))
    expect = 0.5 * nb[0] + 0.25 * nb[1] + 2.0 * nb[2] + 0.7 * own[0] - 0.3 * own[1]
    expect += sum(w * f for w, f in zip(w_inter, inter, strict=True))
    # u0 viewed 2, which u0's purchases (0, 1) reach through S: the products are not all 0
    assert inter[2][0, 2] > 0
    got = m.scores(torch.arange(N_USERS)).detach().numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-6)
    uu, ii = torch.tensor([0, 0, 2, 3, 1]), torch.tensor([2, 4, 0, 0, 3])
    eu, ei = m.final_embeddings()
    pair = m.pair_scores(uu, ii, eu[uu], ei[ii]).detach().numpy()
    np.testing.assert_allclose(pair, got[uu.numpy(), ii.numpy()], rtol=1e-5, atol=1e-6)
    dropped = MBHybrid(
        MBHybridConfig.model_validate({"dim": 4, "knn_k": 3, **ALL_TERMS, "interactions": True})
    ).setup(tiny(hide="all"))
    pos = dropped.positive_features(torch.tensor([3]), torch.tensor([0]))
    assert pos[0, dropped._hist_at :].abs().sum() == 0


@pytest.mark.parametrize("hide", ["target", "all"])
def test_loo_neighbours_are_the_features_without_the_pairs_own_entry(hide: str) -> None:
    """loo_neighbours: a training purchase (u, t) sees R_b S⁻ with S⁻ the similarity of X with
    X[u, t] lowered to what a held-out purchase has (its target part removed under hide =
    'target', everything under hide = 'all'), recomputed from scratch here for each pair (k
    large enough that no neighbour set changes)."""
    data = tiny(hide=hide)
    cfg = {"knn_k": 10, "knn_shrink": 1.0, "knn_alpha": 0.4, "knn_other_weight": 0.5,
           "behavior_similarity": hide == "all", "loo_neighbours": True}  # fmt: skip
    m = MBHybrid(MBHybridConfig.model_validate({"dim": 4, **cfg})).setup(data)
    x = (data.csr("buy") + 0.5 * data.csr("view") + 0.5 * data.csr("cart")).astype(np.float64)
    bought = data.csr("buy").tocoo()
    n_b = 3
    for u, t in zip(bought.row, bought.col, strict=True):
        own = x[u, t] - 1.0 if hide == "target" else 0.0
        x_loo = sp.lil_matrix(x)
        x_loo[u, t] = own
        s_loo = knn_similarity(sp.csr_matrix(x_loo), 10, 1.0, 0.4)
        expect = [(data.csr(b) @ s_loo)[u, t] for b in ("view", "cart", "buy")]
        if hide == "all":
            for b in ("view", "cart"):
                r_loo = sp.lil_matrix(data.csr(b).astype(np.float64))
                r_loo[u, t] = 0.0
                s_b = knn_similarity(sp.csr_matrix(r_loo), 10, 1.0, 0.4)
                expect.append((data.csr(b).astype(np.float64) @ s_b)[u, t])
        got = m.positive_features(torch.tensor([u]), torch.tensor([t]))[0, : len(expect)]
        np.testing.assert_allclose(got.numpy(), expect, rtol=1e-5, atol=1e-7)
    # u1 bought 0, 1, 2 and u0 bought 0, 1: without u1's purchase of 2, 2 is co-bought with 1
    # by u2 only, so the feature drops but stays positive; the full one is larger
    full = m.pair_features(torch.tensor([1]), torch.tensor([2]))[0, n_b - 1]
    loo = m.positive_features(torch.tensor([1]), torch.tensor([2]))[0, n_b - 1]
    assert 0 < float(loo) < float(full)


def test_user_context_weighs_each_term_per_user() -> None:
    """user_context: feature f's weight for user u is w_f + Σ_b V_fb z_b(u), z_b(u) the
    standardised ln(1 + u's items in behavior b); scoring rows and training pairs agree."""
    m = model(graph=False, item_bias=False, user_context=True)
    data = tiny()
    n = {b: np.log1p(np.diff(data.csr(b).indptr)) for b in ("view", "cart", "buy")}
    z = np.stack([(n[b] - n[b].mean()) / n[b].std() for b in ("view", "cart", "buy")], axis=1)
    np.testing.assert_allclose(m.context.numpy(), z, rtol=1e-5, atol=1e-6)
    v = np.array([[0.1, 0.0, -0.2], [0.0, 0.3, 0.0], [0.5, 0.0, 0.0], [0.2, -0.1, 0.4],
                  [0.0, 0.0, 0.0]])  # fmt: skip
    with torch.no_grad():
        m.beta.copy_(torch.tensor([0.5, 0.25, 2.0]))
        m.gamma.copy_(torch.tensor([0.7, -0.3]))
        m.context_weight.copy_(torch.from_numpy(v).float())
    s = knn_similarity(data.csr("buy").astype(np.float64), 3)
    feats = [(data.csr(b) @ s).toarray() for b in ("view", "cart", "buy")]
    feats += [data.csr("view").toarray(), data.csr("cart").toarray()]
    w = np.array([0.5, 0.25, 2.0, 0.7, -0.3])
    expect = sum((w[f] + z @ v[f])[:, None] * feats[f] for f in range(5))
    got = m.scores(torch.arange(N_USERS)).detach().numpy()
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)
    uu, ii = torch.tensor([0, 0, 2, 3, 1]), torch.tensor([2, 4, 0, 0, 3])
    eu, ei = m.final_embeddings()
    pair = m.pair_scores(uu, ii, eu[uu], ei[ii]).detach().numpy()
    np.testing.assert_allclose(pair, got[uu.numpy(), ii.numpy()], rtol=1e-5, atol=1e-5)
    # off: no context parameters, the scalar weights alone
    assert model(graph=False).context_weight.numel() == 0


def test_temporal_features_count_positions_without_the_pairs_own_purchases() -> None:
    """u0 in time order: view 2, cart 2, buy 2, view 3, buy 1, view 4; u1: view 0, buy 1.
    Recency a = rows after the latest aux row, proximity g = rows to the nearest purchase of
    another item (+1), the pair's own purchase rows not counted."""
    rows = [(0, 2, 0, 1.0), (0, 2, 1, 2.0), (0, 2, 2, 3.0), (0, 3, 0, 4.0), (0, 1, 2, 5.0),
            (0, 4, 0, 6.0), (1, 0, 0, 1.0), (1, 1, 2, 2.0)]  # fmt: skip
    u, i, b, t = (np.array(x) for x in zip(*rows, strict=True))
    log = InteractionLog(
        user=u, item=i, behavior=b.astype(np.int8), behaviors=("view", "cart", "buy"),
        target="buy", user_map=IdMap.range(2), item_map=IdMap.range(N_ITEMS), name="timed",
        timestamp=t.astype(np.float64),
    )  # fmt: skip
    cfg = MBHybridConfig(dim=4, knn_k=3, temporal=True, recency_half_lives=[1.0],
                         proximity_half_lives=[1.0], conversion=False)  # fmt: skip
    m = MBHybrid(cfg).setup(TrainData(log))
    feats = m._feats()[m._hist_at + 2 :]  # after R_view, R_cart
    dense = [f.rows(torch.arange(2), N_ITEMS).to_dense().numpy() for f in feats]
    expect_view_rec = {(0, 2): 0.5**4, (0, 3): 0.5**2, (0, 4): 1.0, (1, 0): 0.5}
    expect_view_prox = {(0, 2): 0.5**3, (0, 3): 0.5, (0, 4): 0.5, (1, 0): 0.5}
    for got, want in zip(dense, [expect_view_rec, expect_view_prox,
                                 {(0, 2): 0.5**3}, {(0, 2): 0.5**2}], strict=True):  # fmt: skip
        ref = np.zeros((2, N_ITEMS))
        for (uu, ii), v in want.items():
            ref[uu, ii] = v
        np.testing.assert_allclose(got, ref, rtol=1e-6)
    assert m.n_history == 2 + 4 and len(m.gamma) == 6
    # without timestamps the option adds nothing
    assert model(graph=False, temporal=True).n_history == 2


def test_ablations_switch_terms_off() -> None:
    m = model(graph=False, neighbours=False, history=False, item_bias=False)
    assert m.scores(torch.arange(N_USERS)).abs().sum() == 0
    m = model(graph=False, neighbours=False, item_bias=False)
    with torch.no_grad():
        m.gamma.copy_(torch.tensor([1.0, 0.0]))
    s = m.scores(torch.arange(N_USERS))
    assert torch.equal(s, torch.from_numpy(tiny().csr("view").toarray()).float())


@pytest.mark.parametrize(
    ("hide", "mode", "dropped"),
    [("all", "auto", True), ("target", "auto", False), (None, "auto", False),
     ("target", "drop", True), ("all", "keep", False)],
)  # fmt: skip
def test_positive_history_follows_the_split(hide: str | None, mode: str, dropped: bool) -> None:
    torch.manual_seed(0)
    cfg = MBHybridConfig(dim=4, n_layers=1, knn_k=3, positive_history=mode, graph=False,
                         neighbours=False, item_bias=False, loss="bpr",
                         conversion=False)  # fmt: skip
    m = MBHybrid(cfg).setup(tiny(hide))
    assert m.drop_positive is dropped
    with torch.no_grad():
        m.gamma.copy_(torch.tensor([3.0, 0.0]))
    from polyrec.data.views import BPRBatch

    # u0 viewed item 2: as a positive its view counts only when the split kept such rows
    batch = BPRBatch(torch.tensor([0]), torch.tensor([2]), torch.tensor([3]))
    pos_minus_neg = 0.0 if dropped else 3.0
    assert float(m.loss(batch)["bpr"].detach()) == pytest.approx(float(torch.nn.functional.softplus(
        torch.tensor(-pos_minus_neg))))  # fmt: skip


def test_softmax_over_candidates_by_hand() -> None:
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    got = losses.softmax_over_candidates(pos, neg)
    want = (-(2 - np.log(np.exp(2) + 1 + np.e)) - (0 - np.log(3))) / 2
    assert float(got) == pytest.approx(want)
    # an accidental hit (the positive drawn as a negative) leaves the denominator
    acc = torch.tensor([[False, True], [False, False]])
    got = losses.softmax_over_candidates(pos, neg, acc)
    want = (-(2 - np.log(np.exp(2) + 1)) - (0 - np.log(3))) / 2
    assert float(got) == pytest.approx(want)
    with pytest.raises(ValueError):
        losses.softmax_over_candidates(pos, neg[0])


def test_training_lowers_the_loss() -> None:
    m = model(negatives=8)
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    data = tiny()
    g = torch.Generator().manual_seed(0)
    first = last = None
    for _ in range(30):
        for batch in m.batches(data, 8, g):
            out = m.loss(batch)
            total = sum(out.values())
            opt.zero_grad()
            total.backward()
            opt.step()
            m.invalidate()
            first = float(total.detach()) if first is None else first
            last = float(total.detach())
    assert last is not None and first is not None and last < first
    assert sp.issparse(data.csr("buy"))


@pytest.mark.parametrize("graph", [True, False])
def test_full_loss_is_the_cross_entropy_over_every_unbought_item_by_hand(graph: bool) -> None:
    """loss = 'full': each purchase against every item its user did not buy in training (what
    the full ranking evaluates), and the gradient of the term weights through the dense block
    is the one of the same sum written densely."""
    from polyrec.data.views import BPRBatch

    m = model(graph=graph, loss="full", conversion=False)
    with torch.no_grad():
        m.beta.copy_(torch.tensor([0.5, 0.25, 2.0]))
        m.gamma.copy_(torch.tensor([0.7, -0.3]))
        m.bias.copy_(torch.arange(N_ITEMS, dtype=torch.float32) / 10)
    # u0 bought {0, 1}, u2 bought {1, 2}
    users, pos = torch.tensor([0, 2, 0]), torch.tensor([1, 2, 0])
    batch = BPRBatch(users, pos, torch.zeros(3, dtype=torch.long))
    got = m.loss(batch)["softmax"]
    got.backward()
    grad_beta, grad_gamma = m.beta.grad.clone(), m.gamma.grad.clone()
    m.zero_grad()
    # the same loss from the dense score rows, written out with every term a dense matrix
    eu, ei = m.final_embeddings()
    data = tiny()
    s = torch.from_numpy(knn_similarity(data.csr("buy").astype(np.float64), 3).toarray()).float()
    dense = [torch.from_numpy(data.csr(b).toarray()).float() for b in ("view", "cart", "buy")]
    full = sum(w * (r @ s) for w, r in zip(m.beta, dense, strict=True))
    full = full + m.gamma[0] * dense[0] + m.gamma[1] * dense[1] + m.bias + eu @ ei.T
    bought = {0: {0, 1}, 2: {1, 2}}
    want = torch.tensor(0.0)
    for u, i in zip(users.tolist(), pos.tolist(), strict=True):
        others = [j for j in range(N_ITEMS) if j not in bought[u]]
        logits = torch.cat([full[u, i : i + 1], full[u, others]])
        want = want - torch.log_softmax(logits, 0)[0] / 3
    assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    want.backward()
    torch.testing.assert_close(grad_beta, m.beta.grad)
    torch.testing.assert_close(grad_gamma, m.gamma.grad)


def test_full_loss_refuses_what_it_does_not_combine_with() -> None:
    with pytest.raises(ValueError, match="full"):
        MBHybridConfig(loss="full", propensity=True)
    with pytest.raises(ValueError, match="full"):
        MBHybridConfig(loss="full", user_context=True)


# ----------------------------------------------------------------- optional history features
def viewed_log(hide: str | None = "target", repeat: int = 1) -> TrainData:
    """views: u0 {0, 2 (× repeat)}, u1 {0}, u2 {0, 1}; buys: u0 {0}, u2 {1}, u3 {0}."""
    rows = [(0, 0, 0), *[(0, 2, 0)] * repeat, (1, 0, 0), (2, 0, 0), (2, 1, 0),
            (0, 0, 1), (2, 1, 1), (3, 0, 1)]  # fmt: skip
    u, i, b = (np.array(x) for x in zip(*rows, strict=True))
    log = InteractionLog(
        user=u, item=i, behavior=b.astype(np.int8), behaviors=("view", "buy"), target="buy",
        user_map=IdMap.range(4), item_map=IdMap.range(3), name="viewed",
    )  # fmt: skip
    return TrainData(log, hide=hide)


def history_only(data: TrainData, **cfg: object) -> MBHybrid:
    torch.manual_seed(0)
    params = {"dim": 4, "n_layers": 1, "graph": False, "neighbours": False, "item_bias": False,
              **cfg}  # fmt: skip
    return MBHybrid(MBHybridConfig.model_validate(params)).setup(data)


def test_conversion_feature_and_its_leave_one_out_by_hand() -> None:
    # view users: item 0 {u0, u1, u2}, item 1 {u2}, item 2 {u0}; of them buyers: item 0 {u0},
    # item 1 {u2}; prior 2/5; α = 2: c = (1.8/5, 1.8/3, 0.8/3)
    m = history_only(viewed_log(), conversion=True, conversion_alpha=2.0)
    assert m.n_history == 2  # R_view, R_view · c
    with torch.no_grad():
        m.gamma.copy_(torch.tensor([0.0, 1.0]))
    c = np.array([1.8 / 5, 1.8 / 3, 0.8 / 3])
    expect = viewed_log().csr("view").toarray() * c
    np.testing.assert_allclose(m.scores(torch.arange(4)).numpy(), expect, rtol=1e-6)
    # as training purchases, (u0, 0) and (u2, 1) see their item's rate without themselves:
    # (0 + 0.8) / 5 and (0 + 0.8) / 3 — the rate an unseen purchase of the item would see
    f = m.positive_features(torch.tensor([0, 2, 3]), torch.tensor([0, 1, 0]))
    np.testing.assert_allclose(f[:, 1].numpy(), [0.8 / 5, 0.8 / 3, 0.0], rtol=1e-6)
    np.testing.assert_allclose(f[:, 0].numpy(), [1.0, 1.0, 0.0])
    # hide = "all": a purchase's own history is not seen at all
    m = history_only(viewed_log("all"), conversion=True, conversion_alpha=2.0)
    f = m.positive_features(torch.tensor([0, 2]), torch.tensor([0, 1]))
    assert f.abs().sum() == 0


def test_user_conversion_feature_and_its_leave_one_out_by_hand() -> None:
    # views per user: u0 {0, 2}, u1 {0}, u2 {0, 1}, u3 {}; bought among them: u0 {0}, u2 {1};
    # prior 2/5; α = 2: r = (1.8/4, 0.8/3, 1.8/4, 0.8/2)
    m = history_only(viewed_log(), conversion=True, user_conversion=True, conversion_alpha=2.0)
    assert m.n_history == 3  # R_view, R_view · c, R_view · r
    with torch.no_grad():
        m.gamma.copy_(torch.tensor([0.0, 0.0, 1.0]))
    r = np.array([1.8 / 4, 0.8 / 3, 1.8 / 4, 0.8 / 2])
    expect = viewed_log().csr("view").toarray() * r[:, None]
    np.testing.assert_allclose(m.scores(torch.arange(4)).numpy(), expect, rtol=1e-6)
    # as training purchases, (u0, 0) and (u2, 1) see their user's rate without themselves:
    # (0 + 0.8) / 4 each; the item rates keep their own leave-one-out (column 1)
    f = m.positive_features(torch.tensor([0, 2, 3]), torch.tensor([0, 1, 0]))
    np.testing.assert_allclose(f[:, 2].numpy(), [0.8 / 4, 0.8 / 4, 0.0], rtol=1e-6)
    np.testing.assert_allclose(f[:, 1].numpy(), [0.8 / 5, 0.8 / 3, 0.0], rtol=1e-6)
    # a pair that is not a purchase keeps the full rate: u0's view of item 2
    f = m.pair_features(torch.tensor([0]), torch.tensor([2]))
    np.testing.assert_allclose(f[:, 2].numpy(), [1.8 / 4], rtol=1e-6)
    # 'auto' follows the split as ``conversion`` does
    assert history_only(viewed_log("all"), user_conversion="auto").user_conversion is False
    assert history_only(viewed_log("target"), user_conversion="auto").user_conversion is True


@pytest.mark.parametrize(("hide", "on"), [("target", True), (None, True), ("all", False)])
def test_conversion_auto_follows_the_split(hide: str | None, on: bool) -> None:
    m = history_only(viewed_log(hide))
    assert m.conversion is on and m.n_history == (2 if on else 1)


def test_history_counts_feature_is_log_one_plus_count() -> None:
    m = history_only(viewed_log(repeat=3), history_counts=True, conversion=False)
    assert m.n_history == 2  # R_view, ln(1 + n_view)
    f = m.pair_features(torch.tensor([0, 0, 1, 3]), torch.tensor([2, 0, 0, 0]))
    np.testing.assert_allclose(f[:, 1].numpy(), np.log1p([3, 1, 1, 0]), rtol=1e-6)
    np.testing.assert_allclose(f[:, 0].numpy(), [1, 1, 1, 0])


def test_history_negatives_are_the_users_untargeted_items() -> None:
    # untargeted history: u0 {2} (item 0 was bought), u1 {0}, u2 {0}, u3 none
    m = history_only(viewed_log(), history_negatives=3, conversion=False)
    torch.manual_seed(1)
    items, none = m.history_negatives(torch.tensor([0, 1, 2, 3, 0]), 50)
    assert (items[0] == 2).all() and (items[4] == 2).all()
    assert (items[1] == 0).all() and (items[2] == 0).all()
    assert none[3].all() and not none[[0, 1, 2, 4]].any()
    # they enter the softmax: the loss differs from the one without them, and is finite
    from polyrec.data.views import BPRBatch

    batch = BPRBatch(torch.tensor([0, 2, 3]), torch.tensor([0, 1, 0]), torch.tensor([1, 1, 1]))
    with torch.no_grad():
        m.gamma.copy_(torch.tensor([2.0]))
    torch.manual_seed(0)
    with_hard = m.loss(batch)["softmax"].detach()
    m.config.history_negatives = 0
    torch.manual_seed(0)
    without = m.loss(batch)["softmax"].detach()
    assert torch.isfinite(with_hard) and float(with_hard) > float(without)


def test_history_negatives_need_the_softmax_loss() -> None:
    with pytest.raises(ValueError, match="history_negatives needs loss"):
        MBHybridConfig(loss="bpr", history_negatives=2)


def test_training_with_every_history_feature_lowers_the_loss() -> None:
    m = model(negatives=8, conversion=True, history_counts=True, history_negatives=2)
    assert m.n_history == 6  # (view, cart) × (R_b, ln(1 + n_b), R_b · c_b)
    opt = torch.optim.Adam(m.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    totals = []
    for _ in range(30):
        for batch in m.batches(tiny(), 8, g):
            total = sum(m.loss(batch).values())
            opt.zero_grad()
            total.backward()
            opt.step()
            m.invalidate()
            totals.append(float(total.detach()))
    assert all(np.isfinite(totals)) and totals[-1] < totals[0]
    assert m.gamma.grad is not None and m.gamma.grad.abs().sum() > 0


def test_learned_propensities_by_hand() -> None:
    m = history_only(viewed_log(), propensity=True, conversion=False)
    assert tuple(m.rho.shape) == (1, 3)
    with torch.no_grad():
        m.gamma.copy_(torch.tensor([0.5]))
        m.rho.copy_(torch.tensor([[1.0, -2.0, 3.0]]))
    views = viewed_log().csr("view").toarray()
    want = views * (0.5 + np.array([1.0, -2.0, 3.0]))  # R_view · (γ + ρ_i)
    got = m.scores(torch.arange(4)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    uu, ii = torch.tensor([0, 0, 2, 3]), torch.tensor([0, 2, 1, 1])
    e = torch.zeros(4, m.config.dim)
    np.testing.assert_allclose(m.pair_scores(uu, ii, e, e).detach().numpy(), want[uu, ii])
    # ρ gets a gradient through a training loss, and is penalised
    from polyrec.data.views import BPRBatch

    out = m.loss(BPRBatch(torch.tensor([0, 2]), torch.tensor([0, 1]), torch.tensor([2, 2])))
    sum(out.values()).backward()
    assert m.rho.grad is not None and m.rho.grad.abs().sum() > 0
    assert history_only(viewed_log(), propensity=False).rho.numel() == 0


def test_history_score_feature_is_the_history_rule_with_leave_one_out() -> None:
    # view counts: u0 {0: 1, 2: 3}, u1 {0: 1}, u2 {0: 1, 1: 1}; users of any behavior per item:
    # item 0 {u0, u1, u2, u3} (4), item 1 {u2} (1), item 2 {u0} (1); buyers: item 0 {u0, u3},
    # item 1 {u2}; prior 3 / 6; α = 2: c = ((2 + 1) / 6, (1 + 1) / 3, (0 + 1) / 3)
    m = history_only(viewed_log(repeat=3), history_score=True, conversion=False,
                     conversion_alpha=2.0)  # fmt: skip
    assert m.n_history == 2  # R_view, n · c
    with torch.no_grad():
        m.gamma.copy_(torch.tensor([0.0, 1.0]))
    c = np.array([3 / 6, 2 / 3, 1 / 3])
    counts = np.array([[1, 0, 3], [1, 0, 0], [1, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(m.scores(torch.arange(4)).numpy(), counts * c, rtol=1e-6)
    # as training purchases, (u0, 0) and (u2, 1) see the rate without themselves as buyers
    f = m.positive_features(torch.tensor([0, 2]), torch.tensor([0, 1]))
    np.testing.assert_allclose(f[:, 1].numpy(), [1 * (2 / 6), 1 * (1 / 3)], rtol=1e-5)


def test_popularity_term_with_its_leave_one_out_for_purchases() -> None:
    m = model(graph=False, item_bias=False, popularity=True)
    base = model(graph=False, item_bias=False)
    # distinct users per item over every behavior: 0 → {0, 1, 2, 3}, 1 → {0, 1, 2},
    # 2 → {0, 1, 2}, 3 → {3}, 4 → {0}
    n = np.array([4.0, 3.0, 3.0, 1.0, 1.0])
    pi, pi_loo = np.log1p(n) / np.log1p(4.0), np.log1p(n - 1) / np.log1p(4.0)
    np.testing.assert_allclose(m.pop.numpy(), pi, rtol=1e-6)
    np.testing.assert_allclose(m.pop_loo.numpy(), pi_loo, rtol=1e-6)
    with torch.no_grad():
        m.pop_weight.fill_(0.8)
        for a, b in ((m.beta, base.beta), (m.gamma, base.gamma)):
            a.copy_(b)
    users = torch.arange(N_USERS)
    got = (m.scores(users) - base.scores(users)).detach().numpy()
    np.testing.assert_allclose(got, np.tile(0.8 * pi, (N_USERS, 1)), rtol=1e-5, atol=1e-6)
    # a training purchase's own user is out of its item's count
    u, i = torch.tensor([1, 3]), torch.tensor([2, 3])
    feats = m.positive_features(u, i)
    diff = m.feature_scores(u, i, feats, positive=True) - base.feature_scores(u, i, feats)
    np.testing.assert_allclose(diff.detach().numpy(), 0.8 * pi_loo[[2, 3]], rtol=1e-5)
