"""polyrec tune: a validation-only search, resumable from its journal; bad input is one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("optuna")


from cli_helpers import assert_user_error, run

SPACE = """
"train.lr" = { low = 1e-3, high = 1e-1, log = true }
"params.dim" = { choices = [8, 16] }
"params.reg" = { low = 1e-6, high = 1e-2, log = true }
"""


def write_config(
    tmp_path: Path, dataset_dir: Path, tune: str = "trials = 2", space: str = SPACE
) -> Path:
    path = tmp_path / "tune.toml"
    path.write_text(
        f"""model = "mf"
[data]
path = "{dataset_dir}"
n_negatives = 20
[train]
epochs = 2
batch_size = 256
[eval]
ks = [10]
[tune]
{tune}
[tune.space]
{space}
"""
    )
    return path


def test_tune_end_to_end(dataset_dir, tmp_path):
    cfg = write_config(tmp_path, dataset_dir, 'trials = 2\nmetric = "valid.ndcg@10"')
    out = tmp_path / "tune"
    r = run("tune", "-c", cfg, "--out", out)
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "best trial" in text and "test metrics of the best trial are reported once" in text
    result = json.loads((out / "tune.json").read_text())
    assert result["status"] == "done" and result["n_trials"] == result["n_complete"] == 2
    assert result["objective"] == {
        "metric": "ndcg@10",
        "split": "valid",
        "protocol": "full",
        "direction": "maximize",
        "selection": result["objective"]["selection"],
    }
    assert result["budget"] == {"trials": 2, "minutes": None}
    for t in result["trials"]:
        assert set(t["params"]) == {"train.lr", "params.dim", "params.reg"}
        assert t["state"] == "complete" and t["seconds"] > 0
        metrics = json.loads((out / t["run_dir"] / "metrics.json").read_text())
        # the objective is the trial's best validation value, never a test metric
        assert t["value"] == metrics["best_valid"]
        assert 1e-3 <= t["params"]["train.lr"] <= 1e-1 and t["params"]["params.dim"] in (8, 16)
    best = result["best"]
    assert best["value"] == max(t["value"] for t in result["trials"])
    assert "ndcg@10" in best["test"]["metrics"]["full"]  # tested once, after selection
    others = [t for t in result["trials"] if t["number"] != best["number"]]
    for t in others:  # trials that were not selected never saw the test split
        assert json.loads((out / t["run_dir"] / "metrics.json").read_text())["test"] is None
    # the trial's values are in its run config; the best run is a valid run folder
    best_dir = out / best["run_dir"]
    assert f"dim = {best['params']['params.dim']}" in (best_dir / "config.toml").read_text()
    r = run("evaluate", best_dir, "--json")
    assert r.exit_code == 0, r.output
    r = run("export", best_dir, "--out", tmp_path / "export", "--json")
    assert r.exit_code == 0, r.output
    # a second study may not overwrite this folder
    assert_user_error3(run("tune", "-c", cfg, "--out", out), "not empty", "--resume")


def test_tune_python_api_int_space(dataset_dir, tmp_path):
    import polyrec

    cfg = write_config(
        tmp_path,
        dataset_dir,
        "trials = 2\nseed = 7",
        '"params.dim" = { low = 4, high = 12, step = 4 }\n"lr" = { choices = [0.01, 0.05] }',
    )
    result = polyrec.tune(config=cfg, out=tmp_path / "t", overrides=["train.epochs=1"])
    assert result["sampler"]["seed"] == 7 and result["tune_dir"] == str(tmp_path / "t")
    for t in result["trials"]:
        assert t["params"]["params.dim"] in (4, 8, 12) and isinstance(
            t["params"]["params.dim"], int
        )
        assert t["params"]["train.lr"] in (0.01, 0.05)


@pytest.mark.parametrize(
    "metric", ['"test.ndcg@10"', '"test.recall@20"', '"auc"', '"train.loss"', '"ndcg"']
)
def test_test_metric_refused(dataset_dir, tmp_path, metric):
    cfg = write_config(tmp_path, dataset_dir, f"trials = 2\nmetric = {metric}")
    r = run("tune", "-c", cfg, "--out", tmp_path / "t")
    assert_user_error3(r, "tune.metric")
    if "test" in metric:
        assert "validation split only" in " ".join(r.output.split())
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ('"params.nope" = { low = 1, high = 2 }', "'params.nope' is not a config key"),
        ('"nope" = { low = 1, high = 2 }', "unknown config key 'nope'"),
        ('"train.nope" = { low = 1, high = 2 }', "'train.nope' is not a config key"),
        ('"seed" = { low = 1, high = 2 }', "cannot be tuned"),
        ('"data.ratio" = { low = 0.5, high = 0.9 }', "cannot be tuned"),
        ('"train.metric" = { choices = ["hr@10"] }', "cannot be tuned"),
        ("", "tune.space is empty"),
        ('"train.lr" = { low = 1e-2, high = 1e-4 }', "must be below high"),
        ('"train.lr" = { low = 0.0, high = 1e-2, log = true }', "log = true needs low > 0"),
        ('"train.lr" = { choices = [] }', "choices is empty"),
        ('"train.lr" = { low = 1e-3 }', "both low and high"),
        ('"train.lr" = { low = 1e-3, high = 1e-2, choices = [1] }', "not both"),
        ('"params.dim" = { low = 0, high = 8 }', "value 0 is not valid for params.dim"),
        ('"params.dim" = { lo = 1, high = 8 }', "unknown key"),
    ],
)
def test_bad_space_refused(dataset_dir, tmp_path, space, fragment):
    cfg = write_config(tmp_path, dataset_dir, space=space)
    assert_user_error3(run("tune", "-c", cfg, "--out", tmp_path / "t"), fragment)
    assert not (tmp_path / "t").exists()


def test_bad_input_refused(dataset_dir, tmp_path):
    assert_user_error3(run("tune", "--out", tmp_path / "t"), "needs a config file")
    assert_user_error3(run("tune", "-c", tmp_path / "nope.toml"), "does not exist")
    cfg = tmp_path / "plain.toml"
    cfg.write_text('model = "mf"\n')
    assert_user_error3(run("tune", "-c", cfg), "no [tune] table")
    cfg = write_config(tmp_path, dataset_dir, "trials = 0")
    assert_user_error3(run("tune", "-c", cfg), "tune.trials")
    cfg = write_config(tmp_path, dataset_dir, "trials = 2\nbudget = 3")
    assert_user_error3(run("tune", "-c", cfg), "tune.budget", "unknown key")
    cfg = write_config(tmp_path, dataset_dir)
    assert_user_error3(run("tune", "-c", cfg, "--trials", "0"), "--trials")
    (tmp_path / "no").write_text("")
    assert_user_error3(run("tune", "-c", cfg, "--out", tmp_path / "no" / "t"), "is not a folder")
    assert_user_error3(run("tune", "--resume", tmp_path), "not a polyrec tune folder")
    # polyrec train reads the same file and ignores its [tune] table
    r = run("train", "-c", cfg, "--out", tmp_path / "run", "--quiet", "train.epochs=1")
    assert r.exit_code == 0, r.output


def test_missing_optuna_names_the_extra(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna raises ImportError
    cfg = write_config(tmp_path, dataset_dir)
    r = run("tune", "-c", cfg, "--out", tmp_path / "t")
    assert_user_error3(r, 'pip install "polyrec[tune]"')
    assert not (tmp_path / "t").exists()


def test_resume_runs_only_missing_trials(dataset_dir, tmp_path):
    import optuna

    from polyrec.tuning import STUDY_LOG, STUDY_NAME, _storage

    cfg = write_config(tmp_path, dataset_dir)
    out = tmp_path / "t"
    r = run("tune", "-c", cfg, "--out", out, "--quiet", "train.epochs=1")
    assert r.exit_code == 0, r.output
    first = json.loads((out / "tune.json").read_text())
    assert [t["number"] for t in first["trials"]] == [0, 1]
    stamps = {n: (out / f"trial-00{n}" / "best.safetensors").stat().st_mtime_ns for n in (0, 1)}
    # a process killed mid-trial leaves it "running" in the journal
    study = optuna.load_study(study_name=STUDY_NAME, storage=_storage(out))
    killed = study.ask()
    killed.suggest_categorical("params.dim", [8, 16])
    assert (out / STUDY_LOG).exists()
    # the resumed study runs to 3 trials: trial 2 (killed) is retried as trial 3 and does not
    # count; trials 0 and 1 are not re-run
    r = run("tune", "--resume", out, "--trials", "3", "--quiet")
    assert r.exit_code == 0, r.output
    result = json.loads((out / "tune.json").read_text())
    states = {t["number"]: t["state"] for t in result["trials"]}
    assert states == {0: "complete", 1: "complete", 2: "interrupted", 3: "complete"}
    retry = result["trials"][3]
    assert retry["retry_of"] == 2
    assert retry["params"]["params.dim"] == killed.params["params.dim"]
    assert result["n_complete"] == 3 and result["budget"]["trials"] == 3
    assert result["trials"][:2] == first["trials"]
    for n, stamp in stamps.items():
        assert (out / f"trial-00{n}" / "best.safetensors").stat().st_mtime_ns == stamp
    # the budget is met: resuming again runs nothing
    r = run("tune", "--resume", out, "--quiet")
    assert r.exit_code == 0, r.output
    assert json.loads((out / "tune.json").read_text())["n_trials"] == 4
    assert_user_error3(run("tune", "--resume", out, "--model", "mf"), "give no other options")


def test_readme_tune_example_is_valid(tmp_path):
    from polyrec.config import load_tune_config

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("### `polyrec tune`") :]
    block = section[
        section.index("```toml\n") + 8 : section.index("```", section.index("```toml") + 7)
    ]
    path = tmp_path / "readme-tune.toml"
    path.write_text(block)
    cfg, tune = load_tune_config(path)
    assert cfg.model == "lightgcn" and tune.trials == 20 and tune.minutes == 10
    assert set(tune.space) == {"train.lr", "params.dim", "params.reg", "params.n_layers"}
    assert tune.space["params.n_layers"].is_int and not tune.space["params.reg"].is_int


def test_ctrl_c_then_resume_retries_the_trial(dataset_dir, tmp_path, monkeypatch):
    import polyrec
    from polyrec import tuning

    real = tuning.train_run
    calls = []

    def interrupted_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "train_run", interrupted_second)
    cfg = write_config(tmp_path, dataset_dir, "trials = 3")
    out = tmp_path / "t"
    with pytest.raises(KeyboardInterrupt):
        polyrec.tune(config=cfg, out=out, overrides=["train.epochs=1"])
    saved = json.loads((out / "tune.json").read_text())
    assert saved["status"] == "interrupted"
    assert [t["state"] for t in saved["trials"]] == ["complete", "interrupted"]
    # a time budget: the first trial that ends past it is the last one of this invocation
    result = polyrec.tune(resume=out, minutes=1e-4)
    assert [t["state"] for t in result["trials"]] == ["complete", "interrupted", "complete"]
    assert result["trials"][2]["retry_of"] == 1
    assert result["trials"][2]["params"] == saved["trials"][1]["params"]
    assert result["budget"] == {"trials": 3, "minutes": 1e-4}
    result = polyrec.tune(resume=out)  # the third counted trial
    assert [t["state"] for t in result["trials"]][3:] == ["complete"]
    assert result["n_complete"] == 3


def assert_user_error3(result, *fragments: str) -> None:
    assert_user_error(result, *fragments, max_lines=3)
