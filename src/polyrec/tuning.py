"""``polyrec tune``: hyperparameter search on the **validation** split (Optuna, TPE sampler).

Each trial is one training run (:func:`polyrec.training.trainer.train_run`) with the trial's
values of the ``[tune.space]`` keys, in ``TUNE_DIR/trial-NNN/``; its value is the best
validation ``tune.metric`` under ``train.select_protocol`` (the trainer's early-stopping value).
Trials never touch the test split: the test metrics of the best trial are computed once, for
information, after selection. A tune folder holds::

    base.toml     the resolved run config every trial starts from
    study.log     the Optuna study (a JournalStorage file: no database server)
    tune.json     settings, budget, objective, every trial, the best trial (rewritten as trials end)
    trial-NNN/    one run folder per trial (``polyrec evaluate``/``export`` work on each)

Resuming (``resume=True``) reopens the journal: finished trials are kept (not re-run) and count
towards ``tune.trials``, the study's total. A trial that was killed (left "running" in the
journal) or interrupted (Ctrl-C) is marked failed and run again once, with the same values, as a
new trial; it does not count towards the budget. ``tune.minutes`` is the time budget of one
invocation, checked between trials (the running trial finishes).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyrec.config import (
    RunConfig,
    SpaceParam,
    TuneConfig,
    check_space,
    load_config,
    to_toml,
    toml_value,
)
from polyrec.errors import ConfigError, DataError
from polyrec.training.checkpoint import atomic_write_text
from polyrec.training.trainer import Reporter, final_metrics, load_run, train_run

if TYPE_CHECKING:
    import optuna

BASE = "base.toml"
STUDY_LOG = "study.log"
TUNE_JSON = "tune.json"
STUDY_NAME = "polyrec-tune"
TUNE_HINT = 'pip install "polyrec[tune]"'
TEST_NOTE = (
    "trials are compared on the validation split only; the test metrics of the best trial are "
    "reported once, for information, after selection"
)


class TuneReporter:
    """What :func:`run_study` tells the outside world. Default: nothing."""

    def start(self, total: int | None, done: int, minutes: float | None, metric: str) -> None: ...
    def trial_start(self, number: int, params: dict[str, Any]) -> None: ...
    def trial_reporter(self) -> Reporter | None:
        """The trainer's reporter for the running trial (epochs, batches)."""
        return None

    def trial_end(self, record: dict[str, Any], best: dict[str, Any] | None) -> None: ...
    def message(self, text: str) -> None: ...
    def stop(self) -> None: ...


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"polyrec tune needs optuna: {TUNE_HINT}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def trial_dir_name(number: int) -> str:
    return f"trial-{number:03d}"


def _suggest(trial: optuna.Trial, key: str, p: SpaceParam) -> Any:
    if p.choices is not None:
        return trial.suggest_categorical(key, p.choices)
    assert p.low is not None and p.high is not None
    if p.is_int:
        return trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(key, float(p.low), float(p.high), step=p.step, log=p.log)


def objective_value(result: dict[str, Any], metric: str, protocol: str) -> float:
    """The best validation value of a finished trial (never a test metric)."""
    value = result.get("best_valid")
    if value is None:  # not trainable / epochs=0: the final validation metrics of its weights
        value = result["valid"]["metrics"].get(protocol, {}).get(metric)
    if value is None:
        raise DataError(f"the trial has no validation {protocol} {metric} to optimise")
    return float(value)


def _storage(out: Path) -> Any:
    optuna = _optuna()
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(str(out / STUDY_LOG)))


def settings_json(tune: TuneConfig) -> dict[str, Any]:
    """The [tune] table as JSON (each space entry with only the fields it sets)."""
    out = tune.model_dump(mode="json")
    out["space"] = {
        k: p.model_dump(mode="json", exclude_defaults=True) for k, p in tune.space.items()
    }
    return out


def _trial_record(t: Any) -> dict[str, Any]:
    seconds = None
    killed = t.user_attrs.get("interrupted") == "killed"  # its end time is the resume's
    if t.datetime_start is not None and t.datetime_complete is not None and not killed:
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
    record: dict[str, Any] = {
        "number": t.number,
        "state": "interrupted" if t.user_attrs.get("interrupted") else t.state.name.lower(),
        "params": dict(t.params),
        "value": t.value if t.state.name == "COMPLETE" else None,
        "seconds": seconds,
        "run_dir": t.user_attrs.get("run_dir"),
    }
    for key in ("best_epoch", "stopped", "retry_of", "interrupted", "error"):
        if key in t.user_attrs:
            record[key] = t.user_attrs[key]
    return record


def _counts(t: Any) -> bool:
    """Whether a trial counts towards the trial budget (finished, not killed or interrupted)."""
    name = t.state.name
    return name in ("COMPLETE", "PRUNED") or (
        name == "FAIL" and not t.user_attrs.get("interrupted")
    )


def _recover(study: Any, storage: Any, reporter: TuneReporter) -> None:
    """Mark trials left running by a killed process as failed; queue one retry of each
    interrupted trial (same values, new number) that has none yet."""
    optuna = _optuna()
    state = optuna.trial.TrialState
    for t in study.get_trials(deepcopy=False, states=(state.RUNNING,)):
        storage.set_trial_user_attr(t._trial_id, "interrupted", "killed")
        storage.set_trial_state_values(t._trial_id, state.FAIL)
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for t in trials:
        if t.state == state.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
            study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
            reporter.message(f"trial {t.number} was interrupted: it runs again as a new trial")


def summary(
    study: Any,
    cfg: RunConfig,
    tune: TuneConfig,
    budget: dict[str, Any],
    seed: int,
    status: str,
    best_test: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """tune.json's content."""
    trials = [_trial_record(t) for t in study.get_trials(deepcopy=False)]
    complete = [t for t in trials if t["state"] == "complete"]
    best = max(complete, key=lambda t: (t["value"], -t["number"])) if complete else None
    out: dict[str, Any] = {
        "status": status,
        "model": cfg.model,
        "dataset_path": cfg.data.path,
        "objective": {
            "metric": tune.metric,
            "split": "valid",
            "protocol": cfg.train.select_protocol,
            "direction": "maximize",
            "selection": f"best validation {cfg.train.select_protocol} {tune.metric} of each "
            "trial (its best epoch); the best trial has the highest",
        },
        "note": TEST_NOTE,
        "budget": budget,
        "sampler": {"name": "TPESampler", "seed": seed},
        "settings": settings_json(tune),
        "n_trials": len(trials),
        "n_complete": len(complete),
        "trials": trials,
        "best": None,
    }
    if best is not None:
        out["best"] = {
            "number": best["number"],
            "params": best["params"],
            "value": best["value"],
            "run_dir": best["run_dir"],
            "test": best_test,
        }
    return out


def _test_best(out: Path, best: dict[str, Any], reporter: TuneReporter) -> dict[str, Any]:
    """The best trial's test metrics, computed once (after selection) and kept in its
    metrics.json."""
    run_dir = out / best["run_dir"]
    path = run_dir / "metrics.json"
    result = json.loads(path.read_text())
    if result.get("test") is None:
        reporter.message(f"testing the best trial ({best['run_dir']}) once, after selection")
        prepared = load_run(run_dir)
        result["test"] = final_metrics(prepared, parts=("test",))["test"]
        atomic_write_text(path, json.dumps(result, indent=2))
    return dict(result["test"])


def start(cfg: RunConfig, tune: TuneConfig, out: Path) -> None:
    """Write a new tune folder's base config and settings (the study is made by run_study)."""
    _optuna()  # fail before writing anything when optuna is missing
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / BASE, to_toml(cfg))
    atomic_write_text(
        out / TUNE_JSON,
        json.dumps({"status": "new", "settings": settings_json(tune)}, indent=2),
    )


def load(out: Path) -> tuple[RunConfig, TuneConfig]:
    """The base config and tune settings of an existing tune folder."""
    if not (out / BASE).is_file() or not (out / TUNE_JSON).is_file():
        raise DataError(f"cannot resume {str(out)!r}: it is not a polyrec tune folder")
    cfg = load_config(out / BASE)
    try:
        tune = TuneConfig.model_validate(json.loads((out / TUNE_JSON).read_text())["settings"])
    except (ValueError, KeyError) as e:
        raise DataError(f"cannot resume {str(out)!r}: its {TUNE_JSON} is damaged ({e})") from None
    tune.space = check_space(tune, cfg)
    return cfg, tune


def run_study(
    out: Path,
    cfg: RunConfig,
    tune: TuneConfig,
    *,
    reporter: TuneReporter | None = None,
) -> dict[str, Any]:
    """Run (or continue) the study in ``out`` until ``tune.trials`` trials have finished or
    ``tune.minutes`` have passed; returns tune.json's content."""
    opt = _optuna()
    reporter = reporter or TuneReporter()
    metric = tune.metric or cfg.train.metric
    protocol = cfg.train.select_protocol
    storage = _storage(out)
    study = opt.create_study(
        study_name=STUDY_NAME, storage=storage, direction="maximize", load_if_exists=True
    )
    _recover(study, storage, reporter)
    # a resumed study continues with a fresh sampler: seeding it with the number of trials so
    # far keeps the run reproducible without re-drawing the first random points
    seed = (cfg.seed if tune.seed is None else tune.seed) + len(study.trials)
    study.sampler = opt.samplers.TPESampler(seed=seed)
    budget = {"trials": tune.trials, "minutes": tune.minutes}
    done = sum(_counts(t) for t in study.get_trials(deepcopy=False))
    remaining = None if tune.trials is None else max(tune.trials - done, 0)

    def write(status: str, best_test: dict[str, Any] | None = None) -> dict[str, Any]:
        s = summary(study, cfg, tune, budget, seed, status, best_test)
        atomic_write_text(out / TUNE_JSON, json.dumps(s, indent=2))
        return s

    def objective(trial: optuna.Trial) -> float:
        params = {key: _suggest(trial, key, p) for key, p in tune.space.items()}
        run_dir = out / trial_dir_name(trial.number)
        if run_dir.exists():  # left by an earlier study in this folder: numbers are ours
            shutil.rmtree(run_dir)
        trial.set_user_attr("run_dir", run_dir.name)
        trial_cfg = load_config(out / BASE, [f"{k}={toml_value(v)}" for k, v in params.items()])
        reporter.trial_start(trial.number, params)
        try:
            result = train_run(trial_cfg, run_dir, reporter=reporter.trial_reporter(), test=False)
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", "ctrl-c")
            raise
        except FloatingPointError as e:  # diverged: a bad point of the space, not a bug
            trial.set_user_attr("error", str(e))
            raise
        trial.set_user_attr("best_epoch", result["best_epoch"])
        trial.set_user_attr("stopped", result["stopped"])
        return objective_value(result, metric, protocol)

    def after_trial(study: Any, frozen: Any) -> None:
        s = write("running")
        reporter.trial_end(_trial_record(frozen), s["best"])

    write("running")
    reporter.start(tune.trials, done, tune.minutes, metric)
    try:
        if remaining != 0:
            study.optimize(
                objective,
                n_trials=remaining,
                timeout=None if tune.minutes is None else 60 * tune.minutes,
                catch=(FloatingPointError,),
                callbacks=[after_trial],
            )
    except KeyboardInterrupt:
        write("interrupted")
        raise
    except BaseException:
        write("error")
        raise
    finally:
        reporter.stop()
    s = write("done")
    if s["best"] is None:
        raise DataError(
            f"no trial finished (of {s['n_trials']}): see the errors in {str(out / TUNE_JSON)!r}"
        )
    return write("done", _test_best(out, s["best"], reporter))
