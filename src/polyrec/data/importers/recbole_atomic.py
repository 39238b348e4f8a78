"""RecBole atomic files: ``<name>.inter`` (and optionally ``<name>.item`` for categories).

The files are tab-separated with typed headers ``field:type`` (``token``, ``float``,
``token_seq``, ...). This reads the interactions' ``user_id``, ``item_id`` and ``timestamp``
fields and, when the ``.item`` file is there, one category per item from a ``token_seq`` field
(MovieLens' ``class``: the genres, space-separated). An item with several categories gets the
first one listed (``category_pick = "first"``); polyrec's logs carry one category per row.
Used for MovieLens-100k as shipped inside the ``recbole`` wheel (read in place: its licence
forbids redistribution).
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from polyrec.data.importers._common import PathLike, read_table
from polyrec.data.importers.csv_parquet import _from_polars
from polyrec.data.log import InteractionLog
from polyrec.errors import DataError


def _read_atomic(p: Path) -> pl.DataFrame:
    """A tab-separated atomic file with its ``name:type`` header reduced to the names."""
    df = read_table(
        p,
        "a RecBole atomic file",
        lambda: pl.read_csv(p, separator="\t", quote_char=None, infer_schema_length=0),
    )
    if df.width == 0 or df.height == 0:
        raise DataError(f"{p}: no rows")
    return df.rename({c: c.split(":", 1)[0] for c in df.columns})


def _resolve(p: Path) -> Path:
    if p.is_dir():
        found = sorted(p.glob("*.inter"))
        if len(found) != 1:
            raise DataError(
                f"{p}: expected exactly one .inter file in this folder, found {len(found)}"
            )
        return found[0]
    if p.suffix != ".inter":
        raise DataError(f"{p}: a RecBole atomic dataset is a .inter file or its folder")
    return p


def read_recbole(
    path: PathLike,
    *,
    category: str = "class",
    behavior: str | None = None,
    target: str | None = None,
    name: str | None = None,
) -> InteractionLog:
    """Read RecBole atomic files: ``path`` is ``<name>.inter`` or the folder holding it.

    Columns used: ``user_id``, ``item_id``, ``timestamp`` (optional) from ``.inter``; when
    ``<name>.item`` exists and has the field ``category`` (default ``class``), each item's first
    listed category becomes the rows' category. Every row is one interaction of one behavior
    named ``behavior`` (alias ``target``; default ``"interaction"``; ratings are not used). No
    published split.
    """
    behavior = behavior or target or "interaction"
    category_field = category
    inter = _resolve(Path(path))
    df = _read_atomic(inter)
    missing = [c for c in ("user_id", "item_id") if c not in df.columns]
    if missing:
        raise DataError(f"{inter}: missing field(s) {', '.join(missing)} (header: {df.columns})")
    cols = ["user_id", "item_id"] + (["timestamp"] if "timestamp" in df.columns else [])
    df = df.select(cols)
    if "timestamp" in df.columns:
        df = df.with_columns(pl.col("timestamp").cast(pl.Float64, strict=False))
        if df["timestamp"].null_count():
            raise DataError(f"{inter}: timestamp values that are not numbers")
    category_col = None
    items = inter.with_suffix(".item")
    if items.exists():
        it = _read_atomic(items)
        if category_field in it.columns and "item_id" in it.columns:
            first = pl.col(category_field).str.split(" ").list.first()
            cats = it.select("item_id", first.alias("category")).filter(
                pl.col("category").is_not_null() & (pl.col("category") != "")
            )
            df = df.join(cats, on="item_id", how="left").with_columns(
                pl.col("category").fill_null("(none)")
            )
            category_col = "category"
    df = df.with_columns(pl.lit(behavior).alias("behavior"))
    return _from_polars(
        df,
        inter,
        user="user_id",
        item="item_id",
        behavior="behavior",
        timestamp="timestamp" if "timestamp" in df.columns else None,
        category=category_col,
        target=behavior,
        name=name or inter.stem,
    )
