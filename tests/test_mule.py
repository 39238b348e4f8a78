"""MuLe beyond the shared contract (``tests/test_contract.py`` runs it through the registry): the
whole cascade recomputed with dense matrices on a tiny log, the graph partition, the grouped
edge softmax, the MGA quirk of the released code and the single-behavior fallback."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import TrainData
from polyrec.models.mule import MuLe, MuLeConfig, edge_softmax

N_USERS, N_ITEMS = 4, 5
# (user, item, behavior) with behaviors view 0, cart 1, buy 2: u0 views 0,1,2 and buys 0;
# u1 views 1,3, carts 1,3, buys 3; u2 views 0,2,4, buys 2; u3 views 3,4 and carts 4
EVENTS = [
    (0, 0, 0), (0, 1, 0), (0, 2, 0), (1, 1, 0), (1, 3, 0), (2, 0, 0), (2, 2, 0), (2, 4, 0),
    (3, 3, 0), (3, 4, 0), (0, 0, 1), (1, 1, 1), (1, 3, 1), (3, 4, 1),
    (0, 0, 2), (1, 3, 2), (2, 2, 2),
]  # fmt: skip
BEHAVIORS = ("view", "cart", "buy")


def tiny(events: list[tuple[int, int, int]] = EVENTS) -> TrainData:
    u, i, b = (np.array(c) for c in zip(*events, strict=True))
    used = tuple(BEHAVIORS[k] for k in sorted(set(b.tolist())))
    codes = np.array([used.index(BEHAVIORS[k]) for k in b], dtype=np.int8)
    log = InteractionLog(
        user=u.astype(np.int64), item=i.astype(np.int64), behavior=codes, behaviors=used,
        target="buy", user_map=IdMap.range(N_USERS), item_map=IdMap.range(N_ITEMS), name="hand",
    )  # fmt: skip
    return TrainData(log)


def make(data: TrainData, **params: object) -> MuLe:
    torch.manual_seed(0)
    cfg = MuLeConfig.model_validate({"dim": 6, "light_layers": 2, "tda_layers": 2, **params})
    return MuLe(cfg).setup(data)


def r_of(pred: object) -> np.ndarray:
    r = np.zeros((N_USERS, N_ITEMS))
    for u, i, b in EVENTS:
        if pred(u, i, b):
            r[u, i] = 1.0
    return r


def bip(r: np.ndarray) -> np.ndarray:
    return np.block([[np.zeros((N_USERS, N_USERS)), r], [r.T, np.zeros((N_ITEMS, N_ITEMS))]])


def sym_norm(a: np.ndarray) -> torch.Tensor:
    deg = a.sum(1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    return torch.tensor(inv[:, None] * a * inv[None, :], dtype=torch.float32)


def dense_light(a: np.ndarray, x: torch.Tensor, layers: int) -> torch.Tensor:
    adj, out, h = sym_norm(a), x, x
    for depth in range(1, layers + 1):
        h = F.normalize(adj @ h, dim=-1)
        out = out + h / depth
    return out


def dense_tda(a: np.ndarray, x: torch.Tensor, guide: torch.Tensor, layers: int, form: str):
    """TDA by dense matrices: weights w[k, q] on the edge k → q (message x[k] added at q)."""
    mask = torch.tensor(a > 0)
    out, h = x, x
    for depth in range(1, layers + 1):
        if form == "code":  # score ⟨e_t[k], h[q]⟩, softmax over the sender k's row
            s = (guide @ h.T).masked_fill(~mask, -torch.inf)
            w = torch.nan_to_num(torch.softmax(s, dim=1))
        else:  # score ⟨e_t[q], h[k]⟩, softmax over the receiver q's column
            s = (h @ guide.T).masked_fill(~mask, -torch.inf)
            w = torch.nan_to_num(torch.softmax(s, dim=0))
        h = F.normalize(w.T @ h, dim=-1)
        out = out + h / depth
    return out


def dense_attend(lin: torch.nn.Linear, key: torch.Tensor, cands: list[torch.Tensor]):
    scores = torch.stack([lin(torch.cat([key, c], -1)).squeeze(-1) for c in cands], 1)
    w = torch.softmax(scores, 1)
    return sum(w[:, j : j + 1] * c for j, c in enumerate(cands))


@pytest.mark.parametrize("form", ["code", "receiver"])
def test_cascade_equals_a_dense_recomputation(form: str) -> None:
    m = make(tiny(), tda_form=form)
    x0 = torch.cat([m.user_emb.weight, m.item_emb.weight]).detach()
    buy = r_of(lambda u, i, b: b == 2)
    uni = dense_light(bip(r_of(lambda u, i, b: True)), x0, 2)
    per = {k: dense_light(bip(r_of(lambda u, i, b, k=k: b == k)), uni, 2) for k in range(3)}
    e_t = per[2]
    inter, comp = [], []
    for k in (0, 1):
        rb = r_of(lambda u, i, b, k=k: b == k)
        inter.append(dense_light(bip(rb * buy), per[k], 2))
        comp.append(dense_tda(bip(rb * (1 - buy)), per[k], e_t, 2, form))
    with torch.no_grad():
        z1 = dense_attend(m.mga[0], e_t, [per[0], per[1], e_t])
        expect = dense_attend(m.mga[1], z1, comp + inter)
        users, items = m.final_embeddings()
    torch.testing.assert_close(torch.cat([users, items]), expect, rtol=1e-4, atol=1e-5)


def test_target_conditioned_graphs_partition_each_auxiliary_graph() -> None:
    m = make(tiny())
    for b in ("view", "cart"):
        nodes, pattern = getattr(m, f"tnodes_{b}"), getattr(m, f"tda_{b}")
        dst = nodes[getattr(m, f"row_{b}")]  # entry (receiver, sender)
        src = nodes[pattern.col_indices()]
        comp = {(int(s), int(d)) for s, d in zip(src, dst, strict=True)}
        code = BEHAVIORS.index(b)
        pairs = {(u, i) for u, i, k in EVENTS if k == code}
        bought = {(u, i) for u, i, k in EVENTS if k == 2}
        expect = {(u, N_USERS + i) for u, i in pairs - bought}
        assert {e for e in comp if e[0] < N_USERS} == expect
        assert {(d, s) for s, d in comp if s >= N_USERS} == expect  # both directions
        inter, nodes = getattr(m, f"adj_and_{b}").to_dense(), getattr(m, f"nodes_and_{b}")
        nz = {(int(nodes[r]), int(nodes[c]) - N_USERS) for r, c in inter.nonzero()}
        assert {(u, i) for u, i in nz if u < N_USERS} == pairs & bought


def test_edge_softmax_sums_to_one_within_each_group() -> None:
    scores = torch.tensor([1.0, 2.0, 3.0, 50.0, -4.0, 0.5])
    group = torch.tensor([0, 0, 2, 2, 2, 3])
    w = edge_softmax(scores, group, 5)
    sums = torch.zeros(5).index_add(0, group, w)
    torch.testing.assert_close(sums, torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0]))
    torch.testing.assert_close(w[:2], torch.softmax(scores[:2], 0))
    assert torch.isfinite(w).all()  # the max shift keeps a large score finite


def test_without_activation_the_mga_key_is_inert_as_in_the_released_code() -> None:
    """'none': the key and bias cancel in the softmax, so stage 1 gets no gradient; a
    non-linearity makes the key count."""
    for act, inert in (("none", True), ("tanh", False)):
        m = make(tiny(), mga_activation=act)
        users, items = m.final_embeddings()
        (users.sum() + (items**2).sum()).backward()
        g = m.mga[0].weight.grad
        assert g is not None
        assert (g.abs().max() < 1e-6) == inert, act


def test_single_behavior_data_reduces_to_the_target_encoder() -> None:
    buys = [e for e in EVENTS if e[2] == 2]
    m = make(tiny(buys))
    x0 = torch.cat([m.user_emb.weight, m.item_emb.weight]).detach()
    a = bip(r_of(lambda u, i, b: b == 2))
    expect = dense_light(a, dense_light(a, x0, 2), 2)
    with torch.no_grad():
        users, items = m.final_embeddings()
    torch.testing.assert_close(torch.cat([users, items]), expect, rtol=1e-4, atol=1e-5)


def test_edge_products_match_gathers_in_value_and_gradient() -> None:
    """edge_dot / edge_spmm (no [E, d] gather) against the plain gather-and-scatter forms."""
    from polyrec.data.graphs import edge_pattern
    from polyrec.models.propagation import edge_dot, edge_spmm

    gen = torch.Generator().manual_seed(0)
    r = (torch.rand(6, 7, generator=gen) < 0.4).float().numpy()
    pattern, rows, rev = edge_pattern(r)
    n = pattern.shape[0]
    assert torch.equal(
        rows, torch.repeat_interleave(torch.arange(n), pattern.crow_indices().diff())
    )
    cols = pattern.col_indices()
    assert torch.equal(rows[rev], cols) and torch.equal(cols[rev], rows)  # the transposes
    x, y = (torch.randn(n, 3, generator=gen, requires_grad=True) for _ in range(2))
    v = torch.rand(len(cols), generator=gen, requires_grad=True)
    w1, w2 = torch.randn(len(cols), generator=gen), torch.randn(n, 3, generator=gen)
    ours = (edge_dot(pattern, rev, x, y) * w1).sum() + (edge_spmm(pattern, rev, v, x) * w2).sum()
    g_ours = torch.autograd.grad(ours, (x, y, v))
    plain = ((x[rows] * y[cols]).sum(-1) * w1).sum()
    plain = plain + (torch.zeros(n, 3).index_add(0, rows, v.unsqueeze(1) * x[cols]) * w2).sum()
    g_plain = torch.autograd.grad(plain, (x, y, v))
    torch.testing.assert_close(ours, plain)
    for a, b in zip(g_ours, g_plain, strict=True):
        torch.testing.assert_close(a, b)
