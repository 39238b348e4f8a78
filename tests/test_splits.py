"""Splits: no overlap between train / valid / test, deterministic under a seed, published folds kept."""

from __future__ import annotations

import numpy as np
import pytest

from polyrec.data.log import FOLD_TEST, FOLD_TRAIN, IdMap, InteractionLog
from polyrec.data.splits import (
    Split,
    leave_one_out,
    make_split,
    random_ratio,
    time_slots,
    user_split,
)
from polyrec.errors import DataError


def synthetic_log(
    n_users: int = 40, n_items: int = 60, seed: int = 0, fold: bool = False
) -> InteractionLog:
    rng = np.random.default_rng(seed)
    rows = []
    t = 0.0
    for u in range(n_users):
        for _ in range(rng.integers(1, 8)):
            t += 1
            rows.append((u, int(rng.integers(n_items)), 2, t))  # buy
        for _ in range(rng.integers(0, 10)):
            t += 1
            rows.append((u, int(rng.integers(n_items)), 0, t))  # view
    arr = np.array(rows)
    log = InteractionLog(
        user=arr[:, 0].astype(np.int64),
        item=arr[:, 1].astype(np.int64),
        behavior=arr[:, 2].astype(np.int8),
        behaviors=("view", "cart", "buy"),
        target="buy",
        user_map=IdMap.range(n_users),
        item_map=IdMap.range(n_items),
        timestamp=arr[:, 3].astype(np.float64),
        fold=np.zeros(len(arr), dtype=np.int8) if fold else None,
    )
    return log.deduplicated()


def target_pairs(split: Split) -> set[tuple[int, int]]:
    tr = split.train
    m = tr.behavior == tr.target_code
    return set(zip(tr.user[m].tolist(), tr.item[m].tolist(), strict=True))


def pairs(h) -> set[tuple[int, int]]:
    return set(zip(h.user.tolist(), h.item.tolist(), strict=True))


@pytest.mark.parametrize("fn", [leave_one_out, random_ratio, time_slots])
def test_no_overlap_between_parts(fn):
    log = synthetic_log()
    split = fn(log, seed=3)
    train, valid, test = target_pairs(split), pairs(split.valid), pairs(split.test)
    assert len(test) > 0 and len(valid) > 0
    assert not (train & valid)
    assert not (train & test)
    assert not (valid & test)


@pytest.mark.parametrize("protocol", ["leave-one-out", "random-ratio", "user-split", "time-slots"])
def test_deterministic_under_seed(protocol):
    log = synthetic_log()
    a = make_split(log, protocol, seed=7)
    b = make_split(log, protocol, seed=7)
    for x, y in ((a.valid, b.valid), (a.test, b.test)):
        np.testing.assert_array_equal(x.user, y.user)
        np.testing.assert_array_equal(x.item, y.item)
        if x.negatives is not None:
            np.testing.assert_array_equal(x.negatives, y.negatives)
    np.testing.assert_array_equal(a.train.user, b.train.user)


def test_random_ratio_seed_changes_split():
    log = synthetic_log()
    a, b = random_ratio(log, seed=1), random_ratio(log, seed=2)
    assert pairs(a.test) != pairs(b.test)


def test_leave_one_out_takes_latest_and_previous():
    # user 0 buys items 1, 2, 3 at t = 1, 2, 3 → test 3, valid 2, train 1
    log = InteractionLog.from_frame(
        {
            "user": [0, 0, 0, 0],
            "item": [1, 2, 3, 4],
            "behavior": ["buy", "buy", "buy", "view"],
            "t": [1, 2, 3, 0],
        },
        timestamp="t",
        target="buy",
        behavior_order=["view", "buy"],
    )
    split = leave_one_out(log, n_negatives=0)
    ext = log.item_map.to_external
    assert ext(split.test.item).tolist() == [3]
    assert ext(split.valid.item).tolist() == [2]
    m = split.train.behavior == split.train.target_code
    assert ext(split.train.item[m]).tolist() == [1]
    # the auxiliary behavior is kept whole
    assert (split.train.behavior != split.train.target_code).sum() == 1


def test_leave_one_out_removes_repeated_purchases_of_held_out_pairs():
    # user buys item 5 twice; the latest is the test pair → the earlier copy must not train
    log = InteractionLog.from_frame(
        {"user": [0, 0, 0, 0], "item": [5, 6, 7, 5], "t": [1, 2, 3, 4]},
        behavior=None,
        timestamp="t",
        target="buy",
    )
    split = leave_one_out(log, n_negatives=0)
    assert pairs(split.test) == {(0, int(log.item_map.to_dense([5])[0]))}
    assert not (target_pairs(split) & pairs(split.test))


def test_published_test_fold_is_used():
    log = synthetic_log(fold=True)
    assert log.fold is not None
    # publish one test pair per user with ≥ 1 buy: the earliest buy (not the latest)
    fold = log.fold.copy()
    m = np.flatnonzero(log.behavior == log.target_code)
    first = {}
    for r in m:
        first.setdefault(int(log.user[r]), r)
    fold[list(first.values())] = FOLD_TEST
    log.fold = fold
    split = leave_one_out(log, n_negatives=5)
    expected = {(int(log.user[r]), int(log.item[r])) for r in first.values()}
    assert pairs(split.test) == expected
    assert split.params["published_test"] is True
    assert (split.train.fold == FOLD_TRAIN).all()


def test_leave_one_out_ignores_a_published_user_split():
    """A SimRec-style fold holds out whole users; leave-one-out then uses every user's whole
    sequence (as SASRec does on the same data) and says so in the split's parameters."""
    log = synthetic_log(fold=True)
    assert log.fold is not None
    fold = np.full(len(log), FOLD_TRAIN, dtype=log.fold.dtype)
    held_users = np.arange(log.n_users) % 5 == 0
    fold[held_users[log.user]] = FOLD_TEST
    log.fold = fold
    split = leave_one_out(log, n_negatives=5)
    plain = leave_one_out(synthetic_log(fold=True), n_negatives=5)
    assert "published_fold" in split.params and split.params["published_test"] is False
    assert pairs(split.test) == pairs(plain.test)  # every eligible user, latest pair
    # a pair-level fold (held-out users keep training rows) is still honoured
    assert "published_fold" not in plain.params


def test_sampled_negatives_avoid_target_positives():
    log = synthetic_log()
    split = leave_one_out(log, n_negatives=20, seed=1)
    t = log.behavior == log.target_code
    pos = set(zip(log.user[t].tolist(), log.item[t].tolist(), strict=True))
    negs = split.test.negatives
    assert negs is not None and negs.shape == (len(split.test), 20)
    for u, row in zip(split.test.user.tolist(), negs.tolist(), strict=True):
        assert len(set(row)) == 20
        assert not any((u, i) in pos for i in row)


def test_random_ratio_proportions():
    log = synthetic_log(n_users=200)
    split = random_ratio(log, ratio=0.8, valid_ratio=0.1, seed=0, n_negatives=0)
    t = log.behavior == log.target_code
    n = len(set(zip(log.user[t].tolist(), log.item[t].tolist(), strict=True)))
    assert abs(len(split.test) - 0.2 * n) <= 1
    assert abs(len(split.valid) - 0.1 * 0.8 * n) <= 2


def test_user_split_disjoint_users_and_history_cut():
    log = synthetic_log(n_users=100)
    split = user_split(log, seed=0)
    train_users = set(split.train.user.tolist())
    for h in (split.valid, split.test):
        assert h.history is not None
        assert not (set(h.user.tolist()) & train_users)
        # every target comes after every history item of the same user
        for u in np.unique(h.user):
            hist_t = h.history.timestamp[h.history.user == u]
            tgt = h.user == u
            assert len(hist_t) >= 1 and tgt.sum() >= 1
    assert not (set(split.valid.user.tolist()) & set(split.test.user.tolist()))


def test_time_slots_assigns_slots_to_train_rows():
    log = synthetic_log()
    split = time_slots(log, slot_days=50 / 86400)  # 50 time units per slot
    assert split.slot is not None and len(split.slot) == len(split.train)
    assert split.slot.min() == 0 and split.slot.max() >= 1
    order = np.argsort(split.train.timestamp, kind="stable")
    assert (np.diff(split.slot[order]) >= 0).all()


def test_time_slots_need_timestamps():
    log = InteractionLog.from_frame(
        {"user": [0, 0, 0], "item": [1, 2, 3]}, behavior=None, target="buy"
    )
    with pytest.raises(DataError, match="timestamp"):
        time_slots(log)


def test_no_test_users_is_a_clear_error():
    log = InteractionLog.from_frame(
        {"user": [0, 1, 2], "item": [1, 2, 3]}, behavior=None, target="buy"
    )
    with pytest.raises(DataError, match="no test users"):
        leave_one_out(log)


def test_no_target_interactions_is_a_clear_error():
    log = InteractionLog.from_frame(
        {"user": [0, 1], "item": [1, 2], "behavior": ["view", "buy"]}, target="buy"
    )
    log = log.select(log.behavior != log.target_code)
    with pytest.raises(DataError, match="no interactions of the target behavior"):
        leave_one_out(log)


def test_users_without_target_are_counted():
    log = synthetic_log()
    # add a user who only viewed
    extra = InteractionLog(
        user=np.r_[log.user, 40],
        item=np.r_[log.item, 0],
        behavior=np.r_[log.behavior, 0].astype(np.int8),
        behaviors=log.behaviors,
        target="buy",
        user_map=IdMap.range(41),
        item_map=log.item_map,
        timestamp=np.r_[log.timestamp, 1e9],
    )
    split = leave_one_out(extra, n_negatives=0)
    assert split.dropped_users == 1
    assert 40 not in split.test.user


def test_save_load_round_trip(tmp_path):
    log = synthetic_log()
    split = leave_one_out(log, seed=2, n_negatives=9)
    split.save(tmp_path / "split")
    again = Split.load(tmp_path / "split", log)
    np.testing.assert_array_equal(again.test.negatives, split.test.negatives)
    np.testing.assert_array_equal(again.train.item, split.train.item)
    assert again.describe() == split.describe()


def test_load_refuses_other_dataset(tmp_path):
    split = leave_one_out(synthetic_log(seed=0), n_negatives=0)
    split.save(tmp_path / "split")
    with pytest.raises(DataError, match="dataset changed"):
        Split.load(tmp_path / "split", synthetic_log(seed=1))


def test_hide_all_removes_held_out_pairs_from_every_behavior():
    # user 0 views then buys items 1, 2, 3; test = 3, valid = 2
    log = InteractionLog.from_frame(
        {
            "user": [0] * 6,
            "item": [1, 2, 3, 1, 2, 3],
            "behavior": ["view"] * 3 + ["buy"] * 3,
            "t": [1, 2, 3, 4, 5, 6],
        },
        timestamp="t",
        target="buy",
        behavior_order=["view", "buy"],
    )
    ext = log.item_map.to_external
    strict = leave_one_out(log, n_negatives=0)  # hide="all" is the default
    assert sorted(ext(strict.train.item).tolist()) == [1, 1]
    loose = leave_one_out(log, n_negatives=0, hide="target")
    views = loose.train.behavior == loose.train.behavior_code("view")
    assert sorted(ext(loose.train.item[views]).tolist()) == [1, 2, 3]


def test_user_split_ignores_a_fold_of_held_out_pairs() -> None:
    """The embedded Retailrocket's fold holds out one purchase per user (pairs, not users): a
    user split must split the users with its seed, not make every user a test user."""
    from polyrec.data.datasets import load_dataset

    log = load_dataset("embedded:retailrocket")
    split = make_split(log, "user-split", seed=3)
    assert split.params["published_users"] is False
    assert "ignored" in split.params["published_fold"]
    n_test = len(np.unique(split.test.users))
    assert 0.05 * log.n_users < n_test < 0.15 * log.n_users
    train_users = set(np.unique(split.train.user).tolist())
    assert not train_users & set(np.unique(split.test.users).tolist())


def _viewed_then_bought() -> InteractionLog:
    # user 0 views then buys items 1, 2, 3 (leave-one-out: test 3, valid 2); user 1 buys 4, 5
    # and views 5 only; user 2 buys 6, 7 and views nothing
    return InteractionLog.from_frame(
        {
            "user": [0] * 6 + [1] * 3 + [2] * 2,
            "item": [1, 2, 3, 1, 2, 3, 5, 4, 5, 6, 7],
            "behavior": ["view"] * 3 + ["buy"] * 3 + ["view", "buy", "buy", "buy", "buy"],
            "t": [1, 2, 3, 4, 5, 6, 1, 2, 3, 1, 2],
        },
        timestamp="t",
        target="buy",
        behavior_order=["view", "buy"],
    )


def test_aux_overlap_and_label_say_which_hide_protocol() -> None:
    log = _viewed_then_bought()
    loose = leave_one_out(log, n_negatives=0, hide="target")
    # test pairs (0, 3), (1, 5), (2, 7): users 0 and 1 viewed theirs, user 2 did not
    assert loose.aux_overlap()["test"] == pytest.approx(2 / 3)
    assert loose.label == "leave-one-out, hide target"
    strict = leave_one_out(log, n_negatives=0)
    assert strict.aux_overlap()["test"] == 0.0  # every row of a held-out pair left training
    assert strict.describe()["label"] == "leave-one-out, hide all"
    assert strict.describe()["aux_overlap"] == strict.aux_overlap()


def test_random_ratio_hide_choice() -> None:
    log = synthetic_log(n_users=60, seed=4)
    default = random_ratio(log, seed=1, n_negatives=0)
    assert default.params["hide"] == "target"  # MBA's code: auxiliary rows stay
    strict = random_ratio(log, seed=1, n_negatives=0, hide="all")
    held = np.r_[strict.test.user * log.n_items + strict.test.item]
    keys = strict.train.user * log.n_items + strict.train.item
    assert not np.isin(keys, held).any()
    assert strict.aux_overlap()["test"] == 0.0
    assert default.aux_overlap()["test"] is not None
    assert pairs(default.test) == pairs(strict.test)  # the same held-out pairs
    with pytest.raises(DataError, match="hide"):
        random_ratio(log, hide="some")


def test_data_config_hide_defaults_per_protocol() -> None:
    from polyrec.config import DataConfig

    assert DataConfig(protocol="leave-one-out").split_params()["hide"] == "auto"
    assert DataConfig(protocol="time-slots").split_params()["hide"] == "all"
    assert DataConfig(protocol="random-ratio").split_params()["hide"] == "target"
    assert DataConfig(protocol="random-ratio", hide="all").split_params()["hide"] == "all"


def test_leave_one_out_valid_users_sample() -> None:
    # 6 users buying items 0, 1, 2 in order: test = 2, validation = 1 for every user
    n = 6
    log = InteractionLog.from_frame(
        {"user": np.repeat(np.arange(n), 3), "item": np.tile([0, 1, 2], n),
         "behavior": ["buy"] * (3 * n), "t": np.tile([1, 2, 3], n)},
        timestamp="t", target="buy",
    )  # fmt: skip
    full = leave_one_out(log, n_negatives=0)
    assert len(np.unique(full.valid.users)) == n
    part = leave_one_out(log, n_negatives=0, valid_users=2, seed=5)
    sampled = np.unique(part.valid.users)
    assert len(sampled) == 2 and part.params["valid_users"] == 2
    # the unsampled users' latest remaining purchase stays in training; the test set is whole
    assert len(part.train) == len(full.train) + (n - 2)
    assert len(part.test.users) == n
    again = leave_one_out(log, n_negatives=0, valid_users=2, seed=5)
    assert np.array_equal(np.unique(again.valid.users), sampled)  # seeded
    with pytest.raises(DataError, match="valid_users"):
        leave_one_out(log, n_negatives=0, valid_users=0)


def _published(log: InteractionLog, test_pairs: list[tuple[int, int]]) -> InteractionLog:
    """``log`` with the target rows of ``test_pairs`` (internal ids) published as its test fold."""
    fold = np.full(len(log), FOLD_TRAIN, dtype=np.int8)
    tmask = log.behavior == log.target_code
    for u, i in test_pairs:
        fold[tmask & (log.user == u) & (log.item == i)] = FOLD_TEST
    log.fold = fold
    return log


def test_hide_auto_follows_the_published_split() -> None:
    """A published test whose purchases keep their views in training (MB-CGCN / CRGCN / MuLe
    files) is split as published (hide target); one without (HKUDS) or no published test at all
    hides every behavior; the default of a leave-one-out config is 'auto'."""
    from polyrec.config import load_config

    log = _viewed_then_bought()
    item = log.item_map.to_dense
    kept = _published(log, [(0, int(item([3])[0])), (2, int(item([7])[0]))])  # user 0 viewed 3
    split = leave_one_out(kept, n_negatives=0, hide="auto")
    assert split.params["hide"] == "target" and split.label == "leave-one-out, hide target"
    assert split.aux_overlap()["test"] == pytest.approx(1 / 2)

    log = _viewed_then_bought()
    none_viewed = _published(log, [(2, int(log.item_map.to_dense([7])[0]))])
    assert leave_one_out(none_viewed, n_negatives=0, hide="auto").params["hide"] == "all"
    assert leave_one_out(_viewed_then_bought(), n_negatives=0, hide="auto").params["hide"] == "all"
    assert load_config(None, []).data.split_params()["hide"] == "auto"
    assert load_config(None, ['data.hide="target"']).data.split_params()["hide"] == "target"
    with pytest.raises(DataError, match="hide"):
        leave_one_out(_viewed_then_bought(), hide="some")
