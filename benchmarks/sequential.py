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
import time
from pathlib import Path
from typing import Any

import _bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAME = "sequential"
MODELS = ["youtube-dnn", "gru4rec", "sasrec", "mind", "comirec-sa", "comirec-dr",
          "pop", "history", "itemknn", "ease"]  # fmt: skip
# EGCM's appendix baselines (issue 28), run with --models
EGCM_SEQ = ["caser", "hgn", "bert4rec", "tisasrec", "magnn", "sasrec-full"]
# a row that is a shipped model with other settings: name → (model, overrides). SASRec with the
# softmax over every item (Klenitskiy & Vasilev, RecSys 2023: then it matches or beats BERT4Rec)
VARIANTS: dict[str, tuple[str, list[str]]] = {"sasrec-full": ("sasrec", ['params.loss="full"'])}
# no training: fitted in closed form, scored from the held-out user's history alone
CLOSED_FORM = ("pop", "history", "itemknn", "ease")
# the strong baselines every sequential table carries (issue 22); the strongest is picked on
# validation Recall@50, never on test
SEQ_BASELINES = ("pop", "history", "itemknn", "ease", "sasrec")
# EASE's dense item × item matrices: Video Games' 23,715 items need about 6.7 GB
EASE_MEMORY = {"videogames": 10.0}
# name → (folder under --shared, file to import inside it or "" for the folder, format)
DATASETS: dict[str, tuple[str, str, str]] = {
    "beauty": ("seq-simrec-beauty", "", "simrec"),
    "yelp": ("seq-simrec-yelp", "", "simrec"),
    "videogames": ("seq-amazon-videogames-sasrec", "Video.txt", "sasrec-txt"),
}
METRICS = ["recall@20", "ndcg@20", "hr@20", "recall@50", "ndcg@50", "hr@50"]
VARIANT = ["ndcg_comirec@20", "ndcg_comirec@50"]


# --------------------------------------------------------------------------------- child (one run)
def spec_for(d: str, m: str, seed: int, data: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The child's job: the model's shipped config with the benchmark's overrides."""
    training = [
        f"train.epochs={args.max_epochs}",
        f"train.patience={args.patience}",
        f"params.batches_per_epoch={args.batches_per_epoch}",
    ]
    model, variant = VARIANTS.get(m, (m, []))
    if m in CLOSED_FORM:  # nothing to train; the sequential models' history length
        training = ["eval.max_len=20"]
        if m == "ease" and d in EASE_MEMORY:
            training.append(f"params.max_memory_gb={EASE_MEMORY[d]}")
    return {
        "name": f"{d}-{m}-{seed}",
        "dataset": d,
        "model": m,
        "seed": seed,
        "config": str(ROOT / "configs" / f"{model}-beauty.toml"),
        "overrides": [
            *variant,
            f"data.path={json.dumps(str(data))}",
            f"seed={seed}",
            'train.device="cpu"',
            *training,
            'eval.ndcg="both"',
            'eval.search="torch"',
        ],
        "eval_reps": args.eval_reps,
        "eval_protocols": ["retrieval"],
    }


def _legacy_worker_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Specs written by an older version of this script (one run still in flight)."""
    ns = argparse.Namespace(
        max_epochs=spec["epochs"],
        patience=spec["patience"],
        batches_per_epoch=spec["batches"],
        eval_reps=spec["eval_reps"],
    )
    new = spec_for(spec["dataset"], spec["model"], spec["seed"], Path(spec["data"]), ns)
    return {**new, "threads": spec["threads"], "run_dir": spec["run_dir"], "out": spec["out"]}


def _retrieval(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = metrics.get("retrieval", metrics)
    return out


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
        return [float(_retrieval(r[part])[key]) for r in runs if key in _retrieval(r[part])]

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


def interest_cell(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`aggregate` plus the mean pairwise cosine between a user's interests (Re4, HPCL4SR)."""
    agg = aggregate(runs)
    cos = [r["interest_cosine"] for r in runs if r.get("interest_cosine") is not None]
    agg["interest_cosine"] = {"mean": _bench.mean(cos), "sd": _bench.sd(cos), "n": len(cos)}
    return agg


def metric_cells(test: dict[str, Any], keys: list[str]) -> list[str]:
    return [_bench.fmt_mean_sd_from(test[k]["mean"], test[k]["sd"]) for k in keys]


def strongest_baseline(per_model: dict[str, Any]) -> str | None:
    """The sequential baseline (:data:`SEQ_BASELINES`) with the best validation Recall@50."""
    return _bench.strongest(
        {m: a["valid"]["recall@50"]["mean"] for m, a in per_model.items()}, SEQ_BASELINES
    )


def vs_baseline(doc: _bench.Doc, per_model: dict[str, Any]) -> str | None:
    """Name the table's strongest baseline in the text; returns it."""
    best = strongest_baseline(per_model)
    if best:
        doc.text(
            f"Strongest baseline (by validation Recall@50, among {', '.join(SEQ_BASELINES)}): "
            f"**{best}**; the last column is each model's test Recall@50 against it."
        )
    return best


def metrics_table(doc: _bench.Doc, per_model: dict[str, Any]) -> None:
    """Recall / NDCG / HR @20 and @50 and NDCG*@50 per model, and the gain against the
    strongest baseline."""
    best = vs_baseline(doc, per_model)
    base = per_model[best]["test"]["recall@50"]["mean"] if best else None
    keys = METRICS + VARIANT[1:]
    doc.table(["model", *(LABELS[k] for k in keys), "vs strongest baseline"])
    for model, a in per_model.items():
        gain = _bench.gain(a["test"]["recall@50"]["mean"], base) if model != best else ""
        doc.row(model, *metric_cells(a["test"], keys), gain)


LABELS = {"recall@20": "Recall@20", "ndcg@20": "NDCG@20", "hr@20": "HR@20",
          "recall@50": "Recall@50", "ndcg@50": "NDCG@50", "hr@50": "HR@50",
          "ndcg_comirec@50": "NDCG*@50"}  # fmt: skip


def report(res: dict[str, Any]) -> _bench.Doc:
    s = res["settings"]
    doc = _bench.Doc("Sequential and multi-interest models: ComiRec protocol, retrieval evaluation")
    doc.text(
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
        "Baselines without training (`pop`, `history`, `itemknn`, `ease`; issue 22) score each "
        "held-out user from the same history (the latest 20 items) and rank every item, ties "
        "broken against the held-out items; they run at their shipped defaults, not tuned "
        "(EASE λ = 500, ItemKNN k = 100 cosine, history: counts, no conversion rate). The "
        "sequential models run their papers' settings (no tuning here either); `sasrec-full` is "
        "SASRec with the softmax over every item instead of the sampled one (`params.loss = "
        "'full'`), the setting in which Klenitskiy & Vasilev (RecSys 2023) found it matching or "
        "beating BERT4Rec. Each table names "
        "its strongest baseline among " + ", ".join(SEQ_BASELINES) + ", chosen on validation "
        "Recall@50.",
    )
    for ds, per_model in res["results"].items():
        info = next(iter(per_model.values()))
        doc.section(f"{ds} ({info['n_items']:,} items, {info['test_users']:,} test users)")
        metrics_table(doc, per_model)
        doc.table(["model", "iterations / s (batch 128)", "test eval s (all users)",
                   "s to best (train + validation)", "best check", "stopped", "peak MiB"])  # fmt: skip
        for model, a in per_model.items():
            ips = a["iterations_per_second"]
            doc.row(
                model, "closed form" if ips is None else f"{ips:.1f}",
                f"{a['test_eval_seconds_median']:.2f}",
                f"{a['seconds_to_best_mean']:.0f}", ", ".join(map(str, a["best_epoch"])),
                ", ".join(sorted(set(a["stopped"]))), f"{a['peak_rss_mib_max']:.0f}",
            )  # fmt: skip
    return doc


SPLIT = "users 8:1:1, first 80 % of held-out users as history"


def results_rows(res: dict[str, Any], per_dataset: dict[str, Any]) -> list[dict[str, Any]]:
    """The HTML report's rows: per_dataset[dataset][model] with ``seeds`` and ``test``."""
    sel = str(res["settings"].get("selection", "validation"))
    rows = []
    for ds, per_model in per_dataset.items():
        cells = {m: a for m, a in per_model.items() if isinstance(a, dict) and "test" in a}
        best = strongest_baseline(cells)
        rows += [
            _bench.result_row(ds, model, "retrieval", sel, SPLIT, len(a["seeds"]), a["test"],
                              strongest=best)
            for model, a in cells.items()
        ]  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--datasets", default=",".join(DATASETS))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--seeds", type=int, default=3, help="runs per cell, seeds 2024, 2025, …")
    ap.add_argument("--max-epochs", type=int, default=60, help="validation checks at most")
    ap.add_argument("--patience", type=int, default=4, help="checks without improvement")
    ap.add_argument("--batches-per-epoch", type=int, default=500, help="iterations per check")
    _bench.add_run_options(
        ap, NAME, threads=2, jobs=1, eval_reps=3, quick_help="1 seed, 2 checks of 200 iterations"
    )
    args = ap.parse_args(argv)
    if args.worker:
        spec = json.loads(Path(args.worker).read_text())
        if "config" not in spec:
            spec = _legacy_worker_spec(spec)
            Path(args.worker).write_text(json.dumps(spec))
        return _bench.worker_main(["--worker", args.worker]) or 0

    if args.quick:
        args.seeds, args.max_epochs, args.batches_per_epoch, args.eval_reps = 1, 2, 200, 1
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for d in datasets:
        if d not in DATASETS:
            ap.error(f"unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
    for m in models:
        if m not in MODELS + EGCM_SEQ:
            ap.error(f"unknown model {m!r}; choose from {', '.join(MODELS + EGCM_SEQ)}")
    paths = {d: ensure_dataset(d, Path(args.shared), Path(args.data_root)) for d in datasets}
    seeds = [2024 + i for i in range(args.seeds)]
    specs = [
        spec_for(d, m, seed, paths[d], args) for seed in seeds for d in datasets for m in models
    ]
    t0 = time.perf_counter()
    runs, failures = _bench.run_specs(specs, __file__, args, _bench.keep_dir(args), "sequential")
    results: dict[str, dict[str, Any]] = {}
    for d in datasets:
        for m in models:
            cell = [r for r in runs if r["dataset"] == d and r["model"] == m]
            if cell:
                agg = aggregate(cell)
                c0 = cell[0]
                users = c0.get("test_users") or c0["split"]["test_users"]
                agg |= {"n_items": c0["n_items"], "test_users": users}
                results.setdefault(d, {})[m] = agg
    res = {
        **_bench.run_header(NAME, __file__, argv, t0),
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
    rows = results_rows(res, results)
    return _bench.emit(res, report(res), Path(args.out_dir), args.quick, NAME, rows)


if __name__ == "__main__":
    raise SystemExit(main())
