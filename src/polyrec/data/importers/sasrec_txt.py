"""SASRec-style sequence files: one "user item" pair per line, chronological per user."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polyrec.data.importers._common import (
    PathLike,
    behavior_name,
    positions_within,
    read_sequences,
    sequences_log,
    sniff_text,
)
from polyrec.data.log import InteractionLog
from polyrec.errors import DataError


def sasrec_files(folder: Path) -> list[Path]:
    """The ``.txt`` files of ``folder`` whose lines are ``user item`` integer pairs (licence
    and source notes beside them are skipped)."""
    out = []
    for f in sorted(folder.glob("*.txt")):
        try:
            if f.is_file() and sniff_text(f) == "sasrec-txt":
                out.append(f)
        except DataError:  # an empty file is not a candidate
            continue
    return out


def _resolve(p: Path) -> Path:
    if not p.is_dir():
        return p
    found = sasrec_files(p)
    if len(found) == 1:
        return found[0]
    if not found:
        raise DataError(f"{p}: no .txt file of 'user item' integer pairs in this folder")
    names = ", ".join(f.name for f in found)
    raise DataError(f"{p}: several SASRec files in this folder ({names}); give one of them")


def read_sasrec_txt(
    path: PathLike,
    *,
    behavior: str | None = None,
    target: str | None = None,
    name: str | None = None,
) -> InteractionLog:
    """Read a SASRec data file (e.g. ``data/Video.txt`` of kang205/SASRec), or the folder
    holding it when it is the folder's only ``.txt`` file of integer pairs.

    Format: one whitespace-separated ``user item`` pair of integer ids per line; a user's lines
    are in chronological order (they need not be contiguous). There are no timestamps: the
    timestamp of a row is its running position among the user's lines (0, 1, 2, ...), so the
    last line of a user is the latest interaction (SASRec's leave-one-out test item). One
    behavior, named ``behavior`` (alias ``target``; default ``"interaction"``); no published split. External ids
    are the file's integers (SASRec's are 1-based); dense codes follow their sorted order.
    """
    behavior = behavior_name(behavior, target, path)
    p = _resolve(Path(path))
    seq = read_sequences(p, min_tokens=2, max_tokens=2)
    return sequences_log(
        [seq],
        behavior=behavior,
        where=p,
        name=name or p.stem,
        source=f"sasrec-txt:{p}",
        timestamp=positions_within(seq.user).astype(np.float64),
    )
