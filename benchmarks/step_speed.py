"""Training-step and evaluation speed of polyrec models, measured so that a busy machine shows.

Each case (model config × overrides × torch threads) runs in its own child process: the model is
built from its shipped config, ``--warmup`` batches are trained and discarded, then ``--epochs``
timed passes (an epoch of the model's own batches, or ``--iterations`` batches for the
iteration-based sequential models) and ``--eval-reps`` timed evaluations of every test user
(the config's selection protocol). Both wall seconds and the process's CPU seconds are recorded:
on a shared machine the wall time of a 1-thread case is inflated by the other jobs, while its CPU
time is what the same work costs on an idle core (an upper bound on the idle 1-thread wall time).
Peak memory is the child's ``ru_maxrss``. Not a test.

    python benchmarks/step_speed.py --suite cml          # CML on Retailrocket, d 16 and 32, 1/2 threads
    python benchmarks/step_speed.py --suite sequential   # six sequential models × three datasets
    python benchmarks/step_speed.py --suite re4          # Re4-SA/-DR against their backbones
    python benchmarks/step_speed.py --suite hpcl4sr      # HPCL4SR, REMI, ComiRec-DR vs ComiRec-SA
    python benchmarks/step_speed.py --suite egcm         # EGCM at 2 slot lengths × 2 data sizes vs CML
    python benchmarks/step_speed.py --suite multibehavior --threads 2 --epochs 1 --eval-reps 1
                                                         # cascades, MuLe, MB-Hybrid vs LightGCN-all
    python benchmarks/step_speed.py --suite cml --quick  # smoke: 1 timed pass, no files

Results: ``benchmarks/results/step-speed-<suite>.{json,md}``. The ``cml`` suite prints the
official implementation's figures from ``../shared/ANCHORS.md`` beside ours (they are not re-run).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import _bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# Official CML (weiwei1206/CML @ dd84acd) on Retailrocket, 2-core CPU of this machine class
# (../shared/ANCHORS.md): anomaly detection off, as shipped, evaluation, peak memory.
CML_OFFICIAL = {"epoch_s": 10.6, "epoch_s_shipped": 14.3, "eval_s": 4.0, "peak_mib": 1434}
CML_GOAL = {"epoch_s": 1.0, "eval_s": 0.4}
SEQ_MODELS = [
    "youtube-dnn",
    "gru4rec",
    "sasrec",
    "mind",
    "comirec-sa",
    "comirec-dr",
    "caser",
    "hgn",
    "bert4rec",
    "tisasrec",
    "magnn",
]
RE4_MODELS = ["comirec-sa", "re4-sa", "comirec-dr", "re4-dr"]  # backbone, then Re4 on it
RE4_GOAL = 1.5  # Re4's step time at most 1.5× its backbone's (issue goal)
HPCL4SR_MODELS = ["comirec-sa", "comirec-dr", "remi", "hpcl4sr"]  # ComiRec-SA is the reference
EGCM_SLOTS = (30.0, 15.0)
# suites timed per full epoch (others per --iterations batches)
EPOCH_SUITES = ("cml", "egcm", "multibehavior")
# issue 23: every multi-behavior model's epoch ≤ 2× LightGCN-all's on the same data, and the
# top-20 of every JData user in < 60 s on 2 cores
MB_MODELS = [
    "lightgcn-all",
    "mbcgcn",
    "crgcn",
    "mule",
    "mbhybrid",
    "ehcf",
    "ngcf",
    "nmtr",
    "pinsage",
    "hgt",
    "heco",
    "matn",
    "khgt",
]  # the reference first
MB_DATA = ("retailrocket", "jdata")
MB_EPOCH_GOAL = 2.0
MB_TOPK, MB_TOPK_GOAL_S = 20, 60.0
SEQ_DATA = {
    "beauty": "data/seq-simrec-beauty",
    "yelp": "data/seq-simrec-yelp",
    "videogames": "data/seq-amazon-videogames-sasrec",
}


def cases(suite: str, threads: list[int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if suite == "cml":
        for dim in (16, 32):
            for th in threads:
                out.append(
                    {
                        "name": f"cml-d{dim}-t{th}",
                        "group": "retailrocket",
                        "label": f"CML d={dim}",
                        "config": str(ROOT / "configs" / "cml-retailrocket.toml"),
                        "overrides": [f"params.dim={dim}"],
                        "threads": th,
                    }
                )
    elif suite in ("sequential", "re4"):
        models = SEQ_MODELS if suite == "sequential" else RE4_MODELS
        for ds, path in SEQ_DATA.items():
            for m in models:
                for th in threads:
                    out.append(
                        {
                            "name": f"{ds}-{m}-t{th}",
                            "group": ds,
                            "label": m,
                            "config": str(ROOT / "configs" / f"{m}-beauty.toml"),
                            "overrides": [
                                f"data.path={json.dumps(str(ROOT / path))}",
                                'eval.search="torch"',
                            ],
                            "threads": th,
                        }
                    )
    elif suite == "egcm":
        data = {"full": "embedded:retailrocket", "half": str(half_retailrocket())}
        for size, path in data.items():
            base = [f"data.path={json.dumps(path)}", 'eval.protocols=["sampled"]']
            variants = [
                ("cml", "CML", []),
                ("egcm", f"EGCM slot {EGCM_SLOTS[0]:g}d", [f"data.slot_days={EGCM_SLOTS[0]}"]),
                ("egcm", f"EGCM slot {EGCM_SLOTS[1]:g}d", [f"data.slot_days={EGCM_SLOTS[1]}"]),
            ]
            for model, label, extra in variants:
                for th in threads:
                    out.append(
                        {
                            "name": f"{size}-{label.lower().replace(' ', '-')}-t{th}",
                            "group": f"retailrocket {size}",
                            "label": label,
                            "config": str(ROOT / "configs" / f"{model}-retailrocket.toml"),
                            "overrides": [*base, *extra],
                            "threads": th,
                        }
                    )
    elif suite == "multibehavior":
        out += multibehavior_cases(threads)
    elif suite == "hpcl4sr":
        import hpcl4sr

        ml = hpcl4sr.ensure_ml100k(ROOT / "data")
        for m in HPCL4SR_MODELS:
            own = m in hpcl4sr.OWN_CONFIG
            cfg = ROOT / "configs" / (f"{m}-ml100k.toml" if own else f"{m}-beauty.toml")
            for th in threads:
                out.append(
                    {
                        "name": f"ml100k-{m}-t{th}",
                        "group": "ml-100k",
                        "label": m,
                        "config": str(cfg),
                        "overrides": [
                            f"data.path={json.dumps(str(ml))}",
                            f"params.max_len={hpcl4sr.MAX_LEN}",
                            'eval.search="torch"',
                        ],
                        "threads": th,
                    }
                )
    else:
        raise SystemExit(f"unknown suite {suite!r}")
    return out


def multibehavior_cases(threads: list[int]) -> list[dict[str, Any]]:
    """The multi-behavior models on each dataset of ``MB_DATA`` with the settings of the
    multi-behavior table (``benchmarks/multibehavior.py``: its configs, data and per-model
    overrides), each also timing the top-20 of every user."""
    import multibehavior as mb

    out = []
    for ds in MB_DATA:
        data = mb.ensure_dataset(ds, ROOT.parent / "shared" / "data", ROOT / "data")
        for m in MB_MODELS:
            base, extra = mb.VARIANTS.get(m, (m, []))
            for th in threads:
                out.append(
                    {
                        "name": f"mb-{ds}-{m}-t{th}",
                        "group": ds,
                        "label": m,
                        "config": str(mb.config_for(base, ds)),
                        "overrides": [
                            f"data.path={json.dumps(data)}",
                            'train.select_protocol="full"',
                            *[o for o in extra if not o.startswith("train.")],
                            *mb.DATA_OVERRIDES.get(ds, []),
                            *mb.MODEL_DATA_OVERRIDES.get((m, ds), []),
                            *(mb.hybrid_knn(ds) if m == "mbhybrid" else []),
                        ],
                        "threads": th,
                        "topk_all": MB_TOPK,
                    }
                )
    return out


def topk_all_users(model: Any, data: Any, k: int, batch_size: int = 2048) -> tuple[float, float]:
    """Wall and CPU seconds of the top-``k`` of every user over all items, the user's training
    target items masked (what serving every user at once costs)."""
    import torch

    from polyrec.eval.ranking import PairIndex, masked_topk

    users_np, items_np = data.pairs(data.schema.target)
    w0, c0 = time.perf_counter(), time.process_time()
    seen = PairIndex.from_pairs(users_np, items_np, data.n_users, data.n_items)
    with torch.no_grad():
        model.prepare_scoring()
        for start in range(0, data.n_users, batch_size):
            users = torch.arange(start, min(start + batch_size, data.n_users))
            masked_topk(model.scores(users), users, seen, k)
    return time.perf_counter() - w0, time.process_time() - c0


def half_retailrocket() -> Path:
    """The embedded Retailrocket log restricted to a seeded random half of its users (every row
    of a kept user, published test purchases included), saved once under ``data/``."""
    out = ROOT / "data" / "retailrocket-half-users"
    if (out / "dataset.json").exists():
        return out
    import numpy as np

    from polyrec.data.datasets import load_dataset

    log = load_dataset("embedded:retailrocket")
    keep_users = np.random.default_rng(0).random(log.n_users) < 0.5
    log.select(keep_users[log.user]).save(out)
    return out


# --------------------------------------------------------------------------------- child
def worker(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from polyrec.config import load_config
    from polyrec.eval.evaluator import evaluate
    from polyrec.training.trainer import prepare

    th = int(spec["threads"])
    torch.set_num_threads(th)
    overrides = [*spec["overrides"], f"train.threads={th}", 'train.device="cpu"']
    if spec.get("iterations"):
        overrides.append(f"params.batches_per_epoch={int(spec['iterations'])}")
    cfg = load_config(spec["config"], overrides)
    prepared = prepare(cfg)
    model, data = prepared.model, prepared.data
    optimisers = model.make_optimisers(cfg.train.lr, cfg.train.weight_decay, cfg.train.optimizer)
    gen = torch.Generator().manual_seed(cfg.seed)

    def one_pass(limit: int | None = None) -> tuple[float, float, int]:
        model.train()
        w0, c0, n = time.perf_counter(), time.process_time(), 0
        for batch in model.batches(data, cfg.train.batch_size, gen):
            model.train_step(batch, optimisers)
            n += 1
            if limit is not None and n >= limit:
                break
        return time.perf_counter() - w0, time.process_time() - c0, n

    one_pass(int(spec["warmup"]))
    passes = [one_pass() for _ in range(int(spec["epochs"]))]
    model.eval()
    evals, report = [], {}
    for _ in range(int(spec["eval_reps"])):
        w0, c0 = time.perf_counter(), time.process_time()
        report = evaluate(
            model,
            prepared.split,
            "test",
            protocols=(cfg.train.select_protocol,),
            ks=tuple(cfg.eval.ks),
            mask=cfg.eval.mask,
            batch_size=cfg.eval.batch_size,
            retrieval=cfg.eval.retrieval_options(),
        )
        evals.append((time.perf_counter() - w0, time.process_time() - c0))
    topk = topk_all_users(model, data, int(spec["topk_all"])) if spec.get("topk_all") else None
    return {
        "topk_all_wall_s": topk[0] if topk else None,
        "topk_all_cpu_s": topk[1] if topk else None,
        "pass_wall_s": [p[0] for p in passes],
        "pass_cpu_s": [p[1] for p in passes],
        "batches_per_pass": passes[0][2] if passes else 0,
        "batch_size": cfg.train.batch_size,
        "eval_wall_s": [e[0] for e in evals],
        "eval_cpu_s": [e[1] for e in evals],
        "eval_protocol": cfg.train.select_protocol,
        "test_users": (report.get("split") or {}).get("test_users"),
        "n_users": data.n_users,
        "n_items": data.n_items,
        "peak_rss_mib": _bench.peak_rss_mib(),
    }


# --------------------------------------------------------------------------------- report
def summarise(run: dict[str, Any]) -> dict[str, Any]:
    med = _bench.median
    th = run["threads"]
    out = {
        "pass_wall_s": med(run["pass_wall_s"]),
        "pass_cpu_s": med(run["pass_cpu_s"]),
        "eval_wall_s": med(run["eval_wall_s"]),
        "eval_cpu_s": med(run["eval_cpu_s"]),
        "peak_rss_mib": run["peak_rss_mib"],
    }
    # CPU seconds over threads: what the pass costs on `th` idle cores when they are all busy
    out["pass_cpu_per_thread_s"] = out["pass_cpu_s"] / th if out["pass_cpu_s"] else None
    n = run["batches_per_pass"]
    out["it_per_s_wall"] = n / out["pass_wall_s"] if out["pass_wall_s"] else None
    out["it_per_s_cpu"] = n / out["pass_cpu_s"] * th if out["pass_cpu_s"] else None
    return out


def report(res: dict[str, Any]) -> _bench.Doc:
    s = res["settings"]
    doc = _bench.Doc(f"Step and evaluation speed: suite `{s['suite']}`")
    doc.text(
        f"Each case is a child process: {s['warmup']} warm-up batches, then the median of "
        f"{s['epochs']} timed passes and of {s['eval_reps']} timed evaluations of all test users. "
        "`wall` is elapsed time; `CPU` is the process's CPU time (for 1 thread: the cost on an "
        "idle core — the machine was shared, see `other CPUs busy`)."
    )
    unit = "epoch" if s["suite"] in EPOCH_SUITES else f"{s['iterations']} iterations"
    doc.table(["data", "case", "threads", f"s / {unit} wall", f"s / {unit} CPU",
               "iterations / s (CPU)", "s / eval wall", "s / eval CPU", "peak MiB",
               "other CPUs busy"])  # fmt: skip
    for r in res["runs"]:
        a = r["summary"]
        doc.row(r["group"], r["label"], r["threads"], f"{a['pass_wall_s']:.3f}",
                f"{a['pass_cpu_s']:.3f}", f"{a['it_per_s_cpu']:.1f}", f"{a['eval_wall_s']:.3f}",
                f"{a['eval_cpu_s']:.3f}", f"{a['peak_rss_mib']:.0f}",
                str(r["contention"].get("other_cpu_load")))  # fmt: skip
    by = {(r["group"], r["label"], r["threads"]): r["summary"] for r in res["runs"]}
    if s["suite"] == "cml":
        o = CML_OFFICIAL
        doc.section("Against the official CML implementation (ANCHORS.md; not re-run here)")
        doc.text(
            f"Official, Retailrocket, 2 threads, idle machine: {o['epoch_s']} s / epoch "
            f"(anomaly detection off; {o['epoch_s_shipped']} s as shipped), {o['eval_s']} s / "
            f"evaluation (1+99, all test users), {o['peak_mib']} MiB. Goal: ≤ "
            f"{CML_GOAL['epoch_s']} s / epoch and ≤ {CML_GOAL['eval_s']} s / evaluation."
        )
        doc.table(["case", "threads", "s / epoch (wall; CPU)", "speed-up vs 10.6 s (wall; CPU)",
                   "s / eval (wall; CPU)", "speed-up vs 4.0 s (wall; CPU)"])  # fmt: skip
        for r in res["runs"]:
            a = r["summary"]
            doc.row(
                r["label"], r["threads"], f"{a['pass_wall_s']:.2f}; {a['pass_cpu_s']:.2f}",
                f"{o['epoch_s'] / a['pass_wall_s']:.1f}×; {o['epoch_s'] / a['pass_cpu_s']:.1f}×",
                f"{a['eval_wall_s']:.2f}; {a['eval_cpu_s']:.2f}",
                f"{o['eval_s'] / a['eval_wall_s']:.1f}×; {o['eval_s'] / a['eval_cpu_s']:.1f}×",
            )  # fmt: skip
    if s["suite"] == "re4":
        doc.section(f"Re4's overhead over its backbone (goal: ≤ {RE4_GOAL}× the step time)")
        doc.table(["data", "pair", "threads", "step-time ratio (wall)", "step-time ratio (CPU)"])
        for (g, label, th), a in by.items():
            base = "comirec-" + label.split("-")[1] if label.startswith("re4-") else ""
            b = by.get((g, base, th))
            if b:
                doc.row(g, f"{label} / {base}", th, f"{a['pass_wall_s'] / b['pass_wall_s']:.2f}×",
                        f"{a['pass_cpu_s'] / b['pass_cpu_s']:.2f}×")  # fmt: skip
    if s["suite"] == "hpcl4sr":
        doc.section("Against ComiRec-SA (same data, same maximum length 30, same batch)")
        doc.table(["model", "threads", "iterations / s (CPU)",
                   "step-time ratio to ComiRec-SA (CPU)"])  # fmt: skip
        for (g, label, th), a in by.items():
            b = by.get((g, "comirec-sa", th))
            if b and a["pass_cpu_s"] and b["pass_cpu_s"]:
                doc.row(label, th, f"{a['it_per_s_cpu']:.1f}",
                        f"{a['pass_cpu_s'] / b['pass_cpu_s']:.2f}×")  # fmt: skip
    if s["suite"] == "egcm":
        egcm_scaling(doc, by, s["threads"])
    if s["suite"] == "multibehavior":
        multibehavior_goals(doc, res["runs"], by)
    return doc


def multibehavior_goals(
    doc: _bench.Doc, runs: list[dict[str, Any]], by: dict[tuple[str, str, int], Any]
) -> None:
    ref = MB_MODELS[0]
    doc.section(
        f"Against {ref} (goals: epoch ≤ {MB_EPOCH_GOAL:g}× {ref}'s on the same data; top-{MB_TOPK} "
        f"of every user < {MB_TOPK_GOAL_S:g} s)"
    )
    doc.text(
        "Epoch CPU seconds (the cost on idle cores, robust to the shared machine) and their "
        f"ratio to {ref}'s; `top-{MB_TOPK} all users`: every user's scores over all items, the "
        "training purchases masked, top-k (wall seconds, and CPU seconds / threads)."
    )
    doc.table(["data", "model", "threads", "users × items", "s / epoch CPU",
               f"epoch ratio to {ref}", "epoch goal", f"top-{MB_TOPK} all users (wall; CPU / threads)",
               "top-k goal"])  # fmt: skip
    for r in runs:
        a, th = r["summary"], r["threads"]
        b = by.get((r["group"], ref, th))
        ratio = a["pass_cpu_s"] / b["pass_cpu_s"] if b and b["pass_cpu_s"] else None
        tw, tc = r.get("topk_all_wall_s"), r.get("topk_all_cpu_s")
        doc.row(
            r["group"], r["label"], th, f"{r['n_users']:,} × {r['n_items']:,}",
            f"{a['pass_cpu_s']:.2f}", "–" if ratio is None else f"{ratio:.2f}×",
            "–" if ratio is None else ("met" if ratio <= MB_EPOCH_GOAL else "missed"),
            "–" if tw is None else f"{tw:.1f}; {tc / th:.1f}",
            "–" if tw is None else ("met" if min(tw, tc / th) < MB_TOPK_GOAL_S else "missed"),
        )  # fmt: skip


def egcm_scaling(doc: _bench.Doc, by: dict[tuple[str, str, int], Any], threads: list[int]) -> None:
    doc.section("Scaling (A.4: linear in Λ and in the interactions)")
    doc.text(
        "Epoch CPU seconds; `half` keeps a seeded random half of the users (every row of a "
        "kept user). Ratios: EGCM over CML on the same data, Λ = 10 over Λ = 5, and full "
        "over half data (≈ 2 if linear in the interactions)."
    )
    doc.table(["threads", "case", "full (s)", "half (s)", "full / half", "over CML (full)"])
    labels = dict.fromkeys(label for (_, label, _) in by)
    for th in threads:
        for label in labels:
            f = by.get(("retailrocket full", label, th))
            h = by.get(("retailrocket half", label, th))
            c = by.get(("retailrocket full", "CML", th))
            if not f:
                continue
            fh = f"{f['pass_cpu_s'] / h['pass_cpu_s']:.2f}×" if h else "—"
            oc = f"{f['pass_cpu_s'] / c['pass_cpu_s']:.2f}×" if c else "—"
            hs = f"{h['pass_cpu_s']:.2f}" if h else "—"
            doc.row(th, label, f"{f['pass_cpu_s']:.2f}", hs, fh, oc)
        s30 = by.get(("retailrocket full", f"EGCM slot {EGCM_SLOTS[0]:g}d", th))
        s15 = by.get(("retailrocket full", f"EGCM slot {EGCM_SLOTS[1]:g}d", th))
        if s30 and s15:
            ratio = f"{s15['pass_cpu_s'] / s30['pass_cpu_s']:.2f}×"
            doc.row(th, "Λ 10 / Λ 5 (full data)", "", "", ratio, "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--suite",
        choices=["cml", "sequential", "re4", "hpcl4sr", "egcm", "multibehavior"],
        required=False,
    )
    ap.add_argument("--threads", default="1,2", help="torch threads per case, comma-separated")
    ap.add_argument("--epochs", type=int, default=3, help="timed passes per case")
    ap.add_argument("--iterations", type=int, default=200, help="batches per pass (sequential)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed batches first")
    ap.add_argument("--eval-reps", type=int, default=3)
    ap.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-step-speed"))
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--quick", action="store_true", help="1 timed pass, 1 thread, no files")
    ap.add_argument(
        "--only",
        default="",
        help="run only the cases whose name contains this; the other cases of the suite's "
        "committed results are kept",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        spec = json.loads(Path(args.worker).read_text())
        out = worker(spec)
        tmp = Path(spec["out"] + ".tmp")
        tmp.write_text(json.dumps(out))
        tmp.replace(spec["out"])
        return 0
    if not args.suite:
        ap.error("--suite is required")
    if args.quick:
        args.epochs, args.eval_reps, args.threads, args.iterations = 1, 1, "1", 20
    threads = [int(t) for t in args.threads.split(",") if t.strip()]
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    runs, failures = [], []
    for case in cases(args.suite, threads):
        if args.only not in case["name"]:
            continue
        spec = {
            **case,
            "warmup": args.warmup,
            "epochs": args.epochs,
            "eval_reps": args.eval_reps,
            "iterations": None if args.suite in EPOCH_SUITES else args.iterations,
            "out": str(work / f"{case['name']}.json"),
        }
        spec_path = work / f"{case['name']}.spec.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)]
        rc, _, cont = _bench.run_child(
            cmd,
            _bench.child_env(case["threads"]),
            work / f"{case['name']}.log",
            case["name"],
            tag="step-speed",
        )
        if rc != 0 or not Path(spec["out"]).exists():
            failures.append(
                f"{case['name']} failed (exit {rc}): {_bench.tail(work / (case['name'] + '.log'), 5)}"
            )
            continue
        out = json.loads(Path(spec["out"]).read_text())
        run = {**case, **out, "contention": cont}
        run["summary"] = summarise(run)
        runs.append(run)
    prev = Path(args.out_dir) / f"step-speed-{args.suite}.json"
    command = "python benchmarks/step_speed.py " + " ".join(argv or sys.argv[1:])
    if args.only and not args.quick and prev.exists():  # --only: rerun those cases, keep the rest
        fresh = {r["name"] for r in runs}
        kept = [r for r in json.loads(prev.read_text())["runs"] if r["name"] not in fresh]
        order = [c["name"] for c in cases(args.suite, threads)]
        runs = sorted(
            kept + runs, key=lambda r: order.index(r["name"]) if r["name"] in order else 0
        )
        command = json.loads(prev.read_text())["command"] + "; then " + command
    res = {
        "name": f"step-speed-{args.suite}",
        "date": _bench.now_utc(),
        "machine": _bench.machine(),
        "command": command,
        "settings": {
            "suite": args.suite,
            "threads": threads,
            "epochs": args.epochs,
            "iterations": args.iterations,
            "warmup": args.warmup,
            "eval_reps": args.eval_reps,
        },
        "runs": runs,
        "failures": failures,
    }
    return _bench.emit(res, report(res), Path(args.out_dir), args.quick, "step-speed")


if __name__ == "__main__":
    sys.exit(main())
