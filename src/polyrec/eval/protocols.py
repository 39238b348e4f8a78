"""Evaluation protocols on one batch of users' scores: full ranking and sampled 1+N.

Both work on a score block ``scores[B, n_items]`` of one user batch (never more), so a dense
users × items matrix is never built beyond one batch.

**Full ranking.** Items the user is known to have (the mask) are set to ``-inf`` through the flat
(row, item) index built from a CSR — no Python loop over users — then ``torch.topk`` gives the
top-K list, and each listed item is looked up among the held-out pairs (sorted
``user * n_items + item`` keys and ``searchsorted``). The mask (see :func:`mask_keys`) is the
user's training items of the target behavior (``mask="target"``) or of every behavior
(``mask="all"``), at test time the validation pairs too, and for protocols whose held-out users
come with a ``history`` (user split) that history; the positives being evaluated are always
removed from it.

**Ties.** Both protocols break ties against the positive (pessimistic). Sampled 1+N:
``rank = #{negatives with score >= the positive's score}``, so a constant scorer puts the
positive at rank N. Full ranking: each positive's score is lowered to the next representable float
below it before ``topk`` (``torch.nextafter``), so any item with an equal score is ranked above
it; a constant scorer hits nothing. (Positives tied with each other stay tied; their order does
not change any metric.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from polyrec.data.sampling import pair_keys, sorted_member_t, sorted_unique
from polyrec.data.splits import Holdout, Split

MASK_MODES: tuple[str, ...] = ("target", "all")
_NAN = "the model's scores contain NaN (has training diverged? try a lower learning rate)"


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


def holdout(split: Split, part: str) -> Holdout:
    if part == "valid":
        return split.valid
    if part == "test":
        return split.test
    raise ValueError(f"part must be 'valid' or 'test' (got {part!r})")


def mask_keys(split: Split, part: str, mask: str = "target") -> np.ndarray:
    """Sorted keys of the (user, item) pairs hidden from the full ranking of ``part``.

    ``mask="target"``: the training pairs of the target behavior; ``"all"``: of every behavior.
    For ``part="test"`` the validation pairs are added; holdouts with a ``history`` (user split)
    add the history's pairs of the same behaviors. The held-out pairs of ``part`` itself are
    removed: a positive is never masked.
    """
    if mask not in MASK_MODES:
        raise ValueError(f"mask must be one of {', '.join(MASK_MODES)} (got {mask!r})")
    train = split.train
    n_items = train.n_items
    hold = holdout(split, part)
    behavior = train.target if mask == "target" else None
    parts = []
    rows = train.mask_behavior(behavior)
    parts.append(pair_keys(train.user[rows], train.item[rows], n_items))
    if part == "test":
        parts.append(pair_keys(split.valid.user, split.valid.item, n_items))
    if hold.history is not None:
        h = hold.history
        hrows = h.mask_behavior(h.target if mask == "target" else None)
        parts.append(pair_keys(h.user[hrows], h.item[hrows], n_items))
    keys = sorted_unique(np.concatenate(parts))
    positives = pair_keys(hold.user, hold.item, n_items)
    return np.setdiff1d(keys, positives, assume_unique=True)


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
    lowered to the next float below (pessimistic ties, see the module docstring). A NaN among
    the unmasked scores raises :class:`FloatingPointError`.
    """
    rows, cols = masked.flat_index(users)
    scores[rows, cols] = float("-inf")
    if positives is not None:
        rows, cols = positives.flat_index(users)
        below = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
        scores[rows, cols] = torch.nextafter(scores[rows, cols], below)
    values, top = torch.topk(scores, min(k, scores.shape[1]), dim=1, sorted=True)
    # topk ranks NaN above every number, so a NaN anywhere unmasked shows up here
    if bool(torch.isnan(values).any()):
        raise FloatingPointError(_NAN)
    return top


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
    min(max_k, n_items)``), ``hits[B, max_k]`` (bool, padded with False beyond ``k``) and
    ``n_pos[B]``, the number of held-out pairs of each user.
    """
    top = masked_topk(scores, users, masked, max_k, positives)
    hits = positives.contains(users, top)
    k = top.shape[1]
    if k < max_k:
        pad = torch.zeros((len(users), max_k - k), dtype=torch.bool, device=hits.device)
        hits = torch.cat([hits, pad], dim=1)
    return top, hits, positives.counts(users)


def sampled_ranks(scores: Tensor, rows: Tensor, items: Tensor, negatives: Tensor) -> Tensor:
    """Rank of each held-out pair's positive among its 1+N candidates (pessimistic ties).

    ``scores[B, n_items]`` a batch's scores, ``rows[P]`` the batch row of each pair, ``items[P]``
    the positive item, ``negatives[P, N]`` the stored negatives. ``rank = #{n : s_neg >= s_pos}``
    (0 = the positive is first; a constant scorer gets N). NaN scores raise FloatingPointError.
    """
    pos = scores[rows, items]
    neg = scores[rows.unsqueeze(1), negatives]
    if bool(torch.isnan(pos).any() | torch.isnan(neg).any()):
        raise FloatingPointError(_NAN)
    return (neg >= pos.unsqueeze(1)).sum(dim=1)


__all__ = [
    "MASK_MODES",
    "PairIndex",
    "full_ranking",
    "holdout",
    "mask_keys",
    "masked_topk",
    "pair_keys",
    "sampled_ranks",
]


def jsonable(x: Any) -> Any:
    """Numpy scalars/arrays inside dicts and lists → plain Python (for JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def result_header(
    split: Split, part: str, ks: list[int], mask: str, n_negatives: int | None, notes: list[str]
) -> dict[str, Any]:
    """The common head of every evaluation result: what was evaluated under which protocol."""
    return {
        "part": part,
        "dataset": split.train.name,
        "protocol": split.name,
        "seed": split.seed,
        "split": jsonable(split.describe()),
        "ks": ks,
        "mask": mask,
        "metrics": {},
        "n_evaluated": {},
        "n_negatives": n_negatives,
        "notes": notes,
    }
