"""Reproduction report: the benchmarks' JSON results → one HTML page with PNG figures, the
papers' published numbers (``papers.toml``) beside ours, flags where data or protocol differ."""

from polyrec.report.papers import Paper, load_papers
from polyrec.report.render import build_report
from polyrec.report.sources import collect

__all__ = ["Paper", "build_report", "collect", "load_papers"]
