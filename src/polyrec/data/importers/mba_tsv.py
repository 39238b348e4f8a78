"""MBA (SIGIR 2023, LiuXiangYuan/MBA) folders of per-behavior train/test TSV files."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from polyrec.data.importers._common import (
    PathLike,
    build_log,
    dataset_files,
    existing_dir,
    existing_file,
    naming,
    order_behaviors,
    read_table,
)
from polyrec.data.log import FOLD_TEST, FOLD_TRAIN, IdMap, InteractionLog
from polyrec.errors import DataError

_FILE = re.compile(
    r"^(?P<name>.+)_(?P<beh>[A-Za-z][A-Za-z0-9]*)_(?P<split>train|test)\.(?:csv|tsv)$"
)


def read_mba(
    path: PathLike,
    *,
    dataset: str | None = None,
    target: str | None = "buy",
    behavior_order: Sequence[str] | None = None,
    user: str = "uid",
    item: str = "sid",
    name: str | None = None,
) -> InteractionLog:
    """Read an MBA dataset folder (or one of its files).

    Format: files ``<dataset>_<behavior>_train.csv`` and ``<dataset>_<behavior>_test.csv``
    (e.g. ``beibei_buy_train.csv``, ``beibei_pv_test.csv``), tab-separated despite the
    extension, with a header ``uid<TAB>sid`` and one (user, item) pair per row; no timestamps.
    Every behavior present in the folder is read; rows of ``*_train`` files get ``FOLD_TRAIN``
    and rows of ``*_test`` files ``FOLD_TEST`` (MBA's random 4:1 split). The default target is
    ``buy``; auxiliary behaviors come first (funnel order). External ids are the file's integer
    ids; dense codes follow their sorted order (MBA's ids are already dense, so they coincide).
    When a folder holds several datasets, choose one with ``dataset``.
    """
    p = Path(path)
    if p.is_file():
        m = _FILE.match(p.name)
        if not m:
            raise DataError(
                f"{p}: not an MBA file name; expected <dataset>_<behavior>_train.csv or _test.csv"
            )
        found = {(m.group("beh"), m.group("split")): p}
        dataset = m.group("name")
        d = p.parent
    else:
        d = existing_dir(p, what="MBA dataset folder")
        dataset, found = dataset_files(
            d,
            _FILE,
            lambda m: (m.group("beh"), m.group("split")),
            dataset,
            none_found="no MBA files found; expected <dataset>_<behavior>_train.csv / _test.csv",
        )

    behaviors, target = order_behaviors(
        sorted({b for b, _ in found}), target, behavior_order, where=str(d)
    )
    users, items, behs, folds = [], [], [], []
    for (beh, split), f in sorted(found.items()):
        u, i = _read_pairs(f, user, item)
        users.append(u)
        items.append(i)
        behs.append(np.full(len(u), behaviors.index(beh), dtype=np.int8))
        folds.append(np.full(len(u), FOLD_TRAIN if split == "train" else FOLD_TEST, dtype=np.int8))
    where = str(d)
    with naming(where):
        user_map, u_codes = IdMap.factorize(np.concatenate(users), what=f"user column {user!r}")
        item_map, i_codes = IdMap.factorize(np.concatenate(items), what=f"item column {item!r}")
    return build_log(
        user=u_codes,
        item=i_codes,
        behavior=np.concatenate(behs),
        behaviors=behaviors,
        target=target,
        user_map=user_map,
        item_map=item_map,
        timestamp=None,
        fold=np.concatenate(folds),
        name=name or dataset,
        source=f"mba:{d} ({', '.join(f.name for f in sorted(found.values()))})",
    )


def _read_pairs(f: Path, user: str, item: str) -> tuple[np.ndarray, np.ndarray]:
    existing_file(f)
    df = read_table(
        f, "tab-separated text", lambda: pl.read_csv(f, separator="\t", infer_schema_length=None)
    )
    for role, col in (("user", user), ("item", item)):
        if col not in df.columns:
            raise DataError(
                f"{f}: missing {role} column {col!r}; the header has {', '.join(df.columns)} "
                "(MBA files are tab-separated with header uid<TAB>sid)"
            )
    if df.height == 0:
        raise DataError(f"{f}: the file has a header but no rows")
    out = []
    for col in (user, item):
        s = df.get_column(col)
        if s.null_count():
            raise DataError(f"{f}: column {col!r} has {s.null_count()} missing ids")
        if not s.dtype.is_integer():
            raise DataError(
                f"{f}: column {col!r} must hold integer ids (found {s.dtype}, e.g. {s[0]!r})"
            )
        out.append(s.to_numpy().astype(np.int64))
    return out[0], out[1]
