"""Leakage audit of a split: held-out information must never reach training or the negatives.

A failed check is a bug in polyrec (or a hand-made split), not a user error, so it raises
:class:`LeakageError`, a :class:`RuntimeError`. Every check is one vectorised membership test
(:class:`~polyrec.data.sampling.PairSet`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from polyrec.data.log import InteractionLog
from polyrec.data.sampling import PairSet
from polyrec.data.splits import Holdout, Split


class LeakageError(RuntimeError):
    """A split leaks held-out pairs into training, validation or the sampled negatives."""


def _examples(users: np.ndarray, items: np.ndarray, bad: np.ndarray, n: int = 3) -> str:
    idx = np.flatnonzero(bad)[:n]
    return ", ".join(f"(user {int(users[i])}, item {int(items[i])})" for i in idx)


def _target_pairs(log: InteractionLog) -> tuple[np.ndarray, np.ndarray]:
    m = log.behavior == log.target_code
    return log.user[m], log.item[m]


def audit_split(split: Split) -> dict[str, Any]:
    """Check ``split`` for leakage; raise :class:`LeakageError` on the first problem found.

    Checks (dense codes; "target" = the target behavior):

    1. no valid or test pair is a target-behavior pair of ``split.train``;
    2. no test pair is also a valid pair;
    3. no stored negative of a held-out pair is a target positive of that pair's user (in train,
       valid, test or a held-out history), and every negative is a valid item code;
    4. for holdouts with a ``history`` (user split): no held-out user has a row in train.

    Returns the counts checked: ``{"train_target_pairs", "valid_pairs", "test_pairs",
    "negatives_checked", "heldout_users_checked"}``.
    """
    train = split.train
    n_items = train.n_items
    tu, ti = _target_pairs(train)
    train_set = PairSet(tu, ti, n_items)
    parts: tuple[tuple[str, Holdout], ...] = (("valid", split.valid), ("test", split.test))

    # 1. held-out pairs in train
    for nm, h in parts:
        bad = train_set.contains(h.user, h.item)
        if bad.any():
            raise LeakageError(
                f"split {split.name!r}: {int(bad.sum())} {nm} pairs are also target-behavior "
                f"training pairs, e.g. {_examples(h.user, h.item, bad)}"
            )

    # 2. test pairs that are also valid pairs
    valid_set = PairSet(split.valid.user, split.valid.item, n_items)
    bad = valid_set.contains(split.test.user, split.test.item)
    if bad.any():
        raise LeakageError(
            f"split {split.name!r}: {int(bad.sum())} test pairs are also validation pairs, e.g. "
            f"{_examples(split.test.user, split.test.item, bad)}"
        )

    # 3. negatives that are positives of the same user
    pos_u = [tu, split.valid.user, split.test.user]
    pos_i = [ti, split.valid.item, split.test.item]
    for _, h in parts:
        if h.history is not None:
            hu, hi = _target_pairs(h.history)
            pos_u.append(hu)
            pos_i.append(hi)
    positives = PairSet(np.concatenate(pos_u), np.concatenate(pos_i), n_items)
    n_neg = 0
    for nm, h in parts:
        if h.negatives is None:
            continue
        neg = np.asarray(h.negatives, dtype=np.int64)
        if neg.ndim != 2 or len(neg) != len(h):
            raise LeakageError(
                f"split {split.name!r}: {nm} negatives have shape {neg.shape}, expected "
                f"({len(h)}, N) — one row per held-out pair"
            )
        if neg.size and (neg.min() < 0 or neg.max() >= n_items):
            raise LeakageError(
                f"split {split.name!r}: {nm} negatives hold item codes outside 0..{n_items - 1}"
            )
        users = np.repeat(h.user.astype(np.int64)[:, None], neg.shape[1], axis=1)
        bad = positives.contains(users, neg)
        if bad.any():
            rows, cols = np.nonzero(bad)
            ex = ", ".join(
                f"(pair {int(r)}: user {int(h.user[r])}, negative item {int(neg[r, c])})"
                for r, c in zip(rows[:3], cols[:3], strict=True)
            )
            raise LeakageError(
                f"split {split.name!r}: {int(bad.sum())} {nm} negatives are target positives "
                f"of their user, e.g. {ex}"
            )
        n_neg += int(neg.size)

    # 4. held-out users (with a history) must not appear in train
    n_hist_users = 0
    train_users = np.unique(train.user)
    for nm, h in parts:
        if h.history is None:
            continue
        users = np.unique(np.concatenate([h.user, h.history.user]))
        seen = np.isin(users, train_users, assume_unique=True)
        if seen.any():
            ex = ", ".join(str(int(u)) for u in users[seen][:5])
            raise LeakageError(
                f"split {split.name!r}: {int(seen.sum())} held-out {nm} users also have training "
                f"rows, e.g. users {ex}"
            )
        n_hist_users += len(users)

    return {
        "train_target_pairs": len(train_set),
        "valid_pairs": len(split.valid),
        "test_pairs": len(split.test),
        "negatives_checked": n_neg,
        "heldout_users_checked": n_hist_users,
    }


__all__ = ["LeakageError", "audit_split"]
