"""Every metric against hand-computed values (arithmetic in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polyrec.eval import metrics as M

L3 = 1 / math.log2(3)  # 0.6309297...  discount of position 1
L4 = 1 / math.log2(4)  # 0.5           position 2
L5 = 1 / math.log2(5)  # 0.4306765...  position 3
L6 = 1 / math.log2(6)  # 0.3868528...  position 4

T, F = True, False
# row 0: positives at positions 1 and 3 of the top 5, 3 positives in all
# row 1: nothing in the top 5, 1 positive
# row 2: the single positive at position 0
# row 3: all 5 positions relevant, 10 positives in all
HITS = torch.tensor(
    [
        [F, T, F, T, F],
        [F, F, F, F, F],
        [T, F, F, F, F],
        [T, T, T, T, T],
    ]
)
NPOS = torch.tensor([3, 1, 1, 10])


def approx(values: torch.Tensor, expected: list[float]) -> None:
    assert values.dtype == torch.float64
    assert values.tolist() == pytest.approx(expected, abs=1e-12)


def test_hit_rate() -> None:
    # @5: row 0 has hits, row 1 none, rows 2-3 hit; @1: only rows 2 and 3 have position 0
    approx(M.hit_rate(HITS, 5), [1, 0, 1, 1])
    approx(M.hit_rate(HITS, 1), [0, 0, 1, 1])


def test_recall_uses_n_pos_denominator() -> None:
    # row 0: 2 hits / 3 positives; row 3: 5 hits / 10 positives (not / min(10, 5))
    approx(M.recall(HITS, NPOS, 5), [2 / 3, 0, 1, 0.5])
    # @2: row 0 has 1 hit (position 1) / 3; row 3: 2 / 10
    approx(M.recall(HITS, NPOS, 2), [1 / 3, 0, 1, 0.2])


def test_recall_zero_positives_is_zero() -> None:
    approx(M.recall(torch.zeros(1, 3, dtype=torch.bool), torch.tensor([0]), 3), [0])


def test_ndcg_standard() -> None:
    # row 0 @5: DCG = 1/log2(3) + 1/log2(5) = 0.63093 + 0.43068 = 1.06161
    #           IDCG over min(3, 5) = 3 positions = 1 + 0.63093 + 0.5 = 2.13093 → 0.49819
    # row 2: DCG = 1 = IDCG → 1; row 3: all 5 relevant, IDCG over min(10, 5) = 5 → 1
    row0 = (L3 + L5) / (1 + L3 + L4)
    assert row0 == pytest.approx(0.498189, abs=1e-6)
    approx(M.ndcg(HITS, NPOS, 5), [row0, 0, 1, 1])
    # @2: row 0 DCG = 0.63093, IDCG over min(3, 2) = 2 positions = 1.63093 → 0.38685
    approx(M.ndcg(HITS, NPOS, 2), [L3 / (1 + L3), 0, 1, 1])


def test_ndcg_comirec_differs_from_standard() -> None:
    # row 0 @5: 2 positives recalled → IDCG = 1 + 1/log2(3) = 1.63093;
    #           1.06161 / 1.63093 = 0.65093 (standard: 0.49819)
    row0 = (L3 + L5) / (1 + L3)
    assert row0 == pytest.approx(0.650921, abs=1e-6)
    approx(M.ndcg_comirec(HITS, 5), [row0, 0, 1, 1])
    # @2: 1 recalled → IDCG = 1 → DCG = 0.63093 (standard: 0.38685)
    approx(M.ndcg_comirec(HITS, 2), [L3, 0, 1, 1])
    assert M.ndcg_comirec(HITS, 5)[0] > M.ndcg(HITS, NPOS, 5)[0]


def test_mrr() -> None:
    # first hit of row 0 at position 1 → 1/2; row 1 none → 0; rows 2, 3 at 0 → 1
    approx(M.mrr(HITS, 5), [0.5, 0, 1, 1])
    # @1: row 0's first hit (position 1) is outside the top 1 → 0
    approx(M.mrr(HITS, 1), [0, 0, 1, 1])


def test_multiple_positives_later_in_list() -> None:
    # positives at positions 2 and 4 of 5, n_pos = 2
    hits = torch.tensor([[F, F, T, F, T]])
    # DCG = 1/log2(4) + 1/log2(6) = 0.5 + 0.38685 = 0.88685; IDCG(2) = 1 + 0.63093 → 0.54377
    approx(M.ndcg(hits, torch.tensor([2]), 5), [(L4 + L6) / (1 + L3)])
    # ComiRec: same IDCG here (both positives recalled)
    approx(M.ndcg_comirec(hits, 5), [(L4 + L6) / (1 + L3)])
    approx(M.mrr(hits, 5), [1 / 3])
    approx(M.recall(hits, torch.tensor([2]), 3), [0.5])  # 1 of 2 within the top 3


def test_from_hits_keys_and_values() -> None:
    out = M.from_hits(HITS, NPOS, (1, 5))
    assert list(out) == [
        "hr@1",
        "recall@1",
        "ndcg@1",
        "mrr@1",
        "hr@5",
        "recall@5",
        "ndcg@5",
        "mrr@5",
    ]
    approx(out["recall@5"], M.recall(HITS, NPOS, 5).tolist())
    extra = M.from_hits(HITS, NPOS, (5,), names=("ndcg_comirec",))
    approx(extra["ndcg_comirec@5"], M.ndcg_comirec(HITS, 5).tolist())


def test_numpy_input() -> None:
    out = M.from_hits(HITS.numpy(), NPOS.numpy(), (5,))
    approx(out["hr@5"], [1, 0, 1, 1])


def test_from_rank() -> None:
    # ranks of the single positive: 0, 3, 9, 10, 99
    out = M.from_rank(np.array([0, 3, 9, 10, 99]), (1, 10))
    approx(out["hr@1"], [1, 0, 0, 0, 0])
    approx(out["hr@10"], [1, 1, 1, 0, 0])  # rank 9 is the 10th place; rank 10 is out
    approx(out["recall@10"], [1, 1, 1, 0, 0])
    # NDCG = 1/log2(rank + 2): 1, 1/log2(5) = 0.43068, 1/log2(11) = 0.28906
    approx(out["ndcg@10"], [1, L5, 1 / math.log2(11), 0, 0])
    # MRR = 1/(rank + 1): 1, 1/4, 1/10
    approx(out["mrr@10"], [1, 0.25, 0.1, 0, 0])


def test_from_rank_matches_from_hits_for_one_positive() -> None:
    rank = torch.tensor([0, 2, 4, 7])
    hits = torch.nn.functional.one_hot(rank, 8).bool()
    a = M.from_rank(rank, (3, 5))
    b = M.from_hits(hits, torch.ones(4, dtype=torch.long), (3, 5))
    for key in a:
        approx(a[key], b[key].tolist())


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="k = 6"):
        M.hit_rate(HITS, 6)
    with pytest.raises(ValueError, match="k must be"):
        M.mrr(HITS, 0)
    with pytest.raises(ValueError, match="unknown metric"):
        M.from_hits(HITS, NPOS, (5,), names=("auc",))
    with pytest.raises(ValueError, match="unknown metric"):
        M.from_rank(torch.tensor([0]), (5,), names=("ndcg_comirec",))
