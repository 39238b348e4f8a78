"""CRGCN: cascading residual LightGCN blocks over a behavior chain, trained on every behavior."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from polyrec import losses
from polyrec.data.views import BehaviorBatch, DataSchema, TrainData, behavior_batches
from polyrec.models._common import (
    CascadeScorer,
    Init,
    LayerCombination,
    chain_values,
    embedding_tables,
)
from polyrec.models.base import ModelConfig


class CRGCNConfig(ModelConfig):
    """Settings of :class:`CRGCN`. CRGCN TOIS 2023 reports d, lr and the L2 weight of its
    experiments; where it gives none, the value of the authors' released code
    (MingshiYan/CRGCN: ``main.py``, ``CRGCN.sh``, ``model_cascade.py``) is used and named."""

    dim: int = Field(64, ge=1)
    """Embedding size d (CRGCN experiments: 64; main.py / CRGCN.sh ``--embedding_size 64``)."""
    n_layers: int = Field(1, ge=1)
    """Graph-convolution layers of every behavior block not named in behavior_layers (main.py: one
    layer per behavior on Tmall, Beibei and JD)."""
    behavior_layers: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    """Layers of each named behavior's block (main.py's per-dataset ``layers`` lists; all 1)."""
    behavior_order: list[str] = Field(default_factory=list)
    """The behavior chain, first to last, ending with the target (main.py: Beibei view → cart → buy,
    Tmall click → collect → cart → buy, JD view → collect → cart → buy); empty = the data's
    behaviors in schema order with the target moved last. A subset is allowed (the paper studies
    fewer behaviors and other orders)."""
    loss_weights: dict[str, Annotated[float, Field(ge=0.0)]] = Field(default_factory=dict)
    """Weight of each named behavior's BPR term in the multi-task loss Σ_b w_b·L_b; unnamed behaviors
    of the chain get 1 (the paper's multi-task loss sums the behaviors' losses; the released
    model_cascade.py adds them with weight 1)."""
    reg: float = Field(1e-3, ge=0.0)
    """λ of the L2 penalty on the free embeddings (the paper's λ‖Θ‖²; main.py / CRGCN.sh
    ``--reg_weight 1e-3``). Its form is reg_form."""
    reg_form: Literal["batch", "table"] = "batch"
    """'batch' = λ·½Σ‖e⁽⁰⁾‖²/B over the batch's users and its positive and negative items (the squared
    L2 of the paper, on the rows the batch uses, as LightGCN) or 'table' = λ(‖P‖_F + ‖Q‖_F)/|I| over
    the whole free tables, not squared (the released EmbLoss)."""
    normalize: bool = True
    """L2-normalise each node's block output before the residual addition, e_b = e_{b-1} +
    norm(GCN_b(e_{b-1})) (the released gcn_propagate: F.normalize); False adds the raw output."""
    layer_combination: LayerCombination = "last"
    """What a block outputs from its layers 0..L: 'last' = the last layer (the released GraphEncoder
    returns the last GCNConv output) or 'mean' (LightGCN Eq. 8)."""
    init: Init = "xavier"
    """Embedding init: 'xavier' (Glorot uniform; the released _init_weights: xavier_uniform_) or
    'normal'."""
    init_std: float = Field(0.1, gt=0.0)
    """Standard deviation of the 'normal' init."""


class CRGCN(
    CascadeScorer,
    name="crgcn",
    paper=(
        "Yan et al., Cascading Residual Graph Convolutional Network for Multi-Behavior "
        "Recommendation, ACM TOIS 2023"
    ),
    Config=CRGCNConfig,
):
    """CRGCN (Yan et al., "Cascading Residual Graph Convolutional Network for Multi-Behavior
    Recommendation", ACM TOIS 2023).

    **Embedding initialisation.** Free user and item embeddings e⁽⁰⁾ (ID embeddings), the only
    parameters: the cascade adds none beyond a single-behavior LightGCN (the paper's
    "lightweight" claim).

    **Cascading residual blocks (§3.2).** For each behavior b of the chain b_1 → … → b_B (target
    last) a residual block whose graph convolution is LightGCN's on that behavior's own graph,
    Â_b = D_b^{-1/2} A_b D_b^{-1/2} (light convolution, no transformation, no non-linearity, no
    self-loop), applied to the previous block's embeddings; its output is added back to its
    input::

        e_b = e_{b-1} + norm(GCN_b(e_{b-1})),   e_0 = the free embeddings

    (``normalize``: row-wise L2 normalisation of the block output, as the released code;
    ``layer_combination``: the last layer, as the released code). Each behavior refines the
    previous one's embeddings, so the target block sees every auxiliary behavior.

    **Multi-task learning (§3.3).** One BPR loss per behavior on that behavior's triples, scored
    with that behavior's embeddings e_b: L = Σ_b w_b · L_b + λ‖Θ‖² (``loss_weights``, default
    1 each; ``reg``, ``reg_form``). Each training batch (:func:`~polyrec.data.views.behavior_batches`,
    shared with CML) holds target-behavior pairs; for each of their users one positive of every
    behavior (the target's: the batch pair) and one uniform negative outside that behavior's
    items; a user without any item in a behavior has no term there. L_b is the mean over the
    batch's triples of b; :meth:`loss` returns ``bpr_<behavior>`` already weighted.

    **Prediction (§3.4).** ŷ_ui = e_{u,B}ᵀ e_{i,B} with the target (last) block's embeddings.

    **Choices where the paper is silent** (each a config option; the paper is not in this
    repository, so its section numbers are cited from the published version as recalled here,
    and the details below were read in the authors' code): row L2 normalisation of each block's
    output before the residual sum (``normalize``; the code); the last layer as a block's output
    (``layer_combination``; the code); the L2 penalty on the batch's free embeddings
    (``reg_form='batch'``, as LightGCN) instead of the code's unsquared Frobenius norms of the
    whole tables (``reg_form='table'``); the default chain = schema order with the target last
    (``behavior_order``). Departures from the released code: the code's epoch runs over all
    users (one triple per behavior each, negatives outside every behavior's items, a missing
    behavior padded and still counted in the mean); here an epoch runs over the target pairs
    (the library's shared multi-behavior sampler), negatives avoid only that behavior's items
    and absent behaviors are left out. Not implemented: the learnable bias PyG's GCNConv keeps
    by default in the released code (zero-initialised; the paper adds no parameter).
    """

    config: CRGCNConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        self.target = schema.target
        self.user_emb, self.item_emb = embedding_tables(schema, config)
        self.build_cascade(schema, data, config)
        chain_values("loss_weights", config.loss_weights, self.chain, schema)
        self.loss_weights = tuple(config.loss_weights.get(b, 1.0) for b in self.chain)

    # ------------------------------------------------------------------ propagation
    def _residual(self, k: int, x: Tensor, out: Tensor) -> Tensor:
        """e_b = e_{b-1} + norm(GCN_b(e_{b-1})) (§3.2)."""
        return x + (F.normalize(out, dim=-1) if self.config.normalize else out)

    def encode(self) -> list[Tensor]:
        """``[e_1 … e_B]``: every behavior's embeddings (node tables ``[n_users + n_items, d]``)
        in chain order; block b's input is e_{b-1} (e_0: the free embeddings)."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=0)
        inputs, outputs = self.cascade(ego, self._residual)
        # the cascade's inputs are e_0 … e_{B-1}; e_B closes the chain
        return [*inputs[1:], self._residual(len(self.chain) - 1, inputs[-1], outputs[-1])]

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """The target (last) behavior's embeddings e_B (§3.4)."""
        return self.split(self.encode()[-1])

    # ------------------------------------------------------------------ batches
    def n_batches(self, data: TrainData, batch_size: int) -> int:
        return math.ceil(len(data.pairs_t(self.target)[0]) / batch_size)

    def batches(
        self, data: TrainData, batch_size: int, generator: torch.Generator
    ) -> Iterator[BehaviorBatch]:
        """One epoch over the target pairs with one positive and one negative of every chain
        behavior for each batch user (no meta batch)."""
        return behavior_batches(
            data,
            self.chain,
            self.target,
            batch_size,
            generator,
            pairs_per_user=1,
            meta_batch_size=0,
        )

    # ------------------------------------------------------------------ training
    def loss(self, batch: BehaviorBatch) -> dict[str, Tensor]:
        """Σ_b w_b·BPR_b with behavior b's embeddings (§3.3), and the L2 term."""
        terms: dict[str, Tensor] = {}
        for k, (behavior, emb) in enumerate(zip(self.chain, self.encode(), strict=True)):
            users, items = self.split(emb)
            ok = batch.valid[k]
            u, p, n = batch.user[ok], batch.pos[k, ok, 0], batch.neg[k, ok, 0]
            eu = users[u]
            pos = (eu * items[p]).sum(-1)
            neg = (eu * items[n]).sum(-1)
            bpr = losses.bpr(pos, neg) if len(u) else pos.sum()
            terms[f"bpr_{behavior}"] = self.loss_weights[k] * bpr
        terms["reg"] = self.config.reg * self._reg(batch)
        return terms

    def _reg(self, batch: BehaviorBatch) -> Tensor:
        if self.config.reg_form == "table":  # the released EmbLoss: (‖P‖_F + ‖Q‖_F) / |I|
            norms = self.user_emb.weight.norm() + self.item_emb.weight.norm()
            return norms / self.n_items
        ok = batch.valid
        items = torch.cat([batch.pos[..., 0][ok], batch.neg[..., 0][ok]])
        return losses.l2_reg(
            self.user_emb(batch.user), self.item_emb(items), batch_size=len(batch.user)
        )


__all__ = ["CRGCN", "CRGCNConfig"]
