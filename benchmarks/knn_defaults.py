"""Defaults of the item-neighbourhood matrix S (``itemknn``'s and MB-Hybrid's ``k``, ``shrink``,
``alpha``, ``other_weight``) that hold on data no one has tuned them on.

Each candidate is ItemKNN with those values, judged by its validation NDCG@10 under full ranking
on each multi-behavior dataset (the test split is not read), against RecBole's ItemKNN defaults
and against the values `polyrec tune` found on that dataset's validation
(``tuned-baselines.json``: 16 TPE trials). The candidate with the best worst-case share of the
tuned value becomes MB-Hybrid's default S (``polyrec.models.itemknn.MULTI_BEHAVIOR_KNN``; the
multi-behavior benchmarks give ItemKNN the same values on data without tuned ones, while
``itemknn``'s own defaults stay RecBole's): the one that loses least where nothing was tuned.

    python benchmarks/knn_defaults.py                 # retailrocket, tmall, ijcai, jdata
    python benchmarks/knn_defaults.py --quick         # retailrocket, 2 candidates, no files

Results: ``benchmarks/results/knn-defaults.{json,md}``. Not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench
import tune_baselines
from multibehavior import DATA_OVERRIDES, DATASETS, config_for, ensure_dataset

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAME = "knn-defaults"
# candidate → (k, shrink, alpha, other_weight); "recbole" is RecBole's ItemKNN (target only)
CANDIDATES: dict[str, dict[str, float]] = {
    "recbole": {"k": 100, "shrink": 0.0, "alpha": 0.5, "other_weight": 0.0},
    "k100-s20-a0.3-w0.2": {"k": 100, "shrink": 20.0, "alpha": 0.3, "other_weight": 0.2},
    "k200-s20-a0.3-w0.3": {"k": 200, "shrink": 20.0, "alpha": 0.3, "other_weight": 0.3},
    "k100-s10-a0.5-w0.2": {"k": 100, "shrink": 10.0, "alpha": 0.5, "other_weight": 0.2},
}


def valid_ndcg(dataset: str, data: str, params: list[str], threads: int) -> tuple[float, float]:
    """ItemKNN's validation NDCG@10 (full ranking) with ``params``, and the seconds it took."""
    from polyrec.api import train

    overrides = [
        f"data.path={json.dumps(data)}",
        'train.select_protocol="full"',
        'eval.protocols=["full"]',
        f"train.threads={threads}",
        *DATA_OVERRIDES.get(dataset, []),
        *params,
    ]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        res = train(config=config_for("itemknn", dataset), overrides=overrides, out=f"{tmp}/run")
    return float(res["valid"]["metrics"]["full"]["ndcg@10"]), time.perf_counter() - t0


def chosen(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per candidate, its share of the tuned value on each dataset; the best worst case wins."""
    tuned = {r["dataset"]: r["valid_ndcg"] for r in runs if r["candidate"] == "tuned"}
    shares: dict[str, dict[str, float]] = {}
    for r in runs:
        if r["candidate"] != "tuned" and r["dataset"] in tuned and tuned[r["dataset"]] > 0:
            shares.setdefault(r["candidate"], {})[r["dataset"]] = (
                r["valid_ndcg"] / tuned[r["dataset"]]
            )
    worst = {c: min(s.values()) for c, s in shares.items()}
    best = max(worst, key=lambda c: worst[c]) if worst else None
    return {"shares": shares, "worst": worst, "best": best}


def report(res: dict[str, Any]) -> _bench.Doc:
    doc = _bench.Doc("Defaults of the item-neighbourhood matrix (itemknn, mbhybrid)")
    doc.text(
        "ItemKNN's validation NDCG@10 (full ranking; leave-one-out on buy, seed 2024, the "
        "multi-behavior tables' splits; JData under hide = target on a 10,000-user validation "
        "sample) for each candidate default, against RecBole's ItemKNN defaults and the values "
        "`polyrec tune` found on the same validation (16 TPE trials, `tuned-baselines.md`). "
        "Test sets are not read. The candidate with the best worst-case share of the tuned value "
        "is MB-Hybrid's default S (`MULTI_BEHAVIOR_KNN`); the multi-behavior benchmarks give "
        "ItemKNN the same values on data without tuned ones (`itemknn`'s own defaults stay "
        "RecBole's, the canonical baseline)."
    )
    sel = res["selection"]
    datasets = list(dict.fromkeys(r["dataset"] for r in res["runs"]))
    doc.table(["candidate", "k", "shrink", "alpha", "other_weight", *datasets, "worst share"])
    by = {(r["dataset"], r["candidate"]): r for r in res["runs"]}
    for cand in [*CANDIDATES, "tuned"]:
        if not any((d, cand) in by for d in datasets):
            continue
        p = CANDIDATES.get(cand)
        cells = []
        for d in datasets:
            r = by.get((d, cand))
            share = sel["shares"].get(cand, {}).get(d)
            cells.append(
                "–" if r is None else f"{r['valid_ndcg']:.4f}" + (
                    f" ({share:.0%})" if share is not None else ""
                )
            )  # fmt: skip
        worst = sel["worst"].get(cand)
        label = f"**{cand}** (shipped)" if cand == sel["best"] else cand
        if p is None:
            label, p = "tuned (per dataset)", {}
        doc.row(
            label,
            *(str(p.get(k, "per dataset")) for k in ("k", "shrink", "alpha", "other_weight")),
            *cells,
            "" if worst is None else f"{worst:.0%}",
        )
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="retailrocket,tmall,ijcai,jdata")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data-root", default=str(ROOT / "data"))
    ap.add_argument("--quick", action="store_true", help="retailrocket, 2 candidates, no files")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    names = ["retailrocket"] if args.quick else args.datasets.split(",")
    for d in names:
        if d not in DATASETS:
            ap.error(f"unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
    candidates = list(CANDIDATES)[:2] if args.quick else list(CANDIDATES)
    t0 = time.perf_counter()
    runs = []
    for d in names:
        data = ensure_dataset(d, Path(args.shared), Path(args.data_root))
        cases = [(c, [f"params.{k}={v}" for k, v in CANDIDATES[c].items()]) for c in candidates]
        tuned = tune_baselines.overrides(d, "itemknn")
        if tuned:
            cases.append(("tuned", tuned))
        for cand, params in cases:
            ndcg, secs = valid_ndcg(d, data, params, args.threads)
            print(f"[{NAME}] {d} {cand}: valid NDCG@10 {ndcg:.4f} ({secs:.1f} s)", file=sys.stderr)
            runs.append(
                {"dataset": d, "candidate": cand, "params": params, "valid_ndcg": ndcg, "s": secs}
            )
    res = {
        **_bench.run_header(NAME, "benchmarks/knn_defaults.py", argv, t0),
        "settings": {"threads": args.threads, "jobs": 1, "candidates": CANDIDATES},
        "runs": runs,
        "selection": chosen(runs),
    }
    return _bench.emit(res, report(res), Path(args.out_dir), args.quick, NAME)


if __name__ == "__main__":
    raise SystemExit(main())
