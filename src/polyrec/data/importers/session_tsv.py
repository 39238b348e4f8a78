"""Session-style sequence files, as RecBole and SSLRec ship their sequential sets: one row per
session (or user) holding the item history and the next item."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl

from polyrec.data.importers._common import (
    PathLike,
    Sequences,
    behavior_name,
    read_table,
    sequences_log,
)
from polyrec.data.log import FOLD_TEST, FOLD_TRAIN, FOLD_VALID, InteractionLog
from polyrec.errors import DataError

# column base names (a RecBole ":type" suffix is ignored), in order of preference
_SESSION = ("session_id", "user_id", "session", "user", "uid")
_HISTORY = ("item_id_list", "item_list", "items", "history", "item_seq")
_NEXT = ("item_id", "next_item", "target", "item", "iid")
_PART = re.compile(r"(?P<part>train|valid|test)", re.IGNORECASE)
_FOLDS = {"train": FOLD_TRAIN, "valid": FOLD_VALID, "test": FOLD_TEST}


def _base(col: str) -> str:
    return col.split(":", 1)[0].strip().lower()


def is_session_file(p: Path) -> bool:
    """Whether the header of ``p`` names an item-list column (what this reader needs)."""
    try:
        with p.open("rb") as fh:
            head = fh.readline().decode("utf-8", errors="replace")
    except OSError:
        return False
    return any(_base(c) in _HISTORY for c in head.rstrip("\r\n").split("\t"))


def read_session_tsv(
    path: PathLike,
    *,
    behavior: str | None = None,
    target: str | None = None,
    name: str | None = None,
) -> InteractionLog:
    """Read session-style TSV files: a header, then one row per session.

    Format: tab-separated; columns (a RecBole type suffix such as ``:token_seq`` is ignored) a
    session or user id (``session_id``, ``user_id``, ...; optional: without it each row is its
    own session), the item history (``item_id_list``: item ids separated by spaces or commas,
    oldest first) and the next item (``item_id``; optional). Each session becomes a user whose
    items are the history followed by the next item, positions as timestamps. A session given
    on several rows (prefixes, as augmented training sets hold) keeps its longest row.

    ``path`` is one file, or a folder holding ``*train*``, ``*valid*``, ``*test*`` files
    (``.tsv``/``.inter``): then every session of a file gets that file's fold (a user split, as
    ``simrec``), and a session may appear in one file only. One behavior named ``behavior``
    (alias ``target``; default ``"interaction"``).
    """
    behavior = behavior_name(behavior, target, path)
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: does not exist")
    if p.is_dir():
        files: dict[str, Path] = {}
        for f in sorted(p.iterdir()):
            m = _PART.search(f.name)
            if f.suffix in (".tsv", ".inter") and m and m.group("part").lower() not in files:
                files[m.group("part").lower()] = f
        if "train" not in files:
            raise DataError(f"{p}: no *train*.tsv session file found")
        parts = [(files[k], _FOLDS[k]) for k in ("train", "valid", "test") if k in files]
    else:
        parts = [(p, -1)]
    seqs = [_read_one(f, k) for k, (f, _) in enumerate(parts)]
    if len(seqs) > 1:
        owner: dict[object, str] = {}
        for s, (f, _) in zip(seqs, parts, strict=True):
            for u in np.unique(s.line_user).tolist():
                if u in owner:
                    raise DataError(
                        f"{f}: session {u!r} also appears in {owner[u]}; the files of a session "
                        "split hold disjoint sessions"
                    )
                owner[u] = f.name
    return sequences_log(
        seqs,
        behavior=behavior,
        where=p,
        name=name or p.stem,
        source=f"session-tsv:{p} ({', '.join(f.name for f, _ in parts)})",
        folds=[fold for _, fold in parts] if len(parts) > 1 else None,
    )


def _read_one(p: Path, k: int) -> Sequences:
    """One session file as :class:`Sequences` (longest row per session)."""
    df = read_table(
        p,
        "a session TSV",
        lambda: pl.read_csv(p, separator="\t", infer_schema_length=0, quote_char=None),
    )
    if df.height == 0:
        raise DataError(f"{p}: the file has a header but no rows")
    cols = {_base(c): c for c in df.columns}
    hist = next((cols[c] for c in _HISTORY if c in cols), None)
    if hist is None:
        raise DataError(
            f"{p}: no item-list column ({', '.join(_HISTORY)}); columns are {', '.join(df.columns)}"
        )
    sess = next((cols[c] for c in _SESSION if c in cols), None)
    nxt = next((cols[c] for c in _NEXT if c in cols and cols[c] != hist), None)
    items = df.get_column(hist).fill_null("").str.replace_all(",", " ").str.split(" ")
    items = items.list.eval(pl.element().filter(pl.element() != ""))
    if nxt is not None:
        items = items.list.concat(df.get_column(nxt).cast(pl.String).fill_null("").str.split(" "))
        items = items.list.eval(pl.element().filter(pl.element() != ""))
    # ids: sessions of this file only (row number when there is no session column)
    if sess is not None:
        if df.get_column(sess).null_count():
            raise DataError(f"{p}: session column {sess!r} has missing values")
        session = df.get_column(sess)
    else:
        session = pl.Series([f"{k}:{r}" for r in range(df.height)])
    frame = pl.DataFrame({"s": session, "items": items, "n": items.list.len()})
    frame = frame.filter(pl.col("n") > 0)
    if frame.height == 0:
        raise DataError(f"{p}: no session holds any item")
    # a session on several rows (augmented prefixes): its longest row
    frame = frame.sort(["s", "n"], descending=[False, True]).unique("s", keep="first")
    frame = frame.sort("s")
    flat = frame.get_column("items").explode()
    line = np.repeat(np.arange(frame.height), frame.get_column("n").to_numpy())
    return Sequences(_ids(frame.get_column("s")), _ids(flat), line.astype(np.int64))


def _ids(col: pl.Series) -> np.ndarray:
    """Integer ids where every value is an integer, else text ids."""
    as_int = col.cast(pl.Int64, strict=False)
    if as_int.null_count() == 0:
        return as_int.to_numpy()
    return np.asarray(col.cast(pl.String).to_list(), dtype=object)


__all__ = ["is_session_file", "read_session_tsv"]
