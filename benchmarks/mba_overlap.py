"""Why MBA does not beat MF-BPR trained on all behaviors under MBA's protocol: how many test
purchases already have an auxiliary-behavior row in training.

MBA's protocol (§4.3, and the official code) splits the *target* behavior 4:1 at random and
keeps every auxiliary row in training, including the views / carts of the held-out purchases.
A model that scores "what this user viewed or carted" therefore sees most test items in its
training data; MF-BPR on all behaviors merged learns exactly that, while MBA uses the auxiliary
behavior only through the alignment with P(R_g). This script builds each dataset's split as the
benchmark does (``configs/mba-<data>.toml``, the seeds given) and reports, per behavior, the
share of test (user, item) pairs with a training row of that behavior.

    python benchmarks/mba_overlap.py                      # Retailrocket and Tmall, seed 2020
    python benchmarks/mba_overlap.py --seeds 2020,2021,2022

Needs the imported data folders (``python benchmarks/mba_reproduce.py --prepare-only``).
Results: ``benchmarks/results/mba-overlap.{json,md}``. Reads no model; not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench
import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NAME = "mba-overlap"


def overlap(config: Path, seed: int) -> dict[str, Any]:
    from polyrec.config import load_config
    from polyrec.training.trainer import prepare

    cfg = load_config(config, [f"seed={seed}"])
    with tempfile.TemporaryDirectory() as tmp:
        split = prepare(cfg, Path(tmp) / "run").split
    train, test = split.train, split.test
    n_items = int(max(np.max(train.item), np.max(test.item))) + 1
    key = np.asarray(train.user, dtype=np.int64) * n_items + np.asarray(train.item)
    test_key = np.asarray(test.user, dtype=np.int64) * n_items + np.asarray(test.item)
    beh = np.asarray(train.behavior)
    shares: dict[str, float] = {}
    aux = np.zeros(len(test_key), dtype=bool)
    for code, name in enumerate(train.behaviors):
        hit = np.isin(test_key, key[beh == code])
        shares[name] = float(hit.mean())
        if name != train.target:
            aux |= hit
    return {
        "seed": seed,
        "test_pairs": len(test_key),
        "behaviors": list(train.behaviors),
        "target": train.target,
        "share_with_training_row": shares,
        "share_with_any_auxiliary_row": float(aux.mean()),
    }


def report(res: dict[str, Any]) -> _bench.Doc:
    doc = _bench.Doc("MBA protocol: test purchases that already have an auxiliary row in training")
    doc.text(
        "MBA's random 4:1 split of the target behavior (`configs/mba-<data>.toml`); auxiliary "
        "rows all stay in training. Share of test (user, item) pairs with a training row of "
        "each behavior (the target's is 0 by construction)."
    )
    doc.table(["dataset", "seed", "test pairs", "per behavior", "any auxiliary behavior"])
    for ds, rows in res["datasets"].items():
        for r in rows:
            per = ", ".join(f"{b} {v:.3f}" for b, v in r["share_with_training_row"].items())
            doc.row(ds, r["seed"], r["test_pairs"], per, f"{r['share_with_any_auxiliary_row']:.3f}")
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--datasets", default="retailrocket,tmall")
    ap.add_argument("--seeds", default="2020")
    ap.add_argument(
        "--out-dir", default=str(HERE / "results"), type=lambda p: str(Path(p).resolve())
    )
    args = ap.parse_args()
    os.chdir(ROOT)  # the configs' data paths are relative to the repository root
    t0 = time.perf_counter()
    datasets: dict[str, list[dict[str, Any]]] = {}
    for ds in args.datasets.split(","):
        config = ROOT / "configs" / f"mba-{ds}.toml"
        if not config.exists():
            print(f"error: no config {config}", file=sys.stderr)
            return 2
        datasets[ds] = [overlap(config, int(s)) for s in args.seeds.split(",")]
    res = {
        "name": NAME,
        "date": _bench.now_utc(),
        "machine": _bench.machine(),
        "command": "python benchmarks/mba_overlap.py " + " ".join(sys.argv[1:]),
        "wall_seconds": time.perf_counter() - t0,
        "datasets": datasets,
    }
    return _bench.emit(res, report(res), Path(args.out_dir), False, NAME)


if __name__ == "__main__":
    raise SystemExit(main())
