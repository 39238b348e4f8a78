"""Trainer: validation-only model selection, early stopping, atomic checkpoints, exact resume."""

from __future__ import annotations

import json

import pytest

import polyrec
from polyrec.errors import CheckpointError
from polyrec.training.trainer import Reporter

FAST = ["train.batch_size=256", "eval.ks=[10]", "data.n_negatives=20", "params.dim=16"]


class Killer(Reporter):
    """Simulates a killed process: raises when epoch ``at`` starts (after the previous checkpoint)."""

    def __init__(self, at: int) -> None:
        self.at = at

    def epoch_start(self, epoch: int, n_batches: int | None) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("model", "schedule"),
    [
        ("mf", []),
        ("lightgcn", []),
        ("mf", ['train.lr_schedule="cyclic"', "train.max_lr=0.05", "train.cycle_up=3"]),
    ],
)
def test_resume_reaches_identical_metrics(tmp_path, dataset_dir, model, schedule):
    args = [*FAST, "train.epochs=6", "train.patience=50", "train.lr=0.01", *schedule]
    full = polyrec.train(model, dataset_dir, overrides=args, out=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        polyrec.train(
            model, dataset_dir, overrides=args, out=tmp_path / "killed", reporter=Killer(4)
        )
    assert (tmp_path / "killed" / "last.safetensors").exists()
    assert not (tmp_path / "killed" / "metrics.json").exists()
    resumed = polyrec.train(resume=tmp_path / "killed")
    assert resumed["epochs_run"] == full["epochs_run"] == 6
    assert resumed["best_epoch"] == full["best_epoch"]
    assert resumed["test"]["metrics"] == full["test"]["metrics"]
    assert resumed["valid"]["metrics"] == full["valid"]["metrics"]
    for a, b in zip(resumed["history"], full["history"], strict=True):
        assert a["train"] == b["train"]
        assert a["valid"] == b["valid"]


def test_selection_uses_validation_and_early_stops(tmp_path, dataset_dir):
    res = polyrec.train(
        "mf",
        dataset_dir,
        overrides=[*FAST, "train.epochs=200", "train.patience=2", "train.lr=0.05"],
        out=tmp_path / "run",
    )
    assert res["stopped"].startswith("early stop")
    assert res["epochs_run"] < 200
    vals = [h["valid"]["ndcg@10"] for h in res["history"]]
    assert res["best_epoch"] == 1 + vals.index(max(vals))
    assert res["best_valid"] == max(vals)
    assert "validation" in res["protocol"]["selection"]
    assert all("test" not in h for h in res["history"])
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["best_epoch"] == res["best_epoch"]


def test_trained_model_beats_pop_on_validation(tmp_path, dataset_dir):
    pop = polyrec.train("pop", dataset_dir, overrides=FAST[:-1], out=tmp_path / "pop")
    lgn = polyrec.train(
        "lightgcn",
        dataset_dir,
        overrides=[*FAST, "train.epochs=20", "train.lr=0.01", "params.behaviors=all"],
        out=tmp_path / "lgn",
    )
    key = "ndcg@10"
    assert lgn["valid"]["metrics"]["full"][key] > pop["valid"]["metrics"]["full"][key]


def test_evaluate_reproduces_metrics(tmp_path, dataset_dir):
    res = polyrec.train("mf", dataset_dir, overrides=[*FAST, "train.epochs=2"], out=tmp_path / "r")
    again = polyrec.evaluate(tmp_path / "r")
    assert again["test"]["metrics"] == res["test"]["metrics"]


def test_corrupt_checkpoint_is_refused(tmp_path, dataset_dir):
    polyrec.train("mf", dataset_dir, overrides=[*FAST, "train.epochs=2"], out=tmp_path / "r")
    best = tmp_path / "r" / "best.safetensors"
    best.write_bytes(best.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        polyrec.evaluate(tmp_path / "r")
    last = tmp_path / "r" / "last.safetensors"
    last.write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        polyrec.train(resume=tmp_path / "r")


def test_recommend_excludes_seen_and_uses_external_ids(tmp_path, dataset_dir, small_log):
    polyrec.train("mf", dataset_dir, overrides=[*FAST, "train.epochs=2"], out=tmp_path / "r")
    users = [0, 5, 7]
    frame = polyrec.recommend(tmp_path / "r", users, k=5, out=tmp_path / "recs.parquet")
    assert frame.height == 15
    assert set(frame["rank"].to_list()) == {1, 2, 3, 4, 5}
    assert (tmp_path / "recs.parquet").exists()
    # no recommended item was bought by the user in training
    from polyrec.data.splits import Split

    split = Split.load(tmp_path / "r" / "split", small_log)
    t = split.train.behavior == split.train.target_code
    seen = set(zip(split.train.user[t].tolist(), split.train.item[t].tolist(), strict=True))
    for u, i in zip(frame["user"].to_list(), frame["item"].to_list(), strict=True):
        assert (int(u), int(i)) not in seen


def test_cyclic_factor_is_triangular():
    from polyrec.training.schedule import cyclic_factor

    lrs = [cyclic_factor(t, 1e-3, 5e-3, up=2, down=4) * 1e-3 for t in range(8)]
    expected = [1e-3, 3e-3, 5e-3, 4e-3, 3e-3, 2e-3, 1e-3, 3e-3]
    assert lrs == pytest.approx(expected)
    with pytest.raises(ValueError):
        cyclic_factor(0, 1e-3, 1e-4, up=2, down=4)


def test_cyclic_schedule_changes_lr_and_needs_max_lr(tmp_path, dataset_dir):
    from polyrec.errors import ConfigError

    with pytest.raises(ConfigError, match="max_lr"):
        polyrec.train(
            "mf", dataset_dir, overrides=[*FAST, 'train.lr_schedule="cyclic"'], out=tmp_path / "bad"
        )
    base = [*FAST, "train.epochs=2", "train.lr=0.01"]
    plain = polyrec.train("mf", dataset_dir, overrides=base, out=tmp_path / "plain")
    cyc = polyrec.train(
        "mf",
        dataset_dir,
        overrides=[*base, 'train.lr_schedule="cyclic"', "train.max_lr=0.1"],
        out=tmp_path / "cyc",
    )
    assert cyc["history"][-1]["train"] != plain["history"][-1]["train"]


def test_min_epochs_delays_early_stopping(tmp_path, dataset_dir):
    args = [*FAST, "train.epochs=6", "train.patience=1", "train.lr=1e-6"]
    early = polyrec.train("mf", dataset_dir, overrides=args, out=tmp_path / "a")
    late = polyrec.train(
        "mf", dataset_dir, overrides=[*args, "train.min_epochs=5"], out=tmp_path / "b"
    )
    assert early["epochs_run"] < 5 <= late["epochs_run"]


def test_fewer_validation_users_are_noted_and_evaluations_timed(tmp_path):
    """Issue 24, items 24 and 26: user 2 buys twice (test + training, no validation pair)."""
    (tmp_path / "log.csv").write_text(
        "user,item,behavior\n1,a,buy\n1,b,buy\n1,c,buy\n2,a,buy\n2,b,buy\n3,a,buy\n3,b,buy\n"
        "3,c,buy\n4,c,buy\n4,a,buy\n4,d,buy\n2,d,view\n"
    )
    polyrec.import_data(tmp_path / "log.csv", tmp_path / "ds")
    res = polyrec.train("pop", tmp_path / "ds", overrides=["eval.ks=[2]", "data.n_negatives=1"],
                        out=tmp_path / "run")  # fmt: skip
    assert any("3 of the 4 test users are evaluated" in n for n in res["valid"]["notes"])
    assert not any("test users are evaluated" in n for n in res["test"]["notes"])
    on_disk = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert on_disk["valid"]["eval_seconds"] > 0 and on_disk["test"]["eval_seconds"] > 0
    again = polyrec.evaluate(tmp_path / "run")
    assert again["test"]["eval_seconds"] > 0


def test_resume_accepts_stopping_overrides_and_refuses_the_others(tmp_path, dataset_dir):
    """Issue 24, item 19: a running job can be shortened or lengthened, not changed."""
    args = [*FAST, "train.epochs=6", "train.patience=50", "train.lr=0.01"]
    with pytest.raises(KeyboardInterrupt):
        polyrec.train("mf", dataset_dir, overrides=args, out=tmp_path / "r", reporter=Killer(3))
    for bad, key in (("train.lr=0.1", "train.lr"), ("params.dim=8", "params"),
                     ('data.protocol="random-ratio"', "data.protocol")):  # fmt: skip
        with pytest.raises(polyrec.DataError, match=f"cannot change '{key}"):
            polyrec.train(resume=tmp_path / "r", overrides=[bad])
    res = polyrec.train(resume=tmp_path / "r", overrides=["train.epochs=4"])
    assert res["epochs_run"] == 4
    assert "epochs = 4" in (tmp_path / "r" / "config.toml").read_text()


def test_progress_jsonl_streams_one_line_per_epoch(tmp_path, dataset_dir):
    """Issue 24, item 20: a machine-readable progress stream in the run folder, across a resume."""
    args = [*FAST, "train.epochs=4", "train.patience=50", "train.lr=0.01"]
    with pytest.raises(KeyboardInterrupt):
        polyrec.train("mf", dataset_dir, overrides=args, out=tmp_path / "r", reporter=Killer(3))
    lines = (tmp_path / "r" / "progress.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    res = polyrec.train(resume=tmp_path / "r")
    rows = [json.loads(x) for x in (tmp_path / "r" / "progress.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["stopped"] == "max epochs" and rows[-1]["best_epoch"] == res["best_epoch"]
    assert rows[0]["valid_protocol"] in ("full", "sampled") and "loss" in rows[0]["train"]


def test_leave_one_out_on_a_user_split_import_reloads(tmp_path):
    """Issue 24, item 17: a leave-one-out run over a SimRec (user-split) import — whose published
    fold the split drops — is evaluated, resumed, exported and asked for recommendations."""
    d = tmp_path / "simrec"
    d.mkdir()
    rng = __import__("numpy").random.default_rng(0)
    lines = {part: [" ".join(map(str, [u, *rng.choice(40, 6, replace=False)]))
                    for u in range(k0, k0 + 20)]
             for part, k0 in (("train", 0), ("valid", 20), ("test", 40))}  # fmt: skip
    for part, ls in lines.items():
        (d / f"Toy_{part}.txt").write_text("\n".join(ls) + "\n")
    polyrec.import_data(d, tmp_path / "toy")
    args = ["train.batch_size=32", "eval.ks=[5]", "data.n_negatives=5", "params.dim=8",
            "train.epochs=3", "train.patience=50", 'data.protocol="leave-one-out"']  # fmt: skip
    full = polyrec.train("mf", tmp_path / "toy", overrides=args, out=tmp_path / "full")
    assert polyrec.evaluate(tmp_path / "full")["test"]["metrics"] == full["test"]["metrics"]
    with pytest.raises(KeyboardInterrupt):
        polyrec.train(
            "mf", tmp_path / "toy", overrides=args, out=tmp_path / "k", reporter=Killer(2)
        )
    assert polyrec.train(resume=tmp_path / "k")["test"]["metrics"] == full["test"]["metrics"]
    polyrec.export(tmp_path / "full", tmp_path / "exp")
    recs = polyrec.recommend(tmp_path / "exp", [0, 25, 45], k=3)
    assert recs.height == 9
