"""T-CE (Wang, Feng, He, Nie & Chua, "Denoising Implicit Feedback for Recommendation", WSDM 2021)
as a training framework around a BPR backbone (MF, LightGCN), one of MBA's denoising baselines
(MBA SIGIR 2023 §4.4, Table 3)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from polyrec import losses
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import PairScorer
from polyrec.models.base import ModelConfig
from polyrec.models.lightgcn import LightGCN, LightGCNConfig
from polyrec.models.mf import MF, MFConfig

PAPER = "Wang et al., Denoising Implicit Feedback for Recommendation, WSDM 2021"


class TCEFields(ModelConfig):
    """The framework's own settings (added to its backbone's; defaults: the authors' code)."""

    drop_rate: float = Field(0.2, ge=0.0, lt=1.0)
    """ε_max, the largest share of the batch's pairs dropped (§3.2 Eq. 4; searched in
    {0.05, 0.1, 0.2}, the code's default 0.2)."""
    num_gradual: int = Field(30000, ge=1)
    """ε_N, the training steps over which the drop rate grows linearly from 0 to ε_max (§3.2
    Eq. 4; the code's default 30,000)."""
    exponent: float = Field(1.0, gt=0.0)
    """The code's schedule reaches ε_max^exponent (1: the paper's linear schedule)."""


class TCE(PairScorer):
    """T-CE: the backbone's pair scores are trained with the binary cross-entropy of the
    positive (u, i) (label 1) and the sampled negative (u, j) (label 0), of which the share
    ε(T) with the largest loss is dropped in each step (:func:`polyrec.losses.truncated_bce`);
    ε(T) = min(T / ε_N, 1) · ε_max grows with the step count T (§3.2 Eq. 4): early on every
    pair trains, later the hard-to-fit ones — likely false positives — are ignored. The step
    count is a buffer (saved with checkpoints, so a resumed run continues the schedule).
    The backbone's L2 penalty is kept."""

    config: TCEFields
    tce_step: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)  # type: ignore[safe-super]  # the backbone's build
        self.register_buffer("tce_step", torch.zeros((), dtype=torch.long))

    def drop_rate(self) -> float:
        """ε(T) for the current step count T."""
        c = self.config
        return min(int(self.tce_step) / c.num_gradual, 1.0) * c.drop_rate**c.exponent

    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        pos, neg, penalty = self.pair_scores(batch)
        rate = self.drop_rate()
        if self.training:
            self.tce_step += 1
        reg = float(getattr(self.config, "reg", 0.0))
        return {"tce": losses.truncated_bce(pos, neg, rate), "reg": reg * penalty}


class TCEMFConfig(MFConfig, TCEFields):
    """MF-BPR's settings plus T-CE's."""


class TCELightGCNConfig(LightGCNConfig, TCEFields):
    """LightGCN's settings plus T-CE's."""


class TCEMF(TCE, MF, name="tce-mf", paper=PAPER, Config=TCEMFConfig):
    """T-CE around MF."""

    config: TCEMFConfig


class TCELightGCN(TCE, LightGCN, name="tce-lightgcn", paper=PAPER, Config=TCELightGCNConfig):
    """T-CE around LightGCN."""

    config: TCELightGCNConfig


__all__ = ["TCE", "TCEMF", "TCELightGCN"]
