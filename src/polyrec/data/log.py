"""InteractionLog: the one validated table every model, split and evaluator reads.

An interaction log holds dense integer codes for users, items and behaviors, an optional
timestamp, an optional item category, and an optional ``fold`` column that keeps a split
published with the data (``FOLD_TRAIN``, ``FOLD_VALID``, ``FOLD_TEST``). External ids of any
type are kept in :class:`IdMap` objects that travel with the log.

A dataset directory (written by :meth:`InteractionLog.save`) holds::

    interactions.parquet   user, item, behavior [, timestamp] [, category] [, fold]  (dense codes)
    users.parquet          column ``id``: external user ids in dense order
    items.parquet          column ``id``: external item ids in dense order
    categories.parquet     (when there are categories)
    dataset.json           name, behaviors, target, source, counts, fingerprint
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from polyrec.errors import DataError
from polyrec.fsutil import make_parent, replace_dir

FOLD_TRAIN = 0
FOLD_VALID = 1
FOLD_TEST = 2
FORMAT_VERSION = 1
DEFAULT_BEHAVIOR = "interaction"


class DuplicateRowsWarning(UserWarning):
    """Emitted when duplicate (user, item, behavior[, timestamp]) rows were dropped."""


@dataclass(frozen=True, eq=False)
class IdMap:
    """Maps external ids (ints, strings, ...) to dense codes ``0..n-1`` and back."""

    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def factorize(cls, values: np.ndarray, *, what: str = "id") -> tuple[IdMap, np.ndarray]:
        """Dense codes for ``values`` (sorted order of the distinct values, so runs are stable)."""
        arr = _as_id_array(values, what=what)
        uniq, codes = np.unique(arr, return_inverse=True)
        return cls(uniq), codes.astype(np.int64)

    @classmethod
    def range(cls, n: int) -> IdMap:
        return cls(np.arange(n, dtype=np.int64))

    def _lookup(self) -> dict[Any, int]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {v: i for i, v in enumerate(self.ids.tolist())}
            object.__setattr__(self, "_cache", cache)
        return cache

    def to_dense(
        self, external: Sequence[Any] | np.ndarray, *, what: str = "id", strict: bool = True
    ) -> np.ndarray:
        """Dense codes of ``external``; unknown ids raise :class:`DataError` (or map to -1)."""
        lookup = self._lookup()
        vals = np.asarray(external).tolist()
        kind = self.ids.dtype.kind
        out = np.empty(len(vals), dtype=np.int64)
        for j, v in enumerate(vals):
            key = _coerce_key(v, kind)
            code = lookup.get(key, -1)
            if code < 0 and strict:
                raise DataError(f"unknown {what} {v!r}: it is not in the dataset")
            out[j] = code
        return out

    def to_external(self, dense: np.ndarray | Sequence[int]) -> np.ndarray:
        return self.ids[np.asarray(dense, dtype=np.int64)]

    def to_arrow(self) -> pa.Table:
        return pa.table({"id": pa.array(self.ids.tolist())})

    @classmethod
    def from_arrow(cls, table: pa.Table) -> IdMap:
        col = table.column("id").to_numpy(zero_copy_only=False)
        if col.dtype.kind in "OUS":
            col = np.asarray(col.tolist(), dtype=object)
        return cls(col)


def _coerce_key(v: Any, kind: str) -> Any:
    if kind in "iu":
        try:
            f = float(v)
        except (TypeError, ValueError):
            return v
        return int(f) if f.is_integer() else v
    if kind == "O" and not isinstance(v, str):
        return str(v)
    return v


def _as_id_array(values: Any, *, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{what} must be one-dimensional")
    if arr.dtype.kind == "f":
        if np.isnan(arr).any():
            raise DataError(
                f"{what} has {int(np.isnan(arr).sum())} missing (NaN) ids; remove those rows"
            )
        if np.all(np.mod(arr, 1) == 0):
            return arr.astype(np.int64)
        return arr.astype(str).astype(object)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        raise DataError(f"{what} holds booleans, not ids")
    # strings / objects: reject missing values, normalise to python str
    lst = arr.tolist()
    missing = sum(1 for v in lst if v is None or (isinstance(v, float) and math.isnan(v)))
    if missing:
        raise DataError(f"{what} has {missing} missing (NaN/None) ids; remove those rows")
    return np.asarray([str(v) for v in lst], dtype=object)


class UserItemSpace:
    """Mixin for anything that carries a user and an item :class:`IdMap`: their sizes."""

    user_map: IdMap
    item_map: IdMap

    @property
    def n_users(self) -> int:
        return len(self.user_map)

    @property
    def n_items(self) -> int:
        return len(self.item_map)


@dataclass(eq=False)
class InteractionLog(UserItemSpace):
    """A validated multi-behavior interaction log with dense ids.

    Attributes:
        user, item: int64 dense codes, one per interaction.
        behavior: int8 codes into ``behaviors``.
        behaviors: behavior names; ``target`` is one of them.
        timestamp: float64 per interaction (any numeric unit), or None.
        category: int64 item category code per interaction, or None.
        fold: int8 published split per interaction (FOLD_*), or None when the data has none.
    """

    user: np.ndarray
    item: np.ndarray
    behavior: np.ndarray
    behaviors: tuple[str, ...]
    target: str
    user_map: IdMap
    item_map: IdMap
    timestamp: np.ndarray | None = None
    category: np.ndarray | None = None
    category_map: IdMap | None = None
    fold: np.ndarray | None = None
    name: str = "dataset"
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.user)
        for col, arr in (("item", self.item), ("behavior", self.behavior)):
            if len(arr) != n:
                raise DataError(f"column {col!r} has {len(arr)} rows but 'user' has {n}")
        for col, opt in (
            ("timestamp", self.timestamp),
            ("category", self.category),
            ("fold", self.fold),
        ):
            if opt is not None and len(opt) != n:
                raise DataError(f"column {col!r} has {len(opt)} rows but 'user' has {n}")
        if self.target not in self.behaviors:
            raise DataError(
                f"target behavior {self.target!r} is not in the data; behaviors are "
                f"{', '.join(self.behaviors)}"
            )

    # ------------------------------------------------------------------ basic facts
    def __len__(self) -> int:
        return len(self.user)

    @property
    def target_code(self) -> int:
        return self.behaviors.index(self.target)

    def behavior_code(self, name: str) -> int:
        if name not in self.behaviors:
            raise DataError(
                f"unknown behavior {name!r}; this dataset has {', '.join(self.behaviors)}"
            )
        return self.behaviors.index(name)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(
        cls,
        frame: Any,
        *,
        user: str = "user",
        item: str = "item",
        behavior: str | None = "behavior",
        timestamp: str | None = None,
        category: str | None = None,
        fold: str | None = None,
        target: str | None = None,
        name: str = "dataset",
        source: str = "",
        behavior_order: Sequence[str] | None = None,
    ) -> InteractionLog:
        """Validate a table (pandas, polars, pyarrow or a dict of columns) into a log.

        ``behavior=None`` (or a missing ``behavior`` column when the default name is used) makes
        a single-behavior log whose behavior is ``target`` (default ``"interaction"``).
        """
        table = _to_arrow(frame)
        cols = table.column_names
        if table.num_rows == 0:
            raise DataError(f"{source or name}: the table is empty (no rows)")

        def need(col: str, role: str) -> np.ndarray:
            if col not in cols:
                raise DataError(
                    f"{source or name}: missing {role} column {col!r}; columns are "
                    f"{', '.join(map(str, cols))}"
                )
            return table.column(col).to_numpy(zero_copy_only=False)

        u_raw = need(user, "user")
        i_raw = need(item, "item")
        if behavior is not None and behavior not in cols and behavior != "behavior":
            need(behavior, "behavior")
        if behavior is not None and behavior in cols:
            column = table.column(behavior)
            if column.null_count:  # every row: one vectorised count
                first = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
                raise DataError(
                    f"{source or name}: behavior column {behavior!r} has {column.null_count:,} "
                    f"missing value(s) (first at row {first:,})"
                )
            b_raw = np.asarray([str(v) for v in need(behavior, "behavior").tolist()], dtype=object)
        else:
            b_raw = np.full(len(u_raw), target or DEFAULT_BEHAVIOR, dtype=object)

        user_map, u = IdMap.factorize(u_raw, what=f"user column {user!r}")
        item_map, i = IdMap.factorize(i_raw, what=f"item column {item!r}")
        present = sorted(set(np.unique(b_raw).tolist()))
        if behavior_order is not None:
            extra = [b for b in present if b not in behavior_order]
            if extra:
                raise DataError(f"{source or name}: unexpected behavior values {extra}")
            names = tuple(b for b in behavior_order if b in present)
        else:
            names = tuple(present)
        lookup = {b: k for k, b in enumerate(names)}
        b = np.fromiter((lookup[v] for v in b_raw.tolist()), dtype=np.int8, count=len(b_raw))
        if target is None:
            target = next((b for b in ("buy", "purchase") if b in names), names[-1])
        if target not in names:
            raise DataError(
                f"{source or name}: unknown target behavior {target!r}; the behavior column has "
                f"{', '.join(names)}"
            )

        ts = None
        if timestamp is not None:
            ts = _numeric_timestamps(need(timestamp, "timestamp"), timestamp, source or name)
        cat = cat_map = None
        if category is not None:
            cat_map, cat = IdMap.factorize(
                need(category, "category"), what=f"category column {category!r}"
            )
        fld = None
        if fold is not None:
            fld = np.asarray(need(fold, "fold"), dtype=np.int8)

        log = cls(
            user=u,
            item=i,
            behavior=b,
            behaviors=names,
            target=target,
            user_map=user_map,
            item_map=item_map,
            timestamp=ts,
            category=cat,
            category_map=cat_map,
            fold=fld,
            name=name,
            source=source,
        )
        return log.deduplicated()

    def deduplicated(self) -> InteractionLog:
        """Drop repeated (user, item, behavior, timestamp, fold) rows, warning with the count."""
        keys = [self.user, self.item, self.behavior.astype(np.int64)]
        if self.timestamp is not None:
            keys.append(self.timestamp)
        if self.fold is not None:
            keys.append(self.fold.astype(np.int64))
        order = np.lexsort(keys[::-1])
        dup = np.ones(len(order), dtype=bool)
        if len(order) > 1:
            same = np.ones(len(order) - 1, dtype=bool)
            for k in keys:
                ks = k[order]
                same &= ks[1:] == ks[:-1]
            dup[1:] = ~same
        n_dup = int((~dup).sum())
        if n_dup == 0:
            return self
        warnings.warn(
            f"{self.source or self.name}: dropped {n_dup} duplicate rows",
            DuplicateRowsWarning,
            stacklevel=3,
        )
        keep = np.sort(order[dup])
        return self.select(keep)

    def select(self, index: np.ndarray) -> InteractionLog:
        """Rows ``index`` (bool mask or integer positions); id maps are kept unchanged."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return replace(
            self,
            user=self.user[index],
            item=self.item[index],
            behavior=self.behavior[index],
            timestamp=pick(self.timestamp),
            category=pick(self.category),
            fold=pick(self.fold),
        )

    def with_target(self, target: str) -> InteractionLog:
        if target not in self.behaviors:
            raise DataError(
                f"unknown target behavior {target!r}; this dataset has {', '.join(self.behaviors)}"
            )
        return replace(self, target=target)

    # ------------------------------------------------------------------ views
    def mask_behavior(self, behavior: str | None) -> np.ndarray:
        """Boolean row mask of one behavior (``None`` or ``"all"``: every row)."""
        if behavior is None or behavior == "all":
            return np.ones(len(self), dtype=bool)
        return self.behavior == self.behavior_code(behavior)

    def csr(self, behavior: str | None = None, *, values: str = "binary") -> sp.csr_matrix:
        """users × items CSR of one behavior (or all merged), binary or with ``values='count'``."""
        m = self.mask_behavior(behavior)
        data = np.ones(int(m.sum()), dtype=np.float32)
        mat = sp.csr_matrix(
            (data, (self.user[m], self.item[m])), shape=(self.n_users, self.n_items)
        )
        mat.sum_duplicates()
        if values == "binary":
            mat.data[:] = 1.0
        mat.sort_indices()
        return mat

    def fingerprint(self) -> str:
        """sha256 over the dense content (order-independent) and the id maps' sizes."""
        h = hashlib.sha256()
        order = np.lexsort((self.behavior, self.item, self.user))
        for arr in (self.user, self.item, self.behavior, self.timestamp, self.category, self.fold):
            if arr is not None:
                h.update(np.ascontiguousarray(arr[order]).tobytes())
            h.update(b"|")
        h.update(
            json.dumps([list(self.behaviors), self.target, self.n_users, self.n_items]).encode()
        )
        return h.hexdigest()[:16]

    def stats(self) -> dict[str, Any]:
        """Counts per behavior, users, items, density and time span."""
        per = {}
        for k, name in enumerate(self.behaviors):
            m = self.behavior == k
            per[name] = {
                "interactions": int(m.sum()),
                "users": int(np.unique(self.user[m]).size),
                "items": int(np.unique(self.item[m]).size),
            }
        out: dict[str, Any] = {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": len(self),
            "behaviors": per,
            "target": self.target,
            "density": len(self) / max(1, self.n_users * self.n_items),
            "time_span": None,
            "categories": None if self.category_map is None else len(self.category_map),
            "published_split": None,
        }
        if self.timestamp is not None and len(self):
            out["time_span"] = [float(self.timestamp.min()), float(self.timestamp.max())]
        if self.fold is not None:
            out["published_split"] = {
                nm: int((self.fold == code).sum())
                for nm, code in (("train", FOLD_TRAIN), ("valid", FOLD_VALID), ("test", FOLD_TEST))
            }
        return out

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the dataset directory atomically (temporary sibling folder, then rename)."""
        target = Path(directory)
        parent = target.parent if str(target.parent) else Path(".")
        make_parent(target)
        if target.exists() and any(target.iterdir()) and not (target / "dataset.json").exists():
            raise DataError(f"{str(target)!r} exists and is not a polyrec dataset; not overwriting")
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=parent))
        tmp.chmod(0o755)
        try:
            cols: dict[str, Any] = {
                "user": self.user.astype(np.int64),
                "item": self.item.astype(np.int64),
                "behavior": self.behavior.astype(np.int8),
            }
            if self.timestamp is not None:
                cols["timestamp"] = self.timestamp.astype(np.float64)
            if self.category is not None:
                cols["category"] = self.category.astype(np.int64)
            if self.fold is not None:
                cols["fold"] = self.fold.astype(np.int8)
            pq.write_table(pa.table(cols), tmp / "interactions.parquet", compression="zstd")
            pq.write_table(self.user_map.to_arrow(), tmp / "users.parquet", compression="zstd")
            pq.write_table(self.item_map.to_arrow(), tmp / "items.parquet", compression="zstd")
            if self.category_map is not None:
                pq.write_table(self.category_map.to_arrow(), tmp / "categories.parquet")
            meta = {
                "format_version": FORMAT_VERSION,
                "name": self.name,
                "source": self.source,
                "behaviors": list(self.behaviors),
                "target": self.target,
                "n_users": self.n_users,
                "n_items": self.n_items,
                "interactions": len(self),
                "fingerprint": self.fingerprint(),
            }
            (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
            replace_dir(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> InteractionLog:
        d = Path(directory)
        if not d.exists():
            raise DataError(f"dataset folder {str(d)!r} does not exist")
        meta_path = d / "dataset.json"
        if not meta_path.exists():
            raise DataError(
                f"{str(d)!r} is not a polyrec dataset (no dataset.json); create one with "
                "'polyrec data import'"
            )
        try:
            meta = json.loads(meta_path.read_text())
            inter = pq.read_table(d / "interactions.parquet")
            users = IdMap.from_arrow(pq.read_table(d / "users.parquet"))
            items = IdMap.from_arrow(pq.read_table(d / "items.parquet"))
            cats = (
                IdMap.from_arrow(pq.read_table(d / "categories.parquet"))
                if (d / "categories.parquet").exists()
                else None
            )
        except (OSError, ValueError, KeyError, pa.ArrowException) as e:
            raise DataError(f"dataset {str(d)!r} is unreadable or corrupt: {e}") from None

        def col(name: str, dtype: Any) -> np.ndarray | None:
            if name not in inter.column_names:
                return None
            return np.asarray(inter.column(name).to_numpy(), dtype=dtype)

        user = col("user", np.int64)
        item = col("item", np.int64)
        beh = col("behavior", np.int8)
        if user is None or item is None or beh is None:
            raise DataError(f"dataset {str(d)!r}: interactions.parquet lacks user/item/behavior")
        log = cls(
            user=user,
            item=item,
            behavior=beh,
            behaviors=tuple(meta["behaviors"]),
            target=meta["target"],
            user_map=users,
            item_map=items,
            timestamp=col("timestamp", np.float64),
            category=col("category", np.int64),
            category_map=cats,
            fold=col("fold", np.int8),
            name=meta.get("name", d.name),
            source=meta.get("source", ""),
        )
        if meta.get("fingerprint") and meta["fingerprint"] != log.fingerprint():
            raise DataError(
                f"dataset {str(d)!r} does not match its recorded fingerprint (files changed or "
                "corrupt); re-import it"
            )
        return log


def _to_arrow(frame: Any) -> pa.Table:
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, Mapping):
        try:
            return pa.table(
                {str(k): list(v) if not isinstance(v, np.ndarray) else v for k, v in frame.items()}
            )
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise DataError(f"cannot read the columns: {e}") from None
    to_arrow = getattr(frame, "to_arrow", None)  # polars
    if callable(to_arrow):
        return to_arrow()
    mod = type(frame).__module__
    if mod.startswith("pandas"):
        try:
            return pa.Table.from_pandas(frame, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as e:
            raise DataError(f"cannot read the DataFrame: {e}") from None
    raise DataError(
        f"cannot read an interaction table from {type(frame).__name__}; give a pandas or polars "
        "DataFrame, a pyarrow Table or a dict of columns"
    )


def _numeric_timestamps(raw: np.ndarray, col: str, where: str) -> np.ndarray:
    if raw.dtype.kind == "M":
        return raw.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    if raw.dtype.kind in "iuf":
        ts = raw.astype(np.float64)
    else:
        try:
            ts = np.asarray([float(v) for v in raw.tolist()], dtype=np.float64)
        except (TypeError, ValueError):
            bad = next((v for v in raw.tolist() if not _is_number(v)), None)
            raise DataError(
                f"{where}: timestamp column {col!r} is not numeric (found {bad!r}); give seconds "
                "or any numeric time unit"
            ) from None
    if np.isnan(ts).any():
        raise DataError(
            f"{where}: timestamp column {col!r} has {int(np.isnan(ts).sum())} NaN values"
        )
    return _unix_seconds(ts, col, where)


# unix time: seconds since 1973 are ≥ 1e8 and stay < 1e11 until the year 5138; milliseconds
# since 1973 are ≥ 1e11 (and < 1e14 until 5138)
_S_MIN, _MS_MIN, _MS_MAX = 1e8, 1e11, 1e14


def _unix_seconds(ts: np.ndarray, col: str, where: str) -> np.ndarray:
    """Unix-looking timestamps in seconds: a column in milliseconds is converted (with a
    warning); one that mixes seconds and milliseconds is refused (its order would be wrong)."""
    if not len(ts):
        return ts
    ms = (ts >= _MS_MIN) & (ts < _MS_MAX)
    s = (ts >= _S_MIN) & (ts < _MS_MIN)
    n_ms, n_s = int(ms.sum()), int(s.sum())
    if n_ms and n_s:
        raise DataError(
            f"{where}: timestamp column {col!r} mixes seconds ({n_s:,} rows) and milliseconds "
            f"({n_ms:,} rows, first at row {int(np.flatnonzero(ms)[0]):,}); convert it to one unit"
        )
    if n_ms and n_ms == len(ts):
        warnings.warn(
            f"{where}: timestamp column {col!r} is in milliseconds; converted to seconds",
            stacklevel=3,
        )
        return ts / 1000.0
    return ts


def _is_number(v: Any) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


__all__ = [
    "DEFAULT_BEHAVIOR",
    "FOLD_TEST",
    "FOLD_TRAIN",
    "FOLD_VALID",
    "DuplicateRowsWarning",
    "IdMap",
    "InteractionLog",
]
