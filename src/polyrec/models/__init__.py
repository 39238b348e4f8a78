"""Models: the contracts (:mod:`polyrec.models.base`), the registry and one module per model."""

from __future__ import annotations

from polyrec.models.base import (
    BPRBatch,
    InterestModel,
    Model,
    ModelConfig,
    Scorer,
    TrainData,
    bpr_batches,
)
from polyrec.models.lightgcn import LightGCN, LightGCNConfig
from polyrec.models.mf import MF, MFConfig
from polyrec.models.pop import Pop, PopConfig
from polyrec.models.registry import (
    ALIASES,
    REGISTRY,
    build_model,
    canonical_name,
    get_model_class,
    list_models,
    make_config,
)

__all__ = [
    "ALIASES",
    "MF",
    "REGISTRY",
    "BPRBatch",
    "InterestModel",
    "LightGCN",
    "LightGCNConfig",
    "MFConfig",
    "Model",
    "ModelConfig",
    "Pop",
    "PopConfig",
    "Scorer",
    "TrainData",
    "bpr_batches",
    "build_model",
    "canonical_name",
    "get_model_class",
    "list_models",
    "make_config",
]
