"""SimRec / ComiRec-style user-split sequence folders (``<Name>_train.txt`` ...)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from polyrec.data.importers._common import (
    PathLike,
    behavior_name,
    dataset_files,
    existing_dir,
    read_sequences,
    sequences_log,
)
from polyrec.data.log import FOLD_TEST, FOLD_TRAIN, FOLD_VALID, InteractionLog
from polyrec.errors import DataError

_FILE = re.compile(r"^(?P<name>.+)_(?P<part>train|valid|test|all)\.txt$")
_FOLDS = {"train": FOLD_TRAIN, "valid": FOLD_VALID, "test": FOLD_TEST}


def read_simrec(
    path: PathLike,
    *,
    dataset: str | None = None,
    behavior: str | None = None,
    target: str | None = None,
    name: str | None = None,
) -> InteractionLog:
    """Read a SimRec (yaokunliu/SimRec) user-split sequence folder.

    Format: ``<Name>_train.txt``, ``<Name>_valid.txt``, ``<Name>_test.txt`` (and
    ``<Name>_all.txt``, the union), each line ``user item item ...`` — a user id followed by the
    user's items in chronological order (whitespace-separated integers; no timestamps, no
    categories). The split is by user: train, valid and test users are disjoint, and every
    interaction of a train / valid / test user gets ``FOLD_TRAIN`` / ``FOLD_VALID`` /
    ``FOLD_TEST``. The position of an item on its line (0, 1, ...) is its timestamp. When only
    ``<Name>_all.txt`` exists the log has no published split. ``<Name>_item_map.txt`` /
    ``_item_count.txt`` are not needed and ignored. Choose the dataset with ``dataset`` when a
    folder holds several. One behavior named ``behavior`` (alias ``target``; default ``"interaction"``).
    """
    behavior = behavior_name(behavior, target, path)
    d = existing_dir(path, what="SimRec dataset folder")
    dataset, files = dataset_files(
        d,
        _FILE,
        lambda m: m.group("part"),
        dataset,
        none_found="no SimRec files found; expected <Name>_train.txt, <Name>_valid.txt, "
        "<Name>_test.txt (or <Name>_all.txt)",
    )
    split_parts = [p for p in _FOLDS if p in files]
    if split_parts:
        missing = [p for p in _FOLDS if p not in files]
        if "train" in missing:
            raise DataError(f"{d}: {dataset}_train.txt is missing (found {', '.join(split_parts)})")
        parts = [(files[p], _FOLDS[p]) for p in split_parts]
    else:
        parts = [(files["all"], -1)]

    seqs = [read_sequences(f) for f, _ in parts]
    # user id -> file it was first seen in (users must be disjoint across files)
    owner: dict[int, Path] = {}
    for s, (f, _) in zip(seqs, parts, strict=True):
        uniq = np.unique(s.line_user)
        known = np.fromiter(owner, dtype=np.int64, count=len(owner))
        shared = uniq[np.isin(uniq, known)]
        if len(shared):
            u0 = int(shared[0])
            raise DataError(
                f"{f}: user {u0} also appears in {owner[u0].name}; a SimRec split has disjoint "
                f"users ({len(shared)} shared)"
            )
        owner.update(dict.fromkeys(uniq.tolist(), f))
    return sequences_log(
        seqs,
        behavior=behavior,
        where=d,
        name=name or dataset,
        source=f"simrec:{d} ({', '.join(f.name for f, _ in parts)})",
        folds=[fold for _, fold in parts] if split_parts else None,
    )
