"""EHCF (Chen et al., AAAI 2020): the whole-data term by brute force, the transfer of the
prediction vectors, and the non-sampling loss against its definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import TrainData
from polyrec.errors import ConfigError
from polyrec.models.ehcf import EHCF, EHCFConfig, whole_data_term

# behaviors view (0), cart (1), buy (2); users 0-3, items 0-4
ROWS = [(0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 1, 2), (1, 2, 0), (1, 2, 2), (2, 3, 0), (2, 4, 1),
        (2, 4, 2), (3, 0, 0)]  # fmt: skip


def tiny() -> TrainData:
    u, i, b = (np.array(x) for x in zip(*ROWS, strict=True))
    log = InteractionLog(
        user=u, item=i, behavior=b.astype(np.int8), behaviors=("view", "cart", "buy"),
        target="buy", user_map=IdMap.range(4), item_map=IdMap.range(5), name="tiny",
    )  # fmt: skip
    return TrainData(log)


def model(**cfg: object) -> EHCF:
    torch.manual_seed(0)
    return EHCF(EHCFConfig.model_validate({"dim": 3, "dropout": 0.0, **cfg})).setup(tiny())


def test_whole_data_term_equals_the_sum_over_every_pair() -> None:
    g = torch.Generator().manual_seed(0)
    p, q, h = (
        torch.randn(4, 3, generator=g),
        torch.randn(6, 3, generator=g),
        torch.randn(3, generator=g),
    )
    brute = sum(float((h @ (p[u] * q[i])) ** 2) for u in range(4) for i in range(6))
    assert float(whole_data_term(q.T @ q, p.T @ p, h)) == pytest.approx(brute, rel=1e-5)


def test_prediction_vectors_are_transferred_along_the_chain() -> None:
    m = model()
    _, h_cart, h_buy = m.prediction_vectors()
    # pairs in order: (view→cart), (view→buy), (cart→buy)
    assert m.pairs == [(0, 1), (0, 2), (1, 2)]
    w, r = m.w.detach(), m.r.detach()
    torch.testing.assert_close(h_cart, w[0] @ m.h1 + r[0])
    torch.testing.assert_close(h_buy, w[1] @ m.h1 + r[1] + w[2] @ h_cart + r[2])
    # ranking: ŷ_buy(u, i) = h_buyᵀ (p_u ⊙ q_i)
    p, q = m.user_emb.weight.detach(), m.item_emb.weight.detach()
    want = (p * h_buy.detach()) @ q.T
    torch.testing.assert_close(m.scores(torch.arange(4)), want)


def test_loss_is_the_weighted_squared_error_over_all_pairs() -> None:
    c = {"view": 0.2, "cart": 0.05, "buy": 0.1}
    lam = {"view": 0.3, "cart": 0.5, "buy": 0.2}
    m = model(negative_weight=c, task_weight=lam, transfer_reg=0.0)
    users = torch.tensor([0, 2])
    out = m.loss(users)
    p, q = m.user_emb.weight.detach(), m.item_emb.weight.detach()
    for k, (b, h) in enumerate(zip(m.chain, m.prediction_vectors(), strict=True)):
        pos = {(u, i) for u, i, bb in ROWS if bb == k}
        total = 0.0
        for u in users.tolist():
            for i in range(5):
                y = float(h.detach() @ (p[u] * q[i]))
                # Σ_pos (1 − ŷ)² + Σ_neg c ŷ², without the constant Σ_pos 1
                total += (1 - y) ** 2 - 1 if (u, i) in pos else c[b] * y**2
        assert float(out[f"l_{b}"]) == pytest.approx(lam[b] * total, rel=1e-4, abs=1e-7)
    assert float(out["reg"]) == 0.0
    m = model(transfer_reg=0.5)
    assert float(m.loss(users)["reg"]) == pytest.approx(0.25 * float(m.w.square().sum()))


def test_defaults_batches_and_bad_names() -> None:
    m = model()
    assert m.lam.tolist() == pytest.approx([1 / 6, 4 / 6, 1 / 6])
    assert m.c_neg.tolist() == pytest.approx([0.01] * 3)
    # users with a training purchase only: 0, 1, 2 (user 3 only viewed)
    got = torch.cat(list(m.batches(tiny(), 2, torch.Generator().manual_seed(0))))
    assert sorted(got.tolist()) == [0, 1, 2] and m.n_batches(tiny(), 2) == 2
    with pytest.raises(ConfigError, match="negative_weight"):
        model(negative_weight={"click": 0.1})


def test_training_lowers_the_loss() -> None:
    m = model(dropout=0.5).train()
    opt = torch.optim.Adagrad(m.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)
    totals = []
    for _ in range(60):
        for users in m.batches(tiny(), 4, g):
            total = sum(m.loss(users).values())
            opt.zero_grad()
            total.backward()
            opt.step()
            m.invalidate()
            totals.append(float(total.detach()))
    assert totals[-1] < totals[0]
