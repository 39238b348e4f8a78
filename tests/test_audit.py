"""Leakage audit: clean splits pass, corrupted ones raise LeakageError."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from polyrec.data.log import InteractionLog
from polyrec.data.splits import Holdout, Split, leave_one_out, random_ratio, user_split
from polyrec.eval import LeakageError, audit_split


def make_log(n_users: int = 30, n_items: int = 200, seed: int = 0) -> InteractionLog:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for beh, n in (("view", 10), ("buy", 6)):
            items = rng.choice(n_items, size=n, replace=False)
            rows += [(u, int(i), beh, float(rng.random())) for i in items]
    rows += [(i % n_users, i, "view", 0.0) for i in range(n_items)]
    u, i, b, t = zip(*rows, strict=True)
    frame = {"user": list(u), "item": list(i), "behavior": list(b), "ts": list(t)}
    return InteractionLog.from_frame(frame, timestamp="ts", target="buy", name="audit")


def append_row(log: InteractionLog, user: int, item: int, behavior: str) -> InteractionLog:
    assert log.timestamp is not None
    return replace(
        log,
        user=np.r_[log.user, user],
        item=np.r_[log.item, item],
        behavior=np.r_[log.behavior, log.behavior_code(behavior)].astype(np.int8),
        timestamp=np.r_[log.timestamp, 99.0],
    )


@pytest.fixture
def loo() -> Split:
    return leave_one_out(make_log(), n_negatives=50, seed=4)


def test_clean_splits_pass(loo: Split) -> None:
    counts = audit_split(loo)
    assert counts["valid_pairs"] == len(loo.valid) and counts["test_pairs"] == len(loo.test)
    assert counts["negatives_checked"] == 50 * (len(loo.valid) + len(loo.test))
    assert counts["train_target_pairs"] > 0
    audit_split(random_ratio(make_log(seed=1), n_negatives=20))
    us = user_split(make_log(seed=2), n_negatives=20)
    assert audit_split(us)["heldout_users_checked"] > 0


def test_test_pair_in_train_raises(loo: Split) -> None:
    u, i = int(loo.test.user[0]), int(loo.test.item[0])
    loo.train = append_row(loo.train, u, i, "buy")
    with pytest.raises(LeakageError, match="test pairs are also target-behavior training"):
        audit_split(loo)


def test_valid_pair_in_train_raises(loo: Split) -> None:
    loo.train = append_row(loo.train, int(loo.valid.user[0]), int(loo.valid.item[0]), "buy")
    with pytest.raises(LeakageError, match="valid pairs"):
        audit_split(loo)


def test_auxiliary_behavior_of_test_pair_is_fine(loo: Split) -> None:
    # viewing the item that is later bought is not leakage of the buy
    loo.train = append_row(loo.train, int(loo.test.user[0]), int(loo.test.item[0]), "view")
    audit_split(loo)


def test_test_pair_also_valid_raises(loo: Split) -> None:
    v = loo.valid
    loo.valid = Holdout(np.r_[v.user, loo.test.user[:1]], np.r_[v.item, loo.test.item[:1]])
    with pytest.raises(LeakageError, match="also validation pairs"):
        audit_split(loo)


def test_negative_equal_to_positive_raises(loo: Split) -> None:
    assert loo.test.negatives is not None
    neg = loo.test.negatives.copy()
    neg[2, 7] = loo.test.item[2]  # the pair's own positive
    loo.test.negatives = neg
    with pytest.raises(LeakageError, match="negatives are target positives"):
        audit_split(loo)


def test_negative_equal_to_train_positive_raises(loo: Split) -> None:
    assert loo.valid.negatives is not None
    train = loo.train
    u = int(loo.valid.user[0])
    bought = train.item[(train.user == u) & (train.behavior == train.target_code)]
    neg = loo.valid.negatives.copy()
    neg[0, 0] = bought[0]
    loo.valid.negatives = neg
    with pytest.raises(LeakageError, match="valid negatives"):
        audit_split(loo)


def test_heldout_user_in_train_raises() -> None:
    split = user_split(make_log(seed=3))
    split.train = append_row(split.train, int(split.test.user[0]), 0, "view")
    with pytest.raises(LeakageError, match="held-out test users"):
        audit_split(split)


def test_leakage_error_is_a_bug_not_a_user_error() -> None:
    from polyrec.errors import PolyrecError

    assert issubclass(LeakageError, RuntimeError)
    assert not issubclass(LeakageError, PolyrecError)
