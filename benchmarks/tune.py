"""Validation-only tuning sweep: one config, several override sets, the best validation metric
of each (test is never read). Each variant is one ``polyrec train`` child process.

    python benchmarks/tune.py --config configs/egcm-retailrocket.toml --name egcm-retailrocket \\
        --set "" --set "params.item_embeddings='shared'" --set "params.dim=32" \\
        --common "train.epochs=60" --common "train.patience=15"

``--set`` takes space-separated overrides (quote values as TOML; "" = the config as it is).
Results: ``benchmarks/results/tune-<name>.{json,md}``; ``--resume`` reuses finished variants.
Not a test.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run_one(
    config: str, overrides: list[str], out: Path, threads: int, log: Path
) -> dict[str, Any]:
    exe = Path(sys.executable).with_name("polyrec")  # the console script beside this python
    cmd = [str(exe), "train", "--config", config, "--out", str(out)]
    cmd += [*overrides, f"train.threads={threads}", 'train.device="cpu"']
    t0 = time.perf_counter()
    with log.open("w") as fh:
        rc = subprocess.call(
            cmd, stdout=fh, stderr=subprocess.STDOUT, env=_bench.child_env(threads)
        )
    wall = time.perf_counter() - t0
    if rc != 0 or not (out / "metrics.json").exists():
        return {"overrides": overrides, "error": f"exit {rc}: {_bench.tail(log, 5)}"}
    m = json.loads((out / "metrics.json").read_text())
    return {
        "overrides": overrides,
        "best_valid": m["best_valid"],
        "best_epoch": m["best_epoch"],
        "epochs_run": m["epochs_run"],
        "stopped": m["stopped"],
        "selection": m["protocol"]["selection"],
        "wall_seconds": wall,
    }


def report(res: dict[str, Any]) -> _bench.Doc:
    doc = _bench.Doc(f"Validation tuning: {res['label']}")
    doc.text(
        f"Config `{res['config']}` with the common overrides `{' '.join(res['common'])}`. "
        "Only validation is read (selection: "
        f"{res['runs'][0].get('selection', '?') if res['runs'] else '?'}); test is not looked at."
    )
    doc.table(["overrides", "best validation", "best epoch", "epochs run", "wall s"])
    for r in res["runs"]:
        o = " ".join(r["overrides"]) or "(config as shipped)"
        if "error" in r:
            doc.row(o, f"failed: {r['error'].splitlines()[-1]}", "", "", "")
        else:
            doc.row(o, f"{r['best_valid']:.4f}", r["best_epoch"], r["epochs_run"],
                    f"{r['wall_seconds']:.0f}")  # fmt: skip
    return doc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--set", action="append", default=[], help="one variant's overrides")
    ap.add_argument("--common", action="append", default=[], help="overrides for every variant")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--work-dir", default=str(ROOT / "runs" / "tune"))
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    args = ap.parse_args(argv)
    sets = args.set or [""]
    work = Path(args.work_dir) / args.name
    work.mkdir(parents=True, exist_ok=True)
    out_json = Path(args.out_dir) / f"tune-{args.name}.json"
    done: dict[str, dict[str, Any]] = {}
    if args.resume and out_json.exists():
        for r in json.loads(out_json.read_text())["runs"]:
            if "error" not in r:
                done[" ".join(r["overrides"])] = r
    runs = []
    for i, s in enumerate(sets):
        ov = [*args.common, *shlex.split(s)]
        key = " ".join(ov)
        if key in done:
            runs.append(done[key])
            continue
        print(f"[tune] {args.name} #{i}: {key or '(as shipped)'}", flush=True)
        r = run_one(args.config, ov, work / f"v{i}", args.threads, work / f"v{i}.log")
        print(f"[tune]   → {r.get('best_valid', r.get('error'))}", flush=True)
        runs.append(r)
        res = {
            "name": f"tune-{args.name}",
            "label": args.name,
            "settings": {"threads": args.threads},
            "date": _bench.now_utc(),
            "machine": _bench.machine(),
            "config": args.config,
            "common": args.common,
            "command": "python benchmarks/tune.py " + shlex.join(argv),
            "runs": runs,
        }
        _bench.emit(res, report(res), Path(args.out_dir), False, "tune")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
