"""NGCF (Wang et al., SIGIR 2019): Eq. 7-10 recomputed densely on a hand-made graph, the code's
adjacency, the dropouts and the L2 term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import BPRBatch, TrainData
from polyrec.models.ngcf import NGCF, NGCFConfig, self_loop_row_normalized

# buys: u0 {0, 1}, u1 {1}, u2 {1, 2}
ROWS = [(0, 0), (0, 1), (1, 1), (2, 1), (2, 2)]


def tiny() -> TrainData:
    u, i = (np.array(x) for x in zip(*ROWS, strict=True))
    log = InteractionLog(
        user=u, item=i, behavior=np.zeros(len(u), dtype=np.int8), behaviors=("buy",),
        target="buy", user_map=IdMap.range(3), item_map=IdMap.range(3), name="tiny",
    )  # fmt: skip
    return TrainData(log)


def dense_a() -> np.ndarray:
    r = np.zeros((3, 3))
    for u, i in ROWS:
        r[u, i] = 1
    return np.block([[np.zeros((3, 3)), r], [r.T, np.zeros((3, 3))]])


def model(**cfg: object) -> NGCF:
    torch.manual_seed(0)
    params = {"dim": 2, "layers": [2], "message_dropout": 0.0, **cfg}
    m = NGCF(NGCFConfig.model_validate(params)).setup(tiny())
    return m.eval()


def leaky(x: np.ndarray, s: float = 0.2) -> np.ndarray:
    return np.where(x > 0, x, s * x)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@pytest.mark.parametrize("separate", [False, True])
def test_paper_propagation_by_hand(separate: bool) -> None:
    m = model(separate_activations=separate, bias=True)
    with torch.no_grad():
        for lin in [*m.w_sum, *m.w_int]:
            lin.bias.normal_()
    e0 = torch.cat([m.user_emb.weight, m.item_emb.weight]).detach().numpy()
    w1, b1 = m.w_sum[0].weight.detach().numpy(), m.w_sum[0].bias.detach().numpy()
    w2, b2 = m.w_int[0].weight.detach().numpy(), m.w_int[0].bias.detach().numpy()
    a = dense_a()
    d = a.sum(1)
    lap = a / np.sqrt(np.outer(d, d))  # Eq. 8: D^{-1/2} A D^{-1/2}
    summed = (lap + np.eye(6)) @ e0 @ w1.T + b1  # (L + I) E W₁
    inter = ((lap @ e0) * e0) @ w2.T + b2  # (L E ⊙ E) W₂
    e1 = leaky(summed) + leaky(inter) if separate else leaky(summed + inter)  # Eq. 7
    want = np.concatenate([e0, unit(e1)], axis=1)  # Eq. 9 (layers normalised)
    users, items = m.final_embeddings()
    got = torch.cat([users, items]).detach().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Eq. 10: inner products of the final representations
    s = m.scores(torch.arange(3)).numpy()
    np.testing.assert_allclose(s, want[:3] @ want[3:].T, rtol=1e-5, atol=1e-6)


def test_code_adjacency_is_row_normalised_with_self_loops() -> None:
    r = dense_a()[:3, 3:]
    a = self_loop_row_normalized(r).toarray()
    deg = dense_a().sum(1)
    np.testing.assert_allclose(a.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.diag(a), 1 / (deg + 1), rtol=1e-6)
    np.testing.assert_allclose(a, (dense_a() + np.eye(6)) / (deg + 1)[:, None], rtol=1e-6)
    m = model(adjacency="code", normalize_layers=False)
    e0 = torch.cat([m.user_emb.weight, m.item_emb.weight]).detach().numpy()
    w1, w2 = m.w_sum[0].weight.detach().numpy(), m.w_int[0].weight.detach().numpy()
    side = a @ e0
    want = leaky(side @ w1.T + (side * e0) @ w2.T)
    users, items = m.final_embeddings()
    got = torch.cat([users, items]).detach().numpy()[:, 2:]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_dropouts_act_in_training_only() -> None:
    m = model(message_dropout=0.5, node_dropout=0.5, layers=[4, 4], dim=4)
    a1 = torch.cat(m.final_embeddings()).detach()
    a2 = torch.cat(m.final_embeddings()).detach()
    assert torch.equal(a1, a2)  # eval: no dropout
    m.train()
    torch.manual_seed(1)
    b1 = torch.cat(m.final_embeddings()).detach()
    b2 = torch.cat(m.final_embeddings()).detach()
    assert not torch.equal(b1, b2) and not torch.equal(b1, a1)
    # the layer-0 columns are never dropped
    assert torch.equal(b1[:, :4], a1[:, :4])


def test_l2_term_on_final_or_ego_embeddings() -> None:
    batch = BPRBatch(torch.tensor([0, 2]), torch.tensor([1, 2]), torch.tensor([2, 0]))
    for reg_on in ("final", "ego"):
        m = model(reg=0.5, reg_on=reg_on)
        out = m.loss(batch)
        users, items = m.final_embeddings()
        if reg_on == "final":
            rows = [users[batch.user], items[batch.pos], items[batch.neg]]
        else:
            rows = [m.user_emb(batch.user), m.item_emb(batch.pos), m.item_emb(batch.neg)]
        want = 0.5 * sum(float((t**2).sum()) for t in rows) / 2 / 2
        assert float(out["reg"]) == pytest.approx(want, rel=1e-5)
        pos = (users[batch.user] * items[batch.pos]).sum(-1)
        neg = (users[batch.user] * items[batch.neg]).sum(-1)
        bpr = float(torch.nn.functional.softplus(neg - pos).mean())
        assert float(out["bpr"]) == pytest.approx(bpr, rel=1e-5)


def test_training_lowers_the_loss_with_both_adjacencies() -> None:
    for adjacency in ("paper", "code"):
        m = model(adjacency=adjacency, layers=[4, 4], dim=4, node_dropout=0.1).train()
        opt = torch.optim.Adam(m.parameters(), lr=0.05)
        g = torch.Generator().manual_seed(0)
        totals = []
        for _ in range(40):
            for batch in m.batches(tiny(), 8, g):
                total = sum(m.loss(batch).values())
                opt.zero_grad()
                total.backward()
                opt.step()
                m.invalidate()
                totals.append(float(total.detach()))
        assert totals[-1] < totals[0], adjacency
