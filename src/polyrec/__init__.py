"""polyrec: multi-behavior and multi-interest recommendation, faithful to the papers and fast.

The verbs of the command line are available from Python::

    import polyrec
    result = polyrec.train(model="lightgcn", overrides=["train.epochs=20"])
    recs = polyrec.recommend(result["run_dir"], ["42", "7"], k=10)
    polyrec.export(result["run_dir"], "exports/lgn")      # then: polyrec serve exports/lgn

Names are imported lazily, so ``import polyrec.data.log`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "train": "polyrec.api",
    "tune": "polyrec.api",
    "evaluate": "polyrec.api",
    "recommend": "polyrec.api",
    "export": "polyrec.api",
    "import_data": "polyrec.api",
    "data_info": "polyrec.api",
    "models": "polyrec.api",
    "load_dataset": "polyrec.data.datasets",
    "IdMap": "polyrec.data.log",
    "InteractionLog": "polyrec.data.log",
    "PolyrecError": "polyrec.errors",
    "DataError": "polyrec.errors",
    "ConfigError": "polyrec.errors",
    "CheckpointError": "polyrec.errors",
}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'polyrec' has no attribute {name!r}")
