"""InteractionLog / IdMap: construction, validation, persistence, and the embedded dataset."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from polyrec.data.datasets import EMBEDDED, embedded_path, load_dataset
from polyrec.data.log import (
    FOLD_TEST,
    FOLD_TRAIN,
    DuplicateRowsWarning,
    IdMap,
    InteractionLog,
)
from polyrec.errors import DataError

ROWS: dict[str, list] = {
    "user": ["a", "a", "b", "b", "c"],
    "item": [10, 11, 10, 12, 11],
    "behavior": ["view", "buy", "view", "buy", "cart"],
    "ts": [1.0, 2.0, 3.0, 4.0, 5.0],
}
ORDER = ("view", "cart", "buy")


def make_log(**kw) -> InteractionLog:
    return InteractionLog.from_frame(ROWS, timestamp="ts", behavior_order=ORDER, target="buy", **kw)


# --------------------------------------------------------------------------- construction
@pytest.mark.parametrize("kind", ["dict", "pandas", "polars", "arrow"])
def test_from_frame_kinds(kind: str) -> None:
    frame = {
        "dict": ROWS,
        "pandas": pd.DataFrame(ROWS),
        "polars": pl.DataFrame(ROWS),
        "arrow": pa.table(ROWS),
    }[kind]
    log = InteractionLog.from_frame(frame, timestamp="ts", behavior_order=ORDER, target="buy")
    assert log.behaviors == ORDER and log.target == "buy" and log.target_code == 2
    assert (log.n_users, log.n_items, len(log)) == (3, 3, 5)
    assert log.user_map.ids.tolist() == ["a", "b", "c"]
    assert log.item_map.ids.tolist() == [10, 11, 12]
    assert log.fingerprint() == make_log().fingerprint()
    st = log.stats()
    assert st["behaviors"]["buy"]["interactions"] == 2
    assert st["time_span"] == [1.0, 5.0]


def test_single_behavior_and_csr() -> None:
    log = InteractionLog.from_frame({"user": [1, 1, 2], "item": [5, 6, 5]})
    assert log.behaviors == ("interaction",) and log.target == "interaction"
    m = log.csr()
    assert m.shape == (2, 2) and m.nnz == 3
    assert make_log().csr("buy").nnz == 2


def test_categories_and_folds() -> None:
    rows = dict(ROWS, cat=["x", "y", "x", "z", "y"], fold=[0, 0, 0, 2, 2])
    log = InteractionLog.from_frame(rows, category="cat", fold="fold", behavior_order=ORDER)
    assert log.category_map is not None and len(log.category_map) == 3
    assert log.stats()["published_split"] == {"train": 3, "valid": 0, "test": 2}


# --------------------------------------------------------------------------- IdMap
def test_idmap_round_trip() -> None:
    ids = np.array(["u3", "u1", "u2", "u1"], dtype=object)
    m, codes = IdMap.factorize(ids)
    assert m.ids.tolist() == ["u1", "u2", "u3"]
    assert codes.tolist() == [2, 0, 1, 0]
    assert m.to_external(codes).tolist() == ids.tolist()
    assert m.to_dense(["u2", "u3"]).tolist() == [1, 2]
    with pytest.raises(DataError, match="unknown id 'zz'"):
        m.to_dense(["zz"])
    assert m.to_dense(["zz"], strict=False).tolist() == [-1]
    back = IdMap.from_arrow(m.to_arrow())
    assert back.ids.tolist() == m.ids.tolist()

    n, c2 = IdMap.factorize(np.array([30.0, 10.0, 20.0]))  # integral floats become ints
    assert n.ids.dtype == np.int64 and c2.tolist() == [2, 0, 1]
    assert n.to_dense(["20", 30]).tolist() == [1, 2]
    r = IdMap.range(4)
    assert len(r) == 4 and IdMap.from_arrow(r.to_arrow()).ids.tolist() == [0, 1, 2, 3]


# --------------------------------------------------------------------------- persistence
def test_save_load_round_trip(tmp_path: Path) -> None:
    rows = dict(ROWS, cat=["x", "y", "x", "z", "y"], fold=[0, 0, 0, 2, 2])
    log = InteractionLog.from_frame(
        rows,
        timestamp="ts",
        category="cat",
        fold="fold",
        behavior_order=ORDER,
        name="toy",
        source="unit test",
    )
    out = log.save(tmp_path / "ds")
    assert (out / "dataset.json").is_file()
    back = InteractionLog.load(out)
    assert back.fingerprint() == log.fingerprint()
    assert back.behaviors == log.behaviors and back.target == log.target
    assert back.name == "toy" and back.source == "unit test"
    assert back.user_map.ids.tolist() == ["a", "b", "c"]
    assert back.item_map.ids.tolist() == [10, 11, 12]
    assert back.category_map is not None and back.category_map.ids.tolist() == ["x", "y", "z"]
    for col in ("user", "item", "behavior", "timestamp", "category", "fold"):
        np.testing.assert_array_equal(getattr(back, col), getattr(log, col))
    # overwriting an existing dataset folder works; load_dataset accepts the folder
    log.save(out)
    assert load_dataset(str(out)).fingerprint() == log.fingerprint()


def test_load_detects_tampering_and_missing(tmp_path: Path) -> None:
    out = make_log().save(tmp_path / "ds")
    meta = json.loads((out / "dataset.json").read_text())
    meta["fingerprint"] = "0" * 16
    (out / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="does not match its recorded fingerprint"):
        InteractionLog.load(out)
    with pytest.raises(DataError, match="does not exist"):
        InteractionLog.load(tmp_path / "nothing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="is not a polyrec dataset"):
        InteractionLog.load(tmp_path / "plain")


def test_fingerprint_stable() -> None:
    a = make_log()
    perm = np.array([4, 2, 0, 3, 1])
    shuffled = {k: [v[j] for j in perm] for k, v in ROWS.items()}
    b = InteractionLog.from_frame(shuffled, timestamp="ts", behavior_order=ORDER, target="buy")
    assert a.fingerprint() == b.fingerprint() == make_log().fingerprint()
    assert len(a.fingerprint()) == 16
    changed = dict(ROWS, ts=[1.0, 2.0, 3.0, 4.0, 6.0])
    c = InteractionLog.from_frame(changed, timestamp="ts", behavior_order=ORDER, target="buy")
    assert c.fingerprint() != a.fingerprint()


# --------------------------------------------------------------------------- bad inputs
def test_bad_inputs() -> None:
    with pytest.raises(DataError, match=r"missing item column 'item'; columns are user, product"):
        InteractionLog.from_frame({"user": [1], "product": [2]})
    with pytest.raises(DataError, match="the table is empty"):
        InteractionLog.from_frame(pd.DataFrame({"user": [], "item": []}))
    with pytest.raises(DataError, match=r"user column 'user'.* has 1 missing \(NaN\) ids"):
        InteractionLog.from_frame(pd.DataFrame({"user": [1.0, np.nan], "item": [1, 2]}))
    with pytest.raises(DataError, match=r"item column 'item'.* has 1 missing"):
        InteractionLog.from_frame({"user": ["a", "b"], "item": ["x", None]})
    with pytest.raises(DataError, match=r"unknown target behavior 'fav'; the behavior column has"):
        InteractionLog.from_frame(ROWS, target="fav")
    with pytest.raises(DataError, match=r"timestamp column 'ts' is not numeric \(found 'noon'\)"):
        InteractionLog.from_frame(
            {"user": [1, 2], "item": [1, 2], "ts": ["1", "noon"]}, timestamp="ts"
        )
    with pytest.raises(DataError, match="cannot read an interaction table from list"):
        InteractionLog.from_frame([1, 2, 3])
    with pytest.raises(DataError, match="unknown behavior 'fav'"):
        make_log().behavior_code("fav")
    with pytest.raises(DataError, match="unknown target behavior 'fav'"):
        make_log().with_target("fav")


def test_duplicates_warn_with_count() -> None:
    rows = {"user": [1, 1, 1, 2, 1], "item": [5, 5, 6, 5, 5], "behavior": ["buy"] * 5}
    with pytest.warns(DuplicateRowsWarning, match="dropped 2 duplicate rows"):
        log = InteractionLog.from_frame(rows)
    assert len(log) == 3
    # same pair at different times is not a duplicate
    rows_t = dict(rows, ts=[1, 2, 3, 4, 5])
    assert len(InteractionLog.from_frame(rows_t, timestamp="ts")) == 5


# --------------------------------------------------------------------------- embedded dataset
@pytest.mark.parametrize("spec", ["embedded:retailrocket", "retailrocket", "default"])
def test_embedded_dataset(spec: str) -> None:
    log = load_dataset(spec)
    assert log.name == "retailrocket"
    assert (log.n_users, log.n_items) == (2174, 30113)
    assert log.behaviors == ("view", "cart", "buy") and log.target == "buy"
    assert log.fold is not None and log.timestamp is not None
    assert int((log.fold == FOLD_TRAIN).sum()) == 97381
    test = log.fold == FOLD_TEST
    assert int(test.sum()) == 2174
    assert np.unique(log.user[test]).size == 2174
    assert (log.behavior[test] == log.target_code).all()
    per = log.stats()["behaviors"]
    assert (per["view"]["interactions"], per["cart"]["interactions"]) == (75374, 12456)
    assert per["buy"]["interactions"] == 9551 + 2174


def test_embedded_files_and_registry() -> None:
    d = embedded_path("retailrocket")
    assert embedded_path("default") == d
    notice = (d / "NOTICE").read_text()
    assert "CC BY-NC-SA 4.0" in notice and "Retailrocket" in notice and "Kaggle" in notice
    size = sum(f.stat().st_size for f in d.iterdir())
    assert size < 4 * 1024 * 1024
    assert "CC BY-NC-SA" in EMBEDDED["retailrocket"].licence
    assert EMBEDDED["retailrocket"].description


def test_load_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"unknown embedded dataset 'movielens'; embedded datasets"):
        load_dataset("embedded:movielens")
    with pytest.raises(DataError, match=r"dataset 'no/such/place' not found"):
        load_dataset("no/such/place")
    f = tmp_path / "x.csv"
    f.write_text("user,item\n1,2\n")
    with pytest.raises(DataError, match="is a file, not a polyrec dataset folder"):
        load_dataset(str(f))
    with pytest.raises(DataError, match="is not a polyrec dataset"):
        load_dataset(str(tmp_path))
