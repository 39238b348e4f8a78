"""Every registered InterestModel passes the contract in ``interest_contract.py``."""

from __future__ import annotations

from typing import Any

import pytest

from interest_contract import InterestContract
from model_contract import ModelSpec
from polyrec.models import REGISTRY

# small and fast settings for every model (the defaults are the papers')
COMMON: dict[str, Any] = {"dim": 16, "max_len": 8, "batches_per_epoch": 12, "min_history": 1}
SMALL_PARAMS: dict[str, dict[str, Any]] = {
    "sasrec": {"dropout": 0.0},
    "caser": {"dropout": 0.0},
    "tisasrec": {"dropout": 0.0, "time_span": 8},
    "bert4rec": {"dropout": 0.0, "n_heads": 1, "batches_per_epoch": 40},
    "comirec-sa": {"n_interests": 3},
    "comirec-dr": {"n_interests": 3},
    "mind": {"n_interests": 3},
    "re4-sa": {"n_interests": 3},
    "re4-dr": {"n_interests": 3},
    "remi": {"n_interests": 3},
    "hpcl4sr": {"n_interests": 3},
}


@pytest.fixture(params=sorted(n for n, cls in REGISTRY.items() if cls.kind == "interest"))
def spec(request: pytest.FixtureRequest) -> ModelSpec:
    return ModelSpec(
        request.param, {**COMMON, **SMALL_PARAMS.get(request.param, {})}, epochs=4, lr=0.03
    )


class TestInterestModels(InterestContract):
    """The interest contract, once per InterestModel in the registry."""
