"""Export a trained run for serving, load an export back, and answer requests from it.

>>> from polyrec.exporting import export_run, load_export, Recommender, Query
>>> manifest = export_run("runs/lgn", "exports/lgn")                     # doctest: +SKIP
>>> rec = Recommender(load_export("exports/lgn"))                        # doctest: +SKIP
>>> rec.recommend([Query(user="42", k=10)])[0].items                     # doctest: +SKIP

(Named ``exporting`` because ``polyrec.export`` is the Python verb, like ``polyrec.train``.)
See :mod:`polyrec.exporting.bundle` for the directory layout and the definitions of seen items,
histories and popularity, :mod:`polyrec.exporting.engine` for how requests are answered.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from polyrec.exporting.bundle import (
    FORMAT,
    MANIFEST,
    VERSION,
    Bundle,
    build_bundle,
    is_export_dir,
    load_export,
    write_export,
)
from polyrec.exporting.engine import Answer, Query, Recommender, RequestError
from polyrec.exporting.index import IndexConfig


def bundle_from_run(run_dir: str | os.PathLike[str], prepared: Any | None = None) -> Bundle:
    """The in-memory export of a run directory (its best weights over its whole dataset)."""
    from polyrec.training.trainer import load_run

    d = Path(run_dir)
    if prepared is None:
        prepared = load_run(d)
    metrics: dict[str, Any] = {}
    if (d / "metrics.json").is_file():
        import json

        metrics = json.loads((d / "metrics.json").read_text())
        metrics.pop("history", None)
    return build_bundle(prepared.model, prepared.log, (d / "config.toml").read_text(), metrics)


def export_run(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    index: IndexConfig | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Export ``run_dir``'s best weights to ``out`` (atomically); returns the manifest."""
    bundle = bundle_from_run(run_dir)
    metrics = bundle.metrics
    extra = {
        "run": {
            "dir": str(Path(run_dir).resolve()),
            "best_epoch": metrics.get("best_epoch"),
            "stopped": metrics.get("stopped"),
        },
        "protocol": metrics.get("protocol", {}),
    }
    return write_export(bundle, out, index=index, force=force, extra=extra)


__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "Answer",
    "Bundle",
    "IndexConfig",
    "Query",
    "Recommender",
    "RequestError",
    "build_bundle",
    "bundle_from_run",
    "export_run",
    "is_export_dir",
    "load_export",
    "write_export",
]
