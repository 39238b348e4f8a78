"""Helpers shared by the benchmark scripts (machine description, child runs, timing, results).

Not part of the polyrec package: the scripts in this folder import it as ``_bench`` (they run as
``python benchmarks/<script>.py``, which puts this folder on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


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


def now_utc() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_results(out_dir: Path, name: str, result: dict[str, Any], markdown: str) -> list[Path]:
    """Write ``name.json`` and ``name.md`` atomically (temp file + rename); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix, text in ((".json", json.dumps(result, indent=2) + "\n"), (".md", markdown)):
        path = out_dir / f"{name}{suffix}"
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        paths.append(path)
    return paths


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
