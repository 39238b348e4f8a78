"""Helpers shared by the benchmark scripts (machine description, child runs, timing, results).

Not part of the polyrec package: the scripts in this folder import it as ``_bench`` (they run as
``python benchmarks/<script>.py``, which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def mean(xs: list[float]) -> float | None:
    return statistics.fmean(xs) if xs else None


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads)
    env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONWARNINGS"] = "ignore"
    return env


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat (0, 0 where unavailable)."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    idle = f[3] + (f[4] if len(f) > 4 else 0)  # idle + iowait
    total = sum(f[:8])  # user nice system idle iowait irq softirq steal
    return total - idle, total


def children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def wait_idle(
    max_wait: float, busy_below: float = 0.15, window: float = 3.0, tag: str = "bench"
) -> dict[str, Any]:
    """Wait (up to ``max_wait`` s) until the machine's CPUs are at most ``busy_below`` busy."""
    t0 = time.perf_counter()
    busy = None
    while True:
        b0, t_0 = cpu_jiffies()
        time.sleep(window)
        b1, t_1 = cpu_jiffies()
        busy = (b1 - b0) / (t_1 - t_0) if t_1 > t_0 else 0.0
        waited = time.perf_counter() - t0
        if busy <= busy_below or waited >= max_wait:
            return {
                "busy_fraction": round(busy, 3),
                "waited_seconds": round(waited, 1),
                "idle": busy <= busy_below,
            }
        print(
            f"[{tag}] machine {busy:.0%} busy; waiting for it to quiet down "
            f"({waited:.0f}/{max_wait:.0f} s)",
            flush=True,
        )


def run_child(
    cmd: list[str], env: dict[str, str], log: Path, label: str, tag: str = "bench"
) -> tuple[int, float, dict[str, Any]]:
    """Run one side; returns exit code, wall seconds and how busy the rest of the machine was."""
    print(f"[{tag}] {label}: {' '.join(cmd)}", flush=True)
    b0, t_0 = cpu_jiffies()
    c0 = children_cpu()
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - t0
    b1, t_1 = cpu_jiffies()
    child_cpu = children_cpu() - c0
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy_cpu = (b1 - b0) / hz
    ncpu = os.cpu_count() or 1
    contention = {
        "child_cpu_seconds": round(child_cpu, 2),
        # CPU-seconds per second used by everything else on the machine during this side's run
        "other_cpu_load": round(max(0.0, busy_cpu - child_cpu) / wall, 2) if wall else None,
        "machine_busy_fraction": round((b1 - b0) / (t_1 - t_0), 3) if t_1 > t_0 else None,
        "cores": ncpu,
    }
    print(
        f"[{tag}] {label}: exit {rc} after {wall:.1f} s (log {log}); other processes used "
        f"{contention['other_cpu_load']} CPUs meanwhile",
        flush=True,
    )
    return rc, wall, contention


def last_json_line(path: Path) -> dict[str, Any] | None:
    for line in reversed(path.read_text(errors="replace").splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def tail(path: Path, n: int = 25) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def sd(xs: list[float]) -> float | None:
    return statistics.stdev(xs) if len(xs) > 1 else None


def command(script: str, argv: list[str] | None = None) -> str:
    """``python benchmarks/<script> ARGS`` (``argv``, default: this process's arguments)."""
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python", f"benchmarks/{Path(script).name}", *args])


def run_header(name: str, script: str, argv: list[str] | None, t0: float) -> dict[str, Any]:
    """The standard head of a script's results: ``name``, ``date``, ``machine``, ``command``
    and ``wall_seconds`` since ``t0`` (``time.perf_counter()``)."""
    return {"name": name, "date": now_utc(), "machine": machine(),
            "command": command(script, argv), "wall_seconds": time.perf_counter() - t0}  # fmt: skip


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------ the one results format
class Doc:
    """A benchmark's report in the making: title, protocol paragraphs, then sections (heading,
    text, one table, notes) in order — the ``protocol`` and ``tables`` of a ``polyrec-bench/1``
    document (``polyrec.report.markdown``), which ``polyrec report --markdown`` renders."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.protocol: list[str] = []
        self.tables: list[dict[str, Any]] = []

    def text(self, *paras: str) -> Doc:
        """Paragraphs: the protocol before any section, else the current section's text (before
        its table) or notes (after it)."""
        for p in paras:
            if not self.tables:
                self.protocol.append(p)
            else:
                t = self.tables[-1]
                t.setdefault("notes" if t.get("columns") else "text", []).append(p)
        return self

    def section(self, title: str, level: int = 2) -> Doc:
        self.tables.append({"title": title, "level": level})
        return self

    def table(self, columns: list[str], rows: list[list[Any]] | None = None) -> Doc:
        """A table in the current section (a new untitled section when it already has one)."""
        if not self.tables or self.tables[-1].get("columns"):
            self.tables.append({})
        self.tables[-1].update(columns=list(columns), rows=[list(r) for r in rows or []])
        return self

    def row(self, *cells: Any) -> Doc:
        self.tables[-1]["rows"].append(list(cells))
        return self


def result_row(
    dataset: str,
    model: str,
    protocol: str,
    selection: str,
    split: str,
    seeds: int,
    test: dict[str, Any],
    ndcg: str = "standard",
    strongest: str | None = None,
) -> dict[str, Any]:
    """One ``results`` row of the document: test ``{metric: [mean, sd]}`` (from ``{"mean",
    "sd"}`` cells, ``[mean, sd]`` pairs or numbers; entries without an ``@`` are left out)."""

    def ms(v: Any) -> list[float | None] | None:
        if isinstance(v, dict) and "mean" in v:
            return [v["mean"], v.get("sd")]
        if isinstance(v, list | tuple) and len(v) == 2:
            return [v[0], v[1]]
        return [v, None] if isinstance(v, int | float) and not isinstance(v, bool) else None

    metrics = {k: ms(v) for k, v in test.items() if "@" in k}
    return {
        "dataset": dataset, "model": model, "protocol": protocol, "selection": selection,
        "split": split, "seeds": seeds, "ndcg": ndcg,
        "test": {k: v for k, v in metrics.items() if v is not None and v[0] is not None},
        **({"strongest": strongest} if strongest else {}),
    }  # fmt: skip


STANDARD = ("name", "date", "machine", "command", "settings", "runs", "failures")


def document(
    res: dict[str, Any],
    doc: Doc,
    results: list[dict[str, Any]] | None = None,
    failures: list[str] | None = None,
) -> dict[str, Any]:
    """The ``polyrec-bench/1`` document of a benchmark: ``res`` holds ``name``, ``date``,
    ``machine``, ``command``, ``settings`` (``threads``, ``jobs``, ``seeds``), ``runs``,
    ``failures``; its other keys go to ``data``."""
    s = res.get("settings") or {}
    runs = res.get("runs") if isinstance(res.get("runs"), list) else []
    loads = [
        r["contention"]["other_cpu_load"]
        for r in runs
        if isinstance(r.get("contention"), dict)
        and r["contention"].get("other_cpu_load") is not None
    ]
    load = {"threads": s.get("threads"), "jobs": s.get("jobs")}
    if loads:
        load["other_cpu_load"] = round(statistics.fmean(loads), 2)
    for r in runs:
        if r.get("curve") and isinstance(r.get("selection"), str) and "curve_metric" not in r:
            r["curve_metric"] = "valid " + r["selection"].split()[-1]
    return {
        "benchmark": res["name"],
        "title": doc.title,
        "date": res.get("date") or now_utc(),
        "machine": res.get("machine") or machine(),
        "load": {k: v for k, v in load.items() if v is not None} or None,
        "command": res.get("command") or "python " + " ".join(sys.argv),
        "seeds": s.get("seeds", res.get("seeds")),
        "settings": s,
        "protocol": doc.protocol,
        "tables": doc.tables,
        "results": results or [],
        "runs": runs,
        "failures": res.get("failures") or [] if failures is None else failures,
        "data": {k: v for k, v in res.items() if k not in STANDARD},
    }


def read_document(path: Path) -> dict[str, Any]:
    """A written document back in the script's own layout (``data`` merged into the top)."""
    doc = json.loads(path.read_text())
    std = {k: doc[k] for k in STANDARD[1:] if k in doc}
    return {"name": doc["benchmark"], **std, **doc.get("data", {})}


def emit(
    res: dict[str, Any],
    doc: Doc,
    out_dir: Path,
    quick: bool,
    tag: str,
    results: list[dict[str, Any]] | None = None,
    failures: list[str] | None = None,
) -> int:
    """Print the report and write ``<res['name']>.json`` (``polyrec-bench/1``) unless
    ``quick``; the exit status (1 when a run failed). The markdown beside it is ``polyrec report
    <out_dir> --markdown``'s."""
    from polyrec.report.markdown import render_markdown, write_doc

    d = document(res, doc, results, failures)
    print(render_markdown(d))
    if not quick:
        print(
            f"[{tag}] wrote {write_doc(out_dir, d)}; markdown: polyrec report {out_dir} --markdown"
        )
    return 1 if res.get("failures") else 0


# the strong baselines every multi-behavior table carries (issue 22); the strongest of them is
# picked on validation, never on test
STRONG_BASELINES = (
    "pop", "pop-all", "history", "itemknn", "ease", "mf", "mf-all", "lightgcn", "lightgcn-all",
)  # fmt: skip


def strongest(
    valid: dict[str, float | None], baselines: tuple[str, ...] = STRONG_BASELINES
) -> str | None:
    """The baseline with the best validation value among ``valid`` (model → value), or None."""
    scored = {m: v for m, v in valid.items() if m in baselines and v is not None}
    return max(scored, key=lambda m: scored[m]) if scored else None


def gain(a: float | None, b: float | None) -> str:
    """Relative gain of ``a`` over ``b`` as ``+x.y %`` (``—`` when either is missing)."""
    if a is None or b is None or b == 0:
        return "—"
    return f"{100 * (a / b - 1):+.1f} %"


def fmt_mean_sd(vals: list[float], nd: int = 4) -> str:
    """``mean ± sd`` (``mean`` alone for one value, ``–`` for none)."""
    if not vals:
        return "–"
    m = statistics.fmean(vals)
    return f"{m:.{nd}f} ± {statistics.stdev(vals):.{nd}f}" if len(vals) > 1 else f"{m:.{nd}f}"


def fmt_mean_sd_from(mean: float | None, sd: float | None, nd: int = 4) -> str:
    """``mean ± sd`` from precomputed figures (``–`` when there is no mean)."""
    if mean is None:
        return "–"
    return f"{mean:.{nd}f} ± {sd:.{nd}f}" if sd is not None else f"{mean:.{nd}f}"


# ------------------------------------------------------------------ one training run (child)
def train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one polyrec run in this process and measure it (the child side of :func:`run_jobs`).

    ``spec``: ``config`` (TOML path), ``overrides`` (``key=value`` list), ``run_dir``,
    ``threads``, ``eval_reps`` (timed test evaluations with the best weights), ``eval_protocols``
    (what those timed evaluations run). Returns timings, peak memory, the best epoch, the
    validation curve and the final validation/test metrics of every configured protocol.
    """
    import torch

    from polyrec.config import load_config
    from polyrec.eval.evaluator import evaluate
    from polyrec.training.trainer import Reporter, Trainer, final_metrics, prepare

    torch.set_num_threads(int(spec["threads"]))
    cfg = load_config(spec["config"], [*spec["overrides"], f"train.threads={spec['threads']}"])
    run_dir = Path(spec["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prepared = prepare(cfg, run_dir)
    setup = time.perf_counter() - t0
    t0 = time.perf_counter()
    metric = cfg.train.metric

    class EpochLines(Reporter):
        """One flushed line per epoch in the run's log, so that a long run can be followed."""

        def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
            loss = record.get("train", {}).get("loss", float("nan"))
            valid = record.get("valid") or {}
            shown = f"  valid {metric} {valid[metric]:.4f}" if metric in valid else ""
            print(f"epoch {epoch}  loss {loss:.4f}  {record['seconds']:.1f}s{shown}", flush=True)

    summary = Trainer(prepared, run_dir, EpochLines()).fit()
    fit_wall = time.perf_counter() - t0
    result = final_metrics(prepared)
    eval_times = []
    for _ in range(int(spec.get("eval_reps", 1))):
        t0 = time.perf_counter()
        evaluate(
            prepared.model,
            prepared.split,
            "test",
            protocols=tuple(spec.get("eval_protocols") or cfg.eval.protocols),
            ks=tuple(cfg.eval.ks),
            mask=cfg.eval.mask,
            batch_size=cfg.eval.batch_size,
            retrieval=cfg.eval.retrieval_options(),
        )
        eval_times.append(time.perf_counter() - t0)
    hist = summary["history"]
    batches = sum(int(h.get("batches") or 0) for h in hist)
    train_s = sum(float(h["seconds"]) for h in hist)
    best = int(summary["best_epoch"])
    to_best = sum(
        float(h["seconds"]) + float(h.get("eval_seconds") or 0) for h in hist if h["epoch"] <= best
    )
    return {
        "best_epoch": best,
        "epochs_run": summary["epoch"],
        "stopped": summary["stopped"],
        "selection": f"validation {cfg.train.select_protocol} {metric}",
        "iterations": batches,
        "iterations_per_second": batches / train_s if train_s else None,
        "epoch_seconds": [float(h["seconds"]) for h in hist],
        "train_seconds": train_s,
        "fit_wall_seconds": fit_wall,
        "seconds_to_best": to_best,
        "setup_seconds": setup,
        "valid_eval_seconds": [float(h.get("eval_seconds") or 0) for h in hist],
        "test_eval_seconds": eval_times,
        "n_users": prepared.split.train.n_users,
        "n_items": prepared.split.train.n_items,
        "split": result["test"]["split"],
        "peak_rss_mib": peak_rss_mib(),
        "valid": result["valid"]["metrics"],
        "test": result["test"]["metrics"],
        # mean pairwise cosine between a user's K interests (retrieval evaluation, test users)
        "interest_cosine": (result["test"].get("retrieval") or {}).get("interest_cosine"),
        "notes": sorted(set(result["valid"].get("notes", []) + result["test"].get("notes", []))),
        "curve": [(h["epoch"], (h.get("valid") or {}).get(metric)) for h in hist],
    }


def worker_main(argv: list[str]) -> int | None:
    """``script.py --worker SPEC.json``: run :func:`train_worker` and write its JSON atomically.
    Returns None when ``argv`` is not a worker call."""
    if len(argv) != 2 or argv[0] != "--worker":
        return None
    spec = json.loads(Path(argv[1]).read_text())
    out = train_worker(spec)
    tmp = Path(spec["out"] + ".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(spec["out"])
    return 0


def run_jobs(
    specs: list[dict[str, Any]],
    script: Path,
    work: Path,
    *,
    threads: int,
    parallel: int = 1,
    resume: bool = False,
    report_only: bool = False,
    keep: Path | None = None,
    tag: str = "bench",
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every spec (each needs a unique ``name``) as ``script --worker`` child processes,
    ``parallel`` at a time; returns (finished runs with their spec fields, failure messages).
    With ``resume``, a run whose output JSON exists in ``work`` is reused; ``report_only`` reuses
    finished runs and skips (reports as missing) the others. ``keep``: where each run's result
    JSON goes (default ``work``) — a folder to commit, so that a later session can resume."""
    from concurrent.futures import ThreadPoolExecutor

    work.mkdir(parents=True, exist_ok=True)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    env = child_env(threads)

    def one(spec: dict[str, Any]) -> dict[str, Any] | str:
        name = spec["name"]
        spec = {**spec, "threads": threads, "out": str((keep or work) / f"{name}.json")}
        spec.setdefault("run_dir", str(work / name))
        if (resume or report_only) and Path(spec["out"]).exists():
            kept = json.loads(Path(spec["out"]).read_text())
            # a kept run made with other settings is stale: run it again; --report-only reports
            # it as it was made (its own overrides stay in the run record)
            same = kept.get("overrides", spec.get("overrides")) == spec.get("overrides")
            if same or report_only:
                note = "" if same else " (made with other settings: its own are kept with it)"
                print(f"[{tag}] {name}: reusing {spec['out']}{note}", flush=True)
                return {**spec, **kept, "overrides": kept.get("overrides", spec.get("overrides"))}
            print(f"[{tag}] {name}: settings changed since the kept run; running again", flush=True)
        if report_only:
            return f"{name}: not run yet (--report-only)"
        spec_path = work / f"{name}.spec.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, str(script), "--worker", str(spec_path)]
        rc, wall, cont = run_child(cmd, env, work / f"{name}.log", name, tag=tag)
        if rc != 0 or not Path(spec["out"]).exists():
            return f"{name} failed (exit {rc}):\n{tail(work / f'{name}.log')}"
        out = json.loads(Path(spec["out"]).read_text())
        if "overrides" in spec:  # kept with the run, so that --resume can tell stale runs
            out["overrides"] = spec["overrides"]
            Path(spec["out"]).write_text(json.dumps(out))
        return {**spec, **out, "wall_seconds": wall, "contention": cont}

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        done = list(pool.map(one, specs))
    runs = [r for r in done if isinstance(r, dict)]
    failures = [r for r in done if isinstance(r, str)]
    for f in failures:
        print(f, file=sys.stderr)
    return runs, failures


def run_specs(
    specs: list[dict[str, Any]], script: str, args: Any, keep: Path | None, tag: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """:func:`run_jobs` with a script's common options (``work_dir``, ``threads``, ``jobs``,
    ``resume``, ``report_only``)."""
    return run_jobs(
        specs, Path(script).resolve(), Path(args.work_dir), threads=args.threads,
        parallel=args.jobs, resume=args.resume, report_only=args.report_only, keep=keep, tag=tag,
    )  # fmt: skip


def add_run_options(
    ap: argparse.ArgumentParser,
    name: str,
    *,
    threads: int,
    jobs: int,
    eval_reps: int,
    shared: bool = True,
    quick_help: str = "smoke run: 1 seed, few epochs, no files",
) -> None:
    """The options every reproduction script takes: ``--threads``, ``--jobs``, ``--eval-reps``,
    ``--shared`` (unless ``shared`` is false), ``--data-root``, ``--work-dir`` (``runs/bench-
    <name>``), ``--out-dir``, ``--keep`` (``results/<name>-runs``), ``--quick``, ``--resume``,
    ``--report-only`` and the hidden ``--worker``."""
    ap.add_argument("--threads", type=int, default=threads, help="torch threads per run")
    ap.add_argument("--jobs", type=int, default=jobs, help="runs at a time")
    ap.add_argument("--eval-reps", type=int, default=eval_reps, help="timed test evaluations")
    if shared:
        ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--data-root", default=str(ROOT / "data"))
    ap.add_argument("--work-dir", default=str(ROOT / "runs" / f"bench-{name}"))
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument(
        "--keep",
        default=str(HERE / "results" / f"{name}-runs"),
        help="folder for each run's result JSON (committed, so later sessions can --resume); "
        "'' keeps them in --work-dir",
    )
    ap.add_argument("--quick", action="store_true", help=quick_help)
    ap.add_argument("--resume", action="store_true", help="reuse the finished runs kept")
    ap.add_argument("--report-only", action="store_true", help="tables from the finished runs only")
    ap.add_argument("--worker", help=argparse.SUPPRESS)


def keep_dir(args: Any) -> Path | None:
    """Where the runs' result JSON is kept (``--keep``): none for ``--quick`` or ``--keep ''``."""
    return None if args.quick or not args.keep else Path(args.keep)
