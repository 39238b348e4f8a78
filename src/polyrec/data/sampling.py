"""Vectorised sampling: membership tests on (user, item) pairs and negatives that avoid them.

No Python loop runs over interactions: candidates for a whole batch are drawn at once, rejected
candidates are found with one ``searchsorted`` over sorted ``user * n_items + item`` keys and only
those are redrawn.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique`` for int64 keys by sort + neighbour compare (5× faster than numpy 2.4's)."""
    s = np.sort(np.asarray(keys, dtype=np.int64))
    if len(s) < 2:
        return s
    keep = np.empty(len(s), dtype=bool)
    keep[0] = True
    np.not_equal(s[1:], s[:-1], out=keep[1:])
    return s[keep]


def pair_keys(users: np.ndarray, items: np.ndarray, n_items: int) -> np.ndarray:
    """Sorted distinct ``user * n_items + item`` keys."""
    return sorted_unique(np.asarray(users, np.int64) * int(n_items) + np.asarray(items, np.int64))


def sorted_member_t(keys: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """``query`` values present in the sorted 1-d ``keys`` (same shape as ``query``, bool)."""
    if keys.numel() == 0:
        return torch.zeros(query.shape, dtype=torch.bool, device=query.device)
    pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
    return keys[pos] == query


class PairSet:
    """A set of (user, item) pairs with vectorised membership tests (numpy or torch)."""

    def __init__(self, users: np.ndarray, items: np.ndarray, n_items: int) -> None:
        self.n_items = int(n_items)
        keys = pair_keys(users, items, self.n_items)
        self.keys = keys
        self._tkeys = torch.from_numpy(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        q = users.astype(np.int64) * self.n_items + items.astype(np.int64)
        if len(self.keys) == 0:
            return np.zeros(q.shape, dtype=bool)
        pos = np.searchsorted(self.keys, q)
        pos = np.minimum(pos, len(self.keys) - 1)
        return self.keys[pos] == q

    def contains_t(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return sorted_member_t(self._tkeys, users.long() * self.n_items + items.long())


def sample_negatives_t(
    users: torch.Tensor,
    n_items: int,
    exclude: PairSet,
    generator: torch.Generator,
    n: int = 1,
    max_rounds: int = 100,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Negatives per user (shape ``[len(users)]`` if n == 1 else ``[len(users), n]``): uniform,
    or with probability proportional to ``weights[n_items]`` (e.g. popularity, WBPR).

    A negative is never in ``exclude`` for that user (unless the user has interacted with
    practically every item, in which case the last draw is kept after ``max_rounds``).
    """
    shape = (len(users),) if n == 1 else (len(users), n)
    u = users if n == 1 else users[:, None].expand(shape)

    def draw(size: tuple[int, ...]) -> torch.Tensor:
        if weights is None:
            return torch.randint(0, n_items, size, generator=generator)
        k = math.prod(size)
        return torch.multinomial(weights, k, replacement=True, generator=generator).view(size)

    neg = draw(shape)
    bad = exclude.contains_t(u, neg)
    rounds = 0
    while bool(bad.any()) and rounds < max_rounds:
        neg[bad] = draw((int(bad.sum()),))
        bad = exclude.contains_t(u, neg)
        rounds += 1
    return neg


def sample_eval_negatives(
    users: np.ndarray,
    n_items: int,
    exclude: PairSet,
    n: int,
    seed: int,
) -> np.ndarray:
    """``n`` distinct negatives per row (``[len(users), n]``), none in ``exclude``; seeded."""
    rng = np.random.default_rng(seed)
    m = len(users)
    if m == 0 or n == 0:
        return np.zeros((m, n), dtype=np.int64)
    if n >= n_items:
        raise ValueError(f"cannot draw {n} negatives from {n_items} items")
    u = np.repeat(users.astype(np.int64)[:, None], n, axis=1)
    neg = rng.integers(0, n_items, size=(m, n), dtype=np.int64)
    for _ in range(1000):
        bad = exclude.contains(u, neg)
        # duplicates within a row: sort, mark later copies
        order = np.argsort(neg, axis=1, kind="stable")
        srt = np.take_along_axis(neg, order, axis=1)
        dup_sorted = np.zeros_like(bad)
        dup_sorted[:, 1:] = srt[:, 1:] == srt[:, :-1]
        dup = np.zeros_like(bad)
        np.put_along_axis(dup, order, dup_sorted, axis=1)
        bad |= dup
        k = int(bad.sum())
        if k == 0:
            return neg
        neg[bad] = rng.integers(0, n_items, size=k, dtype=np.int64)
    raise ValueError(
        "could not draw distinct negatives: some users interacted with nearly all items"
    )
