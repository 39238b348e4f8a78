"""WBPR (Gantner, Drumond, Freudenthaler & Schmidt-Thieme, "Personalized Ranking for
Non-Uniformly Sampled Items", KDD Cup 2011 / JMLR W&CP 18, 2012) as a training framework around
a BPR backbone (MF, LightGCN), one of MBA's denoising baselines (MBA SIGIR 2023 §4.4, Table 3)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from pydantic import Field
from torch import Tensor

from polyrec.data.views import BPRBatch, DataSchema, TrainData, bpr_batches
from polyrec.models._common import PairScorer
from polyrec.models.base import ModelConfig
from polyrec.models.lightgcn import LightGCN, LightGCNConfig
from polyrec.models.mf import MF, MFConfig

PAPER = "Gantner et al., Personalized Ranking for Non-Uniformly Sampled Items, JMLR W&CP 2012"


class WBPRFields(ModelConfig):
    """The framework's own setting (added to its backbone's)."""

    popularity_exponent: float = Field(1.0, ge=0.0)
    """Negatives are drawn with probability ∝ popularity(j)^this among the items the user has
    not bought (1: the paper's weighting, proportional to the item's training count; 0: uniform,
    plain BPR)."""


class WBPR(PairScorer):
    """WBPR: BPR whose negative j is drawn in proportion to its popularity instead of
    uniformly — a popular item the user never bought is more likely a true negative than an
    unpopular one, which may simply be unseen (the re-sampling denoiser of MBA's Table 3). The
    backbone's scores, loss and penalty are untouched; items without a training pair are never
    drawn (their weight is 0)."""

    config: WBPRFields
    negative_weights: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)  # type: ignore[safe-super]  # the backbone's build
        weights = torch.zeros(schema.n_items)
        if data is not None:
            counts = torch.bincount(data.pairs_t(self.train_behavior)[1], minlength=schema.n_items)
            weights = counts.double() ** self.config.popularity_exponent
            weights[counts == 0] = 0.0
        self.register_buffer("negative_weights", weights, persistent=False)

    def batches(
        self, data: TrainData, batch_size: int, generator: torch.Generator
    ) -> Iterator[BPRBatch]:
        return bpr_batches(
            data, self.train_behavior, batch_size, generator, negative_weights=self.negative_weights
        )


class WBPRMFConfig(MFConfig, WBPRFields):
    """MF-BPR's settings plus WBPR's."""


class WBPRLightGCNConfig(LightGCNConfig, WBPRFields):
    """LightGCN's settings plus WBPR's."""


class WBPRMF(WBPR, MF, name="wbpr-mf", paper=PAPER, Config=WBPRMFConfig):
    """WBPR around MF-BPR."""

    config: WBPRMFConfig


class WBPRLightGCN(WBPR, LightGCN, name="wbpr-lightgcn", paper=PAPER, Config=WBPRLightGCNConfig):
    """WBPR around LightGCN."""

    config: WBPRLightGCNConfig


__all__ = ["WBPR", "WBPRMF", "BPRBatch", "WBPRLightGCN"]
