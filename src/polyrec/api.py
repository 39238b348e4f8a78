"""The Python verbs (the CLI is a thin layer over these).

>>> import polyrec
>>> result = polyrec.train(model="mf", overrides=["train.epochs=5"])   # doctest: +SKIP
>>> result["test"]["metrics"]["full"]["ndcg@10"]                      # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from polyrec.config import RunConfig, load_config
from polyrec.data.datasets import load_dataset
from polyrec.data.importers import import_path
from polyrec.data.log import IdMap, InteractionLog
from polyrec.errors import ConfigError, DataError
from polyrec.eval.protocols import PairIndex, masked_topk
from polyrec.fsutil import LOCK, make_parent, temporary_sibling
from polyrec.models.base import InterestModel, Scorer
from polyrec.models.registry import list_models
from polyrec.training.trainer import Reporter, final_metrics, load_run, train_run

PathLike = str | os.PathLike[str]


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    name = Path(cfg.data.path.replace("embedded:", "")).name or "data"
    base = Path("runs") / f"{cfg.model}-{name}-{stamp}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


def _fixed(model: str | None, data: PathLike | None, protocol: str | None) -> dict[str, Any]:
    """The config values given by dedicated options (model, data folder, protocol)."""
    return {
        "model": model,
        "data__path": None if data is None else str(data),
        "data__protocol": protocol,
    }


def _fresh_dir(out: PathLike | None, default: Path, what: str) -> Path:
    """``out`` (or ``default``), which must be empty (a lock file left by a killed process does
    not count); missing parent folders are created (``--out runs/x`` on a fresh clone)."""
    path = default if out is None else Path(out)
    make_parent(path)
    if path.exists() and not path.is_dir():
        raise DataError(f"{what} {str(path)!r} is a file")
    if path.exists() and any(p.name != LOCK for p in path.iterdir()):
        raise DataError(
            f"{what} {str(path)!r} is not empty; choose another --out or continue it with --resume"
        )
    return path


# what a resumed run may change: when and how it stops and where it runs, never the model,
# the data, the split or the optimisation
RESUME_OVERRIDES = (
    "train.epochs",
    "train.patience",
    "train.min_epochs",
    "train.eval_every",
    "train.threads",
    "train.device",
    "eval.batch_size",
)


def _resume_overrides(cfg: RunConfig, run_dir: Path, overrides: list[str]) -> RunConfig:
    """The saved config with ``overrides`` applied, if they only touch :data:`RESUME_OVERRIDES`
    (a :class:`DataError` naming the first other key); the new config replaces the saved one."""
    new = load_config(run_dir / "config.toml", overrides)
    old_flat, new_flat = _flat(cfg.model_dump(mode="json")), _flat(new.model_dump(mode="json"))
    changed = sorted(
        k for k in old_flat.keys() | new_flat.keys() if old_flat.get(k) != new_flat.get(k)
    )
    refused = [k for k in changed if k not in RESUME_OVERRIDES]
    if refused:
        raise DataError(
            f"--resume cannot change {refused[0]!r} (it changes the model, the data or the "
            f"training); a resumed run may change {', '.join(RESUME_OVERRIDES)}"
        )
    return new  # the run writes it to config.toml once it holds the run directory


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key != "params":
            out |= _flat(v, key + ".")
        else:
            out[key] = v
    return out


def train(
    model: str | None = None,
    data: PathLike | None = None,
    *,
    protocol: str | None = None,
    config: PathLike | None = None,
    overrides: Sequence[str] = (),
    out: PathLike | None = None,
    resume: PathLike | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train a model and return its metrics (also written to ``RUN_DIR/metrics.json``).

    ``resume`` continues a killed run from its last checkpoint, to the same final metrics as an
    uninterrupted run (identical on CPU).
    """
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.toml").exists():
            raise DataError(f"cannot resume {str(run_dir)!r}: it is not a polyrec run directory")
        cfg = load_config(run_dir / "config.toml")
        if model or data or protocol or config:
            raise DataError(
                "--resume continues a run with its saved config; give no --model, --data, "
                f"--protocol or --config (overrides of {', '.join(RESUME_OVERRIDES)} are allowed)"
            )
        if overrides:
            cfg = _resume_overrides(cfg, run_dir, list(overrides))
        return train_run(cfg, run_dir, resume=True, reporter=reporter)
    cfg = load_config(config, list(overrides), **_fixed(model, data, protocol))
    run_dir = _fresh_dir(out, default_run_dir(cfg), "run directory")
    result = train_run(cfg, run_dir, reporter=reporter)
    result["run_dir"] = str(run_dir)
    return result


def tune(
    model: str | None = None,
    data: PathLike | None = None,
    *,
    protocol: str | None = None,
    config: PathLike | None = None,
    overrides: Sequence[str] = (),
    out: PathLike | None = None,
    resume: PathLike | None = None,
    trials: int | None = None,
    minutes: float | None = None,
    reporter: Any = None,
) -> dict[str, Any]:
    """Search the ``[tune.space]`` of a config on the validation split (Optuna TPE); returns
    ``OUT/tune.json``'s content plus ``tune_dir`` (see :mod:`polyrec.tuning`).

    Every trial is a training run in ``OUT/trial-NNN/``, judged by its best validation
    ``tune.metric`` under ``train.select_protocol``; the best trial's test metrics are computed
    once, after selection. ``trials``/``minutes`` replace the config's budget (``tune.trials``
    is the study's total). ``resume`` continues an interrupted study in that folder (finished
    trials are kept; a trial killed mid-way runs again once); it takes no other option than
    ``trials`` and ``minutes``. Needs optuna (``pip install "polyrec[tune]"``).
    """
    from polyrec import tuning
    from polyrec.config import load_tune_config

    budget = {k: v for k, v in {"trials": trials, "minutes": minutes}.items() if v is not None}
    if resume is not None:
        tune_dir = Path(resume)
        if model or data or protocol or config or overrides or out:
            raise DataError(
                "--resume continues a study with its saved config; give no other options than "
                "--trials and --minutes"
            )
        cfg, settings = tuning.load(tune_dir)
    else:
        if config is None:
            raise ConfigError(
                "polyrec tune needs a config file (--config) with a [tune] table and a "
                "[tune.space] of keys to search"
            )
        cfg, settings = load_tune_config(config, list(overrides), **_fixed(model, data, protocol))
        run_dir = default_run_dir(cfg)
        tune_dir = _fresh_dir(out, run_dir.with_name(f"tune-{run_dir.name}"), "tune directory")
    if budget:
        from pydantic import ValidationError

        try:
            settings = settings.model_validate({**settings.model_dump(), **budget})
        except ValidationError as e:
            first = e.errors()[0]
            key = ".".join(str(p) for p in first["loc"]) or "budget"
            raise ConfigError(f"--{key}: {first['msg']}") from None
        settings.space = tuning.check_space(settings, cfg)
    if resume is None:
        tuning.start(cfg, settings, tune_dir)
    result = tuning.run_study(tune_dir, cfg, settings, reporter=reporter)
    result["tune_dir"] = str(tune_dir)
    return result


def evaluate(run_dir: PathLike, *, reporter: Reporter | None = None) -> dict[str, Any]:
    """Re-evaluate a run's best weights on its saved split (validation and test)."""
    prepared = load_run(Path(run_dir))
    out = final_metrics(prepared, reporter)
    out["model"] = prepared.cfg.model
    out["dataset"] = prepared.log.name
    return out


def _read_users(path: Path) -> list[str]:
    if not path.exists():
        raise DataError(f"users file {str(path)!r} does not exist")
    if path.suffix == ".parquet":
        table = pl.read_parquet(path)
        if "user" not in table.columns:
            raise DataError(f"users file {str(path)!r} has no 'user' column")
        values = [str(v) for v in table["user"].to_list()]
    else:
        lines = [ln.strip() for ln in path.read_text().splitlines()]
        values = [ln.split(",")[0].strip() for ln in lines if ln]
        if values and values[0] == "user":
            values = values[1:]
    if not values:
        raise DataError(f"users file {str(path)!r} is empty")
    return values


UNKNOWN_USERS = ("error", "skip", "popular")


def _known_users(user_map: IdMap, ext: list[Any], unknown: str = "error") -> np.ndarray:
    """Dense codes of the users in ``ext``. Users not in the dataset: an error
    (``unknown="error"``), or left out (``"skip"``, ``"popular"``: the caller adds them)."""
    if unknown not in UNKNOWN_USERS:
        raise DataError(f"unknown must be one of {', '.join(UNKNOWN_USERS)} (got {unknown!r})")
    dense = user_map.to_dense(ext, what="user", strict=False)
    missing = [u for u, d in zip(ext, dense, strict=True) if d < 0]
    if missing and unknown == "error":
        raise DataError(
            f"{len(missing)} of {len(ext)} users are not in the dataset (first: {missing[0]!r}); "
            "--unknown popular gives them the most popular items, --unknown skip leaves them out"
        )
    return dense[dense >= 0]


def _unknown_rows(
    user_map: IdMap, item_map: IdMap, ext: list[Any], popularity: np.ndarray, k: int
) -> pl.DataFrame:
    """The popularity fallback of the users ``ext`` has that ``user_map`` lacks: the ``k`` most
    popular items (training target interactions), marked ``fallback``."""
    dense = user_map.to_dense(ext, what="user", strict=False)
    missing = [u for u, d in zip(ext, dense, strict=True) if d < 0]
    top = np.argsort(-popularity, kind="stable")[:k]
    n = len(missing)
    return pl.DataFrame(
        {
            "user": [u for u in missing for _ in range(len(top))],
            "rank": np.tile(np.arange(1, len(top) + 1), n),
            "item": item_map.to_external(np.tile(top, n)).tolist(),
            "score": np.tile(popularity[top].astype(np.float32), n),
            "fallback": np.ones(n * len(top), dtype=bool),
        }
    )


def _with_fallback(frame: pl.DataFrame, extra: pl.DataFrame | None) -> pl.DataFrame:
    frame = frame.with_columns(pl.lit(False).alias("fallback"))
    if extra is None or not extra.height:
        return frame
    if frame.height == 0:
        return extra
    if extra.schema["user"] != frame.schema["user"]:  # int ids beside a text one: all text
        frame = frame.with_columns(pl.col("user").cast(pl.String))
        extra = extra.with_columns(pl.col("user").cast(pl.String))
    extra = extra.with_columns(
        pl.col("item").cast(frame.schema["item"]),
        pl.col("rank").cast(frame.schema["rank"]),
        pl.col("score").cast(frame.schema["score"]),
    )
    return pl.concat([frame, extra])


OUTPUT_FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".jsonl": "jsonl"}


def _output_format(out_path: Path) -> str:
    """The format of a recommendations file, from its extension (no silent default)."""
    fmt = OUTPUT_FORMATS.get(out_path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"output file {str(out_path)!r}: cannot tell the format from "
            f"{out_path.suffix or 'no extension'!r}; end it in .parquet, .csv or .jsonl"
        )
    return fmt


def _write_frame(frame: pl.DataFrame, out_path: Path | None) -> pl.DataFrame:
    if out_path is not None:
        fmt = _output_format(out_path)
        make_parent(out_path)  # only now: a failed call leaves no folder behind
        tmp = temporary_sibling(out_path)
        try:
            if fmt == "csv":
                frame.write_csv(tmp)
            elif fmt == "jsonl":
                frame.write_ndjson(tmp)
            else:
                frame.write_parquet(tmp)
            os.replace(tmp, out_path)
        finally:
            tmp.unlink(missing_ok=True)
    return frame


def _recommend_bundle(
    bundle: Any,
    ext: list[Any],
    k: int,
    exclude_seen: bool,
    batch_size: int,
    search: str,
    unknown: str = "error",
) -> pl.DataFrame:
    """Top-k of known users from an export (or a run's in-memory export)."""
    from polyrec.exporting import Recommender

    dense = _known_users(bundle.user_map, ext, unknown)
    rec = Recommender(bundle, max_k=max(k, 1), search=search)  # type: ignore[arg-type]
    items, scores, _ = rec.topk_users(dense, k, exclude_seen=exclude_seen, batch_size=batch_size)
    keep = items >= 0
    frame = pl.DataFrame(
        {
            "user": bundle.user_map.to_external(np.repeat(dense, keep.sum(axis=1))).tolist(),
            "rank": np.broadcast_to(np.arange(1, items.shape[1] + 1), items.shape)[keep],
            "item": bundle.item_map.to_external(items[keep]).tolist(),
            "score": scores[keep].astype(np.float32),
        }
    )
    extra = None
    if unknown == "popular":
        pop = bundle.popularity.numpy()
        extra = _unknown_rows(bundle.user_map, bundle.item_map, ext, pop, min(k, bundle.n_items))
    return _with_fallback(frame, extra)


def recommend(
    run_dir: PathLike,
    users: Sequence[Any] | PathLike,
    *,
    k: int = 20,
    exclude_seen: bool = True,
    out: PathLike | None = None,
    batch_size: int = 1024,
    search: str = "auto",
    unknown: str = "error",
) -> pl.DataFrame:
    """Top-``k`` items per user (external ids) as a DataFrame ``user, rank, item, score,
    fallback``.

    ``run_dir`` is a run directory (``polyrec train``) or an export directory (``polyrec
    export``); both give the same lists. ``users`` is a list of external user ids or a file (one
    id per line, or CSV/Parquet with a ``user`` column). Seen items (removed unless
    ``exclude_seen=False``) are every item the user has in the target behavior anywhere in the
    dataset. Interest models embed each user's latest history (every split); a user without
    any history item gets the most popular items. ``search`` (exports only): ``"auto"`` uses the
    export's faiss index when faiss is installed, ``"torch"`` exact torch search. ``unknown``:
    what users not in the dataset get — ``"error"`` (the call fails, naming them), ``"skip"``
    (left out) or ``"popular"`` (the most popular items, ``fallback`` true, as ``polyrec
    serve`` answers them). The output format follows ``out``'s extension: ``.parquet``,
    ``.csv`` or ``.jsonl``.
    """
    if k <= 0:
        raise DataError(f"k must be positive (got {k})")
    out_path = Path(out) if out is not None else None
    if out_path is not None and out_path.is_dir():
        raise DataError(f"output file {str(out_path)!r} is a folder")
    if out_path is not None:
        _output_format(out_path)  # before any work
    from polyrec.exporting import bundle_from_run, is_export_dir, load_export

    ext = _read_users(Path(users)) if isinstance(users, str | os.PathLike) else list(users)
    if is_export_dir(run_dir):
        bundle = load_export(run_dir)
        frame = _recommend_bundle(bundle, ext, k, exclude_seen, batch_size, search, unknown)
        return _write_frame(frame, out_path)
    prepared = load_run(Path(run_dir))
    log, model = prepared.log, prepared.model
    if isinstance(model, InterestModel):
        bundle = bundle_from_run(run_dir, prepared)
        frame = _recommend_bundle(bundle, ext, k, exclude_seen, batch_size, "torch", unknown)
        return _write_frame(frame, out_path)
    if not isinstance(model, Scorer):
        raise DataError(f"model {prepared.cfg.model!r} does not score users (not a Scorer)")
    dense = _known_users(log.user_map, ext, unknown)
    k = min(k, log.n_items)
    # seen = every target-behavior pair of the user in the whole log (train, valid and test)
    t = log.behavior == log.target_code
    seen = PairIndex.from_pairs(
        log.user[t] if exclude_seen else log.user[:0],
        log.item[t] if exclude_seen else log.item[:0],
        log.n_users,
        log.n_items,
        model.device,
    )
    rows_u, rows_i, rows_s = [], [], []
    with torch.no_grad():
        model.prepare_scoring()
        for start in range(0, len(dense), batch_size):
            b = torch.from_numpy(dense[start : start + batch_size]).to(model.device)
            s = model.scores(b).float()
            top = masked_topk(s, b, seen, k)
            rows_u.append(np.repeat(b.cpu().numpy(), k))
            rows_i.append(top.cpu().numpy().ravel())
            rows_s.append(torch.gather(s, 1, top).cpu().numpy().ravel())
    u = np.concatenate(rows_u) if rows_u else np.zeros(0, dtype=np.int64)
    i = np.concatenate(rows_i) if rows_i else np.zeros(0, dtype=np.int64)
    frame = pl.DataFrame(
        {
            "user": log.user_map.to_external(u).tolist(),
            "rank": np.tile(np.arange(1, k + 1), len(dense)),
            "item": log.item_map.to_external(i).tolist(),
            "score": np.concatenate(rows_s) if rows_s else np.zeros(0, dtype=np.float32),
        }
    )
    extra = None
    if unknown == "popular":  # training target interactions per item
        train = prepared.split.train
        t = train.behavior == train.target_code
        pop = np.bincount(train.item[t], minlength=log.n_items).astype(np.float64)
        extra = _unknown_rows(log.user_map, log.item_map, ext, pop, k)
    return _write_frame(_with_fallback(frame, extra), out_path)


def export(
    run_dir: PathLike,
    out: PathLike,
    *,
    index: str = "flat",
    force: bool = False,
    **index_options: Any,
) -> dict[str, Any]:
    """Export a run's best weights for serving to ``out`` (atomically); returns the manifest.

    ``index``: ``"flat"`` (exact inner product; faiss IndexFlatIP, or torch search when faiss
    is absent), ``"ivf"`` or ``"hnsw"`` (approximate faiss indexes for large catalogues; their
    recall@K against exact search is measured and stored in the manifest). ``index_options``
    are :class:`polyrec.exporting.IndexConfig` fields (``nprobe=32``, ``ef_search=256``, …).
    ``force`` replaces an existing export at ``out``.
    """
    from pydantic import ValidationError

    from polyrec.exporting import IndexConfig, export_run

    out_path = Path(out)
    make_parent(out_path)
    try:
        cfg = IndexConfig(type=index, **index_options)
    except ValidationError as e:
        first = e.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        msg = "unknown option" if first["type"] == "extra_forbidden" else first["msg"]
        raise ConfigError(f"export index option {key!r}: {msg}") from None
    return export_run(run_dir, out_path, index=cfg, force=force)


def import_data(
    path: PathLike,
    out: PathLike,
    *,
    fmt: str | None = None,
    name: str | None = None,
    **options: Any,
) -> InteractionLog:
    """Import a foreign log (see ``polyrec.data.importers.FORMATS``) into a dataset directory.

    The dataset is named ``name`` (default: the output folder's name, not the input file's)."""
    out_path = Path(out)
    log = import_path(path, fmt, **options)
    log = replace(log, name=name or out_path.name)
    log.save(out_path)  # creates missing parent folders
    return log


def data_info(spec: PathLike) -> dict[str, Any]:
    """Per-behavior counts, users, items, density, time span of a dataset directory."""
    return load_dataset(str(spec)).stats()


def models() -> list[dict[str, Any]]:
    """Every registered model with its paper."""
    return list_models()
