"""Models: the contracts (:mod:`polyrec.models.base`), the registry and one module per model."""

from __future__ import annotations

from polyrec.data.views import BPRBatch, DataSchema, TrainData, bpr_batches
from polyrec.models import registry
from polyrec.models.base import HoldoutEvaluator, InterestModel, Model, ModelConfig, Scorer
from polyrec.models.lightgcn import LightGCN, LightGCNConfig
from polyrec.models.mf import MF, MFConfig
from polyrec.models.pop import Pop, PopConfig
from polyrec.models.registry import *  # noqa: F403  (the registry's API, listed in its __all__)

__all__ = [
    "MF",
    "BPRBatch",
    "DataSchema",
    "HoldoutEvaluator",
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
]
__all__ += registry.__all__
