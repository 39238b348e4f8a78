"""Importers of foreign formats, the restricted unpickler and the real folders in shared/data."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import polars as pl
import pytest
import scipy.sparse as sp

from polyrec.data.importers import (
    FORMATS,
    detect_format,
    import_path,
    load_pickle,
    read_csv,
    read_frame,
    read_hkuds,
    read_lightgcn_txt,
    read_mba,
    read_parquet,
    read_sasrec_txt,
    read_simrec,
    read_tsv,
)
from polyrec.data.importers.hkuds import HkudsTestMismatchWarning
from polyrec.data.log import FOLD_TEST, FOLD_TRAIN, FOLD_VALID, DuplicateRowsWarning
from polyrec.errors import DataError

SHARED = Path(
    os.environ.get("POLYREC_SHARED_DATA")
    or (Path(__file__).resolve().parents[1] / ".." / "shared" / "data")
)
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent")


def dump(obj: object, path: Path, protocol: int = 4) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


def external_rows(log) -> set[tuple]:
    cols = [
        log.user_map.to_external(log.user).tolist(),
        log.item_map.to_external(log.item).tolist(),
        [log.behaviors[b] for b in log.behavior],
    ]
    if log.timestamp is not None:
        cols.append(log.timestamp.tolist())
    if log.fold is not None:
        cols.append(log.fold.tolist())
    return set(zip(*cols, strict=True))


# --------------------------------------------------------------------------- restricted unpickler
class Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvalEvil:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


class Plain:
    def __init__(self) -> None:
        self.x = 1


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_safe_pickle_loads_matrices_and_arrays(tmp_path: Path, protocol: int) -> None:
    base = sp.random(6, 5, density=0.4, format="csr", random_state=0)
    objs: list[Any] = [
        base,
        base.tocsc(),
        base.tocoo(),
        base.todok(),
        base.tolil(),
        sp.csr_array(base),
        sp.coo_array(base),
        sp.dok_array(base),
        np.arange(5),
        np.array(["a", "b"]),
        np.float32(2.5),
        np.int64(7),
        np.dtype("f4"),
        [3, None, 4],
        {"a": np.arange(2)},
        slice(1, 3),
    ]
    for k, obj in enumerate(objs):
        back: Any = load_pickle(dump(obj, tmp_path / f"o{k}.pkl", protocol))
        if sp.issparse(obj):
            assert type(back) is type(obj)
            assert (abs(back - obj)).sum() == 0
        elif isinstance(obj, np.ndarray):
            np.testing.assert_array_equal(back, obj)
        elif isinstance(obj, dict):
            np.testing.assert_array_equal(back["a"], obj["a"])
        else:
            assert back == obj


def test_safe_pickle_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    f = dump(Evil(marker), tmp_path / "evil.pkl")
    with pytest.raises(DataError) as e:
        load_pickle(f)
    msg = str(e.value)
    assert str(f) in msg and "system" in msg and "refusing to load it" in msg
    assert "not a numpy/scipy matrix" in msg
    assert not marker.exists()


def test_safe_pickle_refuses_eval_and_arbitrary_objects(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"builtins\.eval, which is not a numpy/scipy matrix"):
        load_pickle(dump(EvalEvil(), tmp_path / "eval.pkl"))
    with pytest.raises(DataError, match=r"Plain, which is not a numpy/scipy matrix"):
        load_pickle(dump(Plain(), tmp_path / "plain.pkl"))
    # a matrix hidden inside a list next to a forbidden object is refused too
    with pytest.raises(DataError, match="refusing"):
        load_pickle(dump([sp.eye(2, format="csr"), Plain()], tmp_path / "mixed.pkl"))


@pytest.mark.parametrize(
    "module_name",
    [
        "numpy load",
        "numpy.core.multiarray fromstring",
        "numpy._core.multiarray set_typeDict",
        "scipy.sparse load_npz",
        "scipy.sparse._csr np",
        "builtins getattr",
        "builtins __import__",
        "subprocess Popen",
        "copyreg add_extension",
        "torch load",
    ],
)
def test_safe_pickle_refuses_raw_globals(tmp_path: Path, module_name: str) -> None:
    module, name = module_name.split()
    f = tmp_path / "raw.pkl"
    f.write_bytes(f"c{module}\n{name}\n(S'x'\ntR.".encode())
    with pytest.raises(DataError, match=rf"raw\.pkl: the pickle holds {module}\.{name}, which"):
        load_pickle(f)


def test_safe_pickle_bad_files(tmp_path: Path) -> None:
    good = pickle.dumps(sp.random(30, 30, density=0.3, format="csr", random_state=1))
    (tmp_path / "trunc.pkl").write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"trunc\.pkl: the pickle is truncated or corrupt"):
        load_pickle(tmp_path / "trunc.pkl")
    (tmp_path / "junk.pkl").write_bytes(b"this is not a pickle at all")
    with pytest.raises(DataError, match=r"junk\.pkl"):
        load_pickle(tmp_path / "junk.pkl")
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.pkl: file is empty"):
        load_pickle(tmp_path / "empty.pkl")
    with pytest.raises(DataError, match=r"missing\.pkl: file does not exist"):
        load_pickle(tmp_path / "missing.pkl")


# --------------------------------------------------------------------------- HKUDS
N_USERS, N_ITEMS = 5, 9


def make_hkuds(d: Path, *, style: str = "sslrec", test: str = "both") -> Path:
    """view/cart/buy matrices with timestamps; user 4 and item 8 have no train rows."""
    d.mkdir(parents=True, exist_ok=True)
    trips = {
        "view": [(0, 0, 100), (0, 1, 110), (1, 2, 120), (2, 3, 130), (3, 4, 140)],
        "cart": [(0, 1, 115), (1, 2, 125)],
        "buy": [(0, 1, 150), (1, 2, 160), (2, 3, 135), (3, 5, 170)],
    }
    for beh, rows in trips.items():
        r, c, v = zip(*rows, strict=True)
        m = sp.csr_matrix((np.array(v, dtype=np.int64), (r, c)), shape=(N_USERS, N_ITEMS))
        name = f"train_mat_{beh}.pkl" if style == "sslrec" else f"trn_{beh}"
        dump(m, d / name)
    tst = [6, 7, None, 0, 2]  # user 4 has no train rows
    if test in ("both", "list"):
        dump(tst, d / "tst_int")
    if test in ("both", "mat"):
        pairs = [(u, i) for u, i in enumerate(tst) if i is not None]
        r, c = zip(*pairs, strict=True)
        m = sp.coo_matrix((np.ones(len(pairs)), (r, c)), shape=(N_USERS, N_ITEMS))
        dump(m, d / "test_mat.pkl")
    dump(np.array([1, 0, 3]), d / "meta_multi_single_beh_user_index_shuffle")
    return d


@pytest.mark.parametrize("style", ["sslrec", "cml"])
@pytest.mark.parametrize("test", ["both", "list", "mat"])
def test_hkuds_reads_folder(tmp_path: Path, style: str, test: str) -> None:
    log = read_hkuds(make_hkuds(tmp_path / "rr", style=style, test=test))
    assert log.behaviors == ("view", "cart", "buy")
    assert log.target == "buy"
    assert log.n_users == N_USERS and log.n_items == N_ITEMS  # all rows/columns kept
    assert log.user_map.ids.tolist() == list(range(N_USERS))
    assert log.fold is not None and log.timestamp is not None
    assert int((log.fold == FOLD_TRAIN).sum()) == 11
    test_rows = log.fold == FOLD_TEST
    assert int(test_rows.sum()) == 4
    assert set(log.behavior[test_rows].tolist()) == {log.target_code}
    got = {
        (int(u), int(i)): t
        for u, i, t in zip(
            log.user[test_rows], log.item[test_rows], log.timestamp[test_rows], strict=True
        )
    }
    # test time = the user's latest train time + 1; a user without train rows: global max + 1
    assert got == {(0, 6): 151.0, (1, 7): 161.0, (3, 0): 171.0, (4, 2): 171.0}
    assert "unix seconds" not in log.source and "timestamps" in log.source
    assert log.name == "rr"


def test_hkuds_day_indices_and_stored_test_times(tmp_path: Path) -> None:
    d = make_hkuds(tmp_path / "ij", style="cml", test="list")
    m = sp.coo_matrix((np.array([900.0, 901.0]), ([0, 1], [6, 7])), shape=(N_USERS, N_ITEMS))
    dump(m, d / "test_mat.pkl")
    dump([6, 7, None, None, None], d / "tst_int")
    log = read_hkuds(d)
    assert "day indices" in log.source
    assert log.timestamp is not None and log.fold is not None
    t = log.timestamp[log.fold == FOLD_TEST]
    assert sorted(t.tolist()) == [900.0, 901.0]  # a stored value that is a time is kept


def test_hkuds_test_mismatch_warns(tmp_path: Path) -> None:
    d = make_hkuds(tmp_path / "x")
    dump([6, 7, None, 0, 3], d / "tst_int")
    with pytest.warns(HkudsTestMismatchWarning, match="different test pairs"):
        log = read_hkuds(d)
    assert log.fold is not None and int((log.fold == FOLD_TEST).sum()) == 4


def test_hkuds_binary_matrices_have_no_timestamps(tmp_path: Path) -> None:
    d = tmp_path / "bin"
    d.mkdir()
    for beh in ("cart", "buy"):
        dump(sp.eye(3, 4, format="csr"), d / f"trn_{beh}")
    log = read_hkuds(d)
    assert log.timestamp is None and len(log) == 6 and log.behaviors == ("cart", "buy")


def test_hkuds_options(tmp_path: Path) -> None:
    d = make_hkuds(tmp_path / "o")
    log = read_hkuds(d, target="cart", include_test=False)
    assert log.behaviors == ("view", "buy", "cart") and log.target == "cart"
    assert log.fold is not None and (log.fold == FOLD_TRAIN).all()
    log = read_hkuds(d, behavior_order=["buy", "cart", "view"])
    assert log.behaviors == ("buy", "cart", "view") and log.target == "buy"


def test_hkuds_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope: HKUDS dataset folder does not exist"):
        read_hkuds(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no behavior matrices found"):
        read_hkuds(tmp_path / "empty")
    d = make_hkuds(tmp_path / "t")
    with pytest.raises(DataError, match=r"unknown target behavior 'click'.*view, cart, buy"):
        read_hkuds(d, target="click")

    bad = make_hkuds(tmp_path / "evil")
    dump(Evil(tmp_path / "marker"), bad / "train_mat_cart.pkl")
    with pytest.raises(DataError, match=r"train_mat_cart\.pkl: the pickle holds .*system"):
        read_hkuds(bad)
    assert not (tmp_path / "marker").exists()

    notmat = make_hkuds(tmp_path / "notmat")
    dump([1, 2, 3], notmat / "train_mat_view.pkl")
    with pytest.raises(DataError, match=r"train_mat_view\.pkl: expected a scipy sparse"):
        read_hkuds(notmat)

    shape = make_hkuds(tmp_path / "shape")
    dump(sp.eye(3, format="csr"), shape / "train_mat_view.pkl")
    with pytest.raises(DataError, match=r"train_mat_(view|cart|buy)\.pkl: matrix shape"):
        read_hkuds(shape)

    short = make_hkuds(tmp_path / "short")
    dump([1, 2], short / "tst_int")
    with pytest.raises(DataError, match=r"tst_int: the test list has 2 entries"):
        read_hkuds(short)

    badint = make_hkuds(tmp_path / "badint")
    dump([1, "x", None, None, None], badint / "tst_int")
    with pytest.raises(DataError, match=r"tst_int: entry 1 is 'x'"):
        read_hkuds(badint)

    outside = make_hkuds(tmp_path / "outside")
    dump([99, None, None, None, None], outside / "tst_int")
    with pytest.raises(DataError, match=r"tst_int: test item 99 is outside"):
        read_hkuds(outside)

    trunc = make_hkuds(tmp_path / "trunc")
    raw = (trunc / "train_mat_buy.pkl").read_bytes()
    (trunc / "train_mat_buy.pkl").write_bytes(raw[:40])
    with pytest.raises(DataError, match=r"train_mat_buy\.pkl: the pickle is truncated"):
        read_hkuds(trunc)


# --------------------------------------------------------------------------- CSV / TSV / Parquet
CSV = """user,item,behavior,ts,cat
u1,i1,view,10,c1
u1,i2,cart,11,c2
u1,i2,buy,12,c2
u2,i1,buy,13,c1
u2,i3,view,9,c3
"""


def test_csv_reads_columns_and_orders_behaviors(tmp_path: Path) -> None:
    f = tmp_path / "log.csv"
    f.write_text(CSV)
    log = read_csv(f, timestamp="ts", category="cat")
    assert log.behaviors == ("view", "cart", "buy") and log.target == "buy"
    assert log.n_users == 2 and log.n_items == 3 and len(log) == 5
    assert log.category_map is not None and len(log.category_map) == 3
    assert ("u1", "i2", "buy", 12.0) in external_rows(log)
    assert log.name == "log" and str(f) in log.source


def test_tsv_and_sniffed_delimiters(tmp_path: Path) -> None:
    t = tmp_path / "log.tsv"
    t.write_text(CSV.replace(",", "\t"))
    a = read_tsv(t, timestamp="ts")
    c = tmp_path / "tabbed.csv"
    c.write_text(CSV.replace(",", "\t"))
    b = read_csv(c, timestamp="ts")
    s = tmp_path / "semi.csv"
    s.write_text(CSV.replace(",", ";"))
    assert external_rows(a) == external_rows(b) == external_rows(read_csv(s, timestamp="ts"))
    assert import_path(t, timestamp="ts").fingerprint() == a.fingerprint()


def test_csv_column_options_and_single_behavior(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text(
        "uid,sid,when\n1,5,2020-01-01 00:00:00\n1,6,2020-01-02 00:00:00\n2,5,2020-01-03 00:00:00\n"
    )
    log = read_csv(
        f,
        user="uid",
        item="sid",
        timestamp="when",
        timestamp_format="%Y-%m-%d %H:%M:%S",
        target="click",
    )
    assert log.behaviors == ("click",) and log.timestamp is not None
    assert log.timestamp.min() == 1577836800.0
    assert log.user_map.ids.tolist() == [1, 2]
    g = tmp_path / "nohdr.csv"
    g.write_text("1,5\n2,6\n")
    log = read_csv(g, has_header=False, user="column_1", item="column_2")
    assert len(log) == 2


def test_csv_fold_column(tmp_path: Path) -> None:
    f = tmp_path / "f.csv"
    f.write_text("user,item,fold\n1,1,0\n1,2,2\n2,1,1\n")
    log = read_csv(f, fold="fold")
    assert log.fold is not None
    assert sorted(log.fold.tolist()) == [FOLD_TRAIN, FOLD_VALID, FOLD_TEST]
    f.write_text("user,item,fold\n1,1,0\n1,2,7\n")
    with pytest.raises(DataError, match=r"f\.csv: fold column 'fold' must hold 0"):
        read_csv(f, fold="fold")


def test_parquet_and_frames(tmp_path: Path) -> None:
    df = pd.read_csv(__import__("io").StringIO(CSV))
    p = tmp_path / "log.parquet"
    df.to_parquet(p)
    a = read_parquet(p, timestamp="ts")
    b = read_frame(df, timestamp="ts")
    c = read_frame(pl.from_pandas(df), timestamp="ts")
    assert external_rows(a) == external_rows(b) == external_rows(c)
    assert a.behaviors == b.behaviors == ("view", "cart", "buy")
    dt = df.assign(ts=pd.to_datetime(df["ts"], unit="D"))
    q = tmp_path / "dt.parquet"
    dt.to_parquet(q)
    log = read_parquet(q, timestamp="ts")
    assert log.timestamp is not None and log.timestamp.max() == 13 * 86400.0
    assert import_path(p, timestamp="ts").fingerprint() == a.fingerprint()


@pytest.mark.parametrize(
    ("content", "options", "pattern"),
    [
        ("user,item\n", {}, r"bad\.csv: the file has a header but no rows"),
        (
            "user,product\n1,2\n",
            {},
            r"bad\.csv: missing item column 'item'; columns are user, product",
        ),
        ("user,item\n1,2\n", {"timestamp": "ts"}, r"bad\.csv: missing timestamp column 'ts'"),
        ("user,item\n1,2\n", {"behavior": "action"}, r"bad\.csv: missing behavior column 'action'"),
        (
            "user,item,ts\n1,2,noon\n",
            {"timestamp": "ts"},
            r"bad\.csv: timestamp column 'ts' is not numeric \(found 'noon'\)",
        ),
        (
            "user,item,ts\n1,2,\n",
            {"timestamp": "ts"},
            r"bad\.csv: timestamp column 'ts' has 1 missing",
        ),
        ("user,item\n1,2\n,3\n", {}, r"bad\.csv: user column 'user'.* has 1 missing"),
        ("user,item\n1,2\n2,NaN\n", {}, r"bad\.csv: item column 'item'.* has 1 missing"),
        (
            "user,item,behavior\n1,2,view\n",
            {"target": "buy"},
            r"bad\.csv: unknown target behavior 'buy'; the data has view",
        ),
    ],
)
def test_csv_bad_inputs(tmp_path: Path, content: str, options: dict, pattern: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=pattern):
        read_csv(f, **options)


def test_csv_missing_empty_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"absent\.csv: file does not exist"):
        read_csv(tmp_path / "absent.csv")
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        read_csv(tmp_path / "empty.csv")
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        import_path(tmp_path / "empty.csv")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match=r"junk\.parquet: cannot read it as Parquet"):
        read_parquet(tmp_path / "junk.parquet")
    f = tmp_path / "dup.csv"
    f.write_text("user,item\n1,2\n1,2\n1,3\n1,2\n")
    with pytest.warns(DuplicateRowsWarning, match=r"dup\.csv: dropped 2 duplicate rows"):
        log = read_csv(f)
    assert len(log) == 2


# --------------------------------------------------------------------------- MBA
def make_mba(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "beibei_buy_train.csv").write_text("uid\tsid\n0\t0\n0\t1\n1\t2\n2\t0\n")
    (d / "beibei_buy_test.csv").write_text("uid\tsid\n0\t2\n1\t0\n")
    (d / "beibei_pv_train.csv").write_text("uid\tsid\n0\t3\n1\t1\n2\t2\n")
    (d / "beibei_pv_test.csv").write_text("uid\tsid\n3\t3\n")
    return d


def test_mba_reads_every_behavior(tmp_path: Path) -> None:
    d = make_mba(tmp_path / "beibei")
    log = read_mba(d)
    assert log.behaviors == ("pv", "buy") and log.target == "buy"
    assert log.n_users == 4 and log.n_items == 4 and len(log) == 10
    assert log.timestamp is None and log.fold is not None
    rows = external_rows(log)
    assert (0, 2, "buy", FOLD_TEST) in rows and (0, 0, "buy", FOLD_TRAIN) in rows
    assert (3, 3, "pv", FOLD_TEST) in rows
    assert log.name == "beibei"
    assert detect_format(d) == "mba"
    one = import_path(d / "beibei_buy_train.csv")
    assert len(one) == 4 and one.behaviors == ("buy",)


def test_mba_errors(tmp_path: Path) -> None:
    d = make_mba(tmp_path / "m")
    (d / "beibei_cart_train.csv").write_text("uid,sid\n0,1\n")
    with pytest.raises(DataError, match=r"beibei_cart_train\.csv: missing user column 'uid'"):
        read_mba(d)
    (d / "beibei_cart_train.csv").write_text("uid\tsid\n0\tx\n")
    with pytest.raises(DataError, match=r"beibei_cart_train\.csv: column 'sid' must hold integer"):
        read_mba(d)
    (d / "beibei_cart_train.csv").write_text("")
    with pytest.raises(DataError, match=r"beibei_cart_train\.csv: file is empty"):
        read_mba(d)
    (d / "beibei_cart_train.csv").unlink()
    make_mba(tmp_path / "m2")
    for f in (tmp_path / "m2").iterdir():
        f.rename(d / f.name.replace("beibei", "taobao"))
    with pytest.raises(DataError, match=r"several datasets \(beibei, taobao\)"):
        read_mba(d)
    assert read_mba(d, dataset="taobao").name == "taobao"
    with pytest.raises(DataError, match=r"unknown target behavior 'cart'"):
        read_mba(d, dataset="beibei", target="cart")
    (tmp_path / "none").mkdir()
    with pytest.raises(DataError, match=r"none: no MBA files found"):
        read_mba(tmp_path / "none")


# --------------------------------------------------------------------------- LightGCN text
def test_lightgcn_file(tmp_path: Path) -> None:
    f = tmp_path / "train.txt"
    f.write_text("0 5 3 9\n1 3\n\n2\n3 9 5\n")
    log = read_lightgcn_txt(f, behavior="buy")
    assert log.behaviors == ("buy",) and len(log) == 6
    assert log.n_users == 4  # user 2 has no items but is kept
    assert (0, 9, "buy", 2.0) in external_rows(log)  # position on the line is the timestamp
    assert log.fold is None
    log = read_lightgcn_txt(f, fold="test")
    assert log.fold is not None and (log.fold == FOLD_TEST).all()


def test_lightgcn_folder(tmp_path: Path) -> None:
    d = tmp_path / "tmall"
    d.mkdir()
    (d / "train.txt").write_text("0 1 2\n1 2\n")
    (d / "test.txt").write_text("0 3\n1 4\n")
    (d / "cart.txt").write_text("0 1 4\n")
    (d / "click.txt").write_text("1 0 1 2\n")
    log = read_lightgcn_txt(d)
    assert log.behaviors == ("click", "cart", "buy") and log.target == "buy"
    rows = external_rows(log)
    assert (0, 3, "buy", 2.0, FOLD_TEST) in rows  # test position continues after train
    assert (1, 4, "buy", 1.0, FOLD_TEST) in rows
    assert (0, 4, "cart", 1.0, FOLD_TRAIN) in rows
    assert detect_format(d) == "lightgcn-txt"
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "train.txt").write_text("0 1 2\n")
    (plain / "test.txt").write_text("0 3\n")
    assert read_lightgcn_txt(plain).behaviors == ("interaction",)


def test_crgcn_mule_folder(tmp_path: Path) -> None:
    # CRGCN / MuLe layout: buy.txt trains, valid.txt lists training pairs, one pair per line
    d = tmp_path / "jdata"
    d.mkdir()
    (d / "buy.txt").write_text("0 1\n1 2\n0 2\n")
    (d / "cart.txt").write_text("0 3\n1 2\n")
    (d / "collect.txt").write_text("1 3\n")
    (d / "valid.txt").write_text("0 2\n")  # inside buy.txt: not a held-out fold
    (d / "test.txt").write_text("0 3\n")
    (d / "SOURCE.txt").write_text("JData as MuLe publishes it\n")  # notes, not a behavior
    assert detect_format(d) == "lightgcn-txt"
    log = read_lightgcn_txt(d)
    assert log.behaviors == ("collect", "cart", "buy") and log.target == "buy"
    rows = external_rows(log)
    # a user's pairs are numbered in file order; the test pair continues after them
    assert (0, 1, "buy", 0.0, FOLD_TRAIN) in rows
    assert (0, 2, "buy", 1.0, FOLD_TRAIN) in rows
    assert (0, 3, "buy", 2.0, FOLD_TEST) in rows
    assert (0, 3, "cart", 0.0, FOLD_TRAIN) in rows  # the test pair's cart row stays (hide=target)
    assert log.fold is not None and not (log.fold == FOLD_VALID).any()
    assert "valid.txt skipped" in log.source
    # a validation file with pairs outside training is a real fold
    (d / "valid.txt").write_text("1 3\n")
    log = read_lightgcn_txt(d)
    assert (1, 3, "buy", 1.0, FOLD_VALID) in external_rows(log)
    (d / "buy.txt").unlink()
    with pytest.raises(DataError, match=r"no train\.txt and no buy\.txt"):
        read_lightgcn_txt(d)


def test_mbcgcn_behavior_folders(tmp_path: Path) -> None:
    # MB-CGCN: <behavior>/train.txt in LightGCN lines; buy/test.txt is the test fold
    d = tmp_path / "Tmall"
    for beh, train, test in (("buy", "0 1 2\n1 2\n", "0 3\n"), ("cart", "0 3 4\n", "0 3\n"),
                             ("view", "1 0 1 2\n", None)):  # fmt: skip
        (d / beh).mkdir(parents=True)
        (d / beh / "train.txt").write_text(train)
        if test:
            (d / beh / "test.txt").write_text(test)
    assert detect_format(d) == "lightgcn-txt"
    log = read_lightgcn_txt(d)
    assert log.behaviors == ("view", "cart", "buy") and log.target == "buy"
    rows = external_rows(log)
    assert (0, 3, "buy", 2.0, FOLD_TEST) in rows
    assert (0, 3, "cart", 0.0, FOLD_TRAIN) in rows
    assert (1, 2, "view", 2.0, FOLD_TRAIN) in rows
    assert len([r for r in rows if r[4] == FOLD_TEST]) == 1  # cart/test.txt is not a fold
    assert "test.txt of cart ignored" in log.source


def test_lightgcn_errors(tmp_path: Path) -> None:
    f = tmp_path / "bad.txt"
    f.write_text("0 1 2\n\n1 2 x\n")
    with pytest.raises(DataError, match=r"bad\.txt: line 3: 'x' is not an integer id"):
        read_lightgcn_txt(f)
    f.write_text("\n\n")
    with pytest.raises(DataError, match=r"bad\.txt: file is empty"):
        read_lightgcn_txt(f)
    f.write_text("1\n2\n")
    with pytest.raises(DataError, match=r"bad\.txt: no interactions"):
        read_lightgcn_txt(f)
    with pytest.raises(DataError, match=r"bad\.txt: fold must be"):
        read_lightgcn_txt(f, fold="later")
    (tmp_path / "d").mkdir()
    with pytest.raises(DataError, match=r"d: no train\.txt"):
        read_lightgcn_txt(tmp_path / "d")


# --------------------------------------------------------------------------- SASRec text
def test_sasrec_positions(tmp_path: Path) -> None:
    f = tmp_path / "Video.txt"
    f.write_text("1 10\n1 11\n2 10\n1 12\n2 13\n")
    log = read_sasrec_txt(f)
    rows = external_rows(log)
    assert rows == {
        (1, 10, "interaction", 0.0),
        (1, 11, "interaction", 1.0),
        (1, 12, "interaction", 2.0),
        (2, 10, "interaction", 0.0),
        (2, 13, "interaction", 1.0),
    }
    assert log.name == "Video" and detect_format(f) == "sasrec-txt"
    assert import_path(f, target="click").behaviors == ("click",)  # target names the behavior
    with pytest.raises(DataError, match=r"Video\.txt: behavior='a' and target='b' disagree"):
        read_sasrec_txt(f, behavior="a", target="b")


def test_sasrec_errors(tmp_path: Path) -> None:
    f = tmp_path / "s.txt"
    f.write_text("1 10\n1 11 12\n")
    with pytest.raises(DataError, match=r"s\.txt: line 2 has 3 fields, expected exactly 2"):
        read_sasrec_txt(f)
    f.write_text("1 10\n1 1.5\n")
    with pytest.raises(DataError, match=r"s\.txt: line 2: '1\.5' is not an integer id"):
        read_sasrec_txt(f)
    with pytest.raises(DataError, match=r"gone\.txt: file does not exist"):
        read_sasrec_txt(tmp_path / "gone.txt")


def test_sasrec_folder(tmp_path: Path) -> None:
    d = tmp_path / "videogames"
    d.mkdir()
    (d / "SOURCE.txt").write_text("Data from kang205/SASRec, see LICENSE.\n")
    (d / "empty.txt").write_text("")
    (d / "Video.txt").write_text("1 10\n1 11\n2 10\n")
    assert detect_format(d) == "sasrec-txt"
    log = import_path(d)
    assert (log.n_users, log.n_items, log.name) == (2, 2, "Video")
    (d / "Other.txt").write_text("3 4\n")
    with pytest.raises(
        DataError, match=r"several SASRec files in this folder \(Other\.txt, Video\.txt\)"
    ):
        read_sasrec_txt(d)
    e = tmp_path / "none"
    e.mkdir()
    (e / "notes.txt").write_text("nothing here\n")
    with pytest.raises(DataError, match=r"none: no \.txt file of 'user item' integer pairs"):
        read_sasrec_txt(e)


# --------------------------------------------------------------------------- SimRec
def make_simrec(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "Beauty_train.txt").write_text("1 5 6 7\n2 6 8\n")
    (d / "Beauty_valid.txt").write_text("3 5 9\n")
    (d / "Beauty_test.txt").write_text("4 7 6 5\n")
    (d / "Beauty_item_map.txt").write_text("B0,5\n")
    return d


def test_simrec_user_split(tmp_path: Path) -> None:
    d = make_simrec(tmp_path / "beauty")
    log = read_simrec(d)
    assert log.n_users == 4 and log.n_items == 5 and len(log) == 10
    rows = external_rows(log)
    assert (1, 7, "interaction", 2.0, FOLD_TRAIN) in rows
    assert (3, 9, "interaction", 1.0, FOLD_VALID) in rows
    assert (4, 5, "interaction", 2.0, FOLD_TEST) in rows
    assert log.name == "Beauty" and detect_format(d) == "simrec"
    alld = tmp_path / "all"
    alld.mkdir()
    (alld / "Beauty_all.txt").write_text("1 5 6 7\n2 6 8\n3 5 9\n4 7 6 5\n")
    only_all = read_simrec(alld)
    assert only_all.fold is None
    assert {r[:4] for r in rows} == external_rows(only_all)


def test_simrec_errors(tmp_path: Path) -> None:
    d = make_simrec(tmp_path / "x")
    (d / "Beauty_test.txt").write_text("2 7 6\n")
    with pytest.raises(DataError, match=r"Beauty_test\.txt: user 2 also appears in Beauty_train"):
        read_simrec(d)
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match=r"e: no SimRec files found"):
        read_simrec(tmp_path / "e")
    v = make_simrec(tmp_path / "v")
    (v / "Beauty_train.txt").unlink()
    with pytest.raises(DataError, match=r"Beauty_train\.txt is missing"):
        read_simrec(v)


# --------------------------------------------------------------------------- import_path
def test_import_path_dispatch_and_errors(tmp_path: Path) -> None:
    assert set(FORMATS) == {
        "csv",
        "tsv",
        "parquet",
        "hkuds",
        "mba",
        "lightgcn-txt",
        "sasrec-txt",
        "simrec",
        "recbole",
        "session-tsv",
    }
    d = make_hkuds(tmp_path / "h")
    assert detect_format(d) == "hkuds"
    assert import_path(d).fingerprint() == read_hkuds(d).fingerprint()
    assert import_path(d, "hkuds", target="cart").target == "cart"
    with pytest.raises(DataError, match=r"unknown format 'xml'; known formats: csv, tsv, parquet"):
        import_path(d, "xml")
    with pytest.raises(DataError, match=r"format 'hkuds' has no option 'delimiter'"):
        import_path(d, "hkuds", delimiter=",")
    with pytest.raises(DataError, match=r"ghost: does not exist"):
        import_path(tmp_path / "ghost")
    (tmp_path / "e.txt").write_text("")
    with pytest.raises(DataError, match=r"e\.txt: file is empty"):
        import_path(tmp_path / "e.txt")
    (tmp_path / "odd.json").write_text("{}")
    with pytest.raises(DataError, match=r"odd\.json: cannot tell the format"):
        import_path(tmp_path / "odd.json")
    with pytest.raises(DataError, match=r"a single pickle is not a dataset"):
        import_path(d / "test_mat.pkl")
    lines = tmp_path / "adj.txt"
    lines.write_text("0 1 2\n1 2\n")
    assert detect_format(lines) == "lightgcn-txt"
    c = tmp_path / "c.txt"
    c.write_text("user,item\n1,2\n")
    assert detect_format(c) == "csv"


# --------------------------------------------------------------------------- real folders
def _check_counts(
    log, users: int, items: int, per_behavior: dict[str, int], train: int, test: int, valid: int = 0
) -> None:
    st = log.stats()
    assert (log.n_users, log.n_items) == (users, items)
    for beh, n in per_behavior.items():
        assert st["behaviors"][beh]["interactions"] == n, beh
    assert st["published_split"] == {"train": train, "valid": valid, "test": test}


@pytest.mark.shared
@needs_shared
def test_shared_retailrocket() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        log = import_path(SHARED / "retailrocket-hkuds")
    assert log.behaviors == ("view", "cart", "buy")
    _check_counts(
        log, 2174, 30113, {"view": 75374, "cart": 12456, "buy": 9551 + 2174}, train=97381, test=2174
    )
    test = log.fold == FOLD_TEST
    assert np.unique(log.user[test]).size == 2174
    assert "unix seconds" in log.source


@pytest.mark.shared
@needs_shared
def test_shared_tmall_and_ijcai() -> None:
    tm = import_path(SHARED / "tmall-cml-partial")
    assert tm.behaviors == ("fav", "cart", "buy")
    _check_counts(
        tm,
        31882,
        31232,
        {"fav": 49482, "cart": 140068, "buy": 167862 + 10000},
        train=357412,
        test=10000,
    )
    ij = import_path(SHARED / "ijcai15-cml-partial")
    _check_counts(
        ij, 17435, 35920, {"fav": 60204, "cart": 751, "buy": 131685 + 6102}, train=192640, test=6102
    )
    assert "day indices" in ij.source
    assert ij.timestamp is not None and ij.timestamp.min() == 511


@pytest.mark.shared
@needs_shared
def test_shared_beibei_mba() -> None:
    log = import_path(SHARED / "beibei-mba-partial")
    assert log.behaviors == ("buy",)
    _check_counts(log, 21716, 7977, {"buy": 304576}, train=243661, test=60915)


@pytest.mark.shared
@needs_shared
def test_shared_sasrec_video() -> None:
    log = import_path(SHARED / "seq-amazon-videogames-sasrec" / "Video.txt")
    assert (log.n_users, log.n_items, len(log)) == (31013, 23715, 287107)
    assert log.timestamp is not None and log.timestamp.max() == 859  # longest sequence: 860


@pytest.mark.shared
@needs_shared
@pytest.mark.parametrize(
    ("folder", "users", "items", "parts", "fold_users"),
    [
        ("seq-simrec-beauty", 22363, 12101, (158287, 20262, 19953), (17890, 2236, 2237)),
        ("seq-simrec-yelp", 19242, 14142, (161479, 19808, 19950), (15393, 1924, 1925)),
    ],
)
def test_shared_simrec(
    folder: str,
    users: int,
    items: int,
    parts: tuple[int, int, int],
    fold_users: tuple[int, int, int],
) -> None:
    log = import_path(SHARED / folder)
    train, valid, test = parts
    _check_counts(log, users, items, {}, train=train, valid=valid, test=test)
    assert log.fold is not None
    for code, n in zip((FOLD_TRAIN, FOLD_VALID, FOLD_TEST), fold_users, strict=True):
        assert np.unique(log.user[log.fold == code]).size == n


# --------------------------------------------------------------------------- session TSV
def test_session_tsv_rows_become_sequences(tmp_path: Path) -> None:
    """Issue 24, item 18: RecBole/SSLRec session files (history + next item per row)."""
    from polyrec.data.importers import detect_format, read_session_tsv

    d = tmp_path / "sess"
    d.mkdir()
    head = "session_id:token\titem_id_list:token_seq\titem_id:token\n"
    # session 1 twice (a prefix row and the full one): the longest row is kept
    (d / "train.tsv").write_text(head + "1\t5 6\t7\n1\t5\t6\n2\t6 8\t9\n")
    (d / "test.tsv").write_text(head + "3\t5 9 7\t6\n")
    assert detect_format(d) == "session-tsv" and detect_format(d / "train.tsv") == "session-tsv"
    log = read_session_tsv(d)
    seqs = {int(log.user_map.ids[u]): [] for u in np.unique(log.user)}
    for u, i, _t in sorted(zip(log.user, log.item, log.timestamp, strict=True),
                          key=lambda r: (r[0], r[2])):  # fmt: skip
        seqs[int(log.user_map.ids[u])].append(int(log.item_map.ids[i]))
    assert seqs == {1: [5, 6, 7], 2: [6, 8, 9], 3: [5, 9, 7, 6]}
    assert log.fold is not None
    test_users = {int(log.user_map.ids[u]) for u in log.user[log.fold == FOLD_TEST]}
    assert test_users == {3}
    # one file without a session column: each row its own session, no fold
    (tmp_path / "one.tsv").write_text("item_id_list\titem_id\n1,2\t3\n2\t4\n")
    one = read_session_tsv(tmp_path / "one.tsv")
    assert len(one) == 5 and one.fold is None and one.n_users == 2
    (tmp_path / "bad.tsv").write_text("user\titem\n1\t2\n")
    with pytest.raises(DataError, match="no item-list column"):
        read_session_tsv(tmp_path / "bad.tsv")
    (d / "valid.tsv").write_text(head + "2\t1\t2\n")
    with pytest.raises(DataError, match="session 2 also appears in"):
        read_session_tsv(d)
