"""Importing tabular logs safely (issue 24, items 15, 16, 21, 25): published splits given as a
fold column or as separate files, columns never dropped silently, the usual timestamp names,
compressed files, every row validated, and the dataset named after its folder."""

from __future__ import annotations

import gzip

import numpy as np
import polars as pl
import pytest

from cli_helpers import assert_user_error, run
from polyrec.data.datasets import load_dataset
from polyrec.data.importers import import_path
from polyrec.data.log import FOLD_TEST, FOLD_TRAIN, FOLD_VALID, InteractionLog
from polyrec.errors import DataError

MAIN = "user,item,behavior,ts\n1,a,view,100\n1,a,buy,110\n1,b,view,120\n2,b,buy,90\n2,c,view,95\n"


def test_a_fold_column_is_kept_not_trained_on(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("user,item,behavior,fold\n1,a,buy,train\n1,b,buy,test\n2,a,buy,0\n2,c,buy,valid\n")
    with pytest.warns(UserWarning, match="column 'fold' taken as the published split"):
        log = import_path(p)
    assert log.fold is not None
    folds = {(log.user_map.ids[u], log.item_map.ids[i]): f
             for u, i, f in zip(log.user, log.item, log.fold, strict=True)}  # fmt: skip
    assert folds[(1, "b")] == FOLD_TEST and folds[(2, "c")] == FOLD_VALID
    assert folds[(1, "a")] == folds[(2, "a")] == FOLD_TRAIN
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,fold\n1,a,holdout\n")
    with pytest.raises(DataError, match="found 'holdout'"):
        import_path(bad)


def test_valid_and_test_files_become_folds_and_keep_their_items(tmp_path):
    (tmp_path / "log.csv").write_text(MAIN)
    (tmp_path / "valid.csv").write_text("user,item\n2,a\n")
    (tmp_path / "test.csv").write_text("user,item\n1,z\n")  # item z: only in the test file
    out = tmp_path / "sets" / "shop"
    r = run("data", "import", tmp_path / "log.csv", "--valid", tmp_path / "valid.csv",
            "--test", tmp_path / "test.csv", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    log = load_dataset(str(out))
    assert log.name == "shop"  # from --out, not from the input's name
    assert "z" in log.item_map.ids.tolist() and log.n_items == 4
    assert log.fold is not None and log.timestamp is not None
    rows = {(log.user_map.ids[u], log.item_map.ids[i], log.behaviors[b]): (f, t)
            for u, i, b, f, t in zip(log.user, log.item, log.behavior, log.fold, log.timestamp,
                                     strict=True)}  # fmt: skip
    # no behavior column: the target; no timestamp: the user's latest main-file time + 1
    assert rows[(1, "z", "buy")] == (FOLD_TEST, 121.0)
    assert rows[(2, "a", "buy")] == (FOLD_VALID, 96.0)
    assert rows[(1, "a", "view")][0] == FOLD_TRAIN
    # a fold column and separate files at once is ambiguous
    (tmp_path / "f.csv").write_text("user,item,fold\n1,a,0\n")
    r = run("data", "import", tmp_path / "f.csv", "--test", tmp_path / "test.csv", "--out",
            tmp_path / "x")  # fmt: skip
    assert_user_error(r, "not both")
    (tmp_path / "odd.csv").write_text("user,item,score\n1,a,3\n")
    r = run("data", "import", tmp_path / "log.csv", "--test", tmp_path / "odd.csv", "--out",
            tmp_path / "y")  # fmt: skip
    assert_user_error(r, "'score'", "not in the main file")


def test_unused_columns_are_named_and_fold_col_is_an_option(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("uid,iid,behavior,split,price\n1,a,buy,0\n1,b,buy,2\n2,a,buy,0\n")
    r = run("data", "import", p, "--user-col", "uid", "--item-col", "iid", "--out", tmp_path / "a")
    assert r.exit_code == 0 and "'split', 'price' not used" in " ".join(r.output.split()), r.output
    r = run("data", "import", p, "--user-col", "uid", "--item-col", "iid", "--fold-col", "split",
            "--out", tmp_path / "b")  # fmt: skip
    assert r.exit_code == 0, r.output
    log = load_dataset(str(tmp_path / "b"))
    assert log.fold is not None and int((log.fold == FOLD_TEST).sum()) == 1


def test_usual_timestamp_names_compressed_files_and_time_format(tmp_path):
    p = tmp_path / "log.csv.gz"
    with gzip.open(p, "wt") as f:
        f.write(MAIN.replace(",ts\n", ",timestamp\n"))
    with pytest.warns(UserWarning, match="column 'timestamp' taken as the timestamp"):
        log = import_path(p)
    assert log.timestamp is not None and sorted(log.timestamp.tolist())[0] == 90.0
    text = tmp_path / "dates.csv"
    text.write_text("user,item,time\n1,a,2024-01-02 00:00:00\n2,b,2024-01-03 00:00:00\n")
    r = run("data", "import", text, "--out", tmp_path / "d")
    assert_user_error(r, "--time-format")
    r = run("data", "import", text, "--time-format", "%Y-%m-%d %H:%M:%S", "--out", tmp_path / "e")
    assert r.exit_code == 0, r.output
    log = load_dataset(str(tmp_path / "e"))
    assert log.timestamp is not None and sorted(log.timestamp.tolist()) == [
        1704153600.0,
        1704240000.0,
    ]


def test_a_missing_behavior_after_a_million_rows_is_found():
    n = 1_000_005
    frame = pl.DataFrame({
        "user": np.arange(n) % 1000, "item": np.arange(n) % 777,
        "behavior": pl.Series(["buy"] * n).scatter(1_000_002, None),
    })  # fmt: skip
    with pytest.raises(DataError, match=r"1 missing value\(s\) \(first at row 1,000,002\)"):
        InteractionLog.from_frame(frame, name="big")


def test_millisecond_timestamps_are_converted_and_mixed_units_refused(tmp_path):
    p = tmp_path / "ms.csv"
    p.write_text("user,item,behavior,ts\n1,a,buy,1433221969000\n2,b,buy,1433222104000\n"
                 "1,b,view,1433222000000\n")  # fmt: skip
    r = run("data", "import", p, "--out", tmp_path / "ms")
    assert r.exit_code == 0 and "milliseconds" in r.output, r.output
    info = run("data", "info", tmp_path / "ms")
    assert info.exit_code == 0 and "2015-06-02" in info.output, info.output
    assert load_dataset(str(tmp_path / "ms")).timestamp.max() == 1433222104.0
    mixed = tmp_path / "mixed.csv"
    mixed.write_text("user,item,ts\n1,a,1433221969\n2,b,1433222104000\n")
    assert_user_error(run("data", "import", mixed, "--out", tmp_path / "x"),
                      "mixes seconds (1 rows) and milliseconds (1 rows, first at row 1)")  # fmt: skip
