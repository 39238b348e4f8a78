"""Tabular user logs: CSV, TSV, Parquet files and in-memory pandas/polars DataFrames."""

from __future__ import annotations

import gzip
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from polyrec.data.importers._common import (
    PathLike,
    existing_file,
    naming,
    order_behaviors,
    read_table,
)
from polyrec.data.log import InteractionLog
from polyrec.errors import DataError

_TAB_EXTENSIONS = (".tsv", ".tab")


def read_frame(
    frame: Any,
    *,
    user: str = "user",
    item: str = "item",
    behavior: str | None = "behavior",
    timestamp: str | None = None,
    category: str | None = None,
    fold: str | None = None,
    target: str | None = None,
    behavior_order: Sequence[str] | None = None,
    name: str = "dataset",
    source: str = "",
) -> InteractionLog:
    """Validate a pandas/polars DataFrame, pyarrow Table or dict of columns into a log.

    Format: one row per interaction with columns ``user``, ``item`` and optionally
    ``behavior`` (names; a missing default ``behavior`` column means a single behavior),
    ``timestamp`` (numeric or datetime), ``category`` and ``fold`` (0 train / 1 valid / 2 test).
    Ids may be ints or strings; dense codes follow the sorted distinct ids. Behaviors are ordered
    auxiliary first (funnel order pv/view/click, fav, cart), the target last; the default target
    is ``buy`` when present, else the last behavior. Thin wrapper of
    :meth:`InteractionLog.from_frame`.
    """
    where = source or name
    order: Sequence[str] | None = behavior_order
    if behavior is not None:
        present = _distinct_behaviors(frame, behavior)
        if present is not None:
            order, target = order_behaviors(present, target, behavior_order, where=where)
    with naming(where):
        return InteractionLog.from_frame(
            frame,
            user=user,
            item=item,
            behavior=behavior,
            timestamp=timestamp,
            category=category,
            fold=fold,
            target=target,
            name=name,
            source=source,
            behavior_order=order,
        )


def _distinct_behaviors(frame: Any, col: str) -> list[str] | None:
    """Distinct behavior names of ``frame[col]`` (None when there is no such column)."""
    try:
        if isinstance(frame, pl.DataFrame):
            if col not in frame.columns:
                return None
            values = frame.get_column(col).unique().to_list()
        elif hasattr(frame, "columns") and hasattr(frame, "__getitem__") and hasattr(frame, "iloc"):
            if col not in frame.columns:
                return None
            values = list(frame[col].unique())
        elif isinstance(frame, dict):
            if col not in frame:
                return None
            values = list(set(list(frame[col])))
        else:
            import pyarrow as pa

            if isinstance(frame, pa.Table) and col in frame.column_names:
                values = frame.column(col).unique().to_pylist()
            else:
                return None
    except TypeError:
        return None
    return sorted({str(v) for v in values if v is not None})


def _suffix(p: Path) -> str:
    """The file's format suffix, under a ``.gz``: ``.csv`` for ``log.csv.gz``."""
    name = p.name.lower()
    return Path(name[:-3]).suffix if name.endswith(".gz") else p.suffix.lower()


def _delimiter_for(p: Path, delimiter: str | None) -> str:
    if delimiter is not None:
        if len(delimiter) != 1:
            raise DataError(f"{p}: delimiter must be one character, got {delimiter!r}")
        return delimiter
    if _suffix(p) in _TAB_EXTENSIONS:
        return "\t"
    # .csv files written with tabs (e.g. MBA's "uid\tsid"): sniff the header line
    opener = gzip.open if p.name.lower().endswith(".gz") else open
    with opener(p, "rb") as fh:
        head = fh.readline().decode("utf-8", errors="replace")
    if "\t" in head and "," not in head:
        return "\t"
    if ";" in head and "," not in head and "\t" not in head:
        return ";"
    return ","


def read_csv(
    path: PathLike,
    *,
    delimiter: str | None = None,
    has_header: bool = True,
    user: str = "user",
    item: str = "item",
    behavior: str | None = "behavior",
    timestamp: str | None = None,
    timestamp_format: str | None = None,
    category: str | None = None,
    fold: str | None = None,
    target: str | None = None,
    behavior_order: Sequence[str] | None = None,
    name: str | None = None,
    valid: PathLike | None = None,
    test: PathLike | None = None,
) -> InteractionLog:
    """Read a delimited text log (CSV/TSV), one interaction per row.

    Format: a header line naming the columns (``has_header=False``: columns are called
    ``column_1``, ``column_2``, ...), then one row per interaction. Column roles are given by
    name: ``user`` and ``item`` (required), ``behavior`` (optional: without it the log has one
    behavior), ``timestamp`` (numbers in any unit, or date/time strings parsed with
    ``timestamp_format``, e.g. ``"%Y-%m-%d %H:%M:%S"``, to unix seconds), ``category``,
    ``fold`` (0/1/2 for a published train/valid/test split) and the ``target`` behavior.
    The delimiter is ``delimiter`` when given, a tab for ``.tsv``/``.tab`` files, else sniffed
    from the header line (tab, semicolon or comma). Duplicate rows are dropped with a warning.
    ``.gz`` files (``log.csv.gz``) are read decompressed.

    A column named ``fold`` is taken as the published split when ``fold`` is not given, and one
    named ``timestamp``, ``time`` or ``ts`` as the timestamp when ``timestamp`` is not (each with
    a warning naming it); fold values may also be ``train``/``valid``/``test``. Any other column
    the importer does not use is named in a warning, never dropped silently. ``valid`` /
    ``test``: files of the published validation / test interactions, same columns (a missing
    behavior column means the target behavior; a missing timestamp, the user's latest
    training time + 1): they become fold 1 / 2 of one log, so their users and items stay in the
    catalogue.
    """
    p = existing_file(path)

    def read(q: Path) -> pl.DataFrame:
        sep = _delimiter_for(q, delimiter)
        df = read_table(
            q,
            "delimited text",
            lambda: pl.read_csv(
                q,
                separator=sep,
                has_header=has_header,
                infer_schema_length=None,
                null_values=["", "NA", "NaN", "nan", "null", "NULL", "None"],
            ),
        )
        if not has_header:
            df.columns = [f"column_{k + 1}" for k in range(df.width)]
        return df

    df = _with_folds(read(p), read, valid, test, fold)
    return _from_polars(
        df,
        p,
        user=user,
        item=item,
        behavior=behavior,
        timestamp=timestamp,
        timestamp_format=timestamp_format,
        category=category,
        fold=fold,
        target=target,
        behavior_order=behavior_order,
        name=name,
    )


def read_tsv(path: PathLike, **options: Any) -> InteractionLog:
    """Read a tab-separated log; same options as :func:`read_csv` with ``delimiter="\\t"``."""
    options.setdefault("delimiter", "\t")
    return read_csv(path, **options)


def read_parquet(
    path: PathLike,
    *,
    user: str = "user",
    item: str = "item",
    behavior: str | None = "behavior",
    timestamp: str | None = None,
    timestamp_format: str | None = None,
    category: str | None = None,
    fold: str | None = None,
    target: str | None = None,
    behavior_order: Sequence[str] | None = None,
    name: str | None = None,
    valid: PathLike | None = None,
    test: PathLike | None = None,
) -> InteractionLog:
    """Read a Parquet log, one interaction per row; columns, column detection and the
    ``valid``/``test`` files as in :func:`read_csv`.

    Timestamps may be numeric or Parquet timestamp/date columns (converted to unix seconds).
    """
    p = existing_file(path)

    def read(q: Path) -> pl.DataFrame:
        return read_table(q, "Parquet", lambda: pl.read_parquet(q))

    df = _with_folds(read(p), read, valid, test, fold)
    return _from_polars(
        df,
        p,
        user=user,
        item=item,
        behavior=behavior,
        timestamp=timestamp,
        timestamp_format=timestamp_format,
        category=category,
        fold=fold,
        target=target,
        behavior_order=behavior_order,
        name=name,
    )


def _from_polars(
    df: pl.DataFrame,
    p: Path,
    *,
    user: str,
    item: str,
    behavior: str | None,
    timestamp: str | None = None,
    timestamp_format: str | None = None,
    category: str | None = None,
    fold: str | None = None,
    target: str | None = None,
    behavior_order: Sequence[str] | None = None,
    name: str | None = None,
) -> InteractionLog:
    """``df``, read from ``p``, checked (columns present, timestamps to numbers, fold values)
    and made a log by :func:`read_frame`; the optional column roles default to absent."""
    if df.height == 0:
        raise DataError(f"{p}: the file has a header but no rows")
    cols = [c for c in df.columns if c != _EXTRA]
    if fold is None and _EXTRA in df.columns:
        fold = "fold"  # made from the --valid / --test files
    elif fold is None and "fold" in cols:
        fold = "fold"
        warnings.warn(
            f"{p}: column 'fold' taken as the published split (0/train, 1/valid, 2/test)",
            stacklevel=2,
        )
    if timestamp is None:
        found = next((c for c in _TIME_NAMES if c in cols), None)
        if found is not None:
            timestamp = found
            warnings.warn(
                f"{p}: column {found!r} taken as the timestamp (give the timestamp column to "
                "choose another)",
                stacklevel=2,
            )
    behavior_used = behavior if behavior is not None and behavior in cols else None
    used = {user, item, behavior_used, timestamp, category, fold}
    unused = [c for c in cols if c not in used]
    if unused:
        warnings.warn(
            f"{p}: column(s) {', '.join(map(repr, unused))} not used (polyrec reads the user, "
            "item, behavior, timestamp, category and fold columns; name one of them to use it)",
            stacklevel=2,
        )
    if fold is not None and fold in cols and df.schema[fold] == pl.String:
        df = _fold_names_to_codes(df, fold, p)
    if _EXTRA in df.columns:  # rows of --valid / --test files: fill what such files may leave out
        df = _fill_extra_rows(df, p, user, behavior_used, timestamp, target, behavior_order)
    for role, col in (
        ("user", user),
        ("item", item),
        ("timestamp", timestamp),
        ("category", category),
        ("fold", fold),
    ):
        if col is not None and col not in cols:
            raise DataError(f"{p}: missing {role} column {col!r}; columns are {', '.join(cols)}")
    if behavior is not None and behavior != "behavior" and behavior not in cols:
        raise DataError(f"{p}: missing behavior column {behavior!r}; columns are {', '.join(cols)}")
    if timestamp is not None:
        df = _timestamps_to_seconds(df, timestamp, timestamp_format, p)
    if fold is not None and df.schema[fold] not in (
        pl.Int8,
        pl.Int16,
        pl.Int32,
        pl.Int64,
        pl.UInt8,
        pl.UInt16,
        pl.UInt32,
        pl.UInt64,
    ):
        raise DataError(f"{p}: fold column {fold!r} must hold integers 0/1/2")
    if fold is not None:
        bad = df.filter(~pl.col(fold).is_in([0, 1, 2]) | pl.col(fold).is_null())
        if bad.height:
            raise DataError(
                f"{p}: fold column {fold!r} must hold 0 (train), 1 (valid) or 2 (test); found "
                f"{bad.get_column(fold)[0]!r}"
            )
    return read_frame(
        df,
        user=user,
        item=item,
        behavior=behavior,
        timestamp=timestamp,
        category=category,
        fold=fold,
        target=target,
        behavior_order=behavior_order,
        name=name or p.stem,
        source=str(p),
    )


_TIME_NAMES = ("timestamp", "time", "ts")
_FOLD_NAMES = {"train": 0, "0": 0, "valid": 1, "validation": 1, "val": 1, "1": 1, "test": 2, "2": 2}
_EXTRA = "__polyrec_extra__"  # marks the rows read from --valid / --test files


def _with_folds(
    df: pl.DataFrame,
    read: Callable[[Path], pl.DataFrame],
    valid: PathLike | None,
    test: PathLike | None,
    fold: str | None,
) -> pl.DataFrame:
    """The main table with the ``valid`` / ``test`` files appended as folds 1 / 2 (column
    ``fold``; the main rows fold 0). Their columns must be the main table's, less behavior or
    timestamp (filled later: :func:`_fill_extra_rows`)."""
    if valid is None and test is None:
        return df
    if fold is not None or "fold" in df.columns:
        raise DataError("give either a fold column or separate validation/test files, not both")
    parts = [df.with_columns(pl.lit(0, pl.Int8).alias("fold"), pl.lit(False).alias(_EXTRA))]
    for code, path in ((1, valid), (2, test)):
        if path is None:
            continue
        q = existing_file(path)
        extra = read(q)
        missing = [c for c in extra.columns if c not in df.columns]
        if missing:
            raise DataError(
                f"{q}: column(s) {', '.join(map(repr, missing))} are not in the main file "
                f"(its columns: {', '.join(df.columns)})"
            )
        if extra.height == 0:
            raise DataError(f"{q}: the file has a header but no rows")
        # the same column types as the main file (ids read as ints in one, strings in another)
        extra = extra.with_columns(
            [pl.col(c).cast(df.schema[c], strict=False) for c in extra.columns]
        )
        parts.append(
            extra.with_columns(pl.lit(code, pl.Int8).alias("fold"), pl.lit(True).alias(_EXTRA))
        )
    return pl.concat(parts, how="diagonal")


def _fill_extra_rows(
    df: pl.DataFrame,
    p: Path,
    user: str,
    behavior: str | None,
    timestamp: str | None,
    target: str | None,
    behavior_order: Sequence[str] | None,
) -> pl.DataFrame:
    """Validation/test rows without a behavior get the target; without a timestamp, their
    user's latest main-file time + 1 (the main file's latest + 1 for a user it lacks)."""
    extra = pl.col(_EXTRA)
    if behavior is not None and df.filter(extra).get_column(behavior).null_count():
        present = sorted(
            {str(v) for v in df.filter(~extra).get_column(behavior).unique() if v is not None}
        )
        _, tgt = order_behaviors(present, target, behavior_order, where=str(p))
        df = df.with_columns(
            pl.when(extra & pl.col(behavior).is_null())
            .then(pl.lit(tgt))
            .otherwise(pl.col(behavior).cast(pl.String))
            .alias(behavior)
        )
    if timestamp is not None and df.filter(extra).get_column(timestamp).null_count():
        main = df.filter(~extra)
        if (
            main.get_column(timestamp).dtype not in (pl.Float32, pl.Float64)
            and not main.get_column(timestamp).dtype.is_integer()
        ):
            raise DataError(
                f"{p}: the validation/test files have no timestamp column; give one, or import "
                "the main file's text timestamps as numbers"
            )
        latest = main.group_by(user).agg(pl.col(timestamp).max().alias("__t"))
        overall = main.get_column(timestamp).max()
        df = (
            df.join(latest, on=user, how="left")
            .with_columns(
                pl.when(extra & pl.col(timestamp).is_null())
                .then(pl.col("__t").fill_null(overall) + 1)
                .otherwise(pl.col(timestamp))
                .alias(timestamp)
            )
            .drop("__t")
        )
    return df.drop(_EXTRA)


def _fold_names_to_codes(df: pl.DataFrame, col: str, p: Path) -> pl.DataFrame:
    """A text fold column (train/valid/test, or the digits) as 0/1/2."""
    low = df.get_column(col).str.strip_chars().str.to_lowercase()
    bad = [v for v in low.unique().to_list() if v not in _FOLD_NAMES]
    if bad:
        raise DataError(
            f"{p}: fold column {col!r} must hold 0/train, 1/valid or 2/test; found {bad[0]!r}"
        )
    return df.with_columns(low.replace_strict(_FOLD_NAMES, return_dtype=pl.Int8).alias(col))


def _timestamps_to_seconds(df: pl.DataFrame, col: str, fmt: str | None, p: Path) -> pl.DataFrame:
    dtype = df.schema[col]
    n_null = df.get_column(col).null_count()
    if n_null:
        raise DataError(f"{p}: timestamp column {col!r} has {n_null} missing values")
    if dtype == pl.String and fmt is not None:
        try:
            parsed = df.get_column(col).str.to_datetime(fmt, strict=True)
        except pl.exceptions.PolarsError as e:
            msg = str(e).strip().splitlines()[0]
            raise DataError(
                f"{p}: timestamp column {col!r} does not match format {fmt!r} ({msg})"
            ) from None
        return df.with_columns(parsed.dt.epoch("s").cast(pl.Float64).alias(col))
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return df.with_columns(pl.col(col).dt.epoch("s").cast(pl.Float64))
    if dtype == pl.String:
        bad = df.filter(pl.col(col).cast(pl.Float64, strict=False).is_null()).get_column(col)
        if len(bad):
            raise DataError(
                f"{p}: timestamp column {col!r} is not numeric (found {bad[0]!r}); give seconds "
                "or any numeric time unit, or a format to parse date strings (polyrec data "
                "import --time-format '%Y-%m-%d %H:%M:%S'; timestamp_format= in Python)"
            )
        return df.with_columns(pl.col(col).cast(pl.Float64))
    return df
