"""SASRec-style sequence files: one "user item" pair per line, chronological per user."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polyrec.data.importers._common import (
    PathLike,
    behavior_name,
    build_log,
    naming,
    positions_within,
    read_sequences,
)
from polyrec.data.log import DEFAULT_BEHAVIOR, IdMap, InteractionLog


def read_sasrec_txt(
    path: PathLike,
    *,
    behavior: str | None = None,
    target: str | None = None,
    name: str | None = None,
) -> InteractionLog:
    """Read a SASRec data file (e.g. ``data/Video.txt`` of kang205/SASRec).

    Format: one whitespace-separated ``user item`` pair of integer ids per line; a user's lines
    are in chronological order (they need not be contiguous). There are no timestamps: the
    timestamp of a row is its running position among the user's lines (0, 1, 2, ...), so the
    last line of a user is the latest interaction (SASRec's leave-one-out test item). One
    behavior, named ``behavior`` (alias ``target``; default ``"interaction"``); no published split. External ids
    are the file's integers (SASRec's are 1-based); dense codes follow their sorted order.
    """
    behavior = behavior_name(behavior, target, path)
    p = Path(path)
    seq = read_sequences(p, min_tokens=2, max_tokens=2)
    with naming(p):
        user_map, u_codes = IdMap.factorize(seq.user, what="user id")
        item_map, i_codes = IdMap.factorize(seq.item, what="item id")
    beh = behavior or DEFAULT_BEHAVIOR
    return build_log(
        user=u_codes,
        item=i_codes,
        behavior=np.zeros(len(u_codes), dtype=np.int8),
        behaviors=(beh,),
        target=beh,
        user_map=user_map,
        item_map=item_map,
        timestamp=positions_within(u_codes).astype(np.float64),
        fold=None,
        name=name or p.stem,
        source=f"sasrec-txt:{p}",
    )
