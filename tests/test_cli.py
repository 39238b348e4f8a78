"""CLI: every user mistake prints one line naming the problem, exits 2, writes nothing half-done."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import scipy.sparse as sp

from cli_helpers import assert_user_error, run

FAST = ["train.batch_size=256", "eval.ks=[10]", "data.n_negatives=20", "params.dim=16"]


@pytest.fixture()
def csv_log(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text("user,item,behavior,ts\n1,a,view,10\n1,b,buy,11\n2,a,buy,12\n2,c,buy,13\n")
    return path


def test_missing_file(tmp_path):
    assert_user_error(run("data", "import", tmp_path / "nope.csv", "--format", "csv"), "nope.csv")


def test_empty_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    assert_user_error(run("data", "import", p, "--format", "csv", "--out", tmp_path / "o"), "empty")
    assert not (tmp_path / "o").exists()


def test_missing_column(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("uid,item,behavior\n1,a,buy\n")
    assert_user_error(run("data", "import", p, "--format", "csv", "--out", tmp_path / "o"), "user")
    assert not (tmp_path / "o").exists()


def test_unknown_target(csv_log, tmp_path):
    r = run(
        "data",
        "import",
        csv_log,
        "--format",
        "csv",
        "--time-col",
        "ts",
        "--target",
        "purchase",
        "--out",
        tmp_path / "o",
    )
    assert_user_error(r, "purchase")


def test_non_numeric_timestamp(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("user,item,behavior,ts\n1,a,buy,yesterday\n")
    assert_user_error(
        run("data", "import", p, "--format", "csv", "--time-col", "ts", "--out", tmp_path / "o"),
        "ts",
    )


def test_nan_ids(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("user,item,behavior\n1,a,buy\n,b,buy\n")
    assert_user_error(run("data", "import", p, "--format", "csv", "--out", tmp_path / "o"), "user")


def test_duplicates_warn_not_fail(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("user,item,behavior\n1,a,buy\n1,a,buy\n2,b,buy\n")
    r = run("data", "import", p, "--format", "csv", "--out", tmp_path / "o")
    assert r.exit_code == 0, r.output
    assert "duplicate" in r.output
    info = run("data", "info", tmp_path / "o")
    assert info.exit_code == 0 and "buy" in info.output


def test_output_parent_folders_are_created(csv_log, tmp_path):
    r = run("data", "import", csv_log, "--format", "csv", "--out", tmp_path / "no" / "dir")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "no" / "dir" / "dataset.json").exists()
    (tmp_path / "f").write_text("")
    r = run("data", "import", csv_log, "--format", "csv", "--out", tmp_path / "f" / "dir")
    assert_user_error(r, "is not a folder")


def test_pickle_with_foreign_object(tmp_path):
    d = tmp_path / "hk"
    d.mkdir()
    m = sp.csr_matrix(np.eye(3, dtype=np.float32))
    for b in ("view", "buy"):
        with open(d / f"train_mat_{b}.pkl", "wb") as f:
            pickle.dump(m, f)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(d / "test_mat.pkl", "wb") as f:
        pickle.dump(Evil(), f)
    r = run("data", "import", d, "--format", "hkuds", "--out", tmp_path / "o")
    assert_user_error(r, "test_mat.pkl")
    assert "pwned" not in r.output


def test_unknown_config_key(dataset_dir, tmp_path):
    assert_user_error(
        run("train", "--data", dataset_dir, "--out", tmp_path / "r", "lernrate=1"), "lernrate"
    )
    assert not (tmp_path / "r").exists()


def test_wrong_value_type(dataset_dir, tmp_path):
    assert_user_error(
        run("train", "--data", dataset_dir, "--out", tmp_path / "r", "train.epochs=lots"),
        "train.epochs",
    )


def test_unknown_model(dataset_dir, tmp_path):
    assert_user_error(
        run("train", "--model", "gpt", "--data", dataset_dir, "--out", tmp_path / "r"), "gpt"
    )


def test_unknown_target_at_train(dataset_dir, tmp_path):
    r = run("train", "--data", dataset_dir, "--out", tmp_path / "r", "data.target=purchase")
    assert_user_error(r, "purchase")


def test_missing_dataset_dir(tmp_path):
    assert_user_error(
        run("train", "--data", tmp_path / "nodata", "--out", tmp_path / "r"), "nodata"
    )


def test_no_test_users(tmp_path):
    p = tmp_path / "log.csv"
    p.write_text("user,item,behavior\n1,a,buy\n2,b,buy\n3,a,view\n")  # one buy per user
    assert run("data", "import", p, "--format", "csv", "--out", tmp_path / "d").exit_code == 0
    assert_user_error(
        run("train", "--data", tmp_path / "d", "--out", tmp_path / "r"), "no test users"
    )


def test_train_output_file_in_the_way(dataset_dir, tmp_path):
    (tmp_path / "x").write_text("")
    assert_user_error(
        run("train", "--data", dataset_dir, "--out", tmp_path / "x" / "run"), "is not a folder"
    )


def test_train_default_run_dir_in_fresh_folder(dataset_dir, tmp_path, monkeypatch):
    # the README's first command, `polyrec train` without --out, from a checkout with no runs/
    monkeypatch.chdir(tmp_path)
    r = run("train", "--model", "mf", "--data", dataset_dir, "--quiet", *FAST, "train.epochs=1")
    assert r.exit_code == 0, r.output
    made = list((tmp_path / "runs").iterdir())
    assert len(made) == 1 and (made[0] / "config.toml").exists()


def test_cli_train_evaluate_recommend(dataset_dir, tmp_path):
    r = run(
        "train",
        "--model",
        "mf",
        "--data",
        dataset_dir,
        "--protocol",
        "leave-one-out",
        "--out",
        tmp_path / "run",
        "--quiet",
        *FAST,
        "train.epochs=2",
    )
    assert r.exit_code == 0, r.output
    assert "NDCG@10" in r.output and "1+20" in r.output and "full" in r.output
    assert "users without a target interaction" in r.output
    r = run("evaluate", tmp_path / "run")
    assert r.exit_code == 0, r.output
    users = tmp_path / "users.txt"
    users.write_text("0\n3\n")
    r = run(
        "recommend",
        tmp_path / "run",
        "--users",
        users,
        "--k",
        "5",
        "--out",
        tmp_path / "recs.parquet",
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "recs.parquet").exists()
    # unknown users / bad k / missing folder → exit 2 and no output file
    users.write_text("0\nnobody\n")
    r = run("recommend", tmp_path / "run", "--users", users, "--out", tmp_path / "bad.parquet")
    assert_user_error(r, "nobody")
    assert not (tmp_path / "bad.parquet").exists()
    r = run(
        "recommend", tmp_path / "run", "--users", users, "--out", tmp_path / "none" / "r.parquet"
    )
    assert_user_error(r, "nobody")
    assert not (tmp_path / "none").exists()  # a failed call creates no folder
    # corrupt checkpoint
    best = tmp_path / "run" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:100])
    assert_user_error(run("evaluate", tmp_path / "run"), "best.safetensors")


def test_models_lists_papers():
    r = run("models")
    assert r.exit_code == 0
    for name in ("pop", "mf", "lightgcn"):
        assert name in r.output


def test_cli_conventions(tmp_path, dataset_dir):
    """Issue 24, item 23: --version, -h, no arguments = help with status 0, plain flags, the
    protocol on each epoch line, no wrapping of piped output, batch totals."""
    r = run()
    assert r.exit_code == 0 and "Commands:" in r.output
    r = run("--version")
    assert r.exit_code == 0 and r.output.startswith("polyrec ")
    r = run("train", "-h")
    assert r.exit_code == 0 and "--json" in r.output and "<bool>" not in r.output
    assert run("data").exit_code == 0
    r = run("train", "-m", "mf", "--data", dataset_dir, "--out", tmp_path / "r", "train.epochs=2",
            "eval.ks=[10]", "data.n_negatives=20", "params.dim=8", 'train.select_protocol="full"')  # fmt: skip
    assert r.exit_code == 0, r.output
    epoch_lines = [ln for ln in r.output.splitlines() if ln.startswith("epoch")]
    assert epoch_lines and all("valid full hr@10" in ln for ln in epoch_lines), r.output
    # piped output is not wrapped: the epoch line (> 80 characters) stays one line
    assert any(len(ln) > 80 for ln in epoch_lines), epoch_lines


def test_bpr_models_report_their_batch_count(small_log):
    import torch

    from polyrec.models import TrainData
    from polyrec.models.registry import build_model

    data = TrainData(small_log)
    model = build_model("mf", {"dim": 4}, data)
    got = sum(1 for _ in model.batches(data, 64, torch.Generator().manual_seed(0)))
    assert model.n_batches(data, 64) == got


def test_recommend_unknown_users_and_output_formats(tmp_path, dataset_dir, small_log):
    """Issue 24, item 22: --unknown error | skip | popular; the format from the extension."""
    import polars as pl

    assert run("train", "-m", "pop", "--data", dataset_dir, "--out", tmp_path / "run",
               "eval.ks=[10]", "data.n_negatives=20").exit_code == 0  # fmt: skip
    known = small_log.user_map.ids[:2].tolist()
    users = tmp_path / "users.txt"
    users.write_text("\n".join(map(str, [*known, "nobody"])) + "\n")
    base = ["recommend", tmp_path / "run", "--users", users, "--k", "5"]
    assert_user_error(run(*base, "--out", tmp_path / "a.parquet"), "nobody", "--unknown popular")
    r = run(*base, "--out", tmp_path / "s.csv", "--unknown", "skip")
    assert r.exit_code == 0, r.output
    skipped = pl.read_csv(tmp_path / "s.csv")
    assert skipped["user"].n_unique() == 2 and not skipped["fallback"].any()
    r = run(*base, "--out", tmp_path / "p.jsonl", "--unknown", "popular")
    assert r.exit_code == 0 and "1 users not in the dataset" in r.output, r.output
    frame = pl.read_ndjson(tmp_path / "p.jsonl")
    fb = frame.filter(pl.col("fallback"))
    assert fb["user"].unique().to_list() == ["nobody"] and fb.height == 5
    # the most popular training items, in order
    assert fb["score"].to_list() == sorted(fb["score"].to_list(), reverse=True)
    assert_user_error(run(*base, "--out", tmp_path / "recs.txt"), "'.txt'", ".parquet, .csv")
    assert not (tmp_path / "recs.txt").exists()
