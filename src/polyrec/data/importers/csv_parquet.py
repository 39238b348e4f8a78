"""Tabular user logs: CSV, TSV, Parquet files and in-memory pandas/polars DataFrames."""

from __future__ import annotations

from collections.abc import Sequence
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


def _delimiter_for(p: Path, delimiter: str | None) -> str:
    if delimiter is not None:
        if len(delimiter) != 1:
            raise DataError(f"{p}: delimiter must be one character, got {delimiter!r}")
        return delimiter
    if p.suffix.lower() in _TAB_EXTENSIONS:
        return "\t"
    # .csv files written with tabs (e.g. MBA's "uid\tsid"): sniff the header line
    with p.open("rb") as fh:
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
    """
    p = existing_file(path)
    sep = _delimiter_for(p, delimiter)
    df = read_table(
        p,
        "delimited text",
        lambda: pl.read_csv(
            p,
            separator=sep,
            has_header=has_header,
            infer_schema_length=None,
            null_values=["", "NA", "NaN", "nan", "null", "NULL", "None"],
        ),
    )
    if not has_header:
        df.columns = [f"column_{k + 1}" for k in range(df.width)]
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
) -> InteractionLog:
    """Read a Parquet log, one interaction per row; columns as in :func:`read_csv`.

    Timestamps may be numeric or Parquet timestamp/date columns (converted to unix seconds).
    """
    p = existing_file(path)
    df = read_table(p, "Parquet", lambda: pl.read_parquet(p))
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
    cols = df.columns
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
                "or any numeric time unit, or timestamp_format to parse date strings"
            )
        return df.with_columns(pl.col(col).cast(pl.Float64))
    return df
