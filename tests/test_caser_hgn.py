"""Caser and HGN: their user vectors by hand (numpy) on a tiny history."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interest_contract import sequence_log
from polyrec.models import TrainData, build_model
from polyrec.models.caser import Caser, CaserConfig
from polyrec.models.hgn import HGN


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@pytest.fixture(scope="module")
def data() -> TrainData:
    return TrainData(sequence_log(n_users=20))


def test_caser_convolutions_by_hand(data: TrainData) -> None:
    """Horizontal filters: ReLU of each window's sum of E ⊙ F, max over windows, per height;
    vertical filters: Σ_l F̃_l E_l; z = ReLU(W [õ; o] + b). A history shorter than L is
    left-padded with the zero embedding."""
    torch.manual_seed(0)
    model = build_model("caser", {"dim": 3, "max_len": 3, "n_h": 2, "n_v": 2}, data)
    assert isinstance(model, Caser)
    model.eval()
    hist = torch.tensor([[0, 4, 7, 2], [0, 0, 0, 5]])  # left-padded; user 2 has one item
    lengths = torch.tensor([3, 1])
    with torch.no_grad():
        got = model.interests(hist, lengths)[:, 0].numpy()
    emb = model.item_emb.weight.detach().numpy()
    fv = model.vertical.detach().numpy()  # [n_v, L]
    w, b = model.fc.weight.detach().numpy(), model.fc.bias.detach().numpy()
    for row, items in enumerate([[4, 7, 2], [0, 0, 5]]):  # the latest L = 3 positions
        e = emb[items]  # [L, d]
        parts = [(fv @ e).reshape(-1)]  # õ: [n_v, d] flattened
        for h, conv in enumerate(model.horizontal, start=1):
            f = conv.weight.detach().numpy()  # [n_h, d, h]
            cb = conv.bias.detach().numpy()
            windows = [
                np.maximum(np.einsum("kdh,hd->k", f, e[i : i + h]) + cb, 0.0)
                for i in range(3 - h + 1)
            ]
            parts.append(np.max(windows, axis=0))
        z = np.maximum(w @ np.concatenate(parts) + b, 0.0)
        np.testing.assert_allclose(got[row], z, rtol=1e-5, atol=1e-6)


def test_caser_needs_a_filter() -> None:
    with pytest.raises(ValueError, match="at least one filter"):
        CaserConfig(n_h=0, n_v=0)


def test_caser_without_horizontal_filters(data: TrainData) -> None:
    model = build_model("caser", {"dim": 4, "max_len": 3, "n_h": 0, "n_v": 2}, data)
    assert isinstance(model, Caser) and len(model.horizontal) == 0
    assert model.fc.in_features == 2 * 4
    v = model.interests(torch.tensor([[1, 2, 3]]), torch.tensor([3]))
    assert v.shape == (1, 1, 4)


@pytest.mark.parametrize("item_item", [True, False])
def test_hgn_gates_by_hand(data: TrainData, item_item: bool) -> None:
    """Feature gate E ⊗ σ(E W₁ + b), instance gate a = σ(E_f w₃) (padding gated out), the gated
    average Σ a E_f / Σ a, plus Σ_l e_l (the item–item product) when on."""
    torch.manual_seed(0)
    model = build_model("hgn", {"dim": 4, "max_len": 3, "item_item": item_item}, data)
    assert isinstance(model, HGN)
    model.eval()
    hist = torch.tensor([[9, 4, 7, 2], [0, 0, 3, 5]])  # user 1: two items, one padding slot
    lengths = torch.tensor([4, 2])
    with torch.no_grad():
        got = model.interests(hist, lengths)[:, 0].numpy()
    emb = model.item_emb.weight.detach().numpy()
    w1 = model.feature_gate.weight.detach().numpy()
    b1 = model.feature_gate.bias.detach().numpy()
    w3 = model.instance_gate.weight.detach().numpy()[0]
    for row, items in enumerate([[4, 7, 2], [3, 5]]):  # the latest L = 3 real items
        e = emb[items]
        ef = e * sigmoid(e @ w1.T + b1)
        a = sigmoid(ef @ w3)
        want = (a[:, None] * ef).sum(0) / a.sum()
        if item_item:
            want = want + e.sum(0)
        np.testing.assert_allclose(got[row], want, rtol=1e-5, atol=1e-6)
