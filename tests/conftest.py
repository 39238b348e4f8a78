"""Shared fixtures: a small synthetic multi-behavior dataset directory (no ../shared needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from polyrec.data.synthetic import synthetic_log

SHARED_DATA = Path(
    os.environ.get(
        "POLYREC_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
)


@pytest.fixture(scope="session")
def small_log():
    return synthetic_log(n_users=120, n_items=150, n_views=2500, seed=1)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory, small_log) -> Path:
    path = tmp_path_factory.mktemp("data") / "synth"
    small_log.save(path)
    return path
