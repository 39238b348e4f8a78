"""The papers' published numbers (``papers.toml``, stored as data) and how ours differ from them."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from polyrec.errors import ConfigError
from polyrec.report.sources import PROTOCOL_LABEL, Result

ORDER = ("cml", "mba", "egcm", "re4", "hpcl4sr", "mule")


@dataclass
class Paper:
    key: str
    title: str
    source: str
    protocol: str
    selection: str
    ndcg: str
    benchmarks: list[str]
    note: str
    datasets: dict[str, dict[str, Any]]  # our dataset → {"paper": name, "differences": [...]}
    published: list[dict[str, Any]]  # {"table", "dataset", "rows": {model: {metric: value}}}
    gains: list[dict[str, str]] = field(default_factory=list)

    def published_for(self, dataset: str) -> tuple[str, dict[str, dict[str, float]]] | None:
        """(table, rows) published for our ``dataset`` (by our name or the paper's), if any."""
        names = {dataset, str(self.datasets.get(dataset, {}).get("paper", "")) or dataset}
        for p in self.published:
            if p["dataset"] in names:
                return str(p["table"]), p["rows"]
        return None

    def flags(self, r: Result) -> list[str]:
        """Where our result's data or protocol differs from the paper's."""
        out = [str(x) for x in self.datasets.get(r.dataset, {}).get("differences", [])]
        if r.dataset not in self.datasets:
            out.append("not one of the paper's datasets")
        if self.protocol != "unknown" and r.protocol and r.protocol != self.protocol:
            out.append(
                f"{PROTOCOL_LABEL.get(r.protocol, r.protocol)} "
                f"(paper: {PROTOCOL_LABEL.get(self.protocol, self.protocol)})"
            )
        if self.selection == "test" and "valid" in r.selection:
            out.append("best epoch chosen on validation (paper: on test)")
        if r.hide == "target":
            out.append(
                "auxiliary rows of held-out pairs stay in training (hide = target): a held-out "
                "purchase's views/carts are visible; not comparable with hide = all"
            )
        return out


def load_papers(path: Path | None = None) -> dict[str, Paper]:
    """The published numbers (the packaged ``papers.toml`` unless ``path`` is given)."""
    name = str(path) if path is not None else "papers.toml"
    try:
        if path is None:
            text = resources.files("polyrec.report").joinpath("papers.toml").read_text()
        else:
            text = path.read_text()
        raw = tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{name!r}: cannot read the papers file ({e.__class__.__name__})") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{name!r}: not valid TOML ({e})") from e
    out: dict[str, Paper] = {}
    for key in [k for k in ORDER if k in raw] + [k for k in raw if k not in ORDER]:
        p = raw[key]
        if not isinstance(p, dict) or "title" not in p:
            raise ConfigError(f"{name!r}: [{key}] needs a title (see polyrec/report/papers.toml)")
        out[key] = Paper(
            key=key,
            title=p["title"],
            source=p.get("source", ""),
            protocol=p.get("protocol", "unknown"),
            selection=p.get("selection", "unknown"),
            ndcg=p.get("ndcg", "unknown"),
            benchmarks=list(p.get("benchmark", [])),
            note=p.get("note", ""),
            datasets=p.get("datasets", {}),
            published=list(p.get("published", [])),
            gains=list(p.get("gains", [])),
        )
    return out


def relative_gain(
    rows: dict[str, dict[str, float]], model: str, ref: str, metric: str
) -> float | None:
    """``rows[model][metric] / rows[ref][metric] - 1``; ``ref = "best"``: the best other row."""
    if model not in rows or metric not in rows[model]:
        return None
    if ref == "best":
        others = [v[metric] for k, v in rows.items() if k != model and metric in v]
        if not others:
            return None
        base = max(others)
    else:
        if ref not in rows or metric not in rows[ref]:
            return None
        base = rows[ref][metric]
    return rows[model][metric] / base - 1 if base > 0 else None
