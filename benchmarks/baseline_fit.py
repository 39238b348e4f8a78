"""Fit time of the closed-form baselines (``history``, ``itemknn``, ``ease``): how long
``Model.setup`` takes on the embedded Retailrocket data and on a Taobao-size synthetic log.

The synthetic log is ``benchmarks/scale.py``'s generator at size ``600k`` (30,000 users ×
12,000 items, views/carts/buys); ``ease`` there runs on every behavior (``other_weight = 1``) so
that its dense inverse covers all 12,000 items (the issue's bar: under a minute on 2 cores).
Each fit is timed ``--reps`` times in this process (torch threads: ``--threads``), the median
reported, together with the time to score every user once (full ranking's scoring pass).

    python benchmarks/baseline_fit.py                # both datasets, 3 repetitions
    python benchmarks/baseline_fit.py --quick        # embedded data, 1 repetition, no files

Results: ``benchmarks/results/baseline-fit.json`` (``polyrec report … --markdown`` renders the
markdown). Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import _bench
import scale

HERE = Path(__file__).resolve().parent
NAME = "baseline-fit"
RR, SYN = "retailrocket", "synthetic-600k"
# (model, params, datasets): on the synthetic log EASE may use 8 GB (its 9.8k bought items, and
# every behavior's 12k items)
CASES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("history", {}, (RR, SYN)),
    ("itemknn", {}, (RR, SYN)),
    ("itemknn", {"other_weight": 1.0}, (RR, SYN)),
    ("ease", {}, (RR,)),
    ("ease", {"max_memory_gb": 8.0}, (SYN,)),
    ("ease", {"other_weight": 1.0, "max_memory_gb": 8.0}, (SYN,)),
]


def datasets(quick: bool) -> dict[str, Any]:
    from polyrec.data.datasets import load_dataset
    from polyrec.data.synthetic import n_views_for, synthetic_log

    out = {RR: load_dataset("embedded:retailrocket")}
    if not quick:
        spec = scale.size_spec("600k")
        out[SYN] = synthetic_log(
            int(spec["n_users"]),
            int(spec["n_items"]),
            n_views_for(int(spec["interactions_wanted"])),
            n_topics=int(spec["n_topics"]),
            seed=int(spec["seed"]),
            name="synthetic-600k",
        )
    return out


def time_case(log: Any, model: str, params: dict[str, Any], reps: int) -> dict[str, Any]:
    import torch

    from polyrec.data.splits import leave_one_out
    from polyrec.data.views import TrainData
    from polyrec.models import create_model

    train = leave_one_out(log, seed=2024, n_negatives=0).train
    fits, scores = [], []
    active = None
    for _ in range(reps):
        data = TrainData(train)  # no cached views between repetitions
        t0 = time.perf_counter()
        m = create_model(model, params).setup(data)
        fits.append(time.perf_counter() - t0)
        users = torch.arange(data.n_users)
        t0 = time.perf_counter()
        with torch.no_grad():
            for start in range(0, data.n_users, 1024):
                m.scores(users[start : start + 1024])  # type: ignore[attr-defined]
        scores.append(time.perf_counter() - t0)
        active = len(m.active) if hasattr(m, "active") else None
    return {
        "model": model,
        "params": params,
        "users": train.n_users,
        "items": train.n_items,
        "train_rows": len(train),
        "ease_items": active,
        "fit_s": fits,
        "score_all_users_s": scores,
        "peak_rss_mib": _bench.peak_rss_mib(),
    }


def report(res: dict[str, Any]) -> _bench.Doc:
    doc = _bench.Doc("Fit time of the closed-form baselines (history, itemknn, ease)")
    doc.text(
        "`Model.setup` wall time (median of the repetitions) on the training part of a "
        "leave-one-out split (seed 2024), and the time to score every user once in batches of "
        f"1,024. One process, {res['settings']['threads']} torch thread(s); no GPU. The "
        "synthetic log is `benchmarks/scale.py`'s generator at size 600k."
    )
    doc.table(["dataset", "model", "params", "users", "items", "EASE items", "fit s", "score s"])
    for r in res["runs"]:
        doc.row(
            r["dataset"],
            r["model"],
            ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "defaults",
            f"{r['users']:,}",
            f"{r['items']:,}",
            "" if r["ease_items"] is None else f"{r['ease_items']:,}",
            f"{statistics.median(r['fit_s']):.2f}",
            f"{statistics.median(r['score_all_users_s']):.2f}",
        )
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="embedded data, 1 repetition, no files")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    reps = 1 if args.quick else args.reps
    runs = []
    for ds, log in datasets(args.quick).items():
        for model, params, where in CASES:
            if ds not in where:
                continue
            print(f"[{NAME}] {ds} {model} {params}", file=sys.stderr, flush=True)
            runs.append({"dataset": ds, **time_case(log, model, params, reps)})
    res = {
        **_bench.run_header(NAME, "benchmarks/baseline_fit.py", argv, t0),
        "settings": {"threads": args.threads, "jobs": 1, "reps": reps},
        "runs": runs,
    }
    return _bench.emit(res, report(res), Path(args.out_dir), args.quick, NAME)


if __name__ == "__main__":
    raise SystemExit(main())
