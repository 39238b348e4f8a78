"""Sequential / multi-interest reproduction and speed: six models × three datasets × seeds.

YouTube-DNN, GRU4Rec, SASRec, MIND, ComiRec-SA and ComiRec-DR on seq-simrec-beauty,
seq-simrec-yelp and seq-amazon-videogames-sasrec under the ComiRec protocol (users split 8:1:1 —
SimRec's published per-user split for Beauty and Yelp, a seeded split for Video Games; held-out
users give the first 80 % of their sequence as history and the rest as targets), retrieval
evaluation (each interest searches the item table exactly, per-interest top-N merged by score,
history items not excluded), Recall / NDCG / HR @20 and @50 with the standard NDCG and ComiRec's
variant (``ndcg_comirec``, IDCG over recalled positives) side by side. Each model uses its
shipped config (``configs/<model>-beauty.toml``: d = 64, K = 4, max length 20, batch 128, Adam
1e-3, sampled softmax with log-uniform negatives), one "epoch" = ``--batches-per-epoch``
iterations, early stopping on validation Recall@50 (never test). Not a test.

    python benchmarks/sequential.py                      # everything: 6 × 3 × 3 runs
    python benchmarks/sequential.py --quick              # smoke: 1 seed, 2 short epochs, no files
    python benchmarks/sequential.py --datasets beauty --models comirec-sa --seeds 1
    python benchmarks/sequential.py --jobs 2 --threads 1 # two runs at a time, one core each

Every run is its own child process (``--threads`` torch threads) so that its peak memory is its
own. Datasets are imported from ``--shared`` (default ``../shared/data``) into ``--data-root``
(default ``data/``, git-ignored) on first use. Results: ``benchmarks/results/sequential.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAME = "sequential"
MODELS = ["youtube-dnn", "gru4rec", "sasrec", "mind", "comirec-sa", "comirec-dr"]
# name → (folder under --shared, file to import inside it or "" for the folder, format)
DATASETS: dict[str, tuple[str, str, str]] = {
    "beauty": ("seq-simrec-beauty", "", "simrec"),
    "yelp": ("seq-simrec-yelp", "", "simrec"),
    "videogames": ("seq-amazon-videogames-sasrec", "Video.txt", "sasrec-txt"),
}
METRICS = ["recall@20", "ndcg@20", "hr@20", "recall@50", "ndcg@50", "hr@50"]
VARIANT = ["ndcg_comirec@20", "ndcg_comirec@50"]


# --------------------------------------------------------------------------------- child (one run)
def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from polyrec.config import load_config
    from polyrec.eval.evaluator import evaluate
    from polyrec.training.trainer import Reporter, Trainer, final_metrics, prepare

    torch.set_num_threads(spec["threads"])
    cfg = load_config(
        ROOT / "configs" / f"{spec['model']}-beauty.toml",
        [
            f"data.path={json.dumps(spec['data'])}",
            f"seed={spec['seed']}",
            f"train.epochs={spec['epochs']}",
            f"train.patience={spec['patience']}",
            f"train.threads={spec['threads']}",
            'train.device="cpu"',
            f"params.batches_per_epoch={spec['batches']}",
            'eval.ndcg="both"',
            'eval.search="torch"',
        ],
    )
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prepared = prepare(cfg, run_dir)
    setup = time.perf_counter() - t0
    trainer = Trainer(prepared, run_dir, Reporter())
    t0 = time.perf_counter()
    summary = trainer.fit()
    fit_wall = time.perf_counter() - t0
    result = final_metrics(prepared)
    # evaluation time for all test users, best weights, repeated (median)
    eval_times = []
    for _ in range(spec["eval_reps"]):
        t0 = time.perf_counter()
        evaluate(
            prepared.model,
            prepared.split,
            "test",
            protocols=("retrieval",),
            ks=(20, 50),
            batch_size=cfg.eval.batch_size,
            retrieval={"search": "torch"},
        )
        eval_times.append(time.perf_counter() - t0)
    hist = summary["history"]
    batches = sum(int(h.get("batches") or 0) for h in hist)
    train_s = sum(float(h["seconds"]) for h in hist)
    best = summary["best_epoch"]
    to_best = sum(
        float(h["seconds"]) + float(h.get("eval_seconds") or 0) for h in hist if h["epoch"] <= best
    )
    split = result["test"]["split"]
    return {
        "model": spec["model"],
        "dataset": spec["dataset"],
        "seed": spec["seed"],
        "best_epoch": best,
        "epochs_run": summary["epoch"],
        "stopped": summary["stopped"],
        "iterations": batches,
        "iterations_per_second": batches / train_s if train_s else None,
        "train_seconds": train_s,
        "fit_wall_seconds": fit_wall,
        "seconds_to_best": to_best,
        "setup_seconds": setup,
        "valid_eval_seconds": [float(h.get("eval_seconds") or 0) for h in hist],
        "test_eval_seconds": eval_times,
        "test_users": split["test_users"],
        "n_items": prepared.split.train.n_items,
        "split": split,
        "peak_rss_mib": _bench.peak_rss_mib(),
        "valid": result["valid"]["metrics"]["retrieval"],
        "test": result["test"]["metrics"]["retrieval"],
        "curve": [(h["epoch"], (h.get("valid") or {}).get("recall@50")) for h in hist],
    }


# ------------------------------------------------------------------------------------------- parent
def ensure_dataset(name: str, shared: Path, root: Path) -> Path:
    folder, file, fmt = DATASETS[name]
    out = root / folder
    if (out / "dataset.json").exists():
        return out
    src = shared / folder / file if file else shared / folder
    if not src.exists():
        raise SystemExit(f"dataset {name}: {src} not found (give --shared)")
    from polyrec.api import import_data

    root.mkdir(parents=True, exist_ok=True)
    print(f"[sequential] importing {src} → {out}", flush=True)
    import_data(src, out, fmt=fmt)
    return out


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def vals(part: str, key: str) -> list[float]:
        return [float(r[part][key]) for r in runs if key in r[part]]

    agg: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    for part in ("valid", "test"):
        agg[part] = {
            k: {"mean": _bench.mean(vals(part, k)), "sd": _bench.sd(vals(part, k))}
            for k in METRICS + VARIANT
        }
    ips = [r["iterations_per_second"] for r in runs if r["iterations_per_second"]]
    ev = [x for r in runs for x in r["test_eval_seconds"]]
    agg |= {
        "iterations_per_second": _bench.mean(ips),
        "test_eval_seconds_median": _bench.median(ev),
        "fit_wall_seconds_mean": _bench.mean([r["fit_wall_seconds"] for r in runs]),
        "seconds_to_best_mean": _bench.mean([r["seconds_to_best"] for r in runs]),
        "best_epoch": [r["best_epoch"] for r in runs],
        "stopped": [r["stopped"] for r in runs],
        "peak_rss_mib_max": max(r["peak_rss_mib"] for r in runs),
    }
    return agg


def markdown(res: dict[str, Any]) -> str:
    s = res["settings"]
    L = [
        "# Sequential and multi-interest models: ComiRec protocol, retrieval evaluation",
        "",
        f"Date {res['date']}; machine: {res['machine']['cpu_model']}, "
        f"{res['machine']['cores']} cores, torch {res['machine']['torch']}, "
        f"{s['threads']} torch thread(s) per run, {s['jobs']} run(s) at a time. "
        f"Command: `{res['command']}`.",
        "",
        "Protocol: users split 8:1:1 (Beauty, Yelp: SimRec's published per-user split; "
        "Video Games: seeded split); held-out users give the first 80 % of their sequence "
        "(max 20 items) as history and the remaining 20 % as targets; each of the model's K "
        "interests searches all items exactly, per-interest top-N merged by score; history items "
        "are not excluded (as ComiRec). Metrics averaged over test users. NDCG is the standard "
        "one; `NDCG*` is ComiRec's variant (IDCG over the positives recalled in the top N), "
        "reported because Re4 and ComiRec publish it. Model selection: best validation "
        f"Recall@50, checked every {s['batches_per_epoch']} iterations, patience "
        f"{s['patience']}, at most {s['max_epochs']} checks; test evaluated once with the best "
        f"weights. Seeds: {', '.join(map(str, s['seeds']))}; mean ± sd over seeds.",
        "",
    ]
    for ds, per_model in res["results"].items():
        info = next(iter(per_model.values()))
        L += [
            f"## {ds} ({info['n_items']:,} items, {info['test_users']:,} test users)",
            "",
            "| model | Recall@20 | NDCG@20 | HR@20 | Recall@50 | NDCG@50 | HR@50 | NDCG*@50 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for model, a in per_model.items():
            t = a["test"]
            cells = [
                _bench.fmt_mean_sd_from(t[k]["mean"], t[k]["sd"]) for k in METRICS + VARIANT[1:]
            ]
            L.append(f"| {model} | " + " | ".join(cells) + " |")
        L += [
            "",
            "| model | iterations / s (batch 128) | test eval s (all users) | "
            "s to best (train + validation) | best check | stopped | peak MiB |",
            "|---|---|---|---|---|---|---|",
        ]
        for model, a in per_model.items():
            L.append(
                f"| {model} | {a['iterations_per_second']:.1f} | "
                f"{a['test_eval_seconds_median']:.2f} | {a['seconds_to_best_mean']:.0f} | "
                f"{', '.join(map(str, a['best_epoch']))} | {', '.join(sorted(set(a['stopped'])))} "
                f"| {a['peak_rss_mib_max']:.0f} |"
            )
        L.append("")
    if res.get("failures"):
        L += ["## Failures", ""] + [f"- {f}" for f in res["failures"]] + [""]
    return "\n".join(L)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seeds", type=int, default=3, help="runs per cell, seeds 2024, 2025, …")
    ap.add_argument("--max-epochs", type=int, default=60, help="validation checks at most")
    ap.add_argument("--patience", type=int, default=4, help="checks without improvement")
    ap.add_argument("--batches-per-epoch", type=int, default=500, help="iterations per check")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time")
    ap.add_argument("--eval-reps", type=int, default=3)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data-root", default=str(ROOT / "data"))
    ap.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-sequential"))
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--quick", action="store_true", help="1 seed, 2 checks of 200 iterations")
    ap.add_argument("--resume", action="store_true", help="reuse finished runs found in --work-dir")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        spec = json.loads(Path(args.worker).read_text())
        out = run_worker(spec)
        tmp = Path(spec["out"] + ".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(spec["out"])
        return 0

    if args.quick:
        args.seeds, args.max_epochs, args.batches_per_epoch, args.eval_reps = 1, 2, 200, 1
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for d in datasets:
        if d not in DATASETS:
            ap.error(f"unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; choose from {', '.join(MODELS)}")
    paths = {d: ensure_dataset(d, Path(args.shared), Path(args.data_root)) for d in datasets}
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    env = _bench.child_env(args.threads)
    seeds = [2024 + i for i in range(args.seeds)]
    jobs = [(d, m, s) for d in datasets for s in seeds for m in models]

    def one(job: tuple[str, str, int]) -> tuple[tuple[str, str, int], dict[str, Any] | str]:
        d, m, s = job
        tag = f"{d}-{m}-{s}"
        spec = {
            "model": m, "dataset": d, "data": str(paths[d]), "seed": s,
            "epochs": args.max_epochs, "patience": args.patience,
            "batches": args.batches_per_epoch, "threads": args.threads,
            "eval_reps": args.eval_reps, "run_dir": str(work / tag),
            "out": str(work / f"{tag}.json"),
        }  # fmt: skip
        if args.resume and Path(spec["out"]).exists():
            print(f"[sequential] {tag}: reusing {spec['out']}", flush=True)
            return job, json.loads(Path(spec["out"]).read_text())
        spec_path = work / f"{tag}.spec.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)]
        rc, wall, cont = _bench.run_child(cmd, env, work / f"{tag}.log", tag, tag="sequential")
        if rc != 0:
            return job, f"{tag} failed (exit {rc}):\n{_bench.tail(work / f'{tag}.log')}"
        out = json.loads(Path(spec["out"]).read_text())
        out["wall_seconds"], out["contention"] = wall, cont
        return job, out

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = list(pool.map(one, jobs))
    runs = [r for _, r in done if isinstance(r, dict)]
    failures = [r for _, r in done if isinstance(r, str)]
    for f in failures:
        print(f, file=sys.stderr)
    results: dict[str, dict[str, Any]] = {}
    for d in datasets:
        for m in models:
            cell = [r for r in runs if r["dataset"] == d and r["model"] == m]
            if cell:
                agg = aggregate(cell)
                agg |= {"n_items": cell[0]["n_items"], "test_users": cell[0]["test_users"]}
                results.setdefault(d, {})[m] = agg
    res = {
        "name": NAME,
        "date": _bench.now_utc(),
        "machine": _bench.machine(),
        "command": "python benchmarks/sequential.py " + " ".join(argv or sys.argv[1:]),
        "wall_seconds": time.perf_counter() - t0,
        "settings": {
            "seeds": seeds,
            "max_epochs": args.max_epochs,
            "patience": args.patience,
            "batches_per_epoch": args.batches_per_epoch,
            "threads": args.threads,
            "jobs": args.jobs,
            "batch_size": 128,
            "selection": "validation recall@50",
        },
        "results": results,
        "runs": runs,
        "failures": failures,
    }
    md = markdown(res)
    print(md)
    if not args.quick:
        for p in _bench.write_results(Path(args.out_dir), NAME, res, md):
            print(f"[sequential] wrote {p}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
