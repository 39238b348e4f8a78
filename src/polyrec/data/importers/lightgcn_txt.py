"""LightGCN / NGCF / MB-CGCN style adjacency-list text files ("user item item ...")."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from polyrec.data.importers._common import (
    PathLike,
    Sequences,
    behavior_name,
    build_log,
    existing_dir,
    naming,
    order_behaviors,
    read_sequences,
    sequences_log,
)
from polyrec.data.log import (
    DEFAULT_BEHAVIOR,
    FOLD_TEST,
    FOLD_TRAIN,
    FOLD_VALID,
    IdMap,
    InteractionLog,
)
from polyrec.data.sampling import PairSet
from polyrec.errors import DataError

_SPLIT_FILES = {
    "train.txt": FOLD_TRAIN,
    "valid.txt": FOLD_VALID,
    "val.txt": FOLD_VALID,
    "test.txt": FOLD_TEST,
}
_IGNORED = {
    "readme.txt",
    "source.txt",
    "license.txt",
    "notice.txt",
    "user_list.txt",
    "item_list.txt",
    "entity_list.txt",
    "relation_list.txt",
    "kg_final.txt",
}


def read_lightgcn_txt(
    path: PathLike,
    *,
    behavior: str | None = None,
    target: str | None = None,
    fold: str | None = None,
    behavior_order: Sequence[str] | None = None,
    name: str | None = None,
) -> InteractionLog:
    """Read "user item item ..." lines (one user per line, whitespace-separated integer ids).

    Format: each non-blank line starts with a user id followed by the user's items; a line with
    only a user id is allowed (the user is kept in the id map without interactions). The order of
    the items on a line is taken as the sequence order: the item's position (0, 1, ...) is its
    timestamp.

    ``path`` may be

    * one file: a single behavior named ``behavior`` (default ``"interaction"``); ``fold``
      (``"train"``, ``"valid"`` or ``"test"``) marks every row with that published fold;
    * a folder in the LightGCN / MB-CGCN layout: ``train.txt`` (the target behavior, named
      ``behavior``, default ``"buy"`` when auxiliary files exist else ``"interaction"``),
      optional ``valid.txt``/``val.txt`` and ``test.txt`` (target pairs with ``FOLD_VALID`` /
      ``FOLD_TEST``; their positions continue after the user's ``train.txt`` items), and every
      other ``<name>.txt`` as an auxiliary behavior ``<name>`` with ``FOLD_TRAIN`` (a file named
      like the target behavior duplicates ``train.txt`` and is skipped);
    * MB-CGCN's layout: one sub-folder per behavior holding its ``train.txt`` (``buy/train.txt``,
      ``cart/train.txt``, ``view/train.txt``), the target's ``buy/test.txt`` (and ``valid.txt``)
      its held-out folds (the other behaviors' ``test.txt`` are ignored);
    * a folder in the CRGCN / MuLe / CascadingRank layout (``buy.txt``, ``cart.txt``,
      ``view.txt``, ``collect.txt``, ``valid.txt``, ``test.txt``, one ``user item`` pair per
      line): without ``train.txt`` the target behavior's own file (``buy.txt``) is the training
      file. Their ``valid.txt`` lists training pairs (MuLe selects its epoch on them): a
      validation file whose every pair is also a training pair is not a held-out fold and is
      skipped (recorded in the log's ``source``); polyrec's protocols carve their own
      validation from the training pairs.

    Time: a user's items are numbered in file order (over all of the user's lines of a file:
    0, 1, ...), the only order these files give.

    ``target`` is an alias of ``behavior``. External ids are the file's integers; dense codes
    follow their sorted order.
    """
    behavior = behavior_name(behavior, target, path)
    p = Path(path)
    if p.is_dir():
        return _read_folder(existing_dir(p), behavior, behavior_order, name)
    fold_code = None
    if fold is not None:
        codes = {"train": FOLD_TRAIN, "valid": FOLD_VALID, "test": FOLD_TEST}
        if fold not in codes:
            raise DataError(f"{p}: fold must be train, valid or test, not {fold!r}")
        fold_code = codes[fold]
    seq = read_sequences(p)
    if len(seq.item) == 0:
        raise DataError(f"{p}: no interactions (every line holds only a user id)")
    return sequences_log(
        [seq],
        behavior=behavior,
        where=p,
        name=name or p.stem,
        source=f"lightgcn-txt:{p}",
        folds=None if fold_code is None else [fold_code],
    )


def _read_folder(
    d: Path, behavior: str | None, behavior_order: Sequence[str] | None, name: str | None
) -> InteractionLog:
    subdirs = sorted(s for s in d.iterdir() if s.is_dir() and (s / "train.txt").is_file())
    if subdirs and not (d / "train.txt").is_file():
        return _read_behavior_folders(d, subdirs, behavior, behavior_order, name)
    aux = {
        f.stem: f
        for f in sorted(d.glob("*.txt"))
        if f.name not in _SPLIT_FILES and f.name.lower() not in _IGNORED
    }
    target = behavior or ("buy" if aux else DEFAULT_BEHAVIOR)
    files = {n: d / n for n in _SPLIT_FILES if (d / n).is_file()}
    if "train.txt" not in files:
        if target not in aux:
            raise DataError(
                f"{d}: no train.txt and no {target}.txt; expected the LightGCN layout train.txt "
                "[+ test.txt] or the CRGCN/MuLe layout <behavior>.txt + test.txt"
            )
        files["train.txt"] = aux[target]  # CRGCN / MuLe: the target's own file trains
    aux.pop(target, None)
    behaviors, target = order_behaviors([*aux, target], target, behavior_order, where=str(d))
    parts: list[tuple[Sequences, int, int]] = []  # (sequences, behavior code, fold)
    notes = []
    train_seq = read_sequences(files["train.txt"])
    for fname, fold in sorted(_SPLIT_FILES.items(), key=lambda kv: kv[1]):
        if fname not in files:
            continue
        seq = train_seq if fold == FOLD_TRAIN else read_sequences(files[fname])
        if fold == FOLD_VALID and _inside(seq, train_seq):
            notes.append(f"{fname} skipped: every pair is a training pair")
            continue
        parts.append((seq, behaviors.index(target), fold))
    for beh, f in aux.items():
        parts.append((read_sequences(f), behaviors.index(beh), FOLD_TRAIN))
    return _assemble(d, parts, behaviors, target, name, notes)


def _read_behavior_folders(
    d: Path,
    subdirs: list[Path],
    behavior: str | None,
    behavior_order: Sequence[str] | None,
    name: str | None,
) -> InteractionLog:
    """MB-CGCN's layout: ``<behavior>/train.txt`` per behavior, the target's ``test.txt`` (and
    ``valid.txt``) as its held-out folds; the other behaviors' ``test.txt`` are ignored."""
    names = [s.name for s in subdirs]
    target = behavior or ("buy" if "buy" in names else None)
    behaviors, target = order_behaviors(names, target, behavior_order, where=str(d))
    parts: list[tuple[Sequences, int, int]] = []
    for sub in subdirs:
        parts.append((read_sequences(sub / "train.txt"), behaviors.index(sub.name), FOLD_TRAIN))
    notes = []
    for fname in ("valid.txt", "val.txt", "test.txt"):
        f = d / target / fname
        if f.is_file():
            parts.append((read_sequences(f), behaviors.index(target), _SPLIT_FILES[fname]))
    others = [s.name for s in subdirs if s.name != target and (s / "test.txt").is_file()]
    if others:
        notes.append(f"test.txt of {', '.join(others)} ignored (the target's is the test)")
    return _assemble(d, parts, behaviors, target, name, notes)


def _assemble(
    d: Path,
    parts: list[tuple[Sequences, int, int]],
    behaviors: tuple[str, ...],
    target: str,
    name: str | None,
    notes: list[str],
) -> InteractionLog:
    """The log of ``parts`` ((sequences, behavior code, fold), target train first)."""
    all_users = np.concatenate([s.line_user for s, _, _ in parts])
    all_items = np.concatenate([s.item for s, _, _ in parts])
    with naming(d):
        user_map, _ = IdMap.factorize(all_users, what="user id")
        item_map, i_codes = IdMap.factorize(all_items, what="item id")
    users, behs, folds, stamps = [], [], [], []
    # target positions continue across train -> valid -> test so later folds are later in time
    offset = np.zeros(len(user_map), dtype=np.int64)
    for seq, code, fold in parts:
        u = np.searchsorted(user_map.ids, seq.user)
        pos = _user_positions(u)
        if code == behaviors.index(target):
            pos = pos + offset[u]
            np.add.at(offset, u, 1)
        users.append(u)
        behs.append(np.full(len(u), code, dtype=np.int8))
        folds.append(np.full(len(u), fold, dtype=np.int8))
        stamps.append(pos.astype(np.float64))
    fold_arr = np.concatenate(folds)
    return build_log(
        user=np.concatenate(users),
        item=i_codes,
        behavior=np.concatenate(behs),
        behaviors=behaviors,
        target=target,
        user_map=user_map,
        item_map=item_map,
        timestamp=np.concatenate(stamps),
        fold=fold_arr if (fold_arr != FOLD_TRAIN).any() else None,
        name=name or d.name,
        source=f"lightgcn-txt:{d}" + "".join(f"; {n}" for n in notes),
    )


def _inside(seq: Sequences, train: Sequences) -> bool:
    """Whether every (user, item) pair of ``seq`` is also a pair of ``train``."""
    n_items = int(max(train.item.max(initial=0), seq.item.max(initial=0))) + 1
    return bool(PairSet(train.user, train.item, n_items).contains(seq.user, seq.item).all())


def _user_positions(u: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... per user, in the order of ``u`` (a file's rows, line by line)."""
    order = np.argsort(u, kind="stable")
    counts = np.bincount(u)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    pos = np.empty(len(u), dtype=np.int64)
    pos[order] = np.arange(len(u)) - np.repeat(starts[counts > 0], counts[counts > 0])
    return pos
