"""TiSASRec: personalised intervals and the time interval aware attention (Eq. 4-5) by hand,
and its clear errors without timestamps."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from interest_contract import sequence_log
from polyrec.data.sequences import SequenceSet
from polyrec.errors import ConfigError, DataError
from polyrec.exporting.bundle import build_bundle
from polyrec.models import TrainData, build_model
from polyrec.models.tisasrec import TiSASRec, intervals


def test_intervals_count_in_units_of_the_smallest_gap_and_are_clipped() -> None:
    """Row 0: times 10, 13, 19, 19 after one padding column → gaps 3, 6, 0, so r_min = 3 and
    the units are 0, 1, 3, 3; clipped at k = 2. Row 1: one item only → every interval 0."""
    times = torch.tensor([[0.0, 10.0, 13.0, 19.0, 19.0], [0.0, 0.0, 0.0, 0.0, 7.0]])
    pad = torch.tensor([[True, False, False, False, False], [True, True, True, True, False]])
    units = np.array([0, 0, 1, 3, 3])
    expect = np.minimum(np.abs(units[:, None] - units[None, :]), 2)
    got = intervals(times, pad, span=2)
    assert got.dtype == torch.long
    np.testing.assert_array_equal(got[0].numpy(), expect)
    assert int(got[1].abs().sum()) == 0
    # unix seconds keep their resolution (float64): a 1 s gap on 1.7e9 is one unit
    t = torch.tensor([[1.7e9, 1.7e9 + 1, 1.7e9 + 5]], dtype=torch.float64)
    r = intervals(t, torch.zeros(1, 3, dtype=torch.bool), span=256)
    assert r[0, 0].tolist() == [0, 1, 5]


def naive_block(block: torch.nn.Module, x: torch.Tensor, rel: torch.Tensor,
                tables: list[torch.Tensor]) -> torch.Tensor:  # fmt: skip
    """Eq. 4-5 entry by entry for one head and no padding: e_ij = q_i (k_j + r^K_ij + p^K_j)ᵀ
    / √d over j ≤ i, z_i = Σ_j α_ij (v_j + r^V_ij + p^V_j), then the output projection, the
    residual and the feed-forward network."""
    pos_k, pos_v, rel_k, rel_v = tables
    b, t, d = x.shape
    qkv = block.qkv(block.norm1(x))
    q, k, v = qkv[..., :d], qkv[..., d : 2 * d], qkv[..., 2 * d :]
    z = torch.zeros_like(x)
    for n in range(b):
        for i in range(t):
            e = torch.full((t,), -math.inf)
            for j in range(i + 1):
                key = k[n, j] + rel_k[rel[n, i, j]] + pos_k[j]
                e[j] = q[n, i] @ key / math.sqrt(d)
            a = torch.softmax(e, 0)
            for j in range(i + 1):
                z[n, i] += a[j] * (v[n, j] + rel_v[rel[n, i, j]] + pos_v[j])
    y = x + block.out(z)
    return y + block.ff2(torch.relu(block.ff1(block.norm2(y))))


def test_time_aware_attention_by_hand() -> None:
    data = TrainData(sequence_log(n_users=20))
    torch.manual_seed(0)
    model = build_model("tisasrec", {"dim": 4, "max_len": 3, "dropout": 0.0, "time_span": 3}, data)
    assert isinstance(model, TiSASRec)
    model.eval()
    block = model.blocks[0]
    torch.manual_seed(1)
    x = torch.randn(2, 3, 4)
    rel = torch.tensor([[[0, 1, 3], [1, 0, 2], [3, 2, 0]], [[0, 2, 2], [2, 0, 0], [2, 0, 0]]])
    tables = [model.pos_k.weight, model.pos_v.weight, model.rel_k.weight, model.rel_v.weight]
    allowed = torch.tril(torch.ones(3, 3, dtype=torch.bool)).expand(2, 1, 3, 3)
    with torch.no_grad():
        got = block(x, allowed, rel, *tables)
        expect = naive_block(block, x, rel, tables)
    torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)


def test_the_times_change_the_user_vector_and_are_needed() -> None:
    data = TrainData(sequence_log(n_users=20))
    torch.manual_seed(0)
    model = build_model("tisasrec", {"dim": 8, "max_len": 4, "dropout": 0.0}, data)
    model.eval()
    hist, lengths = torch.tensor([[3, 8, 5, 9]]), torch.tensor([4])
    with torch.no_grad():
        even = model.interests_at(hist, lengths, torch.tensor([[0.0, 1.0, 2.0, 3.0]]))
        shifted = model.interests_at(hist, lengths, torch.tensor([[100.0, 101.0, 102.0, 103.0]]))
        burst = model.interests_at(hist, lengths, torch.tensor([[0.0, 1.0, 2.0, 90.0]]))
    torch.testing.assert_close(even, shifted)  # only the intervals count
    assert not torch.allclose(even, burst)
    with pytest.raises(DataError, match="timestamps"):
        model.interests(hist, lengths)


def test_a_log_without_timestamps_and_export_are_refused_clearly() -> None:
    log = dataclasses.replace(sequence_log(n_users=20), timestamp=None)
    with pytest.raises(DataError, match=r"no timestamp column.*--time-col"):
        build_model("tisasrec", {}, TrainData(log))
    model = build_model("tisasrec", {"dim": 8}, TrainData(sequence_log(n_users=20)))
    with pytest.raises(ConfigError, match="timestamps of a user's history"):
        build_bundle(model, sequence_log(n_users=20), 'model = "tisasrec"')


def test_sequences_carry_their_timestamps_through_cuts_and_appends() -> None:
    log = sequence_log(n_users=3)  # user u's timestamps are 0 .. 15
    seqs = SequenceSet.from_log(log)
    hist, lengths = seqs.padded(np.array([0, 1]), 4, np.array([2, 6]))
    times = seqs.padded_times(np.array([0, 1]), 4, np.array([2, 6]))
    assert lengths.tolist() == [2, 4]
    assert times.tolist() == [[0.0, 0.0, 0.0, 1.0], [2.0, 3.0, 4.0, 5.0]]
    assert hist[0, :2].tolist() == [0, 0]  # padding where the times are 0
    # a held-out item appended without a time sits at the user's latest time
    more = seqs.append(np.array([2]), np.array([7]))
    assert more.times is not None and more.sequence(2)[-1] == 7
    assert more.padded_times(np.array([2]), 2).tolist() == [[15.0, 15.0]]
    no_times = SequenceSet(seqs.indptr, seqs.items, seqs.n_items)
    with pytest.raises(DataError, match="no timestamps"):
        no_times.padded_times(np.array([0]), 4)
