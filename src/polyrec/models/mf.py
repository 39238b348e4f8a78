"""MF-BPR: matrix factorisation trained with Bayesian Personalised Ranking."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch import Tensor

from polyrec import losses
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import (
    Behaviors,
    Init,
    PairScorer,
    embedding_tables,
    train_behavior,
)
from polyrec.models.base import ModelConfig


class MFConfig(ModelConfig):
    """Settings of :class:`MF` (defaults: the MF-BPR baseline as run in LightGCN's comparisons)."""

    dim: int = Field(64, ge=1)
    """Embedding size d. LightGCN (SIGIR 2020) §4.1.2 fixes d = 64 for every compared model, MF
    included; BPR (UAI 2009) §6 varies it."""
    reg: float = Field(1e-4, ge=0.0)
    """λ of the L2 penalty λ·½Σ‖e‖²/B on the batch's user/positive/negative embeddings (BPR UAI 2009
    §4.2 regularisation λ_Θ; LightGCN §4.1.2: best value 1e-4 in most cases, the setting its MF
    baseline uses)."""
    init: Init = "normal"
    """Embedding init: 'normal' = N(0, init_std²) (MyMediaLite's BPR-MF, Rendle's reference
    implementation: mean 0, std 0.1) or 'xavier' (Glorot uniform, LightGCN §4.1.2)."""
    init_std: float = Field(0.1, gt=0.0)
    """Standard deviation of the 'normal' init."""
    behaviors: Behaviors = "target"
    """Which pairs train the model: 'target' (target behavior only, the single-behavior baseline of CML
    WSDM 2022 §4.1.2 and MBA SIGIR 2023 §4.4) or 'all' (every behavior merged into one positive
    set)."""


class MF(
    PairScorer,
    name="mf",
    paper="Rendle et al., BPR: Bayesian Personalized Ranking from Implicit Feedback, UAI 2009",
    Config=MFConfig,
):
    """MF-BPR (Rendle et al., "BPR: Bayesian Personalized Ranking from Implicit Feedback",
    UAI 2009).

    ``ŷ_ui = p_u · q_i`` (§4.3.1) trained with the BPR criterion (§4.1, Eq. 7) on uniformly
    sampled (u, i, j) triples and an L2 penalty on the batch's embeddings.

    With ``train.optimizer = "lazy_adam"`` both tables give sparse gradients (the batch's rows
    only: the BPR and the L2 terms touch nothing else) and a step updates those rows alone, so
    it costs O(batch · d) whatever the number of users and items (:mod:`polyrec.optim`).
    """

    supports_lazy_adam: ClassVar[bool] = True
    rebuildable: ClassVar[bool] = True

    config: MFConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        self.train_behavior = train_behavior(schema, self.config.behaviors)
        self.user_emb, self.item_emb = embedding_tables(schema, self.config)

    def sparse_gradients(self, on: bool) -> list[Tensor]:
        self.user_emb.sparse = self.item_emb.sparse = on
        return [self.user_emb.weight, self.item_emb.weight]

    def pair_scores(self, batch: BPRBatch) -> tuple[Tensor, Tensor, Tensor]:
        eu = self.user_emb(batch.user)
        ep = self.item_emb(batch.pos)
        en = self.item_emb(batch.neg)
        pos = (eu * ep).sum(-1)
        neg = (eu * en).sum(-1)
        return pos, neg, losses.l2_reg(eu, ep, en, batch_size=len(batch.user))

    def scores(self, users: Tensor) -> Tensor:
        u = self.user_emb.weight[users.to(self.user_emb.weight.device)]
        return u @ self.item_emb.weight.T

    def user_item_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.user_emb.weight.detach(), self.item_emb.weight.detach()


__all__ = ["MF", "MFConfig"]
