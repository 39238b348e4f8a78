"""Sequence views of an :class:`InteractionLog` and training samples for sequential models.

**Layout of a padded history** (what :meth:`InteractionModel.interests` receives): a ``[B, T]``
int64 tensor of item ids **shifted by +1** so that ``0`` is padding, **left-padded**: the most
recent item is always in the last column ``T - 1`` and the oldest kept item at ``T - length``.
``lengths[B]`` counts the real (non-padding) items, ``1 <= length <= T``. Only the latest ``T``
items of a longer sequence are kept.

**Training samples (ComiRec protocol).** A sample is a cut of a training user's chronological
sequence ``s``: history ``s[max(0, k - T) : k]`` and target ``s[k]`` for a cut position ``k >= 1``.
Two vectorised samplers draw them with a ``torch.Generator``:

* ``"random-cut"`` (ComiRec's data iterator): users drawn uniformly among those with at least two
  items, then ``k`` uniform in ``[min(min_history, len - 1), len - 1]``;
* ``"all-cuts"``: one epoch is a random permutation of every cut ``k = 1 .. len - 1`` of every
  user.

Training samples are taken from the training log only, so under the user split no
validation or test user's interactions can reach training (they are not in ``split.train``).

**Negatives.** :class:`LogUniformSampler` draws log-uniform ("Zipfian") negatives over items
ordered by decreasing training popularity, as TensorFlow's ``log_uniform_candidate_sampler``
behind ComiRec's ``sampled_softmax_loss``: rank ``r`` has probability
``P(r) = (log(r + 2) - log(r + 1)) / log(n + 1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from polyrec.data.log import InteractionLog
from polyrec.errors import DataError

PAD = 0
Sampling = Literal["random-cut", "all-cuts"]


def _chronological_rows(log: InteractionLog, rows: np.ndarray) -> np.ndarray:
    """``rows`` sorted by (user, timestamp, row); without timestamps by (user, row)."""
    if log.timestamp is None:
        return rows[np.lexsort((rows, log.user[rows]))]
    return rows[np.lexsort((rows, log.timestamp[rows], log.user[rows]))]


@dataclass(eq=False)
class SequenceSet:
    """Every user's chronological item sequence as a CSR: ``items[indptr[u]:indptr[u+1]]``.

    ``items`` are dense item codes (0-based, **not** shifted); ``categories`` the item category
    of each entry when the log has categories; ``times`` the timestamp of each entry (float64)
    when the log has timestamps. Users without interactions have empty slices.
    """

    indptr: np.ndarray
    items: np.ndarray
    n_items: int
    categories: np.ndarray | None = None
    times: np.ndarray | None = None

    @property
    def n_users(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.indptr)

    def sequence(self, user: int) -> np.ndarray:
        return self.items[self.indptr[user] : self.indptr[user + 1]]

    @classmethod
    def from_log(
        cls, log: InteractionLog, behavior: str | None = None, *, n_users: int | None = None
    ) -> SequenceSet:
        """Chronological sequences of ``behavior`` (``None``: every behavior merged).

        Order: timestamp, ties (and logs without timestamps) by row order. Repeated
        interactions stay in the sequence. ``n_users`` defaults to the log's user count.
        """
        rows = np.flatnonzero(log.mask_behavior(behavior))
        rows = _chronological_rows(log, rows)
        nu = log.n_users if n_users is None else int(n_users)
        indptr = np.zeros(nu + 1, dtype=np.int64)
        np.cumsum(np.bincount(log.user[rows], minlength=nu), out=indptr[1:])
        cats = None if log.category is None else log.category[rows].astype(np.int64)
        times = None if log.timestamp is None else log.timestamp[rows].astype(np.float64)
        return cls(indptr, log.item[rows].astype(np.int64), log.n_items, cats, times)

    def append(
        self, users: np.ndarray, items: np.ndarray, times: np.ndarray | None = None
    ) -> SequenceSet:
        """A new set with ``items[j]`` appended to the end of ``users[j]``'s sequence (in order).

        The result has no categories. It has times when this set has: ``times``, or where
        those are not given (held-out pairs store no timestamp) the user's latest time, so that
        an appended item counts as no time after the user's last one."""
        users = np.asarray(users, np.int64)
        items = np.asarray(items, np.int64)
        old_user = np.repeat(np.arange(self.n_users), self.lengths)
        all_u = np.r_[old_user, users]
        all_i = np.r_[self.items, items]
        order = np.argsort(all_u, kind="stable")
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(np.bincount(all_u, minlength=self.n_users), out=indptr[1:])
        all_t = None
        if self.times is not None:
            if times is None:
                last = np.zeros(self.n_users)
                has = self.lengths > 0
                last[has] = self.times[self.indptr[1:][has] - 1]
                times = last[users]
            all_t = np.r_[self.times, np.asarray(times, np.float64)][order]
        return SequenceSet(indptr, all_i[order], self.n_items, None, all_t)

    def padded(
        self,
        users: np.ndarray,
        max_len: int,
        ends: np.ndarray | None = None,
        *,
        categories: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """Left-padded, +1-shifted histories ``[B, max_len]`` and their lengths ``[B]``.

        Row ``b`` holds user ``users[b]``'s items before position ``ends[b]`` of the sequence
        (default: the whole sequence), the latest ``max_len`` of them. ``categories=True``
        gives category codes (+1-shifted, 0 = padding) instead of items.
        """
        src, valid, length = self._window(users, max_len, ends)
        if categories:
            if self.categories is None:
                raise ValueError("this sequence set has no categories")
            values = self.categories
        else:
            values = self.items
        out = np.where(valid, values[src] + 1, PAD) if len(values) else np.zeros_like(src)
        return torch.from_numpy(out.astype(np.int64)), torch.from_numpy(length.astype(np.int64))

    def padded_times(
        self, users: np.ndarray, max_len: int, ends: np.ndarray | None = None
    ) -> Tensor:
        """``[B, max_len]`` float64 timestamps of the entries :meth:`padded` gives (0 at the
        padding); a clear error when the set has no times."""
        if self.times is None:
            raise DataError(
                "these sequences have no timestamps: a time-aware model needs a timestamp column "
                "in the data (polyrec data import --time-col)"
            )
        src, valid, _ = self._window(users, max_len, ends)
        out = np.where(valid, self.times[src], 0.0) if len(self.times) else np.zeros(src.shape)
        return torch.from_numpy(out.astype(np.float64))

    def _window(
        self, users: np.ndarray, max_len: int, ends: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Flat positions ``[B, max_len]`` of the latest ``max_len`` entries before ``ends``
        (left-aligned padding at 0), which of them are real, and the lengths."""
        users = np.asarray(users, np.int64)
        start = self.indptr[users]
        end = self.indptr[users + 1] if ends is None else start + np.asarray(ends, np.int64)
        length = np.minimum(end - start, max_len)
        col = np.arange(max_len)[None, :]
        first = max_len - length[:, None]
        src = end[:, None] - max_len + col  # position of column `col` in the flat array
        valid = col >= first
        return np.where(valid, src, 0), valid, length


class CutSampler:
    """Vectorised (history prefix → next item) training cuts of a :class:`SequenceSet`."""

    def __init__(self, sequences: SequenceSet, *, max_len: int, min_history: int = 1) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1 (got {max_len})")
        self.seqs = sequences
        self.max_len = int(max_len)
        self.min_history = max(1, int(min_history))
        lengths = sequences.lengths
        self.users = np.flatnonzero(lengths >= 2)  # need one history item and one target
        self._len_t = torch.from_numpy(lengths[self.users])
        self._users_t = torch.from_numpy(self.users)

    @property
    def n_cuts(self) -> int:
        return int((self.seqs.lengths[self.users] - 1).sum())

    def random_cuts(self, n: int, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` cuts: users uniform among eligible ones, cut ``k`` uniform in its range."""
        if len(self.users) == 0:
            raise DataError(
                "no training sequence has two or more items: the data or the split leaves no "
                "user with a history to learn from (check data.protocol and params.behaviors)"
            )
        pick = torch.randint(len(self.users), (n,), generator=generator)
        length = self._len_t[pick]
        lo = torch.clamp(length - 1, max=self.min_history)
        lo = torch.clamp(lo, min=1)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        k = lo + torch.floor(u * (length - lo).double()).long()
        k = torch.minimum(k, length - 1)
        return self._users_t[pick].numpy(), k.numpy()

    def all_cuts(self, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Every cut ``k = 1 .. len - 1`` of every eligible user, randomly permuted."""
        n_per = self.seqs.lengths[self.users] - 1
        users = np.repeat(self.users, n_per)
        starts = np.cumsum(n_per) - n_per
        k = np.arange(len(users)) - np.repeat(starts, n_per) + 1
        perm = torch.randperm(len(users), generator=generator).numpy()
        return users[perm], k[perm]

    def times(self, users: np.ndarray, cuts: np.ndarray) -> Tensor:
        """``[B, T]`` timestamps of the histories :meth:`make` gives for the same cuts."""
        return self.seqs.padded_times(users, self.max_len, cuts)

    def make(self, users: np.ndarray, cuts: np.ndarray) -> tuple[Tensor, Tensor, Tensor]:
        """``(history [B, T], lengths [B], target [B])`` of the given cuts (target not shifted)."""
        hist, lengths = self.seqs.padded(users, self.max_len, cuts)
        target = self.seqs.items[self.seqs.indptr[users] + cuts]
        return hist, lengths, torch.from_numpy(target.astype(np.int64))


class LogUniformSampler:
    """Log-uniform negatives over items ranked by decreasing training popularity.

    ``item_of_rank[r]`` is the item with the r-th largest count (ties by item id). ``log_q[i]``
    is ``log P(item i)`` under the sampler, for the sampled-softmax correction.
    """

    def __init__(self, counts: np.ndarray) -> None:
        counts = np.asarray(counts, np.int64)
        n = len(counts)
        if n < 1:
            raise ValueError("LogUniformSampler needs at least one item")
        self.n = n
        order = np.lexsort((np.arange(n), -counts))
        self.item_of_rank = torch.from_numpy(order.astype(np.int64))
        r = np.arange(n, dtype=np.float64)
        p = (np.log(r + 2.0) - np.log(r + 1.0)) / math.log(n + 1.0)
        log_q = np.empty(n, dtype=np.float64)
        log_q[order] = np.log(p)
        self.log_q = torch.from_numpy(log_q.astype(np.float32))
        log1m = np.empty(n, dtype=np.float64)
        log1m[order] = np.log1p(-p)
        self.log1m_q = torch.from_numpy(log1m)  # ln(1 − P(i)), for the unique sampler's counts

    def _draw(self, size: int, generator: torch.Generator) -> Tensor:
        u = torch.rand(size, generator=generator, dtype=torch.float64)
        rank = (torch.floor(torch.exp(u * math.log(self.n + 1.0))) - 1.0).long()
        return rank.clamp_(0, self.n - 1)

    def sample(self, size: int, generator: torch.Generator) -> Tensor:
        """``size`` item ids drawn with replacement (inverse CDF, as TensorFlow's sampler)."""
        return self.item_of_rank[self._draw(size, generator)]

    def sample_unique(self, size: int, generator: torch.Generator) -> tuple[Tensor, int]:
        """``size`` distinct item ids and the number of draws it took (every item and 0 when
        ``size ≥ n``): draws continue until ``size`` distinct items have appeared, as TensorFlow's
        ``log_uniform_candidate_sampler(unique=True)`` (ComiRec's ``sampled_softmax_loss``)."""
        if size >= self.n:
            return self.item_of_rank.clone(), 0
        chunks: list[Tensor] = []
        while True:
            chunks.append(self._draw(max(2 * size, 64), generator))
            stream = torch.cat(chunks)
            uniq, inverse = torch.unique(stream, return_inverse=True)
            if len(uniq) >= size:
                break
        # first occurrence of each distinct rank, in stream order; keep the first `size`
        first = torch.full((len(uniq),), len(stream), dtype=torch.long)
        first.scatter_reduce_(0, inverse, torch.arange(len(stream)), reduce="amin")
        order = torch.sort(first).values[:size]
        tries = int(order[-1]) + 1
        return self.item_of_rank[stream[order]], tries

    def log_expected_count(self, items: Tensor, tries: int) -> Tensor:
        """``ln E[count]`` of ``items`` in a unique sample that took ``tries`` draws (see
        :func:`log_expected_count_unique`)."""
        return log_expected_count_unique(self.log1m_q.to(items.device)[items], tries)


def log_expected_count_unique(log1m_q: Tensor, tries: int) -> Tensor:
    """``ln(1 − (1 − P(i))^tries)`` from ``log1m_q = ln(1 − P(i))``: TensorFlow's expected count
    of an item in a unique sample that took ``tries`` draws; 0 for ``tries == 0`` (every item
    sampled once)."""
    if tries <= 0:
        return torch.zeros(log1m_q.shape, device=log1m_q.device)
    return torch.log(-torch.expm1(tries * log1m_q)).float()


@dataclass
class SeqBatch:
    """One batch of training cuts.

    ``history[B, T]`` left-padded +1-shifted item ids, ``lengths[B]``, ``target[B]`` the next
    item (0-based), ``negatives[S]`` sampled item ids shared by the batch (or None for a full
    softmax), ``user[B]`` the users the cuts come from and, for time-aware models,
    ``times[B, T]`` the history's timestamps (float64; None otherwise).
    """

    history: Tensor
    lengths: Tensor
    target: Tensor
    negatives: Tensor | None
    user: Tensor
    tries: int | None = None  # draws behind unique negatives (None: drawn with replacement)
    times: Tensor | None = None

    def to(self, device: torch.device) -> SeqBatch:
        return SeqBatch(
            self.history.to(device),
            self.lengths.to(device),
            self.target.to(device),
            None if self.negatives is None else self.negatives.to(device),
            self.user.to(device),
            self.tries,
            None if self.times is None else self.times.to(device),
        )


def item_counts(seqs: SequenceSet) -> np.ndarray:
    """Occurrences of every item in the sequences (``[n_items]``)."""
    return np.bincount(seqs.items, minlength=seqs.n_items)


__all__ = [
    "PAD",
    "CutSampler",
    "LogUniformSampler",
    "SeqBatch",
    "SequenceSet",
    "item_counts",
]
