"""Helpers shared by the importers: file checks, table reading, dataset choice, behavior order,
line parsing, log building."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import numpy as np
import polars as pl

from polyrec.data.log import DEFAULT_BEHAVIOR, IdMap, InteractionLog
from polyrec.errors import DataError

PathLike = str | os.PathLike[str]

# Funnel order used by the multi-behavior papers' code (CML/MBGCN/MB-CGCN: pv/click -> fav ->
# cart -> buy): auxiliary behaviors first, the purchase (usual target) last.
KNOWN_BEHAVIOR_ORDER = (
    "pv",
    "view",
    "click",
    "clk",
    "fav",
    "collect",
    "like",
    "cart",
    "buy",
    "purchase",
)


def existing_file(path: PathLike, *, what: str = "file") -> Path:
    """``path`` as a Path; DataError when it is missing, a folder, or empty."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: {what} does not exist")
    if p.is_dir():
        raise DataError(f"{p}: is a folder; expected a {what}")
    if p.stat().st_size == 0:
        raise DataError(f"{p}: file is empty")
    return p


def existing_dir(path: PathLike, *, what: str = "folder") -> Path:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: {what} does not exist")
    if not p.is_dir():
        raise DataError(f"{p}: is not a folder; expected a {what}")
    return p


def read_table(p: Path, what: str, read: Callable[[], pl.DataFrame]) -> pl.DataFrame:
    """``read()`` (a polars reader of ``p``) with its failures as DataErrors naming ``p``:
    "file is empty", or "cannot read it as <what> (<polars' first line>)"."""
    try:
        return read()
    except pl.exceptions.NoDataError:
        raise DataError(f"{p}: file is empty") from None
    except (pl.exceptions.PolarsError, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{p}: cannot read it as {what} ({msg})") from None


K = TypeVar("K", bound=Hashable)


def dataset_files(
    d: Path,
    pattern: re.Pattern[str],
    key: Callable[[re.Match[str]], K],
    dataset: str | None,
    *,
    none_found: str,
) -> tuple[str, dict[K, Path]]:
    """The files of one dataset in folder ``d``, whose names match ``pattern`` (a ``name``
    group: the dataset), by ``key(match)``; ``dataset`` picks one when ``d`` holds several.
    ``none_found`` ends the error when no file matches."""
    by_name: dict[str, dict[K, Path]] = {}
    for f in sorted(d.iterdir()):
        m = pattern.match(f.name)
        if m and f.is_file():
            by_name.setdefault(m.group("name"), {})[key(m)] = f
    if not by_name:
        raise DataError(f"{d}: {none_found}")
    if dataset is None:
        if len(by_name) > 1:
            raise DataError(
                f"{d}: holds several datasets ({', '.join(sorted(by_name))}); choose one with "
                "dataset=..."
            )
        dataset = next(iter(by_name))
    if dataset not in by_name:
        raise DataError(f"{d}: no files of dataset {dataset!r}; found {', '.join(sorted(by_name))}")
    return dataset, by_name[dataset]


@contextmanager
def naming(where: PathLike) -> Iterator[None]:
    """Prefix DataErrors raised inside with ``where`` unless they already name it."""
    w = str(where)
    try:
        yield
    except DataError as e:
        msg = str(e)
        if w in msg:
            raise
        raise DataError(f"{w}: {msg}") from None


def order_behaviors(
    present: Sequence[str],
    target: str | None,
    behavior_order: Sequence[str] | None = None,
    *,
    where: str = "",
) -> tuple[tuple[str, ...], str]:
    """Behavior names ordered auxiliary-first, target-last, and the target.

    ``behavior_order`` (when given) fixes the order; otherwise known names follow the funnel
    order of :data:`KNOWN_BEHAVIOR_ORDER`, unknown ones come alphabetically before them and the
    target is moved last. The default target is ``buy`` (or ``purchase``) when present, else the
    last behavior.
    """
    names = sorted(set(present))
    prefix = f"{where}: " if where else ""
    if not names:
        raise DataError(f"{prefix}no behaviors found")
    if behavior_order is not None:
        extra = [b for b in names if b not in behavior_order]
        if extra:
            raise DataError(
                f"{prefix}behaviors {extra} are not in behavior_order {list(behavior_order)}"
            )
        ordered = [b for b in behavior_order if b in names]
    else:
        known = [b for b in KNOWN_BEHAVIOR_ORDER if b in names]
        ordered = [b for b in names if b not in KNOWN_BEHAVIOR_ORDER] + known
    if target is None:
        target = next((b for b in ("buy", "purchase") if b in names), ordered[-1])
    if target not in names:
        raise DataError(
            f"{prefix}unknown target behavior {target!r}; the data has {', '.join(ordered)}"
        )
    if behavior_order is None:
        ordered = [b for b in ordered if b != target] + [target]
    return tuple(ordered), target


def positions_within(groups: np.ndarray) -> np.ndarray:
    """Running position (0, 1, 2, ...) of each row within its group, in row order."""
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    start = np.ones(n, dtype=bool)
    start[1:] = g[1:] != g[:-1]
    first = np.maximum.accumulate(np.where(start, np.arange(n), 0))
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n) - first
    return pos


class Sequences:
    """Parsed "user item item ..." lines: one entry per line, items flattened."""

    def __init__(self, line_user: np.ndarray, item: np.ndarray, item_line: np.ndarray) -> None:
        self.line_user = line_user  # external user id of each non-blank line
        self.item = item  # external item ids, line by line
        self.item_line = item_line  # line (index into line_user) of each item

    @property
    def user(self) -> np.ndarray:
        return self.line_user[self.item_line]

    @property
    def position(self) -> np.ndarray:
        """Position of each item on its line (0-based)."""
        counts = np.bincount(self.item_line, minlength=len(self.line_user))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        return np.arange(len(self.item)) - starts[self.item_line]


def read_sequences(
    path: PathLike, *, min_tokens: int = 1, max_tokens: int | None = None
) -> Sequences:
    """Read whitespace-separated integer lines ``user item item ...`` (blank lines skipped)."""
    p = existing_file(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise DataError(f"{p}: file is empty (no non-blank lines)")
    lens = np.fromiter((len(ln.split()) for ln in lines), dtype=np.int64, count=len(lines))
    bad = np.flatnonzero((lens < min_tokens) | (lens > (max_tokens or np.iinfo(np.int64).max)))
    if len(bad):
        j = int(bad[0])
        want = (
            f"exactly {min_tokens}"
            if max_tokens == min_tokens
            else f"at least {min_tokens}"
            if max_tokens is None
            else f"{min_tokens} to {max_tokens}"
        )
        raise DataError(
            f"{p}: line {_line_number(text, j)} has {lens[j]} fields, expected {want} "
            f"({lines[j].strip()[:60]!r})"
        )
    try:
        tokens = np.array(text.split(), dtype=np.int64)
    except (ValueError, OverflowError):
        for j, ln in enumerate(lines):
            for tok in ln.split():
                try:
                    int(tok)
                except ValueError:
                    raise DataError(
                        f"{p}: line {_line_number(text, j)}: {tok!r} is not an integer id"
                    ) from None
        raise DataError(f"{p}: ids must be integers") from None
    first = np.concatenate([[0], np.cumsum(lens)[:-1]])
    is_user = np.zeros(len(tokens), dtype=bool)
    is_user[first] = True
    line_of_token = np.repeat(np.arange(len(lines)), lens)
    return Sequences(tokens[first], tokens[~is_user], line_of_token[~is_user])


def sequences_log(
    seqs: Sequence[Sequences],
    *,
    behavior: str | None,
    where: PathLike,
    name: str,
    source: str,
    timestamp: np.ndarray | None = None,
    folds: Sequence[int] | None = None,
) -> InteractionLog:
    """A one-behavior log (named ``behavior``, default ``"interaction"``) of the items of
    ``seqs``, read from one or more files. Every line's user is in the id map, even one without
    items. A row's timestamp is ``timestamp[row]``, by default the item's position on its line;
    ``folds[k]``, when given, is the fold of every row of ``seqs[k]``."""
    with naming(where):
        user_map, _ = IdMap.factorize(np.concatenate([s.line_user for s in seqs]), what="user id")
        item_map, item = IdMap.factorize(np.concatenate([s.item for s in seqs]), what="item id")
    user = np.concatenate([np.searchsorted(user_map.ids, s.user) for s in seqs])
    if timestamp is None:
        timestamp = np.concatenate([s.position for s in seqs]).astype(np.float64)
    fold = None
    if folds is not None:
        fold = np.concatenate(
            [np.full(len(s.item), f, dtype=np.int8) for s, f in zip(seqs, folds, strict=True)]
        )
    beh = behavior or DEFAULT_BEHAVIOR
    return build_log(
        user=user,
        item=item,
        behavior=np.zeros(len(user), dtype=np.int8),
        behaviors=(beh,),
        target=beh,
        user_map=user_map,
        item_map=item_map,
        timestamp=timestamp,
        fold=fold,
        name=name,
        source=source,
    )


def _line_number(text: str, nonblank_index: int) -> int:
    """1-based line number of the ``nonblank_index``-th non-blank line (error messages only)."""
    k = -1
    for no, ln in enumerate(text.splitlines(), start=1):
        if ln.strip():
            k += 1
            if k == nonblank_index:
                return no
    return nonblank_index + 1


def build_log(
    *,
    user: np.ndarray,
    item: np.ndarray,
    behavior: np.ndarray,
    behaviors: tuple[str, ...],
    target: str,
    user_map: IdMap,
    item_map: IdMap,
    timestamp: np.ndarray | None,
    fold: np.ndarray | None,
    name: str,
    source: str,
    sort: bool = True,
) -> InteractionLog:
    """An InteractionLog from dense codes (rows sorted by user, time), de-duplicated."""
    if len(user) == 0:
        raise DataError(f"{source or name}: no interactions found")
    if sort:
        keys: list[np.ndarray] = [behavior]
        if timestamp is not None:
            keys.append(timestamp)
        keys.append(user)
        order = np.lexsort(keys)
        user, item, behavior = user[order], item[order], behavior[order]
        timestamp = None if timestamp is None else timestamp[order]
        fold = None if fold is None else fold[order]
    log = InteractionLog(
        user=user.astype(np.int64),
        item=item.astype(np.int64),
        behavior=behavior.astype(np.int8),
        behaviors=behaviors,
        target=target,
        user_map=user_map,
        item_map=item_map,
        timestamp=None if timestamp is None else timestamp.astype(np.float64),
        fold=None if fold is None else fold.astype(np.int8),
        name=name,
        source=source,
    )
    return log.deduplicated()


def behavior_name(behavior: str | None, target: str | None, where: PathLike) -> str | None:
    """Single-behavior formats take the behavior name as ``behavior`` or ``target`` (alias)."""
    if behavior is not None and target is not None and behavior != target:
        raise DataError(
            f"{where}: behavior={behavior!r} and target={target!r} disagree; this format has one "
            "target behavior, give one of them"
        )
    return behavior if behavior is not None else target


_SNIFF_LINES = 2000


def sniff_text(p: Path) -> str | None:
    """The text format a file's first lines look like: "csv", "tsv", "sasrec-txt" (two
    integers per line), "lightgcn-txt" (integers), or None; DataError for an empty file."""
    lines: list[str] = []
    with p.open("rb") as fh:
        for raw in fh:
            ln = raw.decode("utf-8", errors="replace").strip()
            if ln:
                lines.append(ln)
            if len(lines) >= _SNIFF_LINES:
                break
    if not lines:
        raise DataError(f"{p}: file is empty (no non-blank lines)")
    first = lines[0]
    if "," in first:
        return "csv"
    if "\t" in first and not all(t.lstrip("-").isdigit() for t in first.split()):
        return "tsv"
    toks = [ln.split() for ln in lines]
    if not all(t.isdigit() for row in toks for t in row):
        return None
    if all(len(row) == 2 for row in toks):
        return "sasrec-txt"
    return "lightgcn-txt"
