"""Importers of foreign dataset formats into :class:`~polyrec.data.log.InteractionLog`.

Each format has a reader ``read_xxx(path, **options) -> InteractionLog`` whose docstring states
the format; :data:`FORMATS` maps the format names to them and :func:`import_path` picks one
(detecting it when ``fmt`` is None). Pickled matrices are only ever read with the restricted
unpickler of :mod:`polyrec.data.importers.safe_pickle`.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polyrec.data.importers._common import PathLike
from polyrec.data.importers._common import sniff_text as _sniff_text
from polyrec.data.importers.csv_parquet import (
    read_csv,
    read_frame,
    read_parquet,
    read_tsv,
)
from polyrec.data.importers.hkuds import read_hkuds
from polyrec.data.importers.lightgcn_txt import read_lightgcn_txt
from polyrec.data.importers.mba_tsv import read_mba
from polyrec.data.importers.recbole_atomic import read_recbole
from polyrec.data.importers.safe_pickle import load_pickle
from polyrec.data.importers.sasrec_txt import read_sasrec_txt, sasrec_files
from polyrec.data.importers.session_tsv import is_session_file, read_session_tsv
from polyrec.data.importers.simrec import read_simrec
from polyrec.data.log import InteractionLog
from polyrec.errors import DataError

FORMATS: dict[str, Callable[..., InteractionLog]] = {
    "csv": read_csv,
    "tsv": read_tsv,
    "parquet": read_parquet,
    "hkuds": read_hkuds,
    "mba": read_mba,
    "lightgcn-txt": read_lightgcn_txt,
    "sasrec-txt": read_sasrec_txt,
    "simrec": read_simrec,
    "recbole": read_recbole,
    "session-tsv": read_session_tsv,
}

_HKUDS = re.compile(r"^(?:train_mat_[A-Za-z]\w*\.pkl|trn_[A-Za-z]\w*)$")
_MBA = re.compile(r"^.+_[A-Za-z][A-Za-z0-9]*_(?:train|test)\.(?:csv|tsv)$")
_SIMREC = re.compile(r"^.+_(?:train|valid|test|all)\.txt$")
# the CRGCN / MuLe layout: one "user item" file per behavior beside test.txt
_CASCADE = {
    f"{b}.txt" for b in ("buy", "purchase", "cart", "view", "pv", "click", "collect", "fav")
}


def import_path(path: PathLike, fmt: str | None = None, **options: Any) -> InteractionLog:
    """Read ``path`` in format ``fmt`` (one of :data:`FORMATS`; None: detect it).

    Detection: a folder with ``train_mat_<b>.pkl``/``trn_<b>`` files is ``hkuds``, with
    ``<name>_<behavior>_train.csv`` files ``mba``, with ``<Name>_train.txt``/``_all.txt``
    ``simrec``, with ``train.txt`` (or ``test.txt`` beside ``buy.txt``/``cart.txt``/...)
    ``lightgcn-txt``; a file ``.parquet``/``.pq`` is
    ``parquet``, ``.tsv``/``.tab`` ``tsv``, an MBA-named ``.csv`` ``mba``, another ``.csv``
    ``csv``; a text file whose lines all hold two integers is ``sasrec-txt``, one whose lines hold
    integers ``lightgcn-txt``. ``options`` go to the reader (see its docstring).
    """
    p = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if not p.exists():
        raise DataError(f"{p}: does not exist")
    if p.is_file() and p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")
    if fmt is None:
        fmt = detect_format(p)
    reader = FORMATS[fmt]
    params = inspect.signature(read_csv if reader is read_tsv else reader).parameters
    if not any(v.kind is inspect.Parameter.VAR_KEYWORD for v in params.values()):
        unknown = [k for k in options if k not in params or k == "path"]
        if unknown:
            allowed = [
                k
                for k, v in params.items()
                if k != "path" and v.kind is inspect.Parameter.KEYWORD_ONLY
            ]
            raise DataError(
                f"format {fmt!r} has no option {unknown[0]!r}; its options are {', '.join(allowed)}"
            )
    return reader(p, **options)


def detect_format(path: PathLike) -> str:
    """The :data:`FORMATS` name that fits ``path`` (DataError when none does)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: does not exist")
    if p.is_dir():
        names = [f.name for f in p.iterdir() if f.is_file()]
        if "dataset.json" in names:
            raise DataError(
                f"{p}: is already a polyrec dataset folder; load it with "
                "polyrec.data.datasets.load_dataset (no import needed)"
            )
        if any(_HKUDS.match(n) for n in names):
            return "hkuds"
        if any(_MBA.match(n) for n in names):
            return "mba"
        if any(_SIMREC.match(n) for n in names):
            return "simrec"
        if "train.txt" in names or ("test.txt" in names and _CASCADE & set(names)):
            return "lightgcn-txt"
        if any((s / "train.txt").is_file() for s in p.iterdir() if s.is_dir()):
            return "lightgcn-txt"  # MB-CGCN: <behavior>/train.txt
        sessions = [p / n for n in names if n.endswith((".tsv", ".inter")) and "train" in n.lower()]
        if sessions and is_session_file(sessions[0]):
            return "session-tsv"
        if any(n.endswith(".inter") for n in names):
            return "recbole"
        if sasrec_files(p):
            return "sasrec-txt"
        raise DataError(
            f"{p}: cannot tell the format of this folder; give the format, one of "
            f"{', '.join(FORMATS)}"
        )
    suffix = p.suffix.lower()
    if suffix in (".tsv", ".inter") and is_session_file(p):
        return "session-tsv"
    if suffix == ".gz" and Path(p.name[:-3]).suffix.lower() in (".csv", ".tsv", ".tab"):
        return "csv" if Path(p.name[:-3]).suffix.lower() == ".csv" else "tsv"
    if suffix == ".inter":
        return "recbole"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    if suffix == ".csv":
        return "mba" if _MBA.match(p.name) and _first_line(p).split() == ["uid", "sid"] else "csv"
    if suffix == ".pkl":
        raise DataError(
            f"{p}: a single pickle is not a dataset; give the folder holding the HKUDS "
            "matrices (train_mat_<behavior>.pkl, test_mat.pkl, tst_int)"
        )
    if suffix in ("", ".txt", ".dat", ".inter"):
        kind = _sniff_text(p)
        if kind is not None:
            return kind
    raise DataError(
        f"{p}: cannot tell the format of this file; give the format, one of {', '.join(FORMATS)}"
    )


def _first_line(p: Path) -> str:
    with p.open("rb") as fh:
        return fh.readline().decode("utf-8", errors="replace")


__all__ = [
    "FORMATS",
    "detect_format",
    "import_path",
    "load_pickle",
    "read_csv",
    "read_frame",
    "read_hkuds",
    "read_lightgcn_txt",
    "read_mba",
    "read_parquet",
    "read_sasrec_txt",
    "read_simrec",
    "read_tsv",
]
