"""LightGCN speed against RecBole 1.2.1 on Retailrocket, in one run on the same machine.

Measures polyrec's LightGCN (d = 64, 3 layers, batch 2,048, Adam lr 1e-3, target-only training,
early stopping on validation full-ranking NDCG@10 with patience 10): seconds per training epoch,
seconds per full-ranking evaluation of all test users, peak memory, and validation / test HR@10
and NDCG@10 (full ranking and sampled 1+99). When a RecBole interpreter is available it also runs
RecBole's LightGCN on the exact same split with the same settings (``_recbole_runner.py``) and
reports both sides, the epoch-time ratio and the NDCG@10 gap. Not a test.

    python benchmarks/speed.py                 # full run: 5 seeds per side (~5-15 min, 2 cores)
    python benchmarks/speed.py --quick         # smoke run: 1 seed, 3 epochs, no result files
    python benchmarks/speed.py --skip-recbole  # polyrec only
    python benchmarks/speed.py --wait-idle 120 # on a shared machine: start runs when it is quiet

Every run (one per side and seed; sides alternate seed by seed) is its own child process with
``--threads`` torch threads, so the peak memory (``ru_maxrss``) of one never includes another.
Results go to ``benchmarks/results/speed-lightgcn-retailrocket.json`` (``polyrec-bench/1``;
``--out-dir`` to change; the markdown beside it: ``polyrec report benchmarks/results
--markdown``). See benchmarks/README.md for setting up the RecBole interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "_recbole_runner.py"
DEFAULT_RB_VENV = Path("/work/rb-venv/bin/python")
DATASET = "embedded:retailrocket"
RB_NAME = "retailrocket-buy"
NAME = "speed-lightgcn-retailrocket"

# the settings both sides share (RecBole's LightGCN.yaml: reg_weight 1e-5; d, layers, batch, lr
# as in the issue)
DIM, LAYERS, BATCH, LR, REG, PATIENCE, SEED = 64, 3, 2048, 1e-3, 1e-5, 10, 2024


# --------------------------------------------------------------------------------------- helpers
# ------------------------------------------------------------------------------- polyrec (child)
def _ours_config(epochs: int, threads: int, seed: int = SEED) -> Any:
    from polyrec.config import load_config

    return load_config(
        None,
        [
            "model=lightgcn",
            f"seed={seed}",
            f"data.path={json.dumps(DATASET)}",
            'data.protocol="leave-one-out"',
            f"params.dim={DIM}",
            f"params.n_layers={LAYERS}",
            f"params.reg={REG}",
            'params.behaviors="target"',
            f"train.batch_size={BATCH}",
            f"train.lr={LR}",
            'train.optimizer="adam"',
            f"train.epochs={epochs}",
            f"train.patience={PATIENCE}",
            'train.metric="ndcg@10"',
            'train.select_protocol="full"',
            'train.device="cpu"',
            f"train.threads={threads}",
            "eval.ks=[10, 20]",
            'eval.protocols=["full", "sampled"]',
            'eval.mask="target"',
            "eval.batch_size=1024",
        ],
    )


def _write_atomic(prepared: Any, out: Path) -> dict[str, Any]:
    """RecBole atomic files (benchmark_filename train/valid/test + .item) of the exact split."""
    import numpy as np

    split = prepared.split
    d = out / RB_NAME
    d.mkdir(parents=True, exist_ok=True)
    # the distinct target pairs polyrec trains on (its BPR pairs and its graph)
    tu, ti = prepared.data.pairs(split.train.target)

    def write(name: str, users: np.ndarray, items: np.ndarray) -> None:
        lines = ["user_id:token\titem_id:token"]
        lines += [f"{u}\t{i}" for u, i in zip(users.tolist(), items.tolist(), strict=True)]
        (d / f"{RB_NAME}.{name}.inter").write_text("\n".join(lines) + "\n")

    write("train", tu, ti)
    write("valid", split.valid.user, split.valid.item)
    write("test", split.test.user, split.test.item)
    # every item of the dataset, so that RecBole's item universe (ranking, negative sampling,
    # embedding table) is polyrec's too, not only the items seen in the buy files
    n_items = split.train.n_items
    (d / f"{RB_NAME}.item").write_text(
        "item_id:token\n" + "\n".join(str(i) for i in range(n_items)) + "\n"
    )
    arrays = {}
    for part in ("valid", "test"):
        h = getattr(split, part)
        arrays[f"{part}_user"] = h.user
        arrays[f"{part}_item"] = h.item
        if h.negatives is not None:
            arrays[f"{part}_negatives"] = np.asarray(h.negatives, dtype=np.int64)
    np.savez(d / "negatives.npz", **arrays)
    return {
        "dir": str(d),
        "train_pairs": len(tu),
        "valid_pairs": len(split.valid.user),
        "test_pairs": len(split.test.user),
        "n_items": n_items,
    }


def run_ours(args: argparse.Namespace) -> None:
    """Child process: train polyrec's LightGCN to early stop, time it, write ours.json."""
    t_import = time.perf_counter()
    import torch

    from polyrec.eval.evaluator import evaluate
    from polyrec.training.trainer import Trainer, final_metrics, prepare

    t_import = time.perf_counter() - t_import
    work = Path(args.work_dir)
    cfg = _ours_config(args.epochs, args.threads, args.seed)
    t0 = time.perf_counter()
    prepared = prepare(cfg)
    setup_seconds = time.perf_counter() - t0
    atomic = _write_atomic(prepared, work / "atomic") if args.write_atomic else None

    run_dir = work / "ours-run"
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(prepared, run_dir)
    epoch_cpu: list[float] = []
    orig_epoch = trainer._epoch

    def cpu_timed_epoch(*a: Any, **kw: Any) -> dict[str, Any]:
        c = time.process_time()
        rec = orig_epoch(*a, **kw)
        epoch_cpu.append(time.process_time() - c)
        return rec

    trainer._epoch = cpu_timed_epoch  # type: ignore[method-assign]
    t0 = time.perf_counter()
    state = trainer.fit()
    trainer._epoch = orig_epoch  # type: ignore[method-assign]
    fit_seconds = time.perf_counter() - t0
    metrics = final_metrics(prepared)

    model, split = prepared.model, prepared.split
    eval_seconds: dict[str, list[float]] = {"test": [], "valid": []}
    for part, times in eval_seconds.items():
        for _ in range(max(1, args.eval_reps)):
            t = time.perf_counter()
            evaluate(
                model,
                split,
                part,
                protocols=("full",),
                ks=(10, 20),
                mask="target",
                batch_size=cfg.eval.batch_size,
            )
            times.append(time.perf_counter() - t)
    test_seconds, valid_seconds = eval_seconds["test"], eval_seconds["valid"]
    peak = _bench.peak_rss_mib()  # before profiling (the profiler's own buffers would count)
    full_check = _full_check(prepared)

    history = state["history"]
    epoch_seconds = [float(r["seconds"]) for r in history]
    in_fit_eval = [float(r["eval_seconds"]) for r in history if "eval_seconds" in r]
    profile: dict[str, Any] = {}
    if args.profile:
        quiet = _bench.wait_idle(args.wait_idle, tag="speed") if args.wait_idle else None
        profile = _profile_epoch(trainer, prepared, len(history) + 1)
        profile["machine_before"] = quiet

    out = {
        "side": "polyrec",
        "seed": cfg.seed,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "config": cfg.model_dump(mode="json"),
        "split": split.describe(),
        "atomic": atomic,
        "n_users": split.train.n_users,
        "n_items": split.train.n_items,
        "train_pairs": len(prepared.data.pairs(split.train.target)[0]),
        "batches_per_epoch": history[0]["batches"] if history else None,
        "import_seconds": t_import,
        "setup_seconds": setup_seconds,
        "fit_seconds": fit_seconds,
        "epochs_run": state["epoch"],
        "epoch_cap_hit": state["stopped"] == "max epochs",
        "stopped": state["stopped"],
        "best_epoch": state["best_epoch"],
        "epoch_seconds": epoch_seconds,
        "epoch_seconds_median": _bench.median(epoch_seconds),
        "epoch_seconds_mean": _bench.mean(epoch_seconds),
        "epoch_cpu_seconds": epoch_cpu,
        "epoch_cpu_seconds_median": _bench.median(epoch_cpu),
        "fit_other_seconds": fit_seconds - sum(epoch_seconds) - sum(in_fit_eval),
        "valid_eval_seconds_in_fit": in_fit_eval,
        "valid_eval_seconds_median": _bench.median(valid_seconds),
        "valid_eval_seconds": valid_seconds,
        "test_eval_seconds": test_seconds,
        "test_eval_seconds_median": _bench.median(test_seconds),
        "peak_rss_mib": peak,
        "best_valid_score": state["best_value"],
        "valid": metrics["valid"]["metrics"],
        "test": metrics["test"]["metrics"],
        "history": [
            {
                "epoch": r["epoch"],
                "seconds": r["seconds"],
                "loss": r["train"].get("loss"),
                "valid_ndcg@10": r.get("valid", {}).get("ndcg@10"),
            }
            for r in history
        ],
        "profile": profile,
        "full_check": full_check,
    }
    (work / "ours.json").write_text(json.dumps(out, indent=2))


def _full_check(prepared: Any) -> dict[str, Any]:
    """Full-ranking HR/NDCG of polyrec's model by the runner's independent code (same for both)."""
    import importlib.util

    import numpy as np
    import torch

    spec = importlib.util.spec_from_file_location("_recbole_runner", RUNNER)
    assert spec is not None and spec.loader is not None
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    model, split = prepared.model, prepared.split
    tr = split.train
    tmask = tr.mask_behavior(tr.target)
    tu, ti = tr.user[tmask], tr.item[tmask]
    n_items = tr.n_items

    def score_fn(users: np.ndarray) -> torch.Tensor:
        with torch.no_grad():
            return model.scores(torch.from_numpy(users).to(model.device)).cpu()

    model.eval()
    with torch.no_grad():
        model.prepare_scoring()
    v, t = split.valid, split.test
    return {
        "valid": runner.full_ranking_check(score_fn, v.user, v.item, tu, ti, n_items, [10, 20]),
        "test": runner.full_ranking_check(
            score_fn, t.user, t.item, np.r_[tu, v.user], np.r_[ti, v.item], n_items, [10, 20]
        ),
    }


def _profile_epoch(trainer: Any, prepared: Any, epoch: int) -> dict[str, Any]:
    """torch.profiler and cProfile top lines of one more training epoch (after all timings)."""
    import cProfile
    import io
    import pstats

    import torch
    from torch.profiler import ProfilerActivity, profile

    cfg, model = prepared.cfg, prepared.model
    optimisers = model.make_optimisers(cfg.train.lr, cfg.train.weight_decay, cfg.train.optimizer)
    gen = torch.Generator().manual_seed(cfg.seed)
    trainer._epoch(epoch, gen, optimisers)  # warm the fresh optimisers
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        rec = trainer._epoch(epoch + 1, gen, optimisers)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    pr = cProfile.Profile()
    pr.enable()
    rec2 = trainer._epoch(epoch + 2, gen, optimisers)
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(15)
    lines = s.getvalue().strip().splitlines()
    # drop pstats' header noise up to the column titles
    start = next((k for k, ln in enumerate(lines) if ln.lstrip().startswith("ncalls")), 0)
    return {
        "torch_profiler_epoch_seconds": rec["seconds"],
        "torch_profiler_top": table,
        "cprofile_epoch_seconds": rec2["seconds"],
        "cprofile_top": "\n".join(lines[start:]),
    }


# -------------------------------------------------------------------------------------- parent
def _find_recbole_python(explicit: str | None) -> tuple[str | None, str]:
    if explicit:
        if not Path(explicit).exists():
            return None, f"--recbole-python {explicit!r} does not exist"
        return explicit, "given with --recbole-python"
    try:
        import importlib.util

        if importlib.util.find_spec("recbole") is not None:
            return sys.executable, "recbole importable from the current interpreter"
    except (ImportError, ValueError):
        pass
    if DEFAULT_RB_VENV.exists():
        return str(DEFAULT_RB_VENV), "the default RecBole venv"
    return None, (
        "RecBole skipped: `import recbole` fails here and /work/rb-venv/bin/python does not exist "
        "(see benchmarks/README.md, or pass --recbole-python)"
    )


METRIC_KEYS = [
    (part, proto, metric)
    for part in ("valid", "test")
    for proto in ("full", "sampled", "check")
    for metric in ("hr@10", "ndcg@10")
]


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One side's figures over its runs (one per seed): pooled timings, metrics mean ± sd."""
    pool = lambda key: [float(x) for r in runs for x in r.get(key) or []]  # noqa: E731
    epochs, cpu = pool("epoch_seconds"), pool("epoch_cpu_seconds")
    test_eval, valid_eval = pool("test_eval_seconds"), pool("valid_eval_seconds")
    out: dict[str, Any] = {
        "runs": len(runs),
        "seeds": [r.get("seed") for r in runs],
        "epoch_seconds_median": _bench.median(epochs),
        "epoch_seconds_mean": _bench.mean(epochs),
        "epoch_seconds_min": min(epochs) if epochs else None,
        "epoch_seconds_median_per_run": [r.get("epoch_seconds_median") for r in runs],
        "epoch_cpu_seconds_median": _bench.median(cpu),
        "test_eval_seconds_median": _bench.median(test_eval),
        "valid_eval_seconds_median": _bench.median(valid_eval),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        "epochs_run": [r["epochs_run"] for r in runs],
        "best_epoch": [r["best_epoch"] for r in runs],
        "epoch_cap_hit": any(r.get("epoch_cap_hit") for r in runs),
        "batches_per_epoch": runs[0].get("batches_per_epoch"),
        "fit_seconds_mean": _bench.mean([r["fit_seconds"] for r in runs]),
        "fit_other_seconds_mean": _bench.mean([r["fit_other_seconds"] for r in runs]),
        "setup_seconds_mean": _bench.mean([r["setup_seconds"] for r in runs]),
        "other_cpu_load": [r.get("contention", {}).get("other_cpu_load") for r in runs],
        "metrics": {},
    }
    for r in runs:  # the independent check as protocol "check"
        for part, m in (r.get("full_check") or {}).items():
            r.setdefault(part, {})["check"] = m
    for part, proto, metric in METRIC_KEYS:
        vals = [r[part][proto][metric] for r in runs if metric in r.get(part, {}).get(proto, {})]
        if vals:
            out["metrics"][f"{part}/{proto}/{metric}"] = {
                "mean": _bench.mean(vals),
                "sd": _bench.sd(vals),
                "per_seed": vals,
            }
    return out


def compare(so: dict[str, Any], sr: dict[str, Any]) -> dict[str, Any]:
    """RecBole / polyrec time ratios and the test NDCG@10 gap (with its standard error)."""
    paired = [
        r / o
        for o, r in zip(
            so["epoch_seconds_median_per_run"], sr["epoch_seconds_median_per_run"], strict=False
        )
        if o and r
    ]
    mo, mr = so["metrics"]["test/full/ndcg@10"], sr["metrics"]["test/full/ndcg@10"]
    n = min(len(mo["per_seed"]), len(mr["per_seed"]))
    gap = 100.0 * (mo["mean"] - mr["mean"]) / mr["mean"] if mr["mean"] else float("nan")
    se = None
    if n > 1 and mo["sd"] is not None and mr["sd"] is not None and mr["mean"]:
        se = 100.0 * ((mo["sd"] ** 2 + mr["sd"] ** 2) / n) ** 0.5 / mr["mean"]
    ratio = sr["epoch_seconds_median"] / so["epoch_seconds_median"]
    out = {
        "epoch_ratio_median": ratio,
        "epoch_ratio_mean": sr["epoch_seconds_mean"] / so["epoch_seconds_mean"],
        "epoch_ratio_min": sr["epoch_seconds_min"] / so["epoch_seconds_min"],
        "epoch_ratio_paired_per_seed": paired,
        "epoch_cpu_ratio_median": (
            sr["epoch_cpu_seconds_median"] / so["epoch_cpu_seconds_median"]
            if so.get("epoch_cpu_seconds_median") and sr.get("epoch_cpu_seconds_median")
            else None
        ),
        "test_eval_ratio": sr["test_eval_seconds_median"] / so["test_eval_seconds_median"],
        "peak_memory_ratio": sr["peak_rss_mib"] / so["peak_rss_mib"],
        "fit_ratio": sr["fit_seconds_mean"] / so["fit_seconds_mean"],
        "ndcg10_gap_pct": gap,
        "ndcg10_gap_se_pct": se,
        "speed_goal": ratio >= 3.0,
        "accuracy_goal": gap >= -3.0,
    }
    out["goal_met"] = out["speed_goal"] and out["accuracy_goal"]
    return out


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _metric_cell(s: dict[str, Any], part: str, proto: str) -> str:
    cells = []
    for metric in ("hr@10", "ndcg@10"):
        m = s["metrics"].get(f"{part}/{proto}/{metric}")
        if m is None:
            cells.append("–")
        elif m["sd"] is None:
            cells.append(f"{m['mean']:.4f}")
        else:
            cells.append(f"{m['mean']:.4f} ± {m['sd']:.4f}")
    return " / ".join(cells)


MEASURES: list[tuple[str, Any]] = [  # the rows of the results table: (label, key)
    ("s / training epoch (median of all epochs)", ("epoch_seconds_median", 3)),
    ("s / training epoch (mean)", ("epoch_seconds_mean", 3)),
    ("s / training epoch (fastest)", ("epoch_seconds_min", 3)),
    ("CPU s / training epoch (median, all threads)", ("epoch_cpu_seconds_median", 3)),
    (
        "s / full-ranking test evaluation, all test users (median)",
        ("test_eval_seconds_median", 3),
    ),
    ("s / full-ranking validation evaluation (median)", ("valid_eval_seconds_median", 3)),
    ("peak memory of the process, MiB (ru_maxrss, max over runs)", ("peak_rss_mib", 0)),
    ("s to early stop (epochs + validations + overhead, mean)", ("fit_seconds_mean", 1)),
    ("s of that outside epochs and validations (mean)", ("fit_other_seconds_mean", 1)),
    ("epochs run per seed", "epochs_run"),
    ("best epoch per seed", "best_epoch"),
    ("batches per epoch", ("batches_per_epoch", 0)),
    ("valid HR@10 / NDCG@10, full ranking", ("valid", "full")),
    ("test HR@10 / NDCG@10, full ranking", ("test", "full")),
    ("valid HR@10 / NDCG@10, 1+99 sampled", ("valid", "sampled")),
    ("test HR@10 / NDCG@10, 1+99 sampled", ("test", "sampled")),
    ("valid HR@10 / NDCG@10, full, shared check code", ("valid", "check")),
    ("test HR@10 / NDCG@10, full, shared check code", ("test", "check")),
]


def report(res: dict[str, Any]) -> _bench.Doc:
    m = res["machine"]
    so, sr = res["summary"]["polyrec"], res["summary"].get("recbole")
    ours_runs = res["ours"]
    doc = _bench.Doc("LightGCN on Retailrocket: polyrec vs RecBole 1.2.1")
    lines = [
        f"- Machine: {m['cpu_model']}, {m['cores']} cores, {m['platform']}; "
        f"torch {m['torch']}, Python {m['python']}; {res['threads']} torch threads per side; "
        f"load average {res['loadavg_start']} at start, {res['loadavg_end']} at end.",
        f"- RecBole: {res['recbole_note']}",
        f"- Runs: seeds {', '.join(str(x) for x in res['seeds'])}; for each seed polyrec and then "
        "RecBole, each in its own process (sides alternate, so load from other processes hits "
        "both alike).",
    ]
    for label, s in (("polyrec", so), ("RecBole", sr)):
        if s and any(x is not None for x in s["other_cpu_load"]):
            loads = ", ".join(_fmt(x, 2) for x in s["other_cpu_load"])
            lines.append(
                f"- Other processes' CPU use while the {label} runs ran (of {m['cores']} CPUs, "
                f"per run): {loads}."
            )
    doc.text("\n".join(lines + [f"- {p}" for p in res["protocol"]]))
    doc.section("Results")
    if res.get("comparison"):
        c = res["comparison"]
        se = c["ndcg10_gap_se_pct"]
        doc.text(
            f"**RecBole / polyrec seconds per training epoch: {c['epoch_ratio_median']:.2f}×** "
            f"(medians over all epochs of all runs; per-seed ratios "
            f"{', '.join(f'{x:.2f}' for x in c['epoch_ratio_paired_per_seed'])}; fastest epochs "
            f"{c['epoch_ratio_min']:.2f}×; CPU time {_fmt(c['epoch_cpu_ratio_median'], 2)}×). "
            f"Full-ranking test evaluation {c['test_eval_ratio']:.2f}×, peak memory "
            f"{c['peak_memory_ratio']:.2f}×, time to early stop {c['fit_ratio']:.2f}×.",
            f"**Test NDCG@10 (full ranking), polyrec vs RecBole: {c['ndcg10_gap_pct']:+.1f}%**"
            + (f" (± {se:.1f}% standard error over seeds)" if se is not None else "")
            + ". Goal — polyrec's epoch ≤ 1/3 of RecBole's at NDCG@10 within 3%: "
            f"**{'met' if c['goal_met'] else 'not met'}** (speed "
            f"{'yes' if c['speed_goal'] else 'no'}, accuracy "
            f"{'yes' if c['accuracy_goal'] else 'no'}).",
        )
    doc.table(["measure", "polyrec", "RecBole 1.2.1"])
    for label, key in MEASURES:
        cells = []
        for s in (so, sr):
            if s is None:
                cells.append("–")
            elif isinstance(key, str):
                cap = " (epoch cap hit)" if key == "epochs_run" and s["epoch_cap_hit"] else ""
                cells.append(", ".join(str(x) for x in s[key]) + cap)
            elif key[0] in ("valid", "test"):
                cells.append(_metric_cell(s, *key))
            else:
                v = s.get(key[0])
                cells.append(_fmt(float(v) if v is not None else None, key[1]))
        doc.row(label, *cells)
    doc.text(
        "Metrics are mean ± sd over the seeds (test = the best-validation weights). The "
        "'shared check code' rows recompute full ranking for both models with one function "
        "(`_recbole_runner.full_ranking_check`: training pairs masked, plus validation pairs at "
        "test; plain top-k) to confirm the two libraries' evaluators measure the same thing."
    )
    if res.get("notes"):
        doc.section("Notes").text("\n".join(f"- {n}" for n in res["notes"]))
    prof = next((r.get("profile") for r in ours_runs if r.get("profile")), None)
    if prof:
        quiet = prof.get("machine_before") or {}
        busy = f"; machine {quiet['busy_fraction']:.0%} busy just before" if quiet else ""
        doc.section("Profile of one polyrec training epoch").text(
            f"torch.profiler (the epoch took {prof['torch_profiler_epoch_seconds']:.3f} s under "
            f"the profiler{busy}), sorted by self CPU time:",
            f"```\n{prof['torch_profiler_top'].rstrip()}\n```",
            f"cProfile (the epoch took {prof['cprofile_epoch_seconds']:.3f} s), top 15 by own "
            "time:",
            f"```\n{prof['cprofile_top'].rstrip()}\n```",
        )
    per_run = [
        f"- {label}, seed {r.get('seed')}: " + ", ".join(f"{t:.3f}" for t in r["epoch_seconds"])
        for label, runs in (("polyrec", ours_runs), ("RecBole", res.get("recbole") or []))
        for r in runs
    ]
    doc.section("Seconds per epoch, per run").text("\n".join(per_run))
    return doc


def _protocol_lines(ours: dict[str, Any], epochs: int, rb_epochs: int) -> list[str]:
    sp = ours["split"]
    return [
        f"Data: {DATASET} (Retailrocket view/cart/buy as preprocessed by HKUDS), "
        f"{ours['n_users']:,} users × {ours['n_items']:,} items; target buy; both sides train on "
        "buy only (polyrec `params.behaviors=target`; RecBole gets the buy pairs only).",
        f"Split: polyrec leave-one-out: test = the published held-out buy per user "
        f"({sp['test_users']:,} users), validation = each user's latest remaining buy for users "
        f"who keep ≥ 1 buy in train ({sp['valid_users']:,} users); "
        f"{ours['train_pairs']:,} distinct training buy pairs."
        + (
            " RecBole reads the very same pairs as benchmark files (train/valid/test .inter) "
            "plus a .item file listing every item, so both rank, and draw negatives from, the "
            f"same {ours['n_items']:,} items."
            if ours.get("atomic")
            else ""
        ),
        f"Model: LightGCN d = {DIM}, {LAYERS} layers, batch {BATCH}, Adam lr {LR:g}, L2 weight "
        f"{REG:g} on the batch's ego embeddings, BPR with 1 uniform negative per positive "
        "(never one of the user's training buys), Xavier-uniform init.",
        f"Selection: early stopping on validation full-ranking NDCG@10, patience {PATIENCE}, "
        f"at most {epochs} epochs (RecBole: {rb_epochs}); the best validation weights are evaluated once on test. The same seeds on both "
        "sides (the two libraries draw different random numbers from them).",
        "Full ranking: every item scored; the user's training buys masked (at test also the "
        "validation buy); HR@10 and NDCG@10 averaged over users. Sampled 1+99: polyrec's stored "
        "99 negatives per held-out pair (never-bought items, drawn with the seed), the same "
        "candidates scored for both models, ties against the positive.",
        "Timing: seconds per training epoch = the batch loop only (negative sampling, forward, "
        "backward, optimiser step; polyrec: the trainer's history records, RecBole: a wrapper "
        "around `Trainer._train_epoch`); evaluation = one full-ranking pass over all test users, "
        "graph propagation included, repeated with the best weights.",
    ]


def _run_seed(
    args: argparse.Namespace,
    seed: int,
    first: bool,
    rb_python: str | None,
    work: Path,
    env: dict[str, str],
    epochs: int,
    rb_epochs: int,
    eval_reps: int,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str | None]:
    """One seed: polyrec, then RecBole. Returns (ours, recbole, error)."""
    wd = work / f"seed{seed}"
    wd.mkdir(parents=True, exist_ok=True)
    if args.wait_idle:
        _bench.wait_idle(args.wait_idle, tag="speed")
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--worker", "ours",
        "--work-dir", str(wd), "--threads", str(args.threads), "--epochs", str(epochs),
        "--eval-reps", str(eval_reps), "--seed", str(seed), "--wait-idle", str(args.wait_idle),
    ]  # fmt: skip
    if rb_python:
        cmd.append("--write-atomic")
    if first and not args.no_profile:
        cmd.append("--profile")
    rc, wall, cont = _bench.run_child(
        cmd, env, wd / "ours.log", f"polyrec seed {seed}", tag="speed"
    )
    if rc != 0 or not (wd / "ours.json").exists():
        return (
            None,
            None,
            f"polyrec seed {seed} failed (exit {rc}):\n{_bench.tail(wd / 'ours.log')}",
        )
    ours = json.loads((wd / "ours.json").read_text())
    ours["wall_seconds"], ours["contention"] = wall, cont
    if not rb_python:
        return ours, None, None
    if args.wait_idle:
        _bench.wait_idle(args.wait_idle, tag="speed")
    cmd = [
        rb_python, str(RUNNER), "--data-dir", str(wd / "atomic"), "--dataset", RB_NAME,
        "--threads", str(args.threads), "--epochs", str(rb_epochs), "--seed", str(seed),
        "--dim", str(DIM), "--layers", str(LAYERS), "--batch-size", str(BATCH),
        "--lr", str(LR), "--reg", str(REG), "--patience", str(PATIENCE),
        "--eval-reps", str(eval_reps),
    ]  # fmt: skip
    if args.recbole_require_pow:
        cmd.append("--require-pow")
    rc, wall, cont = _bench.run_child(
        cmd, env, wd / "recbole.log", f"recbole seed {seed}", tag="speed"
    )
    rb = _bench.last_json_line(wd / "recbole.log") if rc == 0 else None
    if rb is None:
        return (
            ours,
            None,
            f"RecBole seed {seed} failed (exit {rc}):\n{_bench.tail(wd / 'recbole.log')}",
        )
    rb["seed"], rb["wall_seconds"], rb["contention"] = seed, wall, cont
    return ours, rb, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: 3 epochs, 1 seed per side")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per side (default 2)")
    ap.add_argument("--skip-recbole", action="store_true", help="measure polyrec only")
    ap.add_argument(
        "--epochs", type=int, default=None,
        help="maximum epochs per run (default 300, RecBole's default; --quick: 3)",
    )  # fmt: skip
    ap.add_argument(
        "--recbole-epochs", type=int, default=None,
        help="cap RecBole's epochs separately (default: --epochs)",
    )  # fmt: skip
    ap.add_argument(
        "--seeds", type=int, default=None,
        help=f"runs per side with seeds {SEED}, {SEED + 1}, … (default 5; --quick: 1)",
    )  # fmt: skip
    ap.add_argument("--recbole-python", default=None, help="interpreter with recbole==1.2.1")
    ap.add_argument(
        "--recbole-require-pow", action="store_true",
        help="RecBole's L2 term as Σ‖e‖²/(2B) (polyrec's form) instead of its default Σ‖e‖/B",
    )  # fmt: skip
    ap.add_argument("--eval-reps", type=int, default=None, help="timed evaluations (default 5)")
    ap.add_argument("--no-profile", action="store_true", help="skip the profile of one epoch")
    ap.add_argument(
        "--wait-idle", type=float, default=0.0, metavar="SECONDS",
        help="before each run (and the profile), wait up to SECONDS for the machine's CPUs to be "
        "at most 15%% busy (for shared machines)",
    )  # fmt: skip
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary work folder")
    ap.add_argument("--worker", choices=["ours"], help=argparse.SUPPRESS)
    ap.add_argument("--work-dir", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    ap.add_argument("--write-atomic", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else (3 if args.quick else 300)
    eval_reps = args.eval_reps if args.eval_reps is not None else (2 if args.quick else 5)
    n_seeds = args.seeds if args.seeds is not None else (1 if args.quick else 5)

    if args.worker == "ours":
        args.epochs, args.eval_reps = epochs, eval_reps
        run_ours(args)
        return 0

    date = _bench.now_utc()
    rb_python, rb_note = (None, "skipped (--skip-recbole)")
    if not args.skip_recbole:
        rb_python, rb_note = _find_recbole_python(args.recbole_python)
    rb_epochs = args.recbole_epochs if args.recbole_epochs is not None else epochs
    seeds = [SEED + k for k in range(max(1, n_seeds))]
    work = Path(tempfile.mkdtemp(prefix="polyrec-speed-"))
    env = _bench.child_env(args.threads)
    load_start = os.getloadavg()
    notes: list[str] = []
    ours_runs: list[dict[str, Any]] = []
    rb_runs: list[dict[str, Any]] = []
    try:
        for k, seed in enumerate(seeds):
            ours, rb, err = _run_seed(
                args, seed, k == 0, rb_python, work, env, epochs, rb_epochs, eval_reps
            )
            if ours is None:
                print(err, file=sys.stderr)
                return 1
            ours_runs.append(ours)
            if rb is not None:
                rb_runs.append(rb)
            elif err:
                print(err, file=sys.stderr)
                notes.append(err.replace("\n", "\n  "))
                rb_note = f"{rb_python}: the RecBole run failed; see the notes"
                rb_python = None  # do not retry on the next seeds
        load_end = os.getloadavg()

        so = aggregate(ours_runs)
        sr = aggregate(rb_runs) if rb_runs else None
        if rb_runs:
            r0 = rb_runs[0]
            rb_note = (
                f"{rb_python} (recbole {r0['recbole']}, torch {r0['torch']}, numpy "
                f"{r0['numpy']}; {rb_note})"
            )
            if sr and sr["epoch_cap_hit"]:
                notes.append(
                    f"RecBole hit its epoch cap ({rb_epochs}) in at least one run: those runs "
                    "ended by the cap, not by early stopping."
                )
        if so["epoch_cap_hit"]:
            notes.append(f"polyrec hit its epoch cap ({epochs}) in at least one run.")
        comparison = compare(so, sr) if sr else None
        notes += [
            "Early stopping differs in one detail: RecBole counts a tie with the best as an "
            "improvement and stops after stopping_step + 1 epochs without one; polyrec needs a "
            "strict improvement and stops after `patience` epochs without one.",
            "L2 term: polyrec's is λ·Σ‖e⁽⁰⁾‖²/(2B) over the batch's ego embeddings; RecBole's "
            + (
                "is the same here (run with require_pow=True)."
                if args.recbole_require_pow
                else "default (require_pow=False, used here) is λ·Σ‖e⁽⁰⁾‖/B (norms, not "
                "squared), with the same λ; `--recbole-require-pow` makes it identical."
            ),
            "RecBole ranks with its own full-sort evaluator (ties in index order), polyrec "
            "breaks ties against the positive; with continuous scores this changes nothing.",
            "RecBole 1.2.1 reloads checkpoints with torch.load, which fails on torch ≥ 2.6: the "
            "runner trains with saved=False and restores the best validation weights itself. "
            "polyrec writes a checkpoint (weights, optimiser, RNG) every epoch and the best "
            "weights on improvement; that time is outside its epoch times, inside its fit time.",
            "Time to early stop includes one-off costs: polyrec's first Adam construction "
            "imports torch._dynamo (about 1.4 s here).",
            "Timings on a shared 2-core VM vary a lot with other processes (see the CPU use "
            "lines above); medians over all epochs of all seeds are the headline numbers.",
        ]
        if args.quick:
            notes.append("--quick: a smoke run with few epochs; numbers are not comparable.")

        res = {
            "name": NAME,
            "date": date,
            "machine": _bench.machine(),
            "command": _bench.command(__file__, argv),
            "threads": args.threads,
            "seeds": seeds,
            "loadavg_start": [round(x, 2) for x in load_start],
            "loadavg_end": [round(x, 2) for x in load_end],
            "recbole_note": rb_note,
            "settings": {
                "dim": DIM,
                "layers": LAYERS,
                "batch_size": BATCH,
                "lr": LR,
                "reg": REG,
                "patience": PATIENCE,
                "seeds": seeds,
                "max_epochs": epochs,
                "recbole_max_epochs": rb_epochs,
                "eval_reps": eval_reps,
                "recbole_require_pow": bool(args.recbole_require_pow),
                "threads": args.threads,
            },
            "protocol": _protocol_lines(ours_runs[0], epochs, rb_epochs),
            "summary": {"polyrec": so, "recbole": sr},
            "comparison": comparison,
            "notes": notes,
            "ours": ours_runs,
            "recbole": rb_runs,
        }
        _bench.emit(res, report(res), args.out_dir, args.quick, "speed", failures=[])
    finally:
        if args.keep_work:
            print(f"[speed] work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
