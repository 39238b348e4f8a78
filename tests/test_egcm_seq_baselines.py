"""EGCM's sequential baselines: Caser's and HGN's user vectors by hand (numpy) on a tiny history,
BERT4Rec's bidirectional attention and cloze task."""

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


def test_padding_mask_by_hand() -> None:
    from polyrec.models._layers import padding_mask

    pad = torch.tensor([[True, False, False]])
    want = torch.tensor([[[True, True, True], [False, True, True], [False, True, True]]])
    assert torch.equal(padding_mask(pad)[:, 0], want)


def test_bert4rec_attends_both_ways(data: TrainData) -> None:
    """Unlike SASRec, an earlier position's output depends on later items."""
    from polyrec.models.bert4rec import BERT4Rec

    torch.manual_seed(0)
    model = build_model("bert4rec", {"dim": 8, "max_len": 5, "n_heads": 1, "dropout": 0.0}, data)
    assert isinstance(model, BERT4Rec)
    model.eval()
    lengths = torch.tensor([4])
    none = torch.zeros(1, 5, dtype=torch.bool)
    with torch.no_grad():
        a = model.encode(torch.tensor([[0, 3, 4, 5, 6]]), lengths, none)
        b = model.encode(torch.tensor([[0, 3, 4, 5, 9]]), lengths, none)
    assert not torch.allclose(a[0, 1], b[0, 1])  # position 1 sees the last item
    # padding never changes the real positions
    with torch.no_grad():
        c = model.encode(torch.tensor([[7, 3, 4, 5, 6]]), lengths, none)
    torch.testing.assert_close(a[0, 1:], c[0, 1:])


def test_bert4rec_cloze_targets_are_the_masked_items(data: TrainData) -> None:
    """The cloze queries are the outputs at the masked positions (which read [mask]) and their
    targets the items there; the next item is the sequence's last position; inference appends
    [mask] after the history."""
    from polyrec.data.sequences import SeqBatch
    from polyrec.models.bert4rec import BERT4Rec

    torch.manual_seed(0)
    model = build_model(
        "bert4rec", {"dim": 8, "max_len": 4, "n_heads": 1, "dropout": 0.0, "mask_prob": 1.0}, data
    )
    assert isinstance(model, BERT4Rec)
    model.eval()
    hist = torch.tensor([[0, 0, 3, 4], [0, 5, 6, 7]])  # +1-shifted, left-padded
    batch = SeqBatch(hist, torch.tensor([2, 3]), torch.tensor([8, 1]), None, torch.tensor([0, 1]))
    with torch.no_grad():
        query, target = model.cloze(batch)
    # ρ = 1: every real position of [h_{-3:}, next] is masked; items are 0-based
    assert target.tolist() == [2, 3, 8, 4, 5, 6, 1]
    seq = torch.tensor([[0, 3, 4, 9], [5, 6, 7, 2]])
    masked = seq > 0
    with torch.no_grad():
        h = model.encode(seq, torch.tensor([3, 4]), masked)
        torch.testing.assert_close(query, model.output(h[masked]))
        # inference: the latest N − 1 = 3 items, then [mask]
        user = model.interests(hist, torch.tensor([2, 3]))[:, 0]
        last = torch.zeros(2, 4, dtype=torch.bool)
        last[:, -1] = True
        h2 = model.encode(torch.tensor([[0, 3, 4, 0], [5, 6, 7, 0]]), torch.tensor([3, 4]), last)
    torch.testing.assert_close(user, model.output(h2[:, -1]))
