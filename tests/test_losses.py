"""The loss functions against hand-computed examples (arithmetic written out)."""

from __future__ import annotations

import math

import pytest
import torch

from polyrec.losses import bpr, info_nce, l2_reg


def test_bpr_hand_computed() -> None:
    pos = torch.tensor([2.0, 0.0])
    neg = torch.tensor([0.0, 1.0])
    # differences 2 and -1: -ln σ(2) = ln(1 + e^-2) = 0.126928; -ln σ(-1) = ln(1 + e) = 1.313262
    expected = (math.log1p(math.exp(-2.0)) + math.log1p(math.exp(1.0))) / 2  # = 0.720095
    assert bpr(pos, neg).item() == pytest.approx(expected, rel=1e-6)
    assert expected == pytest.approx(0.720095, abs=1e-6)


def test_bpr_equal_scores_is_ln2_and_stable() -> None:
    assert bpr(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2.0))
    big = bpr(torch.tensor([0.0]), torch.tensor([1000.0]))  # -ln σ(-1000) = 1000, no inf
    assert big.item() == pytest.approx(1000.0)


def test_bpr_broadcasts_over_several_negatives() -> None:
    pos = torch.tensor([1.0])
    neg = torch.tensor([[1.0, 3.0]])
    # diffs 0 and -2: (ln 2 + ln(1 + e^2)) / 2
    expected = (math.log(2.0) + math.log1p(math.exp(2.0))) / 2
    assert bpr(pos[:, None], neg).item() == pytest.approx(expected, rel=1e-6)


def test_l2_reg_hand_computed() -> None:
    a = torch.tensor([[1.0, 2.0]])
    b = torch.tensor([[3.0]])
    # 0.5 · (1 + 4 + 9) / 2 = 3.5
    assert l2_reg(a, b, batch_size=2).item() == pytest.approx(3.5)
    with pytest.raises(ValueError):
        l2_reg(batch_size=2)


def test_info_nce_identity_pairs() -> None:
    x = torch.eye(2)
    # logits = I / τ; each row: -ln(e^{1/τ} / (e^{1/τ} + e^0)) = ln(1 + e^{-1/τ})
    assert info_nce(x, x, 1.0).item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)
    assert info_nce(x, x, 0.5).item() == pytest.approx(math.log1p(math.exp(-2.0)), rel=1e-6)
    # cosine similarity: rescaling rows changes nothing
    scaled = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    assert info_nce(scaled, x, 1.0).item() == pytest.approx(math.log1p(math.exp(-1.0)), rel=1e-6)


def test_info_nce_hand_computed() -> None:
    anchor = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # row 2 normalises to (1/√2, 1/√2)
    r = 1 / math.sqrt(2)
    # logits (τ = 1): [[1, r], [0, r]]
    # row 1: -ln(e^1 / (e^1 + e^r)) = ln(1 + e^{r-1}) = ln(1 + 0.746102) = 0.557386
    # row 2: -ln(e^r / (e^0 + e^r)) = ln(1 + e^{-r})  = ln(1 + 0.493069) = 0.400834
    row1 = math.log1p(math.exp(r - 1))
    row2 = math.log1p(math.exp(-r))
    assert row1 == pytest.approx(0.557386, abs=1e-6)
    assert row2 == pytest.approx(0.400834, abs=1e-6)
    # mean = (0.557386 + 0.400834) / 2 = 0.479110
    assert info_nce(anchor, positive, 1.0).item() == pytest.approx(0.479110, abs=1e-6)
    assert (row1 + row2) / 2 == pytest.approx(0.479110, abs=1e-6)


def test_info_nce_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        info_nce(torch.ones(2, 3), torch.ones(3, 3), 0.2)
    with pytest.raises(ValueError):
        info_nce(torch.ones(2, 3), torch.ones(2, 3), 0.0)


def test_info_nce_gradient_flows() -> None:
    a = torch.randn(5, 4, requires_grad=True)
    p = torch.randn(5, 4, requires_grad=True)
    info_nce(a, p, 0.2).backward()
    assert a.grad is not None and p.grad is not None
    assert torch.isfinite(a.grad).all() and torch.isfinite(p.grad).all()
