"""DeCA (Wang, Xin, Meng, Jose, Feng & He, "Learning Robust Recommenders through Cross-Model
Agreement", WWW 2022) as a training framework around a BPR backbone (MF, LightGCN), one of
MBA's denoising baselines (MBA SIGIR 2023 §4.4, Table 3)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import PairScorer
from polyrec.models.base import ModelConfig
from polyrec.models.lightgcn import LightGCN, LightGCNConfig
from polyrec.models.mf import MF, MFConfig

PAPER = "Wang et al., Learning Robust Recommenders through Cross-Model Agreement, WWW 2022"


class DeCAFields(ModelConfig):
    """The framework's own settings (added to its backbone's; defaults: the authors' code)."""

    deca_alpha: float = Field(0.5, ge=0.0, le=1.0)
    """α of the agreement α·KL(g‖f) + (1 − α)·KL(f‖g) (the code's default 0.5; its per-dataset
    configs use 0, 0.5 or 1)."""
    c1: float = Field(1000.0, gt=0.0)
    """C₁: −ln P(ỹ = 0 | r = 1) in the denoise-positive step (the code's default 1000)."""
    c2: float = Field(10.0, gt=0.0)
    """C₂: −ln P(ỹ = 1 | r = 0) in the denoise-negative step (the code's default 10)."""
    aux_dim: int = Field(32, ge=1)
    """Embedding size of the three auxiliary MF models g, h₁, h₂ (the code's 32)."""
    iterative: bool = True
    """Alternate the denoise-positive and denoise-negative steps (the code's default); False:
    every step denoises positives."""


class _MFLogits(nn.Module):
    """An auxiliary MF: logit e_u · e_i (init N(0, 0.01²), as the authors' code)."""

    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.normal_(self.user.weight, std=0.01)
        nn.init.normal_(self.item.weight, std=0.01)

    def forward(self, users: Tensor, items: Tensor) -> Tensor:
        return (self.user(users) * self.item(items)).sum(-1)


class DeCA(PairScorer):
    """DeCA: the true preference r of a pair is latent, f = σ(ŷ) of the backbone its
    distribution; an auxiliary MF g gives a second one; each observed pair (the batch's
    purchase, label 1, and its sampled negative, label 0) costs

        α KL(g‖f) + (1 − α) KL(f‖g) − E_{r∼f}[ln P(ỹ | r)]

    (:func:`polyrec.losses.deca`): models agree on clean pairs and disagree on noisy ones,
    and the channel P(ỹ | r) absorbs the noise — in the denoise-positive step (DP) an MF h₁
    models P(ỹ = 1 | r = 0), a purchase without true preference; in the denoise-negative step
    (DN) an MF h₂ models P(ỹ = 1 | r = 1). The steps alternate (the code's ``iterative``); f, g
    and the step's h train together. The mean over positives plus the mean over negatives, as
    the code's (one negative per positive); the backbone's L2 penalty is kept. Scores are the
    backbone's.

    Choices, stated: the code's very first step uses a mixed channel before alternating; here
    the first step is DP. DeCA(p), whose g is a pretrained copy of the backbone, is not
    provided. The step count is a buffer (a resumed run continues the alternation).

    Measured (``mba-reproduce.md``, MBA's Retailrocket split, 3 seeds, the code's default
    α, C₁, C₂ — its per-dataset configs range over C₁ ∈ {1, …, 1000} and α ∈ {0, 0.5, 1}):
    test Recall@20 0.020 ± 0.017 around MF (MF-BPR 0.040) and 0.007 ± 0.008 around LightGCN
    (0.058); on one seed of each the backbone never leaves its initial scores (best epoch 1-2).
    MBA's Table 3 also has DeCA below both plain backbones on Beibei and MBD.
    """

    config: DeCAFields
    deca_step: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)  # type: ignore[safe-super]  # the backbone's build
        c = self.config
        self.deca_g = _MFLogits(schema.n_users, schema.n_items, c.aux_dim)
        self.deca_h1 = _MFLogits(schema.n_users, schema.n_items, c.aux_dim)
        self.deca_h2 = _MFLogits(schema.n_users, schema.n_items, c.aux_dim)
        self.register_buffer("deca_step", torch.zeros((), dtype=torch.long))

    def current_step(self) -> str:
        """'DP' or 'DN' for the current step count."""
        return "DN" if self.config.iterative and int(self.deca_step) % 2 else "DP"

    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        c = self.config
        pos, neg, penalty = self.pair_scores(batch)
        step = self.current_step()
        if self.training:
            self.deca_step += 1
        h = self.deca_h1 if step == "DP" else self.deca_h2
        users = torch.cat([batch.user, batch.user])
        items = torch.cat([batch.pos, batch.neg])
        labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        per = losses.deca(
            torch.cat([pos, neg]), self.deca_g(users, items), h(users, items), labels,
            step=step, alpha=c.deca_alpha, c1=c.c1, c2=c.c2,
        )  # fmt: skip
        n = len(pos)
        reg = float(getattr(self.config, "reg", 0.0))
        return {"deca": per[:n].mean() + per[n:].mean(), "reg": reg * penalty}


class DeCAMFConfig(MFConfig, DeCAFields):
    """MF-BPR's settings plus DeCA's."""


class DeCALightGCNConfig(LightGCNConfig, DeCAFields):
    """LightGCN's settings plus DeCA's."""


class DeCAMF(DeCA, MF, name="deca-mf", paper=PAPER, Config=DeCAMFConfig):
    """DeCA around MF."""

    config: DeCAMFConfig


class DeCALightGCN(DeCA, LightGCN, name="deca-lightgcn", paper=PAPER, Config=DeCALightGCNConfig):
    """DeCA around LightGCN."""

    config: DeCALightGCNConfig


__all__ = ["DeCA", "DeCALightGCN", "DeCAMF"]
