"""Are two sets of training runs the same, bit for bit? (a refactor must not move a number)

Compares, run by run, what model selection and evaluation produced: the best epoch, the
validation curve, the validation and test metrics of every protocol, as exact floats. Reads a
benchmark document (``results/<name>.json``, its ``runs[*].metrics`` or the run itself) or a
single run (a ``metrics.json`` of a run directory, or a file of ``results/<name>-runs/``)::

    python benchmarks/reproduce.py --suite quick --jobs 1 --out-dir /tmp/rq --work-dir /tmp/rq-w
    python benchmarks/same_results.py benchmarks/results/reproduce-quick.json /tmp/rq/reproduce-quick.json

Prints one line per run (``same`` or the keys that differ) and exits 1 when any run differs or
is missing on one side. The training-loss means are reported, not judged (``--loss`` judges them
too). Not a test.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _runs(path: Path) -> dict[str, dict[str, Any]]:
    doc = json.loads(path.read_text())
    if isinstance(doc, dict) and isinstance(doc.get("runs"), list):
        return {str(r.get("name")): r.get("metrics") or r for r in doc["runs"]}
    return {path.stem: doc}


def _fingerprint(run: dict[str, Any]) -> dict[str, Any]:
    """What selection and evaluation produced (exact values)."""
    out: dict[str, Any] = {"best_epoch": run.get("best_epoch"), "epochs": run.get("epochs_run")}
    for part in ("valid", "test"):
        res = run.get(part) or {}
        for proto, values in (res.get("metrics", res) or {}).items():
            if isinstance(values, dict):
                for k, v in values.items():
                    out[f"{part}.{proto}.{k}"] = v
    history = run.get("history")
    if isinstance(history, list):
        out["valid_curve"] = [h.get("valid") for h in history]
        out["train_loss"] = [h.get("train") for h in history]
    elif "curve" in run:
        out["valid_curve"] = run["curve"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--loss", action="store_true", help="training-loss means must match too")
    args = ap.parse_args(argv)
    a, b = _runs(args.before), _runs(args.after)
    bad = 0
    for name in sorted(set(a) | set(b)):
        if name not in a or name not in b:
            print(f"{name}: only in {'after' if name in b else 'before'}")
            bad += 1
            continue
        fa, fb = _fingerprint(a[name]), _fingerprint(b[name])
        differ = [k for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)]
        judged = [k for k in differ if args.loss or k != "train_loss"]
        note = " (training-loss means differ)" if "train_loss" in differ and not args.loss else ""
        print(f"{name}: {'same' if not judged else 'DIFFERS in ' + ', '.join(judged[:6])}{note}")
        bad += bool(judged)
    print(f"{len(set(a) | set(b)) - bad} of {len(set(a) | set(b))} runs identical")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
