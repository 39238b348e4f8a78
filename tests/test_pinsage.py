"""PinSage (Ying et al., KDD 2018): importance neighbourhoods from random walks, the CONVOLVE
layer with importance pooling, and the max-margin loss against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from polyrec import losses
from polyrec.data.graphs import bipartite_adjacency
from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import BPRBatch, TrainData
from polyrec.models.pinsage import PinSage, PinSageConfig, importance_neighbourhoods

# users u0, u1, u2 (u2 without edges); items i0, i1: u0-i0, u0-i1, u1-i1 (nodes: users first)
R = sp.csr_matrix(np.array([[1, 1], [0, 1], [0, 0]], dtype=np.float32))


def alpha(**kw: object) -> np.ndarray:
    args = {"n_walks": 20000, "walk_length": 2, "top": 10, "seed": 0, **kw}
    return importance_neighbourhoods(bipartite_adjacency(R), **args).toarray()  # type: ignore[arg-type]


def test_neighbours_are_weighted_by_their_share_of_the_walks_visits() -> None:
    a = alpha()
    u0, u1, u2, i0, i1 = range(5)
    # from i0: step 1 always u0; step 2 i0 (itself, not counted) or i1, each half the time
    assert a[i0, u0] == pytest.approx(2 / 3, abs=0.01)
    assert a[i0, i1] == pytest.approx(1 / 3, abs=0.01)
    # from u1: step 1 i1; step 2 u0 or u1 (itself): i1 counts 1, u0 one half
    assert a[u1, i1] == pytest.approx(2 / 3, abs=0.01) and a[u1, u0] == pytest.approx(
        1 / 3, abs=0.01
    )
    assert a[u2].sum() == 0  # no edges, no neighbours
    assert np.all(np.diag(a) == 0)
    np.testing.assert_allclose(a[[u0, u1, i0, i1]].sum(1), 1.0, rtol=1e-6)


def test_only_the_most_visited_neighbours_are_kept_and_renormalised() -> None:
    a = alpha(top=1)
    assert a[3, 0] == 1.0 and a[3].sum() == 1.0  # i0 keeps u0 only
    same = alpha(n_users=3)  # items keep items, users keep users
    assert same[3, 4] == 1.0 and same[3, :3].sum() == 0
    assert same[1, 0] == 1.0 and same[1, 3:].sum() == 0


def tiny() -> TrainData:
    rows = [(0, 0), (0, 1), (1, 1), (2, 0), (2, 2)]
    u, i = (np.array(x) for x in zip(*rows, strict=True))
    log = InteractionLog(
        user=u, item=i, behavior=np.zeros(len(u), np.int8), behaviors=("buy",), target="buy",
        user_map=IdMap.range(3), item_map=IdMap.range(3), name="tiny",
    )  # fmt: skip
    return TrainData(log)


def test_each_layer_is_convolve_and_the_output_the_final_dense_layers() -> None:
    torch.manual_seed(0)
    m = PinSage(PinSageConfig(dim=4, n_layers=2, n_walks=50)).setup(tiny())
    a = m.imp.to_dense()
    h = torch.cat([m.user_emb.weight, m.item_emb.weight])
    for q, w in zip(m.q_lin, m.w_lin, strict=True):
        n = a @ torch.relu(h @ q.weight.T + q.bias)  # importance pooling
        h = torch.relu(torch.cat([h, n], 1) @ w.weight.T + w.bias)
        h = h / h.norm(dim=1, keepdim=True).clamp(min=1e-12)  # a dead row stays 0
    z = torch.relu(h @ m.g1.weight.T + m.g1.bias) @ m.g2.weight.T
    users, items = m.final_embeddings()
    torch.testing.assert_close(torch.cat([users, items]), z)
    torch.testing.assert_close(m.scores(torch.arange(3)), (users @ items.T).detach())


def test_max_margin_is_the_mean_hinge_without_the_ignored_entries() -> None:
    pos = torch.tensor([1.0, 0.0])
    neg = torch.tensor([[0.95, 0.5, 2.0], [0.05, -1.0, 0.0]])
    # hinges (Δ = 0.1): [0.05, 0, 1.1], [0.15, 0, 0.1]
    assert float(losses.max_margin(pos, neg, 0.1)) == pytest.approx(1.4 / 6)
    ignore = torch.tensor([[False, False, True], [False, False, False]])
    assert float(losses.max_margin(pos, neg, 0.1, ignore)) == pytest.approx(0.3 / 5)
    assert float(losses.max_margin(pos, neg[:, 0], 0.1)) == pytest.approx(0.1)


def test_the_loss_ranks_each_positive_against_the_shared_negatives() -> None:
    torch.manual_seed(0)
    m = PinSage(PinSageConfig(dim=4, n_walks=50, negatives=7, reg=0.0)).setup(tiny())
    batch = BPRBatch(torch.tensor([0, 2]), torch.tensor([1, 2]), torch.tensor([2, 1]))
    torch.manual_seed(5)
    out = m.loss(batch)
    torch.manual_seed(5)
    shared = torch.randint(3, (7,))
    users, items = m.final_embeddings()
    pos = (users[batch.user] * items[batch.pos]).sum(-1)
    neg = users[batch.user] @ items[shared].T
    own = shared[None, :] == batch.pos[:, None]
    want = (F.relu(neg - pos[:, None] + 0.1) * ~own).sum() / (~own).sum()
    torch.testing.assert_close(out["max_margin"], want)
