"""Every registered model passes the contract in ``model_contract.py``."""

from __future__ import annotations

from typing import Any

import pytest

from model_contract import ModelContract, ModelSpec
from polyrec.models import REGISTRY

# Small settings per model so the whole contract stays fast; unlisted models use defaults.
SMALL_PARAMS: dict[str, dict[str, Any]] = {
    "mf": {"dim": 16},
    "lightgcn": {"dim": 16, "n_layers": 2},
    "ngcf": {"dim": 8, "layers": [8, 8]},
    "hgt": {"dim": 8, "n_heads": 2},
    "matn": {"dim": 8, "n_heads": 2},
    "khgt": {"dim": 8, "n_heads": 2, "n_layers": 1, "item_item_edges": 200},
    "heco": {"dim": 8, "contrast_nodes": 16},
    "ehcf": {"dim": 8},
    "nmtr": {"dim": 8},
    "pinsage": {"dim": 8, "n_walks": 10},
    "egcm": {"dim": 8, "n_layers": 1},
    "mbcgcn": {"dim": 16, "n_layers": 1},
    "crgcn": {"dim": 16, "n_layers": 1},
    "mule": {"dim": 16, "tda_layers": 2},
    "mbhybrid": {"dim": 16, "n_layers": 1, "knn_k": 10, "negatives": 16},
}


# the scorer contract; InterestModels have theirs in interest_contract.py
@pytest.fixture(params=sorted(n for n, cls in REGISTRY.items() if cls.kind == "scorer"))
def spec(request: pytest.FixtureRequest) -> ModelSpec:
    return ModelSpec(request.param, SMALL_PARAMS.get(request.param, {}))


class TestRegisteredModels(ModelContract):
    """The contract, once per registry entry (test ids end in ``[<model name>]``)."""


class TestAllBehaviorVariants(ModelContract):
    """The trainable models again with ``behaviors="all"`` (graph and pairs from every behavior)."""

    @pytest.fixture(params=["mf", "lightgcn"])
    def spec(self, request: pytest.FixtureRequest) -> ModelSpec:
        return ModelSpec(request.param, {**SMALL_PARAMS[request.param], "behaviors": "all"})
