"""The training loop: epochs, early stopping on a validation metric, checkpoints, resume.

The trainer knows no model by name: it asks the model for its batches, optimisers and
``train_step`` (the template method special schedules override). Model selection reads the
**validation** split only; the test split is evaluated once, with the best weights, at the end.

A run directory holds::

    config.toml        the resolved config        run.json      status, dataset, device, versions
    split.npz/.json    the exact split (rows, held-out pairs, sampled negatives)
    last.safetensors   checkpoint of the latest epoch (weights, optimisers, RNG states, history)
    best.safetensors   weights of the best validation epoch
    progress.jsonl     one JSON line per finished epoch (losses, validation, best so far)
    metrics.json       validation + test metrics of the best weights, with their protocol

Under ``torchrun`` (see :mod:`polyrec.training.distributed`) every process trains on its share of
each epoch's batches with gradients averaged at every optimiser step; rank 0 alone validates
(and sends the value to the others, so all stop at the same epoch), reports progress, writes the
run directory and evaluates the final metrics.
"""

from __future__ import annotations

import functools
import json
import math
import platform
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polyrec.config import RunConfig, load_config, to_toml
from polyrec.data.datasets import load_dataset
from polyrec.data.log import InteractionLog
from polyrec.data.splits import Split, make_split
from polyrec.data.views import TrainData
from polyrec.errors import CheckpointError, ConfigError, DataError
from polyrec.eval.audit import audit_split
from polyrec.eval.evaluator import evaluate
from polyrec.eval.holdout import holdout_recall
from polyrec.fsutil import LOCK, claim_dir, release_dir, remove_temporaries
from polyrec.models.base import Model
from polyrec.models.registry import build_model
from polyrec.runtime import default_threads, tune_allocator
from polyrec.training import distributed
from polyrec.training.checkpoint import (
    atomic_write_text,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from polyrec.training.schedule import cyclic_factor, scale_lr

LAST = "last.safetensors"
BEST = "best.safetensors"
PROGRESS = "progress.jsonl"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device={name!r} is not a device name (use auto, cpu, cuda)"
        ) from None


def run_device(cfg: RunConfig) -> torch.device:
    """The device of a run: ``train.device``; under torchrun a GPU is ``cuda:LOCAL_RANK``."""
    return distributed.local_device(resolve_device(cfg.train.device))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def parse_metric(metric: str) -> tuple[str, int]:
    name, _, k = metric.partition("@")
    if name not in {"hr", "recall", "ndcg", "mrr", "precision", "map"} or not k.isdigit():
        raise ConfigError(
            f"train.metric={metric!r}: write it as name@k with name in hr, recall, ndcg, mrr, "
            "precision, map"
        )
    return name, int(k)


class Reporter:
    """What the trainer tells the outside world (progress bars, logs). Default: nothing."""

    def start(self, total_epochs: int, first_epoch: int) -> None: ...
    def epoch_start(self, epoch: int, n_batches: int | None) -> None: ...
    def batch(self, stats: dict[str, float]) -> None: ...
    def epoch_end(self, epoch: int, record: dict[str, Any]) -> None: ...
    def message(self, text: str) -> None: ...
    def stop(self) -> None: ...
    def eval_progress(self) -> Callable[[int, int], None] | None:
        return None


@dataclass
class Prepared:
    """Everything a run needs, built from a config (dataset, split, model, device)."""

    cfg: RunConfig
    log: InteractionLog
    split: Split
    data: TrainData
    model: Model
    device: torch.device


def prepare(cfg: RunConfig, run_dir: Path | None = None, *, reuse_split: bool = False) -> Prepared:
    """Load the dataset, make (or reload) the split, audit it and build the model."""
    tune_allocator()
    # train.threads, else the CPUs the process may use (affinity, cgroup quota): torch's own
    # default counts the machine's cores, too many threads in a container or on a pinned job
    torch.set_num_threads(cfg.train.threads or default_threads())
    device = run_device(cfg)
    log = load_dataset(cfg.data.path)
    if cfg.data.target:
        log = log.with_target(cfg.data.target)
    split_path = run_dir / "split" if run_dir is not None else None
    if reuse_split and split_path is not None and split_path.with_suffix(".npz").exists():
        split = Split.load(split_path, log)
    else:
        split = make_split(log, cfg.data.protocol, seed=cfg.seed, **cfg.data.split_params())
    audit_split(split)
    seed_everything(cfg.seed)
    data = TrainData(split.train, split.slot, hide=split.params.get("hide"))
    model = build_model(cfg.model, cfg.params, data).to(device)
    return Prepared(cfg, log, split, data, model, device)


class Trainer:
    """Trains one prepared run: epochs of ``model.train_step`` over ``model.batches``, validation
    every ``train.eval_every`` epochs on the **validation** split, early stopping after
    ``train.patience`` evaluations without a gain, checkpoints after every epoch.

    ``prepared`` is what :func:`prepare` built (config, dataset, split, training view, set-up
    model, device); ``run_dir`` receives ``last.safetensors`` (resumable state) and
    ``best.safetensors`` (weights of the best validation epoch); ``reporter`` receives progress.
    The model is only reached through its contract (:class:`~polyrec.models.base.Model`):
    ``make_optimisers``, ``batches``/``n_batches``, ``train_step``, ``on_epoch_start`` and
    ``on_validation`` (handed :func:`~polyrec.eval.holdout.holdout_recall` for models that
    evaluate themselves during a phase).
    """

    def __init__(self, prepared: Prepared, run_dir: Path, reporter: Reporter | None = None) -> None:
        self.prepared = prepared
        self.run_dir = run_dir
        self.main = distributed.is_main()  # only rank 0 reports, validates and writes files
        self.reporter = (reporter if self.main else None) or Reporter()
        cfg = prepared.cfg
        self.metric_name, self.metric_k = parse_metric(cfg.train.metric)
        self.metric_key = f"{self.metric_name}@{self.metric_k}"
        self.ks = sorted(set(cfg.eval.ks) | {self.metric_k})
        self.tb = _tensorboard(run_dir) if self.main else None
        self.step = 0  # optimisation steps so far (drives the lr schedule; saved in checkpoints)
        self.schedule: Callable[[int], float] | None = None
        t = self.prepared.cfg.train
        if t.lr_schedule == "cyclic":
            if t.max_lr is None or t.max_lr < t.lr:
                raise ConfigError(
                    f"train.lr_schedule='cyclic' needs train.max_lr >= train.lr (got max_lr="
                    f"{t.max_lr}, lr={t.lr})"
                )
            peak = t.max_lr
            self.schedule = functools.partial(
                cyclic_factor, base=t.lr, peak=peak, up=t.cycle_up, down=t.cycle_down
            )

    def _validate(self) -> dict[str, Any]:
        cfg = self.prepared.cfg
        return evaluate(
            self.prepared.model,
            self.prepared.split,
            "valid",
            protocols=(cfg.train.select_protocol,),
            ks=tuple(self.ks),
            mask=cfg.eval.mask,
            batch_size=cfg.eval.batch_size,
            retrieval=cfg.eval.retrieval_options(),
            metrics=(self.metric_name,),
        )

    def _selection_metrics(self) -> dict[str, float]:
        """Validation metrics of the model-selection protocol (run on rank 0 only)."""
        protocol = self.prepared.cfg.train.select_protocol
        res = self._validate()
        if not res["metrics"].get(protocol):
            raise DataError(
                f"no validation {protocol} metrics for model "
                f"selection ({'; '.join(res.get('notes', [])) or 'empty validation'})"
            )
        return dict(res["metrics"][protocol])

    def _load_best(self, path: Path, *, missing_ok: bool = True) -> None:
        """The best weights on every process: rank 0 reads them and sends them to the others
        (so machines need no shared filesystem)."""
        if self.main and (path.exists() or not missing_ok):
            load_weights(path, self.prepared.model)
        distributed.broadcast_model(self.prepared.model)

    def fit(self, *, resume: bool = False) -> dict[str, Any]:
        """Train with early stopping on validation; restore the best weights; return state."""
        cfg, model = self.prepared.cfg, self.prepared.model
        generator = torch.Generator().manual_seed(cfg.seed)
        optimisers = (
            model.make_optimisers(cfg.train.lr, cfg.train.weight_decay, cfg.train.optimizer)
            if model.trainable
            else []
        )
        state: dict[str, Any] = {
            "epoch": 0,
            "best_epoch": 0,
            "best_value": -math.inf,
            "bad_epochs": 0,
            "history": [],
            "stopped": None,
            "train_seconds": 0.0,
            "step": 0,
        }
        last, best = self.run_dir / LAST, self.run_dir / BEST
        if resume and not last.exists():
            # killed before its first checkpoint: nothing to continue, the saved config and
            # split start it from epoch 1 (the same run as a fresh one)
            self.reporter.message(
                f"no {LAST} yet (the run stopped before its first epoch ended): training from "
                "the start with the saved config"
            )
        elif resume:
            state = load_checkpoint(last, model, optimisers, generator)
            self.reporter.message(f"resumed after epoch {state['epoch']}")
        if not model.trainable or cfg.train.epochs == 0:
            state["stopped"] = "not trainable" if not model.trainable else "epochs=0"
            if self.main:
                save_weights(best, model)
            return state
        if state["stopped"]:
            self._load_best(best, missing_ok=False)
            return state
        distributed.broadcast_model(model)  # every process starts from rank 0's weights
        hooks = distributed.sync_gradients(optimisers)
        self.reporter.start(cfg.train.epochs, state["epoch"] + 1)
        t_start = time.perf_counter()
        try:
            self.step = int(state.get("step", 0))
            for epoch in range(state["epoch"] + 1, cfg.train.epochs + 1):
                record = self._epoch(epoch, generator, optimisers)
                state["step"] = self.step
                state["train_seconds"] += record["seconds"]
                if epoch % cfg.train.eval_every == 0 or epoch == cfg.train.epochs:
                    t0 = time.perf_counter()
                    # rank 0 validates; every process gets the value and keeps the same
                    # early-stopping state (and calls the model's on_validation with it)
                    record["valid"] = distributed.run_on_main(self._selection_metrics)
                    record["valid_protocol"] = cfg.train.select_protocol
                    record["eval_seconds"] = time.perf_counter() - t0
                    value = float(record["valid"][self.metric_key])
                    if not math.isfinite(value):
                        raise FloatingPointError(f"validation {self.metric_key} is {value}")
                    if value > state["best_value"]:
                        state["best_value"], state["best_epoch"] = value, epoch
                        state["bad_epochs"] = 0
                        if self.main:
                            save_weights(best, model)
                    else:
                        state["bad_epochs"] += 1
                    # a model with training phases (MBA's pre-training) may restart the patience
                    if model.on_validation(value, holdout_recall):
                        state["bad_epochs"] = 0
                    self._log_scalars(epoch, record)
                state["epoch"] = epoch
                state["history"].append(record)
                self.reporter.epoch_end(epoch, record)
                if state["bad_epochs"] >= cfg.train.patience and epoch >= cfg.train.min_epochs:
                    state["stopped"] = (
                        f"early stop: no validation gain for {cfg.train.patience} evaluations"
                    )
                elif epoch == cfg.train.epochs:
                    state["stopped"] = "max epochs"
                elif (
                    cfg.train.max_minutes
                    and (time.perf_counter() - t_start) > 60 * cfg.train.max_minutes
                ):
                    state["stopped"] = f"time limit {cfg.train.max_minutes} min"
                # rank 0's clock decides the time limit for every process
                state["stopped"] = distributed.broadcast_object(state["stopped"])
                if self.main:
                    save_checkpoint(last, model, optimisers, generator, state)
                    self._progress_line(epoch, record, state)
                if state["stopped"]:
                    break
        finally:
            for hook in hooks:
                hook.remove()
            self.reporter.stop()
            if self.tb is not None:
                self.tb.close()
        self._load_best(best)
        return state

    def _progress_line(self, epoch: int, record: dict[str, Any], state: dict[str, Any]) -> None:
        """One JSON line per finished epoch in ``RUN_DIR/progress.jsonl`` (a machine-readable
        progress stream, however quiet the console), written after its checkpoint."""
        line: dict[str, Any] = {
            "epoch": epoch,
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            **{
                k: record[k] for k in ("train", "seconds", "valid", "valid_protocol") if k in record
            },
            "best_epoch": state["best_epoch"],
            "best_valid": state["best_value"] if math.isfinite(state["best_value"]) else None,
            "stopped": state["stopped"],
        }
        with open(self.run_dir / PROGRESS, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")

    def _epoch(
        self, epoch: int, generator: torch.Generator, optimisers: list[torch.optim.Optimizer]
    ) -> dict[str, Any]:
        cfg, model, device = self.prepared.cfg, self.prepared.model, self.prepared.device
        model.train()
        model.on_epoch_start(epoch)
        sums: dict[str, float] = {}
        n = 0
        t0 = time.perf_counter()
        n_batches = model.n_batches(self.prepared.data, cfg.train.batch_size)
        shards = distributed.world_size() if distributed.is_distributed() else 1
        self.reporter.epoch_start(epoch, None if n_batches is None else n_batches // shards)
        # under torchrun: this process's share of the batches (the same sequence on every one)
        batches = distributed.shard(
            model.batches(self.prepared.data, cfg.train.batch_size, generator)
        )
        for batch in batches:
            if hasattr(batch, "to"):
                batch = batch.to(device)
            if self.schedule is not None:
                scale_lr(optimisers, self.schedule(self.step))
            stats = model.train_step(batch, optimisers)
            self.step += 1
            for k, v in stats.items():
                if not math.isfinite(v):
                    raise FloatingPointError(
                        f"loss term {k!r} became {v} at epoch {epoch}; lower train.lr or check data"
                    )
                sums[k] = sums.get(k, 0.0) + v
            n += 1
            self.reporter.batch(stats)
        model.eval()
        if distributed.is_distributed():  # training losses over every process's batches
            sums, n = _merge_sums(distributed.all_gather_object((sums, n)))
        return {
            "epoch": epoch,
            "seconds": time.perf_counter() - t0,
            "batches": n,
            "train": {k: v / max(n, 1) for k, v in sums.items()},
        }

    def _log_scalars(self, epoch: int, record: dict[str, Any]) -> None:
        if self.tb is None:
            return
        for k, v in record.get("train", {}).items():
            self.tb.add_scalar(f"train/{k}", v, epoch)
        for k, v in record.get("valid", {}).items():
            self.tb.add_scalar(f"valid/{k}", v, epoch)


def _merge_sums(parts: list[tuple[dict[str, float], int]]) -> tuple[dict[str, float], int]:
    """Sum per-process loss sums and batch counts."""
    sums: dict[str, float] = {}
    for part, _ in parts:
        for k, v in part.items():
            sums[k] = sums.get(k, 0.0) + v
    return sums, sum(n for _, n in parts)


def _tensorboard(run_dir: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the optional `tb` extra is not installed
        return None
    return SummaryWriter(str(run_dir / "tb"))


def final_metrics(
    prepared: Prepared, reporter: Reporter | None = None, parts: tuple[str, ...] = ("valid", "test")
) -> dict[str, Any]:
    """Validation and test metrics of the current (best) weights under every configured protocol
    (``parts``: the splits to evaluate)."""
    cfg = prepared.cfg
    reporter = reporter or Reporter()
    out: dict[str, Any] = {}
    for part in parts:
        t0 = time.perf_counter()
        out[part] = evaluate(
            prepared.model,
            prepared.split,
            part,
            protocols=tuple(cfg.eval.protocols),
            ks=tuple(sorted(set(cfg.eval.ks))),
            mask=cfg.eval.mask,
            batch_size=cfg.eval.batch_size,
            progress=reporter.eval_progress(),
            retrieval=cfg.eval.retrieval_options(),
            metrics=tuple(cfg.eval.metrics),
        )
        out[part]["eval_seconds"] = time.perf_counter() - t0
    return out


def _run_meta(cfg: RunConfig, prepared: Prepared, status: str) -> dict[str, Any]:
    from polyrec import __version__

    return {
        "polyrec": __version__,
        "status": status,
        "model": cfg.model,
        "dataset": prepared.log.name,
        "dataset_path": cfg.data.path,
        "dataset_fingerprint": prepared.log.fingerprint(),
        "device": str(prepared.device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "updated": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def train_run(
    cfg: RunConfig,
    run_dir: Path,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    test: bool = True,
) -> dict[str, Any]:
    """Train (or resume) a run in ``run_dir`` and write its metrics; returns metrics.json's dict.

    ``test=False`` leaves the test split alone (``"test": null`` in metrics.json): a trial of
    ``polyrec tune`` is judged on validation only, and the chosen one is tested after selection.
    Under torchrun every process calls this; rank 0 writes the run directory and evaluates, and
    every process returns rank 0's result.
    """
    with distributed.process_group(run_device(cfg)):
        return _train_run(cfg, run_dir, resume=resume, reporter=reporter, test=test)


def _train_run(
    cfg: RunConfig, run_dir: Path, *, resume: bool, reporter: Reporter | None, test: bool = True
) -> dict[str, Any]:
    reporter = (reporter if distributed.is_main() else None) or Reporter()
    # rank 0 claims the run directory (a lock file taken with O_EXCL) before anything is
    # written: of two processes given the same --out, one trains and the other stops
    lock = claim_dir(run_dir) if distributed.is_main() else None
    try:
        if lock is not None and not resume and any(p.name != LOCK for p in run_dir.iterdir()):
            raise DataError(
                f"run directory {str(run_dir)!r} is not empty; choose another --out or continue "
                "it with --resume"
            )
        prepared = prepare(cfg, run_dir, reuse_split=resume)
        # every process has checked (and read) the run directory before rank 0 writes into it
        distributed.barrier()
        if lock is not None:
            stale = remove_temporaries(run_dir)  # left by a process killed mid-write
            if stale:
                reporter.message(f"removed {len(stale)} temporary file(s) of a killed write")
            saved = run_dir / "config.toml"
            if not resume or saved.read_text() != to_toml(cfg):  # resumed with new stop rules
                atomic_write_text(saved, to_toml(cfg))
            if not resume or not (run_dir / "split.npz").exists():
                prepared.split.save(run_dir / "split")
            atomic_write_text(
                run_dir / "run.json", json.dumps(_run_meta(cfg, prepared, "training"), indent=2)
            )
        trainer = Trainer(prepared, run_dir, reporter)
        state = trainer.fit(resume=resume)
        result = distributed.run_on_main(
            functools.partial(_finish_run, prepared, trainer, state, reporter, test)
        )
        if lock is not None:
            remove_temporaries(run_dir)
        return result
    finally:
        if lock is not None:
            release_dir(lock)


def _finish_run(
    prepared: Prepared, trainer: Trainer, state: dict[str, Any], reporter: Reporter, test: bool
) -> dict[str, Any]:
    """Final validation and test metrics of the best weights; writes metrics.json (rank 0)."""
    cfg, run_dir = prepared.cfg, trainer.run_dir
    parts = ("valid", "test") if test else ("valid",)
    reporter.message(
        "evaluating the best weights on validation" + (" and test" if test else " (no test)")
    )
    metrics = final_metrics(prepared, reporter, parts)
    result = {
        "model": cfg.model,
        "dataset": prepared.log.name,
        "protocol": {
            "split": prepared.split.describe(),
            "selection": f"best validation {cfg.train.select_protocol} {trainer.metric_key}",
            "seed": cfg.seed,
            "mask": cfg.eval.mask,
        },
        "best_epoch": state["best_epoch"],
        "best_valid": state["best_value"] if math.isfinite(state["best_value"]) else None,
        "epochs_run": state["epoch"],
        "stopped": state["stopped"],
        "train_seconds": state["train_seconds"],
        "history": state["history"],
        "valid": metrics["valid"],
        "test": metrics.get("test"),
    }
    atomic_write_text(run_dir / "metrics.json", json.dumps(result, indent=2))
    atomic_write_text(run_dir / "run.json", json.dumps(_run_meta(cfg, prepared, "done"), indent=2))
    return result


def load_run(run_dir: Path) -> Prepared:
    """Rebuild a finished (or interrupted) run with its best weights."""
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {str(run_dir)!r} does not exist")
    if not (run_dir / "config.toml").exists():
        raise CheckpointError(f"{str(run_dir)!r} is not a polyrec run (no config.toml)")
    cfg = load_config(run_dir / "config.toml")
    prepared = prepare(cfg, run_dir, reuse_split=True)
    best = run_dir / BEST
    if not best.exists():
        raise CheckpointError(
            f"run {str(run_dir)!r} has no {BEST}: it never finished an evaluation"
        )
    load_weights(best, prepared.model)
    prepared.model.eval()
    return prepared
