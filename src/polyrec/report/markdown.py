"""The benchmarks' one results format (``polyrec-bench/1``) and its markdown rendering.

Every script in ``benchmarks/`` writes one JSON document per benchmark (``results/<name>.json``):

``schema``
    ``"polyrec-bench/1"``.
``benchmark``, ``title``
    the file's stem and the report's heading.
``date``, ``machine``, ``load``, ``command``
    when (ISO 8601, UTC), where (``cpu_model``, ``cores``, ``torch``, …), under what load
    (``threads`` per run, ``jobs`` at a time, ``other_cpu_load``: CPUs other processes used,
    ``note``) and how (the command line) it ran. ``header`` (optional) replaces the line these
    compose (documents converted from the earlier per-script layouts keep their own line).
``seeds``, ``settings``
    the seeds and the script's options.
``protocol``
    paragraphs (markdown) that state the protocol; printed under the header.
``tables``
    sections in order, each ``{"title", "level", "text", "columns", "rows", "notes"}``: an
    optional heading (``level`` 2 = ``##``), paragraphs before the table, the table (``columns``
    and ``rows``, cells are strings or numbers; ``null`` prints as ``–``; no columns = a section of
    text only) and paragraphs after it.
``results``
    test metrics as the HTML report reads them, one row per dataset × model × protocol ×
    selection: ``{"dataset", "model", "protocol", "selection", "split", "seeds", "ndcg",
    "test": {metric: [mean, sd]}}`` (``protocol``: ``sampled``, ``full`` or ``retrieval``).
``runs``
    one entry per training run or measured case: ``name``, ``dataset``, ``model``, ``seed``,
    ``selection``, ``metrics``, ``curve`` (``[[epoch, validation metric], …]``), ``curve_metric``
    where known, and whatever else the script measured.
``failures``
    one message per run that failed (listed under *Failures*).
``data``
    the script's own aggregates (what ``--report-only`` style re-runs read back).

:func:`render_markdown` turns a document into ``results/<name>.md``; ``polyrec report
--markdown`` writes it beside every JSON in the new format.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from polyrec.fsutil import temporary_sibling

SCHEMA = "polyrec-bench/1"


def is_bench_doc(doc: Any) -> bool:
    return isinstance(doc, dict) and doc.get("schema") == SCHEMA


def cell_text(v: Any) -> str:
    """A table cell as text (``None`` → ``–``)."""
    return "–" if v is None else str(v)


def _cell(v: Any) -> str:
    return cell_text(v).replace("|", "\\|").replace("\n", " ")


def machine_text(m: dict[str, Any]) -> str:
    parts = [str(m.get("cpu_model", "?"))]
    if m.get("cores"):
        parts.append(f"{m['cores']} cores")
    if m.get("torch"):
        parts.append(f"torch {m['torch']}")
    return ", ".join(parts)


def load_text(load: dict[str, Any] | None) -> str:
    if not load:
        return ""
    parts = []
    if load.get("threads") is not None:
        parts.append(f"{load['threads']} torch thread(s) per run")
    if load.get("jobs") is not None:
        parts.append(f"{load['jobs']} run(s) at a time")
    if load.get("other_cpu_load") is not None:
        parts.append(f"other processes used {load['other_cpu_load']:.2f} CPUs on average")
    if load.get("note"):
        parts.append(str(load["note"]))
    return ", ".join(parts)


def header_text(doc: dict[str, Any]) -> str:
    """The line under the title: date, machine, load, command."""
    if doc.get("header"):
        return str(doc["header"])
    text = f"Date {doc.get('date', '?')}; machine: {machine_text(doc.get('machine') or {})}"
    load = load_text(doc.get("load"))
    if load:
        text += f"; {load}"
    return text + (f". Command: `{doc['command']}`." if doc.get("command") else ".")


def table_lines(columns: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    return out + ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]


def render_markdown(doc: dict[str, Any]) -> str:
    """The markdown report of one ``polyrec-bench/1`` document."""
    lines = [f"# {doc.get('title') or doc['benchmark']}", "", header_text(doc), ""]
    for p in doc.get("protocol") or []:
        lines += [p, ""]
    for t in doc.get("tables") or []:
        if t.get("title"):
            lines += ["#" * int(t.get("level", 2)) + " " + t["title"], ""]
        for p in t.get("text") or []:
            lines += [p, ""]
        if t.get("columns"):
            lines += [*table_lines(t["columns"], t.get("rows") or []), ""]
        for p in t.get("notes") or []:
            lines += [p, ""]
    if doc.get("failures"):
        lines += ["## Failures", ""]
        lines += [f"- {str(f).splitlines()[0] if f else f}" for f in doc["failures"]] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def write_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_doc(out_dir: Path, doc: dict[str, Any]) -> Path:
    """Write ``<out_dir>/<benchmark>.json`` atomically (temp file + rename)."""
    doc = {"schema": SCHEMA, **doc}
    return write_atomic(out_dir / f"{doc['benchmark']}.json", json.dumps(doc, indent=2) + "\n")


def write_markdown(results_dir: Path) -> list[Path]:
    """``<name>.md`` beside every ``polyrec-bench/1`` JSON in ``results_dir``; the paths."""
    written = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if is_bench_doc(doc):
            written.append(write_atomic(path.with_suffix(".md"), render_markdown(doc)))
    return written
