"""One command for the reproduction: every model quickly, or every paper's benchmark in full.

``--suite quick`` (< 15 minutes on 2 cores): every registered model, 1 seed, short schedules,
on the embedded Retailrocket data (multi-behavior models: leave-one-out on buy; sequential and
multi-interest models: the ComiRec user split 8:1:1 over all behaviors) — except REMI and HPCL4SR,
which need item categories the embedded data lacks: they train on a synthetic log with categories
(``polyrec.data.synthetic``, written once to ``data/synthetic-categories``). It proves that every
path runs end to end; its numbers are *not* reproductions (a few epochs, small data). Results:
``results/reproduce-quick.{json,md}``, learning curves included.

``--suite full``: the model issues' benchmarks in turn, each resumable (``--resume``) — CML and
its baselines (``multibehavior.py``), MBA (``mba_reproduce.py``), EGCM (``egcm.py``), the sequential
baselines (``sequential.py``), Re4 (``re4.py``), HPCL4SR (``hpcl4sr.py``), the speed suites
(``step_speed.py``) and the scale benchmark (``scale.py``) — then the report. Expect days of CPU
time on 2 cores; every script keeps its finished runs, so an interrupted full suite continues
where it stopped.

Both end with ``polyrec report benchmarks/results --out report/`` (HTML + PNG; paper vs ours).

    python benchmarks/reproduce.py --suite quick            # ~10 minutes on 2 cores
    python benchmarks/reproduce.py --suite full --jobs 2    # everything (days)

Not a test.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import _bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CATEGORIES_DATA = ROOT / "data" / "synthetic-categories"

MB = ["train.epochs=3", "train.min_epochs=0", "train.patience=3"]
SEQ = [
    'data.path="embedded:retailrocket"',
    'params.behaviors="all"',
    "train.epochs=2",
    "train.min_epochs=0",
    "params.batches_per_epoch=40",
]
CAT = [f'data.path="{CATEGORIES_DATA}"', "train.epochs=2", "params.batches_per_epoch=40"]
# name → (config, overrides): every registered model once
QUICK: dict[str, tuple[str, list[str]]] = {
    "pop": ("pop-retailrocket.toml", []),
    "mf": ("mf-retailrocket.toml", MB),
    "lightgcn": ("lightgcn-retailrocket.toml", MB),
    "ngcf": ("ngcf-retailrocket.toml", MB),
    "ehcf": ("ehcf-retailrocket.toml", MB),
    "nmtr": ("nmtr-retailrocket.toml", MB),
    "pinsage": ("pinsage-retailrocket.toml", MB),
    "hgt": ("hgt-retailrocket.toml", MB),
    "heco": ("heco-retailrocket.toml", MB),
    "matn": ("matn-retailrocket.toml", MB),
    "khgt": ("khgt-retailrocket.toml", MB),
    "history": ("history-retailrocket.toml", []),
    "ease": ("ease-retailrocket.toml", []),
    "itemknn": ("itemknn-retailrocket.toml", []),
    "sgl": ("sgl-retailrocket.toml", MB),
    "mbgcn": ("mbgcn-retailrocket.toml", MB),
    "cml": ("cml-retailrocket.toml", MB),
    "egcm": ("egcm-retailrocket.toml", MB),
    "mbcgcn": ("mbcgcn-retailrocket.toml", MB),
    "crgcn": ("crgcn-retailrocket.toml", MB),
    "mule": ("mule-retailrocket.toml", MB),
    "mbhybrid": ("mbhybrid-retailrocket.toml", MB),
    "mba": ("mba-retailrocket.toml", ['data.path="embedded:retailrocket"', "train.epochs=40",
                                      "params.pretrain_epochs=20", "train.min_epochs=0",
                                      "train.patience=10"]),
    # MBA's denoising baselines: their MBA-protocol configs on the embedded data
    **{
        f"{fw}-{bb}": (f"{fw}-{bb}-mba-retailrocket.toml",
                       ['data.path="embedded:retailrocket"', "train.epochs=40", "train.patience=10"])
        for fw in ("wbpr", "tce", "deca") for bb in ("mf", "lightgcn")
    },
    "youtube-dnn": ("youtube-dnn-beauty.toml", SEQ),
    "gru4rec": ("gru4rec-beauty.toml", SEQ),
    "sasrec": ("sasrec-beauty.toml", SEQ),
    "caser": ("caser-beauty.toml", SEQ),
    "hgn": ("hgn-beauty.toml", SEQ),
    "bert4rec": ("bert4rec-beauty.toml", SEQ),
    "tisasrec": ("tisasrec-beauty.toml", SEQ),
    "magnn": ("magnn-beauty.toml", SEQ),
    "mind": ("mind-beauty.toml", SEQ),
    "comirec-sa": ("comirec-sa-beauty.toml", SEQ),
    "comirec-dr": ("comirec-dr-beauty.toml", SEQ),
    "re4-sa": ("re4-sa-beauty.toml", SEQ),
    "re4-dr": ("re4-dr-beauty.toml", SEQ),
    "remi": ("remi-ml100k.toml", CAT),
    "hpcl4sr": ("hpcl4sr-ml100k.toml", CAT),
}  # fmt: skip
# the full suite: (script, arguments); --jobs/--threads are appended where the script takes them
FULL: list[tuple[str, list[str]]] = [
    ("multibehavior.py", ["--resume"]),
    ("mba_reproduce.py", ["--resume"]),
    ("egcm.py", ["--resume"]),
    ("sequential.py", ["--resume"]),
    ("re4.py", ["--resume"]),
    ("hpcl4sr.py", ["--resume"]),
    ("step_speed.py", ["--suite", "cml"]),
    ("step_speed.py", ["--suite", "sequential"]),
    ("step_speed.py", ["--suite", "re4"]),
    ("step_speed.py", ["--suite", "hpcl4sr"]),
    ("step_speed.py", ["--suite", "egcm"]),
    ("scale.py", []),
]
TAKES_JOBS = {"multibehavior.py", "mba_reproduce.py", "egcm.py", "sequential.py", "re4.py",
              "hpcl4sr.py"}  # fmt: skip


def ensure_category_data() -> None:
    """A synthetic view/cart/buy log whose items have categories (for REMI and HPCL4SR)."""
    if (CATEGORIES_DATA / "dataset.json").exists():
        return
    from polyrec.data.synthetic import synthetic_log

    log = synthetic_log(n_users=800, n_items=600, n_views=16000, n_topics=12, seed=0,
                        name="synthetic-categories")  # fmt: skip
    log.save(CATEGORIES_DATA)


def run_quick(name: str, work: Path, threads: int) -> dict[str, Any]:
    config, overrides = QUICK[name]
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    exe = Path(sys.executable).with_name("polyrec")
    cmd = [str(exe), "train", "--quiet", "--config", str(ROOT / "configs" / config), "--out",
           str(out), *overrides, f"train.threads={threads}", 'train.device="cpu"']  # fmt: skip
    t0 = time.perf_counter()
    log = work / f"{name}.log"
    with log.open("w") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT,
                             env=_bench.child_env(threads))  # fmt: skip
    seconds = time.perf_counter() - t0
    rec: dict[str, Any] = {
        "name": name,
        "model": name,
        "config": f"configs/{config}",
        "overrides": overrides,
        "exit": rc,
        "wall_seconds": seconds,
    }
    metrics = out / "metrics.json"
    if rc == 0 and metrics.exists():
        m = json.loads(metrics.read_text())
        rec["dataset"] = m.get("dataset", "")
        rec["metrics"] = m
    else:
        rec["error"] = log.read_text()[-2000:]
    print(f"[reproduce] {name}: exit {rc} after {seconds:.1f} s", flush=True)
    return rec


def quick_report(report: dict[str, Any]) -> tuple[_bench.Doc, list[dict[str, Any]]]:
    """The report and the HTML report's rows (one per model: its selection protocol)."""
    doc = _bench.Doc("Quick reproduction suite: every model, end to end")
    doc.text(
        "Every registered model, seed 2024, a few epochs (multi-behavior models: 3 epochs on the "
        "embedded Retailrocket, leave-one-out on buy; sequential models: 2 × 40 iterations, user "
        "split 8:1:1 of the embedded Retailrocket over all behaviors; REMI and HPCL4SR: the "
        "synthetic log with categories). Best epoch on validation; test once. **These numbers "
        "prove the paths run; they are not reproductions** (see the per-paper benchmarks). No "
        "strongest baseline is named here: the rows are smoke runs under several protocols; "
        "each per-paper table names its own."
    )
    doc.table(["model", "dataset", "split", "test protocol", "metric", "validation", "test",
               "epochs", "wall s", "status"])  # fmt: skip
    rows = []
    for r in report["runs"]:
        m = r.get("metrics")
        if not m:
            doc.row(r["model"], "", "", "", "", "", "", "", f"{r['wall_seconds']:.0f}",
                    f"FAILED (exit {r['exit']})")  # fmt: skip
            continue
        # "best validation <protocol> <metric>": the selection's protocol and metric
        *_, proto, key = m["protocol"]["selection"].split()
        test = m["test"]["metrics"].get(proto, {})
        valid = m["valid"]["metrics"].get(proto, {}).get(key)
        split = m["protocol"]["split"]["name"]
        doc.row(
            r["model"], m["dataset"], split, proto, key,
            None if valid is None else f"{valid:.4f}",
            None if test.get(key) is None else f"{test[key]:.4f}",
            m["epochs_run"], f"{r['wall_seconds']:.0f}", "ok",
        )  # fmt: skip
        sel = m["protocol"]["selection"]
        rows.append(_bench.result_row(m["dataset"], r["model"], proto, sel, split, 1, test))
        r.update(seed=2024, selection=sel, curve_metric=f"valid {key}")
        r["curve"] = [[h["epoch"], (h.get("valid") or {}).get(key)] for h in m.get("history", [])]
    return doc, rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--suite", choices=["quick", "full"], default="quick")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="", help="quick: comma-separated subset")
    ap.add_argument(
        "--merge",
        action="store_true",
        help="quick with --models: replace those rows in the existing reproduce-quick.json and "
        "keep the others (the command and date of the merge are recorded)",
    )
    ap.add_argument("--work-dir", default=str(ROOT / "runs" / "reproduce-quick"))
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--report-dir", default=str(ROOT / "report"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    out_dir = Path(args.out_dir)
    if args.suite == "full":
        failed = []
        for script, extra in FULL:
            cmd = [sys.executable, str(HERE / script), *extra]
            if script in TAKES_JOBS:
                cmd += ["--jobs", str(args.jobs), "--threads", str(args.threads)]
            print(f"[reproduce] {' '.join(cmd[1:])}", flush=True)
            if subprocess.call(cmd) != 0:
                failed.append(script)
        rc = _report(out_dir, Path(args.report_dir))
        print(f"[reproduce] full suite done in {time.perf_counter() - t0:.0f} s; failed: "
              f"{failed or 'none'}")  # fmt: skip
        return 1 if failed or rc else 0

    names = [n.strip() for n in args.models.split(",") if n.strip()] or list(QUICK)
    unknown = [n for n in names if n not in QUICK]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(QUICK)}")
    if any(n in ("remi", "hpcl4sr") for n in names):
        ensure_category_data()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        runs = list(pool.map(lambda n: run_quick(n, work, args.threads), names))
    if args.merge and (out_dir / "reproduce-quick.json").exists():
        previous = _bench.read_document(out_dir / "reproduce-quick.json")
        new = {r["name"] for r in runs}
        kept = [r for r in previous.get("runs", []) if r.get("name") not in new]
        order = {n: i for i, n in enumerate(QUICK)}
        runs = sorted([*kept, *runs], key=lambda r: order.get(r["name"], len(order)))
    report = {
        "name": "reproduce-quick",
        "date": _bench.now_utc(),
        "machine": _bench.machine(),
        "command": "python benchmarks/reproduce.py " + " ".join(sys.argv[1:]),
        "wall_seconds": time.perf_counter() - t0,
        "settings": {"jobs": args.jobs, "threads": args.threads, "seed": 2024},
        "runs": runs,
        "failures": [r["name"] for r in runs if r["exit"] != 0],
    }
    doc, rows = quick_report(report)
    _bench.emit(report, doc, out_dir, False, "reproduce", rows)
    failed = [r["name"] for r in runs if r["exit"] != 0]
    print(f"[reproduce] quick suite: {len(runs) - len(failed)}/{len(runs)} models ran in "
          f"{time.perf_counter() - t0:.0f} s; failed: {failed or 'none'}")  # fmt: skip
    rc = _report(out_dir, Path(args.report_dir))
    return 1 if failed or rc else 0


def _report(results: Path, out: Path) -> int:
    exe = Path(sys.executable).with_name("polyrec")
    return subprocess.call([str(exe), "report", str(results), "--out", str(out), "--markdown"])


if __name__ == "__main__":
    sys.exit(main())
