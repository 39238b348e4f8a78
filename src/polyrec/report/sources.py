"""Read the reproduction benchmarks' JSON results into one normalised form.

Every benchmark script in ``benchmarks/`` writes ``results/<name>.json`` (aggregated over seeds)
and keeps each run in ``results/<name>-runs/``. Their layouts differ (a multi-behavior benchmark
has two selection protocols, MBA's labels its rows, a sequential one has one dataset per key);
this module turns each into :class:`Result` rows (one per dataset × model × selection), learning
:class:`Curve` s (validation metric per epoch, first seed) and speed :class:`SpeedRow` s. A JSON
that no adapter knows is listed in the report as skipped, never an error.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyrec.errors import DataError

# protocol names as the report prints them
PROTOCOL_LABEL = {
    "sampled": "sampled 1+99",
    "full": "full ranking",
    "retrieval": "retrieval (per-interest top-N merged)",
}


@dataclass
class Result:
    """One table row: a model's test metrics on one dataset, mean ± sd over seeds."""

    benchmark: str
    dataset: str
    model: str
    protocol: str  # sampled | full | retrieval
    selection: str  # what chose the best epoch, e.g. "validation sampled ndcg@10"
    split: str
    seeds: int
    test: dict[str, tuple[float, float]]  # metric → (mean, sd)
    ndcg: str = "standard"  # "standard" or "comirec" (IDCG over the recalled positives)


@dataclass
class Curve:
    benchmark: str
    dataset: str
    selection: str
    model: str
    metric: str
    points: list[tuple[float, float]]


@dataclass
class SpeedRow:
    benchmark: str
    group: str
    case: str
    values: dict[str, float]


@dataclass
class Collected:
    meta: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # benchmark → date, machine, command
    results: list[Result] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    speed: list[SpeedRow] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _ms(v: Any) -> tuple[float, float] | None:
    """``{"mean", "sd"}``, ``[mean, sd]`` or a number → (mean, sd)."""
    if isinstance(v, dict) and "mean" in v:
        sd = v.get("sd")
        return float(v["mean"]), float(sd) if sd is not None and math.isfinite(sd) else 0.0
    if isinstance(v, list | tuple) and len(v) == 2 and all(isinstance(x, int | float) for x in v):
        return float(v[0]), float(v[1])
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v), 0.0
    return None


def _metrics(block: Any) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    if isinstance(block, dict):
        for k, v in block.items():
            ms = _ms(v)
            if ms is not None and "@" in k:
                out[k] = ms
    return out


def _n_seeds(entry: dict[str, Any]) -> int:
    seeds = entry.get("seeds")
    return len(seeds) if isinstance(seeds, list) else 1


def _split_text(settings: dict[str, Any], default: str) -> str:
    return str(settings.get("split", default))


def _read_run(runs_dir: Path, name: str) -> dict[str, Any] | None:
    path = runs_dir / f"{name}.json"
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _curve_points(run: dict[str, Any]) -> list[tuple[float, float]]:
    if isinstance(run.get("curve"), list):
        return [(float(e), float(v)) for e, v in run["curve"] if v is not None]
    if isinstance(run.get("history"), list):  # a polyrec metrics.json
        pts = []
        for rec in run["history"]:
            valid = rec.get("valid") or {}
            sel = run.get("protocol", {}).get("selection", "")
            key = sel.split()[-1] if sel else next(iter(valid), None)
            if key in valid:
                pts.append((float(rec["epoch"]), float(valid[key])))
        return pts
    if isinstance(run.get("epochs"), list):  # MBA's runs: per-epoch dicts with valid_<metric>
        pts = []
        for rec in run["epochs"]:
            for k, v in rec.items():
                if k.startswith("valid_") and v is not None:
                    pts.append((float(rec["epoch"]), float(v)))
                    break
        return pts
    return []


def _first_seed_curves(
    col: Collected, bench: str, runs: list[dict[str, Any]], runs_dir: Path, metric: str
) -> None:
    seen: set[tuple[str, str, str]] = set()
    for r in sorted(runs, key=lambda r: r.get("seed", 0)):
        key = (r.get("dataset", ""), r.get("select", r.get("selection", "")), r.get("model", ""))
        if key in seen or "name" not in r:
            continue
        run = _read_run(runs_dir, r["name"])
        if run is None:
            continue
        pts = _curve_points(run)
        if pts:
            seen.add(key)
            col.curves.append(Curve(bench, key[0], key[1], key[2], metric, pts))


# ------------------------------------------------------------------------------- adapters
def _multibehavior(col: Collected, d: dict[str, Any], path: Path) -> None:
    """results[dataset][selection][model] with valid/test[protocol][metric] (CML's, EGCM's)."""
    bench = d["name"]
    settings = d.get("settings", {})
    for ds, per_sel in d["results"].items():
        for sel, per_model in per_sel.items():
            for model, e in per_model.items():
                test = e.get("test", {}).get(sel, {})
                col.results.append(
                    Result(
                        bench, ds, model, sel, f"validation {sel} ndcg@10",
                        _split_text(settings, "leave-one-out on buy (published test purchase)"),
                        _n_seeds(e), _metrics(test),
                    )
                )  # fmt: skip
    runs = d.get("runs", [])
    if isinstance(runs, list):
        _first_seed_curves(col, bench, runs, path.parent / f"{bench}-runs", "valid ndcg@10")


def _sequential(col: Collected, d: dict[str, Any], path: Path) -> None:
    """results[dataset][model] (or results[model] for one dataset) with test[metric]."""
    bench = d["name"]
    settings = d.get("settings", {})
    res = d["results"]
    one_dataset = all(isinstance(v, dict) and "test" in v for v in res.values())
    per_ds = (
        {str(d.get("dataset", "ml100k" if bench == "hpcl4sr" else bench)): res}
        if (one_dataset)
        else res
    )
    for ds, per_model in per_ds.items():
        for model, e in per_model.items():
            if not isinstance(e, dict) or "test" not in e:
                continue
            col.results.append(
                Result(
                    bench, ds, model, "retrieval", str(settings.get("selection", "validation")),
                    _split_text(settings, "users 8:1:1, first 80 % of held-out users as history"),
                    _n_seeds(e), _metrics(e["test"]),
                )
            )  # fmt: skip
    runs = d.get("runs", [])
    if isinstance(runs, list):
        # one selection rule per benchmark: curves group by dataset only
        runs = [{**r, "select": ""} for r in runs]
        if one_dataset:
            runs = [{**r, "dataset": next(iter(per_ds))} for r in runs]
        _first_seed_curves(col, bench, runs, path.parent / f"{bench}-runs", "valid recall@50")


def _mba(col: Collected, d: dict[str, Any], path: Path) -> None:
    """summary[dataset].rows[label] with test[metric] = [mean, sd]; runs[dataset][label] inline."""
    bench = d["name"]
    for ds, s in d["summary"].items():
        for label, e in s.get("rows", {}).items():
            col.results.append(
                Result(
                    bench, ds, label, "full", "validation recall@20",
                    "purchases 4:1 at random + 10 % validation (MBA §4.3)",
                    _n_seeds(e), _metrics(e.get("test", {})),
                )
            )  # fmt: skip
    for ds, per_label in (d.get("runs") or {}).items():
        if not isinstance(per_label, dict):
            continue
        for label, runs in per_label.items():
            if runs and isinstance(runs[0], dict):
                pts = _curve_points(min(runs, key=lambda r: r.get("seed", 0)))
                if pts:
                    col.curves.append(Curve(bench, ds, "", label, "valid recall@20", pts))


def _step_speed(col: Collected, d: dict[str, Any], path: Path) -> None:
    for r in d.get("runs", []):
        s = r.get("summary") or {}
        values = {
            k: float(v)
            for k, v in {
                "threads": r.get("threads"),
                "s / pass (wall)": s.get("pass_wall_s"),
                "s / pass (CPU)": s.get("pass_cpu_s"),
                "s / eval (wall)": s.get("eval_wall_s"),
                "peak MiB": r.get("peak_rss_mib"),
            }.items()
            if isinstance(v, int | float)
        }
        col.speed.append(SpeedRow(d["name"], str(r.get("group", "")), str(r.get("label")), values))


def _rows_table(col: Collected, d: dict[str, Any], path: Path) -> None:
    """Any benchmark that writes ``rows``: a list of flat dicts with ``case`` (e.g. scale.json)."""
    for r in d["rows"]:
        values = {k: float(v) for k, v in r.items() if isinstance(v, int | float)}
        col.speed.append(
            SpeedRow(d["name"], str(r.get("group", r.get("size", ""))), str(r.get("case")), values)
        )


def _quick(col: Collected, d: dict[str, Any], path: Path) -> None:
    """benchmarks/reproduce.py --suite quick: one polyrec metrics.json per run, inline."""
    for r in d["runs"]:
        m = r.get("metrics")
        if not isinstance(m, dict):
            continue
        sel = str(m.get("protocol", {}).get("selection", "")).split()
        proto = sel[-2] if len(sel) >= 2 else next(iter(m.get("test", {}).get("metrics", {})), "")
        test = m["test"]["metrics"].get(proto, {}) if proto else {}
        col.results.append(
            Result(
                d["name"], r.get("dataset", m.get("dataset", "")), r["model"], proto,
                m.get("protocol", {}).get("selection", ""),
                str(m.get("protocol", {}).get("split", {}).get("name", "")), 1,
                {k: (float(v), 0.0) for k, v in test.items() if isinstance(v, int | float)},
            )
        )  # fmt: skip
        pts = _curve_points(m)
        if pts:
            metric = f"valid {sel[-1]}" if sel else "valid"
            col.curves.append(Curve(d["name"], r.get("dataset", ""), "", r["model"], metric, pts))


def _which(d: dict[str, Any]) -> Callable[[Collected, dict[str, Any], Path], None] | None:
    name = str(d.get("name", ""))
    if name.startswith("reproduce-") and isinstance(d.get("runs"), list):
        return _quick
    if name == "mba-reproduce" and isinstance(d.get("summary"), dict):
        return _mba
    if name.startswith("step-speed") and isinstance(d.get("runs"), list):
        return _step_speed
    if isinstance(d.get("rows"), list):
        return _rows_table
    res = d.get("results")
    if isinstance(res, dict) and res:
        first = next(iter(res.values()))
        if isinstance(first, dict) and first:
            inner = next(iter(first.values()))
            if (
                isinstance(inner, dict)
                and inner
                and all(isinstance(v, dict) and "test" in v for v in inner.values())
            ):
                return _multibehavior
        return _sequential
    return None


def _json_files(root: Path) -> Iterator[Path]:
    # the aggregated files only: per-run folders (<name>-runs/) are read through them
    yield from sorted(p for p in root.glob("*.json") if p.is_file())


def collect(results_dir: Path) -> Collected:
    """Every known benchmark result under ``results_dir`` (its top level)."""
    if not results_dir.exists():
        raise DataError(f"{str(results_dir)!r}: no such results directory")
    if not results_dir.is_dir():
        raise DataError(f"{str(results_dir)!r} is not a directory of benchmark JSON results")
    col = Collected()
    files = list(_json_files(results_dir))
    if not files:
        raise DataError(f"{str(results_dir)!r} holds no benchmark JSON results (*.json)")
    for path in files:
        try:
            d = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            col.skipped.append(f"{path.name}: not readable JSON ({e.__class__.__name__})")
            continue
        if not isinstance(d, dict):
            col.skipped.append(f"{path.name}: not a benchmark result")
            continue
        d.setdefault("name", path.stem)
        adapter = _which(d)
        if adapter is None:
            col.skipped.append(f"{path.name}: no known result layout")
            continue
        try:
            adapter(col, d, path)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            col.skipped.append(f"{path.name}: unexpected layout ({e.__class__.__name__}: {e})")
            continue
        col.meta[d["name"]] = {
            "file": path.name,
            "date": d.get("date", ""),
            "command": d.get("command", d.get("argv", "")),
            "machine": d.get("machine", {}),
        }
    return col
