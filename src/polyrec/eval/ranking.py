"""The batched top-k core every evaluation protocol shares.

Everything here works on one user batch at a time (never a dense users × items matrix):

* :class:`PairIndex` — (user, item) pairs on a device as a CSR plus sorted flat keys: the items
  to mask (a user's known items), the held-out positives, a user's history;
* :func:`block_topk` — a score block ``[B, n]`` or ``[B, K, n]`` (K interests), the batch's
  masked pairs set to ``-inf`` through their CSR indices, positives lowered to the next float
  below (pessimistic ties), then ``torch.topk``;
* :func:`hit_matrix` — which listed items are held-out positives (the input of
  :func:`polyrec.eval.metrics.from_hits`);
* :func:`sampled_ranks` — the rank of each held-out item among its stored 1+N candidates (the
  input of :func:`polyrec.eval.metrics.from_rank`);
* :func:`scoring_mode`, :func:`user_batches` and :class:`MetricSums` — the pass over the users:
  eval mode and ``no_grad`` around ``model.prepare_scoring()``, ``batch_size`` users at a time
  with progress, per-row metric values summed on the device;
* :class:`ItemCounts` — how often each item is listed in the first k positions, summed over the
  batches (one ``bincount`` per k and batch): the input of the list-level metrics,
  :func:`polyrec.eval.metrics.from_counts`.

**Ties.** Both rankings break ties against the positive. Sampled 1+N:
``rank = #{negatives with score >= the positive's score}``, so a constant scorer puts the
positive at rank N. Top-k: each positive's score is lowered to the next representable float
below it before ``topk`` (``torch.nextafter``), so any item with an equal score is ranked above
it; a constant scorer hits nothing. (Positives tied with each other stay tied; their order does
not change any metric.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from polyrec.data.sampling import pair_keys, sorted_member_t, sorted_unique

if TYPE_CHECKING:
    from polyrec.models.base import Model

NAN_SCORES = "the model's scores contain NaN (has training diverged? try a lower learning rate)"
Progress = Callable[[int, int], None]


class PairIndex:
    """Distinct (user, item) pairs held on a device as a CSR plus sorted flat keys.

    ``keys`` are the sorted distinct ``user * n_items + item`` values; ``indptr[u]:indptr[u+1]``
    is user u's slice of ``indices`` (the items, ascending).
    """

    def __init__(
        self, keys: np.ndarray, n_users: int, n_items: int, device: torch.device | str = "cpu"
    ) -> None:
        keys = np.asarray(keys, dtype=np.int64)
        if len(keys) > 1 and not bool(np.all(keys[1:] > keys[:-1])):
            keys = sorted_unique(keys)
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        users = keys // self.n_items
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(users, minlength=self.n_users), out=indptr[1:])
        self.keys = torch.from_numpy(keys).to(device)
        self.indptr = torch.from_numpy(indptr).to(device)
        self.indices = torch.from_numpy(keys % self.n_items).to(device)

    @classmethod
    def from_pairs(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        n_users: int,
        n_items: int,
        device: torch.device | str = "cpu",
    ) -> PairIndex:
        return cls(pair_keys(users, items, n_items), n_users, n_items, device)

    def __len__(self) -> int:
        return int(self.keys.numel())

    def counts(self, users: Tensor) -> Tensor:
        """Number of pairs of each user in ``users``."""
        return self.indptr[users + 1] - self.indptr[users]

    def flat_index(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """``(rows, items)``: every pair of the batch ``users``, ``rows`` indexing the batch."""
        starts = self.indptr[users]
        counts = self.indptr[users + 1] - starts
        total = int(counts.sum())
        rows = torch.repeat_interleave(
            torch.arange(len(users), device=users.device), counts, output_size=total
        )
        # position of each pair inside its user's slice, plus the slice start
        first = torch.cumsum(counts, 0) - counts
        offset = torch.arange(total, device=users.device) + torch.repeat_interleave(
            starts - first, counts, output_size=total
        )
        return rows, self.indices[offset]

    def contains(self, users: Tensor, items: Tensor) -> Tensor:
        """Membership of (users[b], items[b, j]) (``users`` [B], ``items`` [B, J]) → bool [B, J]."""
        return sorted_member_t(self.keys, users.long().unsqueeze(1) * self.n_items + items.long())


Pairs = tuple[Tensor, Tensor]  # (batch rows, item columns)


def block_topk(
    scores: Tensor, k: int, *, exclude: Pairs | None = None, demote: Pairs | None = None
) -> tuple[Tensor, Tensor]:
    """Top-``k`` of a score block along its last axis: ``(values, indices)``, best first.

    ``scores`` is ``[B, n]`` (one row per user) or ``[B, K, n]`` (K interests per user) and is
    modified in place. ``exclude = (rows, cols)``: those (batch row, column) pairs become
    ``-inf`` (for every interest); ``demote``: those are lowered to the next float below
    (pessimistic ties). ``k`` is clipped to ``n``.
    """
    if exclude is not None:
        rows, cols = exclude
        scores[rows, ..., cols] = float("-inf")
    if demote is not None:
        rows, cols = demote
        below = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
        scores[rows, ..., cols] = torch.nextafter(scores[rows, ..., cols], below)
    return torch.topk(scores, min(k, scores.shape[-1]), dim=-1, sorted=True)


def masked_topk(
    scores: Tensor,
    users: Tensor,
    masked: PairIndex,
    k: int,
    positives: PairIndex | None = None,
) -> Tensor:
    """Top-``k`` item indices per row after masking (``[B, min(k, n_items)]``, best first).

    ``scores[B, n_items]`` (modified in place) are the scores of the batch ``users[B]`` (same
    device): the pairs in ``masked`` become ``-inf``; when ``positives`` is given their scores are
    lowered to the next float below (pessimistic ties). A NaN among the unmasked scores raises
    :class:`FloatingPointError`.
    """
    return masked_topk_values(scores, users, masked, k, positives)[1]


def masked_topk_values(
    scores: Tensor,
    users: Tensor,
    masked: PairIndex,
    k: int,
    positives: PairIndex | None = None,
) -> tuple[Tensor, Tensor]:
    """:func:`masked_topk`'s ``(values, indices)``: the listed scores too (``-inf`` marks a
    masked item, listed only when a row has fewer than ``k`` unmasked items)."""
    demote = None if positives is None else positives.flat_index(users)
    values, top = block_topk(scores, k, exclude=masked.flat_index(users), demote=demote)
    # topk ranks NaN above every number, so a NaN anywhere unmasked shows up here
    if bool(torch.isnan(values).any()):
        raise FloatingPointError(NAN_SCORES)
    return values, top


def hit_matrix(top: Tensor, users: Tensor, positives: PairIndex, width: int) -> Tensor:
    """``hits[B, width]``: whether ``top[b, p]`` is a held-out positive of ``users[b]``.

    ``top`` holds item indices, best first; ``-1`` (an empty slot) and the columns beyond
    ``top.shape[1]`` never hit.
    """
    if top.shape[1] < width:
        top = torch.cat([top, top.new_full((len(top), width - top.shape[1]), -1)], dim=1)
    return positives.contains(users, top.clamp(min=0)) & (top >= 0)


def full_ranking(
    scores: Tensor,
    users: Tensor,
    masked: PairIndex,
    positives: PairIndex,
    max_k: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Top-``max_k`` list, its hit matrix and the positive counts for one user batch.

    ``scores[B, n_items]`` are the batch's scores (modified in place, see :func:`masked_topk`),
    ``users[B]`` the users (same device). Returns ``top[B, k]`` (item indices, ``k =
    min(max_k, n_items)``), ``hits[B, max_k]`` (bool, False beyond ``k``) and ``n_pos[B]``, the
    number of held-out pairs of each user.
    """
    top = masked_topk(scores, users, masked, max_k, positives)
    return top, hit_matrix(top, users, positives, max_k), positives.counts(users)


def sampled_ranks(scores: Tensor, rows: Tensor, items: Tensor, negatives: Tensor) -> Tensor:
    """Rank of each held-out pair's positive among its 1+N candidates (pessimistic ties).

    ``scores[B, n_items]`` a batch's scores, ``rows[P]`` the batch row of each pair, ``items[P]``
    the positive item, ``negatives[P, N]`` the stored negatives. ``rank = #{n : s_neg >= s_pos}``
    (0 = the positive is first; a constant scorer gets N). NaN scores raise FloatingPointError.
    """
    pos = scores[rows, items]
    neg = scores[rows.unsqueeze(1), negatives]
    if bool(torch.isnan(pos).any() | torch.isnan(neg).any()):
        raise FloatingPointError(NAN_SCORES)
    return (neg >= pos.unsqueeze(1)).sum(dim=1)


class MetricSums:
    """Per-row metric values summed over the batches (on their device), averaged at the end."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}

    def add(self, values: dict[str, Tensor]) -> None:
        for key, v in values.items():
            s = v.sum()
            self.sums[key] = self.sums[key] + s if key in self.sums else s

    def means(self, count: int) -> dict[str, float]:
        return {key: float(v) / count for key, v in self.sums.items()}


class ItemCounts:
    """How often each item is listed in the first ``k`` positions, for every ``k`` of ``ks``,
    summed over the batches (``int64 [n_items]`` per k, on ``device``)."""

    def __init__(self, ks: list[int], n_items: int, device: torch.device | str = "cpu") -> None:
        self.n_items = int(n_items)
        self.counts = {k: torch.zeros(self.n_items, dtype=torch.long, device=device) for k in ks}

    def add(self, top: Tensor) -> None:
        """Count a batch's lists ``top[B, width]`` (item ids, best first; ``-1`` is an empty slot,
        not counted; positions beyond ``width`` are empty)."""
        for k, c in self.counts.items():
            ids = top[:, :k]
            c += torch.bincount(ids[ids >= 0], minlength=self.n_items)


@contextmanager
def scoring_mode(model: Model) -> Iterator[None]:
    """Eval mode and ``no_grad`` with ``model.prepare_scoring()`` done; the mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.prepare_scoring()
            yield
    finally:
        model.train(was_training)


def user_batches(
    users: np.ndarray,
    batch_size: int,
    device: torch.device | str,
    progress: Progress | None = None,
) -> Iterator[tuple[np.ndarray, Tensor]]:
    """``(ids, ids on device)`` of ``batch_size`` users at a time; ``progress(done, total)``
    is called once each batch has been processed."""
    total = len(users)
    for start in range(0, total, batch_size):
        ub = users[start : start + batch_size]
        yield ub, torch.from_numpy(ub).to(device)
        if progress is not None:
            progress(min(start + batch_size, total), total)


__all__ = [
    "NAN_SCORES",
    "ItemCounts",
    "MetricSums",
    "PairIndex",
    "block_topk",
    "full_ranking",
    "hit_matrix",
    "masked_topk",
    "masked_topk_values",
    "sampled_ranks",
    "scoring_mode",
    "user_batches",
]
