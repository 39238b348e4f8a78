"""Named, seeded splits of an :class:`InteractionLog` into train / validation / test.

Every split returns a :class:`Split`: a training log (all behaviors, minus every held-out target
pair), and validation and test :class:`Holdout` sets of target-behavior (user, item) pairs. A split
records its name, parameters, seed and the dataset fingerprint, and saves to one ``.npz`` file
(no pickle) plus JSON metadata.

Protocols:
* ``leave-one-out`` – per user, the published test item when the data has one, else the latest
  target interaction; the previous (latest remaining) target interaction becomes validation.
* ``random-ratio`` – MBA §4.3: target pairs split ``ratio : 1-ratio`` at random (a published
  test fold is kept), and a validation slice (``valid_ratio`` of train pairs) carved from train.
* ``user-split`` – ComiRec: users split 8:1:1; held-out users give the first ``history_fraction``
  of their chronological sequence as history and the rest as targets.
* ``time-slots`` – leave-one-out, plus the time slot of every training interaction (EGCM).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from polyrec.data.log import FOLD_TEST, FOLD_TRAIN, FOLD_VALID, InteractionLog
from polyrec.data.sampling import PairSet, pair_keys, sample_eval_negatives
from polyrec.errors import DataError
from polyrec.fsutil import temporary_sibling

PROTOCOLS = ("leave-one-out", "random-ratio", "user-split", "time-slots")


@dataclass(eq=False)
class Holdout:
    """Held-out target pairs; ``negatives[j]`` are the sampled 1+N candidates' negatives of pair j.

    ``history`` is set for protocols whose held-out users are not in training (user split): the
    interactions those users give as input at evaluation time.
    """

    user: np.ndarray
    item: np.ndarray
    negatives: np.ndarray | None = None
    history: InteractionLog | None = None
    history_rows: np.ndarray | None = None  # rows of the full log that make up ``history``

    def __len__(self) -> int:
        return len(self.user)

    @property
    def users(self) -> np.ndarray:
        """Distinct users with at least one held-out pair (sorted)."""
        return np.unique(self.user)


@dataclass(eq=False)
class Split:
    name: str
    seed: int
    fingerprint: str
    train: InteractionLog
    valid: Holdout
    test: Holdout
    params: dict[str, Any] = field(default_factory=dict)
    slot: np.ndarray | None = None  # time slot per training interaction (time-slots protocol)
    dropped_users: int = 0  # users with no target interaction (not evaluated)
    # rows of the full log that form ``train`` (saved instead of the rows themselves)
    train_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _aux_overlap: dict[str, float | None] | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        """The protocol's name with its ``hide`` variant, e.g. ``leave-one-out, hide all``."""
        hide = self.params.get("hide")
        return f"{self.name}, hide {hide}" if hide else self.name

    def aux_overlap(self) -> dict[str, float | None]:
        """Share of held-out target pairs (valid, test) with an auxiliary-behavior training row.

        Under ``hide="target"`` (MB-CGCN, CRGCN, MuLe, MBA's code) a held-out purchase's view or
        cart of the same item stays in training, which a model (or the user's history) can use;
        under ``hide="all"`` (the HKUDS/CML test sets) it is 0 by construction. None for a
        protocol whose held-out users are not in training (user split) or an empty part.
        Computed once (every evaluation's result header describes the split).
        """
        if self._aux_overlap is not None:
            return dict(self._aux_overlap)
        train = self.train
        aux = train.behavior != train.target_code
        keys = pair_keys(train.user[aux], train.item[aux], train.n_items)
        out: dict[str, float | None] = {}
        for part, h in (("valid", self.valid), ("test", self.test)):
            if len(h) == 0 or h.history is not None:
                out[part] = None
                continue
            q = h.user.astype(np.int64) * train.n_items + h.item.astype(np.int64)
            out[part] = float(np.isin(q, keys).mean())
        self._aux_overlap = out
        return dict(out)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "seed": self.seed,
            "params": self.params,
            "aux_overlap": self.aux_overlap(),
            "dataset_fingerprint": self.fingerprint,
            "train_interactions": len(self.train),
            "valid_pairs": len(self.valid),
            "test_pairs": len(self.test),
            "valid_users": int(self.valid.users.size),
            "test_users": int(self.test.users.size),
            "users_without_target": self.dropped_users,
            "slots": None if self.slot is None else int(self.slot.max(initial=-1) + 1),
        }

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Save the split's row selection and held-out sets (``.npz`` + ``.json``), atomically."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "train_rows": self.train_rows,
            "valid_user": self.valid.user,
            "valid_item": self.valid.item,
            "test_user": self.test.user,
            "test_item": self.test.item,
        }
        for nm, h in (("valid", self.valid), ("test", self.test)):
            if h.negatives is not None:
                arrays[f"{nm}_negatives"] = h.negatives
            if h.history_rows is not None:
                arrays[f"{nm}_history_rows"] = h.history_rows
        if self.slot is not None:
            arrays["slot"] = self.slot
        meta = {
            "name": self.name,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "params": self.params,
            "dropped_users": self.dropped_users,
        }
        tmpj = temporary_sibling(path, ".json")
        tmpj.write_text(json.dumps(meta, indent=2))
        tmpj.replace(path.with_suffix(".json"))
        # the arrays last: a split whose .npz exists is complete
        tmp = temporary_sibling(path, ".npz")
        np.savez_compressed(tmp, **arrays)  # type: ignore[arg-type]
        tmp.replace(path.with_suffix(".npz"))

    @classmethod
    def load(cls, path: str | Path, log: InteractionLog) -> Split:
        path = Path(path)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            z = np.load(path.with_suffix(".npz"), allow_pickle=False)
            arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"split file {str(path)!r} is missing or corrupt: {e}") from None
        if meta["fingerprint"] != log.fingerprint():
            raise DataError(
                f"split {str(path)!r} was made for dataset {meta['fingerprint']}, not for "
                f"{log.fingerprint()}; the dataset changed since the run"
            )
        if str(meta["params"].get("published_fold", "")).startswith("ignored"):
            log = replace(log, fold=None)  # as the split was made (see leave_one_out)

        def hold(nm: str) -> Holdout:
            rows = arrays.get(f"{nm}_history_rows")
            return Holdout(
                arrays[f"{nm}_user"],
                arrays[f"{nm}_item"],
                arrays.get(f"{nm}_negatives"),
                None if rows is None else log.select(rows),
                rows,
            )

        split = cls(
            name=meta["name"],
            seed=meta["seed"],
            fingerprint=meta["fingerprint"],
            train=log.select(arrays["train_rows"]),
            valid=hold("valid"),
            test=hold("test"),
            params=meta["params"],
            slot=arrays.get("slot"),
            dropped_users=meta.get("dropped_users", 0),
        )
        split.train_rows = arrays["train_rows"]
        return split


# ---------------------------------------------------------------------- helpers
def _order_key(log: InteractionLog) -> np.ndarray:
    """Chronological order key: timestamp where known, file order as the tie-break."""
    pos = np.arange(len(log), dtype=np.float64)
    if log.timestamp is None:
        return pos
    return log.timestamp  # ties broken by np.lexsort with pos


def _last_per_user(users: np.ndarray, ts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Row (from ``rows``) of the latest entry per user: sort by (user, ts, row)."""
    if len(rows) == 0:
        return rows
    order = np.lexsort((rows, ts[rows], users[rows]))
    r = rows[order]
    u = users[r]
    last = np.ones(len(r), dtype=bool)
    last[:-1] = u[1:] != u[:-1]
    return r[last]


def _pair_rows_mask(
    log: InteractionLog, rows_mask: np.ndarray, u: np.ndarray, i: np.ndarray
) -> np.ndarray:
    """Mask of rows (within ``rows_mask``) whose (user, item) pair is in the given pairs."""
    ps = PairSet(u, i, log.n_items)
    return rows_mask & ps.contains(log.user, log.item)


def _attach_negatives(split: Split, log: InteractionLog, n_negatives: int, seed: int) -> None:
    """Draw the sampled-protocol negatives once: items the user never had in the target behavior."""
    if n_negatives <= 0:
        return
    tmask = log.behavior == log.target_code
    exclude = PairSet(log.user[tmask], log.item[tmask], log.n_items)
    # cap N so that every evaluated user has N distinct items outside their target positives
    per_user = np.bincount(exclude.keys // log.n_items, minlength=log.n_users)
    held = np.r_[split.valid.user, split.test.user]
    most = int(per_user[held].max(initial=0))
    n = min(n_negatives, log.n_items - most)
    if n < n_negatives:
        split.params["n_negatives"] = n
    for k, h in enumerate((split.valid, split.test)):
        h.negatives = sample_eval_negatives(h.user, log.n_items, exclude, n, seed * 7919 + 17 + k)


def _check_target(log: InteractionLog) -> np.ndarray:
    tmask = log.behavior == log.target_code
    if not tmask.any():
        raise DataError(
            f"dataset {log.name!r} has no interactions of the target behavior {log.target!r}"
        )
    return tmask


def _finish(
    log: InteractionLog,
    name: str,
    seed: int,
    params: dict[str, Any],
    train_mask: np.ndarray,
    valid: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    n_negatives: int,
    slot: np.ndarray | None = None,
    dropped: int = 0,
    fingerprint: str | None = None,
) -> Split:
    if len(test[0]) == 0:
        raise DataError(
            f"dataset {log.name!r}: the {name} split leaves no test users for the target behavior "
            f"{log.target!r} (too few target interactions per user)"
        )
    rows = np.flatnonzero(train_mask)
    split = Split(
        name=name,
        seed=seed,
        # the dataset as loaded (before a split drops a published fold it does not use)
        fingerprint=fingerprint or log.fingerprint(),
        train=log.select(rows),
        valid=Holdout(valid[0].astype(np.int64), valid[1].astype(np.int64)),
        test=Holdout(test[0].astype(np.int64), test[1].astype(np.int64)),
        params=params,
        slot=None if slot is None else slot[rows],
        dropped_users=dropped,
    )
    split.train_rows = rows
    _attach_negatives(split, log, n_negatives, seed)
    return split


# ---------------------------------------------------------------------- protocols
def leave_one_out(
    log: InteractionLog,
    *,
    seed: int = 0,
    n_negatives: int = 99,
    hide: str = "all",
    valid_users: int | None = None,
) -> Split:
    """Leave-one-out on the target behavior.

    ``hide="auto"`` follows a published split: "target" when the data's own training rows
    hold auxiliary rows of its published test pairs (the split of MB-CGCN, CRGCN and MuLe keeps
    a purchase's views and carts in training), else "all" (the HKUDS/CML test sets, and data
    without a published test).

    Test: the published test pairs (``fold == FOLD_TEST``) when the data has them, else each
    user's latest target pair (users with ≥ 2 distinct target items). Validation: each user's
    latest remaining target pair, for users who keep ≥ 1 target pair in train. Every row of the
    target behavior with a held-out (user, item) pair is removed from train; auxiliary behaviors
    are kept whole unless ``hide="all"`` (default): then every row of a held-out (user, item)
    pair is removed from train in **every** behavior, so validation is built like the published
    test sets of the HKUDS data (whose test items never appear in the user's training views) —
    otherwise validation rewards "recommend what the user viewed" while test does not. Without
    timestamps, "latest" is file order. ``valid_users``: validate on at most that many users, a
    sample drawn with ``seed`` (the others' latest pairs stay in train) — on logs with ~100k
    users a full-ranking validation of every user each epoch costs more than the epoch.
    """
    if hide not in ("all", "target", "auto"):
        raise DataError(f"hide must be 'all', 'target' or 'auto' (got {hide!r})")
    user_fold = held_out_users_only(log)
    loaded = log.fingerprint()
    if user_fold:
        # a published *user* split (SimRec / ComiRec): its held-out users have no training rows,
        # so leave-one-out (SASRec's protocol on the same data) uses every user's whole sequence
        log = replace(log, fold=None)
    tmask = _check_target(log)
    ts = _order_key(log)
    published = log.fold is not None and bool((log.fold[tmask] == FOLD_TEST).any())
    avail = tmask.copy()
    if log.fold is not None:
        # rows published as valid/test never train; published valid is used as-is
        avail &= log.fold == FOLD_TRAIN
    if published:
        assert log.fold is not None
        trows = np.flatnonzero(tmask & (log.fold == FOLD_TEST))
        test_u, test_i = log.user[trows], log.item[trows]
    else:
        # distinct pairs per user: only users with ≥ 2 distinct target items get a test pair
        cand = np.flatnonzero(avail)
        n_distinct = _distinct_items_per_user(log, cand)
        eligible = cand[n_distinct[log.user[cand]] >= 2]
        trows = _last_per_user(log.user, ts, eligible)
        test_u, test_i = log.user[trows], log.item[trows]
    if hide == "auto":
        hide = "all"
        if published:
            assert log.fold is not None
            aux_train = ~tmask & (log.fold == FOLD_TRAIN)
            if _pair_rows_mask(log, aux_train, test_u, test_i).any():
                hide = "target"  # the publisher kept the held-out purchases' auxiliary rows
    avail &= ~_pair_rows_mask(log, avail, test_u, test_i)
    # validation: latest remaining pair of users who keep ≥ 2 distinct items (one stays in train)
    cand = np.flatnonzero(avail)
    n_distinct = _distinct_items_per_user(log, cand)
    eligible = cand[n_distinct[log.user[cand]] >= 2]
    vrows = _last_per_user(log.user, ts, eligible)
    valid_u, valid_i = log.user[vrows], log.item[vrows]
    if log.fold is not None and bool((log.fold[tmask] == FOLD_VALID).any()):
        prow = np.flatnonzero(tmask & (log.fold == FOLD_VALID))
        # a published validation pair that is also a test pair would leak: drop it
        prow = prow[~PairSet(test_u, test_i, log.n_items).contains(log.user[prow], log.item[prow])]
        valid_u, valid_i = log.user[prow], log.item[prow]
    if valid_users is not None:
        if valid_users < 1:
            raise DataError(f"valid_users must be at least 1 (got {valid_users})")
        users = np.unique(valid_u)
        if len(users) > valid_users:
            keep = np.random.default_rng([seed, 7]).choice(users, valid_users, replace=False)
            sel = np.isin(valid_u, keep)
            valid_u, valid_i = valid_u[sel], valid_i[sel]
    scope = np.ones(len(log), dtype=bool) if hide == "all" else tmask
    held = _pair_rows_mask(log, scope, np.r_[valid_u, test_u], np.r_[valid_i, test_i])
    train_mask = ~held
    if log.fold is not None:
        train_mask &= log.fold == FOLD_TRAIN
    users_with_target = np.unique(log.user[tmask]).size
    params: dict[str, Any] = {"published_test": published, "n_negatives": n_negatives, "hide": hide}
    if valid_users is not None:
        params["valid_users"] = valid_users
    if user_fold:
        params["published_fold"] = "ignored: it holds out whole users (a user split)"
    return _finish(
        log,
        "leave-one-out",
        seed,
        params,
        train_mask,
        (valid_u, valid_i),
        (test_u, test_i),
        n_negatives,
        dropped=log.n_users - users_with_target,
        fingerprint=loaded,
    )


def held_out_users_only(log: InteractionLog) -> bool:
    """Whether the published fold holds out whole users: no user with a validation or test row
    has a training row (a user split such as SimRec's), as opposed to held-out pairs."""
    if log.fold is None:
        return False
    held = log.fold != FOLD_TRAIN
    if not held.any():
        return False
    seen = np.zeros(log.n_users, dtype=bool)
    seen[log.user[~held]] = True
    return not bool(seen[log.user[held]].any())


def _distinct_items_per_user(log: InteractionLog, rows: np.ndarray) -> np.ndarray:
    keys = pair_keys(log.user[rows], log.item[rows], log.n_items)
    return np.bincount(keys // log.n_items, minlength=log.n_users)


def random_ratio(
    log: InteractionLog,
    *,
    ratio: float = 0.8,
    valid_ratio: float = 0.1,
    seed: int = 0,
    n_negatives: int = 99,
    hide: str = "target",
) -> Split:
    """MBA's protocol (§4.3): distinct target pairs split ``ratio : 1 - ratio`` at random.

    A published test fold is kept as the test set. The paper has no validation set; polyrec
    carves ``valid_ratio`` of the training target pairs as validation (model selection only).
    ``hide="target"`` (default, as MBA's code) removes only the target rows of held-out pairs
    from training; ``"all"`` removes their rows in every behavior.
    """
    if hide not in ("all", "target"):
        raise DataError(f"hide must be 'all' or 'target' (got {hide!r})")
    if not 0 < ratio < 1 or not 0 <= valid_ratio < 1:
        raise DataError(
            f"random-ratio needs 0 < ratio < 1 and 0 <= valid_ratio < 1 (got {ratio}, {valid_ratio})"
        )
    tmask = _check_target(log)
    rng = np.random.default_rng(seed)
    published = log.fold is not None and bool((log.fold[tmask] == FOLD_TEST).any())
    if published:
        assert log.fold is not None
        tr = tmask & (log.fold == FOLD_TEST)
        tkeys = pair_keys(log.user[tr], log.item[tr], log.n_items)
        avail = tmask & (log.fold == FOLD_TRAIN)
        keys = pair_keys(log.user[avail], log.item[avail], log.n_items)
        keys = np.setdiff1d(keys, tkeys)
    else:
        keys = pair_keys(log.user[tmask], log.item[tmask], log.n_items)
        perm = rng.permutation(len(keys))
        n_test = round(len(keys) * (1 - ratio))
        tkeys = np.sort(keys[perm[:n_test]])
        keys = np.sort(keys[perm[n_test:]])
    perm = rng.permutation(len(keys))
    n_valid = round(len(keys) * valid_ratio)
    vkeys = np.sort(keys[perm[:n_valid]])
    held = np.r_[vkeys, tkeys]
    row_keys = log.user * log.n_items + log.item
    scope = tmask if hide == "target" else np.ones(len(log), dtype=bool)
    train_mask = ~(scope & np.isin(row_keys, held))
    if log.fold is not None:
        train_mask &= log.fold == FOLD_TRAIN
    params = {
        "ratio": ratio,
        "valid_ratio": valid_ratio,
        "published_test": published,
        "n_negatives": n_negatives,
        "hide": hide,
    }
    return _finish(
        log,
        "random-ratio",
        seed,
        params,
        train_mask,
        (vkeys // log.n_items, vkeys % log.n_items),
        (tkeys // log.n_items, tkeys % log.n_items),
        n_negatives,
        dropped=log.n_users - np.unique(log.user[tmask]).size,
    )


def user_split(
    log: InteractionLog,
    *,
    ratios: tuple[float, float, float] = (0.8, 0.1, 0.1),
    history_fraction: float = 0.8,
    seed: int = 0,
    n_negatives: int = 0,
) -> Split:
    """ComiRec protocol: users split 8:1:1 (seeded, or the published per-user fold).

    Held-out users' target-behavior sequences are cut chronologically: the first
    ``history_fraction`` (at least one item) is history, the rest are targets. Training holds
    every interaction of training users.
    """
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise DataError(f"user-split ratios must sum to 1 (got {ratios})")
    tmask = _check_target(log)
    # a published fold is used only when it holds out whole users (SimRec's); held-out *pairs*
    # (a leave-one-out test purchase per user, as in the embedded Retailrocket) would make every
    # user a test user, so that fold is ignored and the users are split with the seed
    pair_fold = log.fold is not None and bool((log.fold != FOLD_TRAIN).any())
    if pair_fold and held_out_users_only(log):
        pair_fold = False
        assert log.fold is not None  # held_out_users_only needs a fold
        ufold = np.zeros(log.n_users, dtype=np.int8)
        np.maximum.at(ufold, log.user, log.fold)
        published = True
    else:
        rng = np.random.default_rng(seed)
        perm = rng.permutation(log.n_users)
        n_tr = round(log.n_users * ratios[0])
        n_va = round(log.n_users * ratios[1])
        ufold = np.zeros(log.n_users, dtype=np.int8)
        ufold[perm[n_tr : n_tr + n_va]] = FOLD_VALID
        ufold[perm[n_tr + n_va :]] = FOLD_TEST
        published = False
    ts = _order_key(log)
    row_fold = ufold[log.user]
    train_mask = row_fold == FOLD_TRAIN
    holds = []
    for code in (FOLD_VALID, FOLD_TEST):
        rows = np.flatnonzero(tmask & (row_fold == code))
        order = np.lexsort((rows, ts[rows], log.user[rows]))
        rows = rows[order]
        u = log.user[rows]
        starts = np.r_[0, np.flatnonzero(u[1:] != u[:-1]) + 1]
        lengths = np.diff(np.r_[starts, len(rows)])
        rank = np.arange(len(rows)) - np.repeat(starts, lengths)
        n_hist = np.maximum(1, np.floor(lengths * history_fraction).astype(np.int64))
        is_hist = rank < np.repeat(n_hist, lengths)
        keep_user = np.repeat(lengths >= 2, lengths)  # need ≥ 1 history and ≥ 1 target
        hist_rows = rows[is_hist & keep_user]
        tgt_rows = rows[~is_hist & keep_user]
        holds.append(
            Holdout(log.user[tgt_rows], log.item[tgt_rows], None, log.select(hist_rows), hist_rows)
        )
    if len(holds[1]) == 0:
        raise DataError(f"dataset {log.name!r}: the user split leaves no test users")
    rows = np.flatnonzero(train_mask)
    split = Split(
        name="user-split",
        seed=seed,
        fingerprint=log.fingerprint(),
        train=log.select(rows),
        valid=holds[0],
        test=holds[1],
        params={
            "ratios": list(ratios),
            "history_fraction": history_fraction,
            "published_users": published,
            **({"published_fold": "ignored: it holds out pairs, not users"} if pair_fold else {}),
        },
    )
    split.train_rows = rows
    _attach_negatives(split, log, n_negatives, seed)
    return split


def time_slots(
    log: InteractionLog,
    *,
    slot_days: float = 30.0,
    seconds_per_unit: float = 1.0,
    seed: int = 0,
    n_negatives: int = 99,
    hide: str = "all",
) -> Split:
    """Leave-one-out plus a time-slot index for every training interaction (EGCM).

    Slot t covers ``[t0 + t·L, t0 + (t+1)·L)`` with ``L = slot_days`` days and ``t0`` the
    earliest training timestamp; ``seconds_per_unit`` converts the log's time unit to seconds
    (1 for unix time, 86400 for day indices).
    """
    if log.timestamp is None:
        raise DataError(f"dataset {log.name!r} has no timestamp column; time slots need one")
    if slot_days <= 0:
        raise DataError(f"slot_days must be positive (got {slot_days})")
    base = leave_one_out(log, seed=seed, n_negatives=n_negatives, hide=hide)
    ts = log.timestamp * seconds_per_unit
    t0 = ts[base.train_rows].min()
    slot_all = np.floor((ts - t0) / (slot_days * 86400.0)).clip(min=0).astype(np.int64)
    base.name = "time-slots"
    base.slot = slot_all[base.train_rows]
    base.params = {**base.params, "slot_days": slot_days, "seconds_per_unit": seconds_per_unit}
    return base


def make_split(log: InteractionLog, protocol: str, *, seed: int = 0, **params: Any) -> Split:
    """Dispatch on a protocol name (see ``PROTOCOLS``)."""
    fns: dict[str, Callable[..., Split]] = {
        "leave-one-out": leave_one_out,
        "random-ratio": random_ratio,
        "user-split": user_split,
        "time-slots": time_slots,
    }
    if protocol not in fns:
        raise DataError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    return fns[protocol](log, seed=seed, **params)
