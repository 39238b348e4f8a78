"""Reproduction report: the benchmarks' JSON results → one HTML page with PNG figures, the
papers' published numbers (``papers.toml``) beside ours, flags where data or protocol differ;
and the per-benchmark markdown from the same JSON (``polyrec-bench/1``, :mod:`.markdown`)."""

from polyrec.report.markdown import SCHEMA, render_markdown, write_doc, write_markdown
from polyrec.report.papers import Paper, load_papers
from polyrec.report.render import build_report
from polyrec.report.sources import collect

__all__ = [
    "SCHEMA",
    "Paper",
    "build_report",
    "collect",
    "load_papers",
    "render_markdown",
    "write_doc",
    "write_markdown",
]
