"""Render collected benchmark results as one HTML page with PNG figures.

``build_report(results_dir, out_dir)`` writes ``out_dir/index.html`` and ``out_dir/fig-*.png``
(figures need the ``plot`` extra, matplotlib; without it the page says so and has tables only).
The folder is written to a temporary sibling and renamed into place: a failure never leaves a
half-written report.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from polyrec.report.markdown import cell_text, write_markdown
from polyrec.report.papers import Paper, load_papers, relative_gain
from polyrec.report.sources import PROTOCOL_LABEL, Collected, Curve, Result, collect

# columns per protocol, in order; a column is shown when any row of the table has it
COLUMNS = {
    "sampled": ["hr@10", "ndcg@10", "hr@20", "ndcg@20"],
    "full": ["hr@10", "recall@10", "recall@20", "ndcg@10", "ndcg@20"],
    "retrieval": ["recall@20", "ndcg@20", "hr@20", "recall@50", "ndcg@50", "ndcg_comirec@50",
                  "hr@50"],
}  # fmt: skip
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #ccc;padding:.25em .5em;
text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.flag{display:inline-block;background:#fff3cd;border:1px solid #e0b400;border-radius:3px;
padding:0 .4em;margin:.1em;font-size:.85em}.paper{color:#555}.note{color:#555;font-size:.9em}
img{max-width:48%;margin:.3em;border:1px solid #eee}code{background:#f6f6f6}
"""


def _label(metric: str) -> str:
    return metric.replace("ndcg_comirec", "NDCG*").replace("ndcg", "NDCG").replace(
        "recall", "Recall").replace("hr", "HR")  # fmt: skip


def _fmt(ms: tuple[float, float] | None, seeds: int) -> str:
    if ms is None:
        return "–"
    return f"{ms[0]:.4f} ± {ms[1]:.4f}" if seeds > 1 else f"{ms[0]:.4f}"


def _slug(*parts: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def _flags(items: list[str]) -> str:
    return " ".join(f'<span class="flag">⚑ {html.escape(x)}</span>' for x in dict.fromkeys(items))


def _table(head: list[str], rows: list[list[str]]) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


class _Figures:
    """Matplotlib figures (optional dependency); ``files`` lists what was written."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.files: list[str] = []
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.plt: Any = None
        else:
            self.plt = plt

    def curves(self, name: str, title: str, curves: list[Curve]) -> str | None:
        if self.plt is None or not curves:
            return None
        fig, ax = self.plt.subplots(figsize=(6, 3.6))
        for c in curves:
            xs, ys = zip(*c.points, strict=True)
            ax.plot(xs, ys, label=c.model, linewidth=1.2)
        ax.set_xlabel("epoch (validation check)")
        ax.set_ylabel(curves[0].metric)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        return self._save(fig, name)

    def gains(self, name: str, title: str, bars: list[tuple[str, float]]) -> str | None:
        if self.plt is None or not bars:
            return None
        fig, ax = self.plt.subplots(figsize=(6, 0.4 * len(bars) + 1.2))
        labels, values = zip(*bars, strict=True)
        colors = ["#777" if lab.startswith("paper") else "#2b6cb0" for lab in labels]
        ax.barh(range(len(bars)), [100 * v for v in values], color=colors)
        ax.set_yticks(range(len(bars)), labels, fontsize=7)
        ax.axvline(0, color="k", linewidth=0.8)
        ax.set_xlabel("relative gain, %")
        ax.set_title(title, fontsize=9)
        ax.invert_yaxis()
        return self._save(fig, name)

    def _save(self, fig: Any, name: str) -> str:
        fig.tight_layout()
        fname = f"fig-{name}.png"
        fig.savefig(self.out / fname, dpi=110)
        self.plt.close(fig)
        self.files.append(fname)
        return fname


def _img(fname: str | None, alt: str) -> str:
    return f'<img src="{html.escape(fname)}" alt="{html.escape(alt)}">' if fname else ""


def _results_table(paper: Paper | None, rows: list[Result]) -> str:
    protocol = rows[0].protocol
    cols = [c for c in COLUMNS.get(protocol, []) if any(c in r.test for r in rows)]
    if not cols:  # an unknown protocol: every metric present
        cols = sorted({k for r in rows for k in r.test})
    # the paper's numbers only beside ours measured under the same protocol
    same = paper is not None and paper.protocol in (protocol, "unknown")
    pub = paper.published_for(rows[0].dataset) if paper is not None and same else None
    pub_cols = [c for c in cols if pub and any(c in v for v in pub[1].values())]
    head = ["model", *(_label(c) for c in cols), *(f"paper {_label(c)}" for c in pub_cols), "seeds"]
    body = []
    for r in rows:
        name = html.escape(r.model)
        if r.strongest == r.model:
            name += ' <span class="flag">★ strongest baseline</span>'
        cells = [name] + [_fmt(r.test.get(c), r.seeds) for c in cols]
        for c in pub_cols:
            v = pub[1].get(r.model, {}).get(c) if pub else None
            cells.append(f'<span class="paper">{v:.4f}</span>' if v is not None else "–")
        body.append([*cells, str(r.seeds)])
    caption = f'<p class="note">Paper columns: {html.escape(pub[0])}.</p>' if pub else ""
    strong = next((r.strongest for r in rows if r.strongest), None)
    if strong:
        caption += (
            f'<p class="note">Strongest baseline of this table (chosen on validation by the '
            f"benchmark): {html.escape(strong)}.</p>"
        )
    return _table(head, body) + caption


def _gains_section(paper: Paper, rows: list[Result], figs: _Figures) -> str:
    if not paper.gains:
        return ""
    out_rows: list[list[str]] = []
    bars: list[tuple[str, float]] = []
    for g in paper.gains:
        model, ref, metric = g["model"], g["reference"], g["metric"]
        for p in paper.published:
            vals = relative_gain(p["rows"], model, ref, metric)
            if vals is not None:
                out_rows.append([f"paper, {p['dataset']} ({p['table']})", model, ref,
                                 _label(metric), f"{100 * vals:+.1f} %"])  # fmt: skip
                bars.append((f"paper {p['dataset']}: {model}", vals))
        by_key: dict[tuple[str, str, str], dict[str, dict[str, float]]] = defaultdict(dict)
        strongest: dict[tuple[str, str, str], str] = {}
        for r in rows:
            key = (r.benchmark, r.dataset, r.protocol)
            by_key[key][r.model] = {k: v[0] for k, v in r.test.items()}
            if r.strongest:
                strongest[key] = r.strongest
        for key, table in sorted(by_key.items()):
            bench, ds, proto = key
            where = f"ours, {ds} ({PROTOCOL_LABEL.get(proto, proto)}; {bench})"
            vals = relative_gain(table, model, ref, metric)
            if vals is not None:
                ref_name = ref if ref != "best" else "best other model"
                out_rows.append([where, model, ref_name, _label(metric), f"{100 * vals:+.1f} %"])
                bars.append((f"ours {ds} {proto}: {model}", vals))
            # beside the paper's comparison: the same model against the table's strongest
            # baseline (negative when the model loses to it)
            sb = strongest.get(key)
            vs = relative_gain(table, model, sb, metric) if sb and sb != model else None
            if sb and vs is not None:
                out_rows.append([where, model, f"strongest baseline: {sb}", _label(metric),
                                 f"{100 * vs:+.1f} %"])  # fmt: skip
                bars.append((f"ours {ds} {proto}: {model} vs {sb}", vs))
    if not out_rows:
        return ""
    fig = figs.gains(_slug(paper.key, "gains"), f"{paper.key}: relative gains", bars)
    return (
        "<h3>Relative gains: the paper vs ours</h3>"
        + _table(["source", "model", "against", "metric", "gain"], out_rows)
        + _img(fig, f"{paper.key} gains")
    )


def _paper_section(paper: Paper, col: Collected, figs: _Figures) -> str:
    rows = [r for r in col.results if r.benchmark in paper.benchmarks]
    parts = [f'<h2 id="{paper.key}">{html.escape(paper.title)}</h2>']
    parts.append(
        f'<p class="note">Paper protocol: {PROTOCOL_LABEL.get(paper.protocol, paper.protocol)}; '
        f"its model selection: {html.escape(paper.selection)}; NDCG: {html.escape(paper.ndcg)}. "
        f"Source: <code>{html.escape(paper.source)}</code>. {html.escape(paper.note)}</p>"
    )
    if not rows:
        parts.append(f"<p>No results yet from {', '.join(paper.benchmarks)} in this folder.</p>")
        return "\n".join(parts)
    if paper.ndcg == "comirec":
        parts.append(_flags(["NDCG is the standard one; NDCG* is ComiRec's variant (the paper's)"]))
    groups: dict[tuple[str, str, str, str], list[Result]] = defaultdict(list)
    for r in rows:
        groups[(r.benchmark, r.dataset, r.protocol, r.selection)].append(r)
    for (bench, ds, proto, sel), grp in groups.items():
        flags = paper.flags(grp[0])
        parts.append(
            f"<h3>{html.escape(ds)} — {html.escape(PROTOCOL_LABEL.get(proto, proto))}"
            f" <small>({html.escape(bench)})</small></h3>"
            f'<p class="note">Split: {html.escape(grp[0].split)}. Selection: {html.escape(sel)}; '
            f"test evaluated once with the selected weights; mean ± sd over seeds.</p>"
        )
        if flags:
            parts.append(f"<p>{_flags(flags)}</p>")
        parts.append(_results_table(paper, grp))
    parts.append(_gains_section(paper, rows, figs))
    parts.append(_curves_html(col, paper.benchmarks, figs))
    return "\n".join(parts)


def _curves_html(col: Collected, benchmarks: list[str], figs: _Figures) -> str:
    grouped: dict[tuple[str, str, str], list[Curve]] = defaultdict(list)
    for c in col.curves:
        if c.benchmark in benchmarks:
            grouped[(c.benchmark, c.dataset, c.selection)].append(c)
    imgs = []
    for (bench, ds, sel), curves in sorted(grouped.items()):
        title = f"{bench} · {ds}" + (f" · selected on {sel}" if sel else "") + " (first seed)"
        imgs.append(_img(figs.curves(_slug(bench, ds, sel, "curves"), title, curves), title))
    if not imgs:
        return ""
    note = (
        ""
        if figs.plt is not None
        else ('<p class="note">Figures need matplotlib (pip install "polyrec[plot]").</p>')
    )
    return "<h3>Learning curves (validation metric per check)</h3>" + note + "".join(imgs)


def _other_section(col: Collected, claimed: set[str], figs: _Figures) -> str:
    rows = [r for r in col.results if r.benchmark not in claimed]
    if not rows:
        return ""
    parts = ['<h2 id="other">Other results (no paper numbers)</h2>']
    groups: dict[tuple[str, str, str], list[Result]] = defaultdict(list)
    for r in rows:
        groups[(r.benchmark, r.dataset, r.protocol)].append(r)
    for (bench, ds, proto), grp in groups.items():
        parts.append(
            f"<h3>{html.escape(bench)} · {html.escape(ds)} — "
            f"{html.escape(PROTOCOL_LABEL.get(proto, proto))}</h3>"
            f'<p class="note">Split: {html.escape(grp[0].split)}. Selection: '
            f"{html.escape(grp[0].selection)}.</p>"
        )
        parts.append(_results_table(None, grp))
    parts.append(_curves_html(col, sorted({r.benchmark for r in rows}), figs))
    return "\n".join(parts)


def _speed_section(col: Collected) -> str:
    """The tables of the benchmarks without test metrics (speed, diagnostics), as written."""
    if not col.tables:
        return ""
    parts = ['<h2 id="speed">Speed and other measurements</h2>']
    for bench, tables in col.tables.items():
        meta = col.meta.get(bench, {})
        parts.append(
            f'<h3>{html.escape(bench)}</h3><p class="note">{html.escape(str(meta.get("date", "")))}'
            f" · <code>{html.escape(str(meta.get('command', '')))}</code></p>"
        )
        for t in tables:
            if t.get("title"):
                parts.append(f"<h4>{html.escape(str(t['title']))}</h4>")
            body = [[html.escape(cell_text(c)) for c in r] for r in t.get("rows") or []]
            parts.append(_table([cell_text(c) for c in t["columns"]], body))
    return "\n".join(parts)


def _sources_html(col: Collected) -> str:
    rows = []
    for name, m in sorted(col.meta.items()):
        mach = m.get("machine") or {}
        mtext = (
            f"{mach.get('cpu_model', '')}, {mach.get('cores', '')} cores, torch {mach.get('torch', '')}"
            if isinstance(mach, dict) and mach
            else ""
        )
        rows.append([html.escape(name), html.escape(str(m.get("date", ""))), html.escape(mtext),
                     f"<code>{html.escape(str(m.get('command', '')))}</code>"])  # fmt: skip
    out = "<h2>Sources</h2>" + _table(["benchmark", "date", "machine", "command"], rows)
    if col.skipped:
        out += (
            "<p>Skipped:</p><ul>"
            + "".join(f"<li>{html.escape(s)}</li>" for s in col.skipped)
            + "</ul>"
        )
    return out


def build_report(
    results_dir: Path, out_dir: Path, papers_file: Path | None = None, markdown: bool = False
) -> dict[str, Any]:
    """Write ``out_dir/index.html`` and its figures; returns a summary of what was rendered.
    ``markdown``: also (re)write ``<name>.md`` beside every benchmark JSON in ``results_dir``."""
    col = collect(results_dir)
    md_files = [str(p) for p in write_markdown(results_dir)] if markdown else []
    papers = load_papers(papers_file)
    out_dir = out_dir.resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        figs = _Figures(tmp)
        claimed = {b for p in papers.values() for b in p.benchmarks}
        sections = [_paper_section(p, col, figs) for p in papers.values()]
        toc = " · ".join(f'<a href="#{p.key}">{p.key.upper()}</a>' for p in papers.values())
        body = "\n".join(
            [
                "<h1>polyrec: reproduction report</h1>",
                f'<p class="note">Generated {datetime.now(UTC).isoformat(timespec="seconds")} from '
                f"<code>{html.escape(str(results_dir))}</code>. Every table names its protocol, "
                "split, selection and seeds; ⚑ marks where our data or protocol differs from the "
                "paper's.</p>",
                f'<p>{toc} · <a href="#other">other</a> · <a href="#speed">speed</a></p>',
                *sections,
                _other_section(col, claimed, figs),
                _speed_section(col),
                _sources_html(col),
            ]
        )
        page = (
            '<!doctype html><html><head><meta charset="utf-8"><title>polyrec report</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>"
        )
        (tmp / "index.html").write_text(page, encoding="utf-8")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {
        "out": str(out_dir / "index.html"),
        "figures": figs.files,
        "results": len(col.results),
        "benchmarks": sorted(col.meta),
        "skipped": col.skipped,
        "markdown": md_files,
    }
