"""Read the benchmarks' JSON results (``polyrec-bench/1``, see :mod:`polyrec.report.markdown`).

Every document gives its test metrics as ``results`` rows (one per dataset × model × protocol ×
selection), its runs with their validation curves, and its tables; this module turns them into
:class:`Result` rows, learning :class:`Curve` s (first seed of each dataset × selection × model)
and the tables of the benchmarks that have no test metrics (speed, diagnostics). A JSON in
another layout is listed in the report as skipped, never an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyrec.errors import DataError
from polyrec.report.markdown import SCHEMA, is_bench_doc

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
    hide: str | None = None  # "all" | "target" (auxiliary rows of held-out pairs kept) | None
    # the strongest baseline of this row's table (chosen on validation by the benchmark), if named
    strongest: str | None = None


def split_hide(row: dict[str, Any]) -> str | None:
    """The ``data.hide`` of a result row: its own ``hide`` key, else read from the split's
    description (results written before rows carried it): MBA's random 4:1 split keeps the
    auxiliary rows of held-out purchases (``"target"``), leave-one-out on the published HKUDS
    test purchases removes them (``"all"``); user splits have no such rows (None)."""
    if row.get("hide") in ("all", "target"):
        return str(row["hide"])
    split = str(row.get("split", "")).lower()
    if "hide target" in split or "random-ratio" in split or "4:1" in split:
        return "target"
    if "leave-one-out" in split or "time-slots" in split:
        return "all"
    return None


@dataclass
class Curve:
    benchmark: str
    dataset: str
    selection: str
    model: str
    metric: str
    points: list[tuple[float, float]]


@dataclass
class Collected:
    meta: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # benchmark → date, machine, command
    results: list[Result] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    # benchmark → its tables, for the benchmarks without test metrics (speed, diagnostics)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _ms(v: Any) -> tuple[float, float]:
    """``[mean, sd]`` (sd null or NaN → 0) or a number → (mean, sd)."""
    if isinstance(v, list | tuple):
        mean, sd = v
    else:
        mean, sd = v, None
    return float(mean), float(sd) if sd is not None and math.isfinite(sd) else 0.0


def _read(col: Collected, doc: dict[str, Any]) -> None:
    bench = str(doc["benchmark"])
    for r in doc.get("results") or []:
        col.results.append(
            Result(
                bench, str(r["dataset"]), str(r["model"]), str(r["protocol"]),
                str(r.get("selection", "")), str(r.get("split", "")), int(r.get("seeds", 1)),
                {k: _ms(v) for k, v in r["test"].items()}, str(r.get("ndcg", "standard")),
                split_hide(r), str(r["strongest"]) if r.get("strongest") else None,
            )
        )  # fmt: skip
    seen: set[tuple[str, str, str]] = set()
    for run in sorted(doc.get("runs") or [], key=lambda r: r.get("seed") or 0):
        points = [(float(e), float(v)) for e, v in run.get("curve") or [] if v is not None]
        key = (str(run.get("dataset", "")), str(run.get("selection", "")), str(run.get("model")))
        if points and key not in seen:
            seen.add(key)
            metric = str(run.get("curve_metric", "validation metric"))
            col.curves.append(Curve(bench, *key, metric, points))
    if not doc.get("results") and doc.get("tables"):
        col.tables[bench] = [t for t in doc["tables"] if t.get("columns")]


def collect(results_dir: Path) -> Collected:
    """Every ``polyrec-bench/1`` document at the top level of ``results_dir``."""
    if not results_dir.exists():
        raise DataError(f"{str(results_dir)!r}: no such results directory")
    if not results_dir.is_dir():
        raise DataError(f"{str(results_dir)!r} is not a directory of benchmark JSON results")
    col = Collected()
    # the documents only: per-run folders (<name>-runs/) are summarised in them
    files = sorted(p for p in results_dir.glob("*.json") if p.is_file())
    if not files:
        raise DataError(f"{str(results_dir)!r} holds no benchmark JSON results (*.json)")
    for path in files:
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            col.skipped.append(f"{path.name}: not readable JSON ({e.__class__.__name__})")
            continue
        if not is_bench_doc(doc):
            col.skipped.append(f"{path.name}: not a {SCHEMA} document")
            continue
        doc.setdefault("benchmark", path.stem)
        try:
            _read(col, doc)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            col.skipped.append(f"{path.name}: unexpected layout ({e.__class__.__name__}: {e})")
            continue
        col.meta[doc["benchmark"]] = {
            "file": path.name,
            "date": doc.get("date", ""),
            "command": doc.get("command", ""),
            "machine": doc.get("machine", {}),
        }
    return col
