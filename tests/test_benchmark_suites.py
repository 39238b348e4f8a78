"""The quick reproduction suite covers every registered model, each with a shipped config."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from polyrec.config import load_config
from polyrec.models import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def test_quick_suite_runs_every_registered_model() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            "reproduce", ROOT / "benchmarks" / "reproduce.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert set(module.QUICK) == set(REGISTRY)
    for name, (config, _) in module.QUICK.items():
        cfg = load_config(ROOT / "configs" / config)
        assert cfg.model == name, config
