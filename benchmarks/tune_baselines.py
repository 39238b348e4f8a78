"""Tune the closed-form baselines (``history``, ``itemknn``, ``ease``) on validation, per dataset.

Each (dataset, model) is one ``polyrec tune`` study (Optuna TPE, seeded) over the space below,
judged by the validation NDCG@10 of ``--select`` (full ranking by default: the protocol the
issue asks to win; the sampled tables reuse these values). The test split is never read for
selection. The best values go to ``benchmarks/results/tuned-baselines.{json,md}``; the table
benchmarks (``multibehavior.py``, ``egcm.py``, ``mba_reproduce.py``) read that file and pass
the values as overrides, so every baseline row says how it was tuned and with what budget.

    python benchmarks/tune_baselines.py                               # retailrocket, tmall, ijcai
    python benchmarks/tune_baselines.py --datasets retailrocket --trials 8 --quick

Not a test.
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
RESULTS = HERE / "results" / "tuned-baselines.json"

# config key → its range (TOML inline tables of ``[tune.space]``); the trial budget per model
SPACES: dict[str, dict[str, str]] = {
    "history": {
        "params.half_life": "{ low = 3600.0, high = 3.0e7, log = true }",
        "params.alpha": "{ low = 0.1, high = 1000.0, log = true }",
        "params.conversion": "{ choices = [true, false] }",
        "params.popularity": '{ choices = ["all", "target"] }',
    },
    "itemknn": {
        "params.k": "{ low = 10, high = 1000, log = true, step = 1 }",
        "params.shrink": "{ low = 0.0, high = 100.0 }",
        "params.alpha": "{ low = 0.0, high = 1.0 }",
        "params.other_weight": "{ low = 0.0, high = 1.0 }",
    },
    "ease": {"params.l2": "{ low = 1.0, high = 10000.0, log = true }"},
}
TRIALS = {"history": 16, "itemknn": 16, "ease": 8}


def tune_config(model: str, base: Path, trials: int) -> str:
    """The base config plus the ``[tune]`` table of ``model``."""
    lines = [base.read_text().rstrip(), "", "[tune]", f"trials = {trials}", 'metric = "ndcg@10"']
    lines += ["", "[tune.space]", *(f'"{k}" = {v}' for k, v in SPACES[model].items()), ""]
    return "\n".join(lines)


def study(
    dataset: str, model: str, data: str, select: str, trials: int, args: argparse.Namespace
) -> dict[str, Any]:
    from multibehavior import DATA_OVERRIDES, MODEL_DATA_OVERRIDES, config_for

    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / f"{dataset}-{model}.toml"
    cfg.write_text(tune_config(model, config_for(model, dataset), trials))
    out = work / f"tune-{dataset}-{model}-{select}"
    exe = Path(sys.executable).with_name("polyrec")
    if (out / "tune.json").exists():  # a study continues with the config it was started with
        cmd = [str(exe), "tune", "--resume", str(out), "--quiet", "--json"]
    else:
        cmd = [str(exe), "tune", "--config", str(cfg), "--quiet", "--json", "--out", str(out)]
        cmd += [f"data.path={json.dumps(data)}", f'train.select_protocol="{select}"',
                'train.metric="ndcg@10"', 'train.device="cpu"', f"train.threads={args.threads}",
                f'eval.protocols=["{select}"]', *DATA_OVERRIDES.get(dataset, []),
                *MODEL_DATA_OVERRIDES.get((model, dataset), [])]  # fmt: skip
    log = work / f"{out.name}.log"
    rc, wall, cont = _bench.run_child(cmd, _bench.child_env(args.threads), log, out.name, "tune")
    if rc != 0:  # e.g. EASE over its memory limit: recorded, the other studies go on
        why = next((ln for ln in reversed(_bench.tail(log).splitlines()) if "error" in ln), "")
        print(f"[tune] {out.name} failed (exit {rc}): {why}", flush=True)
        return {"dataset": dataset, "model": model, "select": select, "trials": trials,
                "failed": why.removeprefix("error: ").strip() or f"exit {rc}"}  # fmt: skip
    tj = json.loads((out / "tune.json").read_text())
    best = tj["best"]
    return {
        "dataset": dataset, "model": model, "select": select, "trials": trials,
        "finished": sum(1 for t in tj["trials"] if t.get("state") == "complete"),
        "space": SPACES[model], "params": best["params"], "valid": best["value"],
        "seconds": round(wall, 1), "contention": cont,
    }  # fmt: skip


def overrides(dataset: str, model: str, path: Path = RESULTS) -> list[str]:
    """The tuned values of ``model`` on ``dataset`` as config overrides ([] when not tuned)."""
    if not path.exists():
        return []
    for s in json.loads(path.read_text()).get("data", {}).get("studies", []):
        if (s["dataset"], s["model"]) == (dataset, model) and not s.get("failed"):
            return [f"{k}={json.dumps(v)}" for k, v in sorted(s["params"].items())]
    return []


def budget(model: str, path: Path = RESULTS) -> str:
    """How ``model``'s row was tuned, for a table's protocol text."""
    return f"{TRIALS[model]} TPE trials" if model in TRIALS and path.exists() else "not tuned"


def report(res: dict[str, Any]) -> _bench.Doc:
    doc = _bench.Doc("Closed-form baselines tuned on validation (polyrec tune)")
    doc.text(
        "Each row is one `polyrec tune` study (Optuna TPE, seeded with the run seed 2024): the "
        f"search space below, judged by the validation NDCG@10 under `{res['settings']['select']}`"
        " ranking (leave-one-out on buy; the test split is never read for selection). Budget: "
        + ", ".join(f"{m} {n} trials" for m, n in TRIALS.items())
        + ". The benchmark tables run these values (`tune_baselines.overrides`)."
    )
    doc.table(["dataset", "model", "trials", "best valid NDCG@10", "best values", "space", "s"])
    for s in res["studies"]:
        if s.get("failed"):
            doc.row(s["dataset"], s["model"], 0, "–", f"cannot run: {s['failed']}", "", "")
            continue
        doc.row(
            s["dataset"], s["model"], s["finished"], f"{s['valid']:.4f}",
            ", ".join(f"{k.split('.', 1)[1]}={v:.4g}" if isinstance(v, float)
                      else f"{k.split('.', 1)[1]}={v}" for k, v in sorted(s["params"].items())),
            "; ".join(f"{k.split('.', 1)[1]} {v}" for k, v in s["space"].items()), s["seconds"],
        )  # fmt: skip
    return doc


def main(argv: list[str] | None = None) -> int:
    from multibehavior import DATASETS, ensure_dataset

    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--datasets", default="retailrocket,tmall,ijcai")
    ap.add_argument("--models", default=",".join(SPACES))
    ap.add_argument("--select", choices=["full", "sampled"], default="full")
    ap.add_argument("--trials", type=int, default=None, help="override every model's budget")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data-root", default=str(ROOT / "data"))
    ap.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-tune-baselines"))
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--quick", action="store_true", help="2 trials each, no files")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    studies = []
    old = json.loads(RESULTS.read_text())["data"]["studies"] if RESULTS.exists() else []
    for d in [x for x in args.datasets.split(",") if x]:
        if d not in DATASETS:
            ap.error(f"unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
        data = ensure_dataset(d, Path(args.shared), Path(args.data_root))
        for m in [x for x in args.models.split(",") if x]:
            trials = 2 if args.quick else (args.trials or TRIALS[m])
            studies.append(study(d, m, data, args.select, trials, args))
    done = {(s["dataset"], s["model"]) for s in studies}
    studies = [s for s in old if (s["dataset"], s["model"]) not in done] + studies
    res = {
        **_bench.run_header("tuned-baselines", __file__, argv, t0),
        "settings": {
            "select": args.select,
            "threads": args.threads,
            "jobs": 1,
            "trials": TRIALS,
            "seeds": [2024],
        },
        "studies": studies,
    }
    return _bench.emit(res, report(res), Path(args.out_dir), args.quick, "tune-baselines")


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
