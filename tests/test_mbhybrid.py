"""MB-Hybrid (polyrec's multi-behavior model): its terms by hand, the training targets that
mirror the split, and the candidate softmax."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from polyrec import losses
from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import TrainData
from polyrec.models.itemknn import knn_similarity
from polyrec.models.mbhybrid import MBHybrid, MBHybridConfig

N_USERS, N_ITEMS = 4, 5


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


def model(**cfg: object) -> MBHybrid:
    torch.manual_seed(0)
    params = {"dim": 4, "n_layers": 1, "knn_k": 3, **cfg}
    return MBHybrid(MBHybridConfig.model_validate(params)).setup(tiny())


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
                         neighbours=False, item_bias=False, loss="bpr")  # fmt: skip
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
