"""LightGCN: linear propagation over the normalised user–item graph, mean of the layers."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import Tensor

from polyrec.data.graphs import normalized_bipartite_adjacency
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import (
    Behaviors,
    GraphScorer,
    Init,
    PairScorer,
    embedding_tables,
    pair_terms,
    train_behavior,
)
from polyrec.models.base import ModelConfig
from polyrec.models.propagation import propagate, spmm

# how propagate() runs Eq. 7-8 (all three give the same values and gradients; see LightGCN)
Propagation = Literal["fused", "layerwise", "autograd"]


class LightGCNConfig(ModelConfig):
    """Settings of :class:`LightGCN`; defaults are the paper's (§4.1.2 Hyper-parameter Settings)."""

    dim: int = Field(64, ge=1)
    """Embedding size d (LightGCN SIGIR 2020 §4.1.2: fixed to 64)."""
    n_layers: int = Field(3, ge=0)
    """Number of propagation layers K (§4.1.2: K tested in 1..4, K = 3 satisfactory; MBA SIGIR 2023
    §4.5 also fixes 3 layers). K = 0 is MF-BPR."""
    reg: float = Field(1e-4, ge=0.0)
    """λ of the L2 penalty on the batch's ego (layer-0) embeddings, λ·½Σ‖e⁽⁰⁾‖²/B (§3.3 Eq. 15; §4.1.2:
    searched in 1e-6..1e-2, optimum 1e-4 in most cases)."""
    init: Init = "xavier"
    """Embedding init: 'xavier' (§4.1.2: 'initialized with the Xavier method'; Glorot uniform as in the
    official TF code) or 'normal' = N(0, init_std²) (the authors' PyTorch port LightGCN-PyTorch uses
    std 0.1)."""
    init_std: float = Field(0.1, gt=0.0)
    """Standard deviation of the 'normal' init."""
    behaviors: Behaviors = "target"
    """Which interactions form the graph and the BPR pairs: 'target' (single-behavior baseline, CML
    WSDM 2022 §4.1.2, MBA SIGIR 2023 §4.4) or 'all' (every behavior merged into one graph)."""


class LightGCN(
    PairScorer,
    GraphScorer,
    name="lightgcn",
    paper=(
        "He et al., LightGCN: Simplifying and Powering Graph Convolution Network for "
        "Recommendation, SIGIR 2020"
    ),
    Config=LightGCNConfig,
):
    """LightGCN (He et al., "LightGCN: Simplifying and Powering Graph Convolution Network for
    Recommendation", SIGIR 2020).

    Light graph convolution (Eq. 3), in matrix form (Eq. 7)::

        E⁽ᵏ⁺¹⁾ = D^{-1/2} A D^{-1/2} E⁽ᵏ⁾,   A = [[0, R], [Rᵀ, 0]]

    layer combination with α_k = 1/(K+1) (Eq. 4 / Eq. 8), inner-product prediction (Eq. 5) and
    BPR with L2 on the ego embeddings (Eq. 15).

    The normalised adjacency is built once and kept as a non-persistent sparse CSR buffer
    (``state_dict`` holds only the two embedding tables); ``.to(device)`` moves it. Training
    propagates the full graph once per batch and gathers the batch's rows. Because Â is
    symmetric, so is the whole propagation ``P = Σ_k α_k Â^k``: it runs as one autograd node
    (:class:`~polyrec.models.propagation.SymmetricPolynomial`) whose backward is ``P @ G`` and which
    keeps no per-layer activations. The instance attribute ``propagation`` selects the
    implementation (for comparisons): ``"fused"`` (default), ``"layerwise"`` (one
    :class:`~polyrec.models.propagation.SymmetricSpMM` per layer) or ``"autograd"`` (plain autograd
    through ``torch.sparse.mm``); all give the same values and gradients.
    """

    config: LightGCNConfig
    adj: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        self.train_behavior = train_behavior(schema, self.config.behaviors)
        self.user_emb, self.item_emb = embedding_tables(schema, self.config)
        # Â = D^{-1/2} A D^{-1/2} (Eq. 7), built once; not saved (rebuilt from the data).
        assert data is not None  # not rebuildable: setup() always passes the data
        adj = normalized_bipartite_adjacency(data.csr(self.train_behavior))
        self.register_buffer("adj", adj, persistent=False)
        # DDP must not broadcast the (replicated, sparse) graph buffer.
        self._ddp_params_and_buffers_to_ignore = ["adj"]
        self.propagation: Propagation = "fused"

    # ------------------------------------------------------------------ propagation
    def propagate(self) -> tuple[Tensor, Tensor]:
        """Final user and item embeddings ``E = Σ_k α_k E⁽ᵏ⁾`` (Eq. 8), α_k = 1/(K+1)."""
        n_layers = self.config.n_layers
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=0)  # E⁽⁰⁾
        if self.propagation == "fused":
            # E = Σ_k α_k Â^k E⁽⁰⁾ (Eq. 3/7 applied K times, combined by Eq. 4/8) in one node
            final = propagate(
                self.adj, ego, [1.0 / (n_layers + 1)] * (n_layers + 1), symmetric=True
            )
        else:
            layer = ego
            total = ego
            for _ in range(n_layers):
                layer = spmm(self.adj, layer, symmetric=self.propagation == "layerwise")  # Eq. 7
                total = total + layer
            final = total / (n_layers + 1)  # Eq. 4 with α_k = 1/(K+1)
        users, items = torch.split(final, [self.n_users, self.n_items], dim=0)
        return users, items

    # ------------------------------------------------------------------ training
    def pair_scores(self, batch: BPRBatch) -> tuple[Tensor, Tensor, Tensor]:
        users, items = self.propagate()  # one full-graph propagation per batch
        # ŷ_ui = e_uᵀ e_i (Eq. 5); Eq. 15: BPR + λ‖E⁽⁰⁾‖² over the batch's ego embeddings
        # (½·Σ/B, as in the authors' code)
        return pair_terms((self.user_emb, self.item_emb), users, items, batch)

    # ------------------------------------------------------------------ scoring
    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.propagate()


__all__ = ["LightGCN", "LightGCNConfig"]
