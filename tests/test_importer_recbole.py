"""RecBole atomic files (``.inter`` + ``.item``): interactions, timestamps, first-listed category."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from polyrec.data.importers import detect_format, import_path
from polyrec.data.sequences import SequenceSet
from polyrec.errors import DataError

INTER = (
    "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    "u1\t10\t4\t300\n"
    "u1\t11\t2\t100\n"
    "u2\t10\t5\t200\n"
    "u2\t12\t3\t250\n"
)
ITEM = (
    "item_id:token\tmovie_title:token_seq\tclass:token_seq\n"
    "10\tA Movie\tComedy Drama\n"
    "11\tB Movie\tChildren's Animation\n"
    "12\tC Movie\t\n"
)


def _write(folder: Path, item: bool = True) -> Path:
    folder.mkdir()
    (folder / "toy.inter").write_text(INTER)
    if item:
        (folder / "toy.item").write_text(ITEM)
    return folder


def test_reads_interactions_time_order_and_first_category(tmp_path: Path) -> None:
    folder = _write(tmp_path / "toy")
    assert detect_format(folder) == "recbole" and detect_format(folder / "toy.inter") == "recbole"
    log = import_path(folder)
    assert len(log.user) == 4 and log.behaviors == ("interaction",)
    rows = {
        (log.user_map.ids[u], log.item_map.ids[i]): t
        for u, i, t in zip(log.user, log.item, log.timestamp, strict=True)
    }
    assert rows[("u1", "11")] == 100 and rows[("u1", "10")] == 300
    # the sequence view orders a user's items by time: u1 saw item 11 (t=100) before 10 (t=300)
    seqs = SequenceSet.from_log(log)
    u1 = int(np.flatnonzero(np.asarray(log.user_map.ids) == "u1")[0])
    hist, _ = seqs.padded(np.array([u1]), 5)
    assert [log.item_map.ids[int(i) - 1] for i in hist[0] if i > 0] == ["11", "10"]
    assert log.category is not None and log.category_map is not None
    cat = {
        log.item_map.ids[i]: log.category_map.ids[c]
        for i, c in zip(log.item, log.category, strict=True)
    }
    assert cat == {"10": "Comedy", "11": "Children's", "12": "(none)"}


def test_without_item_file_there_are_no_categories(tmp_path: Path) -> None:
    log = import_path(_write(tmp_path / "toy", item=False))
    assert log.category is None
    assert np.array_equal(np.sort(np.unique(log.user)), [0, 1])


def test_bad_files_give_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.inter").write_text("user_id:token\trating:float\nu1\t3\n")
    with pytest.raises(DataError, match="missing field"):
        import_path(bad, fmt="recbole")
    (bad / "x.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\nu1\t1\tnoon\n")
    with pytest.raises(DataError, match="timestamp"):
        import_path(bad, fmt="recbole")
    two = tmp_path / "two"
    two.mkdir()
    (two / "a.inter").write_text(INTER)
    (two / "b.inter").write_text(INTER)
    with pytest.raises(DataError, match=r"exactly one \.inter"):
        import_path(two, fmt="recbole")
