"""NGCF: embedding propagation with feature transformation and an element-wise interaction term
(Wang et al., "Neural Graph Collaborative Filtering", SIGIR 2019)."""

from __future__ import annotations

import itertools
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.graphs import (
    bipartite_adjacency,
    normalize,
    normalized_bipartite_adjacency,
    to_torch_csr,
    with_values,
)
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import (
    Behaviors,
    BPRScorer,
    GraphScorer,
    Init,
    bpr_terms,
    embedding_tables,
    train_behavior,
)
from polyrec.models.base import ModelConfig
from polyrec.models.propagation import spmm

# which matrices carry the messages: the paper's Eq. 7-8 or the authors' code (see NGCF)
Adjacency = Literal["paper", "code"]


class NGCFConfig(ModelConfig):
    """Settings of :class:`NGCF`; defaults are the paper's (§4.2.3 Parameter Settings) where it
    gives them, else the authors' code's."""

    dim: int = Field(64, ge=1)
    """Embedding size d (§4.2.3: 64)."""
    layers: list[int] = Field(default_factory=lambda: [64, 64, 64])
    """Output size of each propagation layer (§4.2.3: three layers of 64; the README commands of
    the authors' code use ``[64,64,64]``)."""
    reg: float = Field(1e-5, ge=0.0)
    """λ of the L2 term of Eq. 11 (§4.2.3: 1e-5)."""
    reg_on: Literal["final", "ego"] = "final"
    """What the L2 term covers: 'final' — the batch's final (concatenated) embeddings, as the
    authors' code does (``decay · ½Σ‖·‖² / B``); 'ego' — the batch's layer-0 embeddings (as
    LightGCN). The paper's Eq. 11 writes λ‖Θ‖² over every parameter, which neither code does."""
    message_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Message dropout p₁ on each layer's output (§4.2.3 / §4.4.3: 0.1), off at evaluation."""
    node_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Node dropout p₂; as in the authors' code it drops entries (edges) of the adjacency, a new
    mask per batch, survivors rescaled (code default: off)."""
    adjacency: Adjacency = "paper"
    """'paper' (Eq. 7-8): symmetric L = D^{-1/2} A D^{-1/2}; the sum term uses (L + I)E, the
    interaction term (LE) ⊙ E. 'code' (authors' ``adj_type='norm'``): one row-normalised
    Â = D̃^{-1}(A + I) for both terms, the interaction term (ÂE) ⊙ E."""
    separate_activations: bool = False
    """False (paper Eq. 7): LeakyReLU of the sum of both terms. True (the official TF code):
    LeakyReLU of each term, then their sum."""
    bias: bool = False
    """Biases b₁, b₂ on the two transforms (the authors' code has them; Eq. 7 does not)."""
    normalize_layers: bool = True
    """L2-normalise each layer's output before the concatenation of Eq. 9 (the authors' code;
    the normalised copy is concatenated, the raw output feeds the next layer; the paper is
    silent)."""
    negative_slope: float = Field(0.2, ge=0.0)
    """LeakyReLU slope (the authors' code: 0.2)."""
    init: Init = "xavier"
    """Embedding init (§4.2.3: Xavier)."""
    init_std: float = Field(0.1, gt=0.0)
    """Standard deviation of the 'normal' init."""
    behaviors: Behaviors = "target"
    """Which interactions form the graph and the BPR pairs: 'target' (the baseline of CML
    §4.1.2) or 'all' (every behavior merged)."""


class NGCF(
    BPRScorer,
    GraphScorer,
    name="ngcf",
    paper="Wang et al., Neural Graph Collaborative Filtering, SIGIR 2019",
    Config=NGCFConfig,
):
    """NGCF (Wang et al., SIGIR 2019).

    Embedding propagation in matrix form (Eq. 7), layer l = 1..L::

        E⁽ˡ⁾ = LeakyReLU( (L + I) E⁽ˡ⁻¹⁾ W₁⁽ˡ⁾ + (L E⁽ˡ⁻¹⁾ ⊙ E⁽ˡ⁻¹⁾) W₂⁽ˡ⁾ )

    with the Laplacian L = D^{-1/2} A D^{-1/2} of A = [[0, R], [Rᵀ, 0]] (Eq. 8), message
    dropout on each layer's output; the final representation concatenates every layer
    e* = e⁽⁰⁾ ‖ … ‖ e⁽ᴸ⁾ (Eq. 9); ŷ_ui = e*_uᵀ e*_i (Eq. 10); BPR with an L2 term (Eq. 11).

    Where the paper and the authors' code differ, the paper is the default and the code is an
    option (:class:`NGCFConfig`): the adjacency (``adjacency``), one or two activations
    (``separate_activations``), biases (``bias``), the L2 norm of each layer before the
    concatenation (``normalize_layers``, on: the paper is silent and the code does it), and
    what the L2 term covers (``reg_on``, the code's 'final'). Weights W are Xavier-uniform;
    biases, when on, start at 0 (the code draws them Xavier-uniform too).

    The adjacency is a non-persistent sparse CSR buffer; training propagates the whole graph
    once per batch (as the authors' code), scoring caches the final embeddings.
    """

    config: NGCFConfig
    adj: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        self.train_behavior = train_behavior(schema, config.behaviors)
        self.user_emb, self.item_emb = embedding_tables(schema, config)
        sizes = [config.dim, *config.layers]
        # W₁⁽ˡ⁾ (the sum term) and W₂⁽ˡ⁾ (the interaction term) of Eq. 7
        self.w_sum = nn.ModuleList(
            nn.Linear(a, b, bias=config.bias) for a, b in itertools.pairwise(sizes)
        )
        self.w_int = nn.ModuleList(
            nn.Linear(a, b, bias=config.bias) for a, b in itertools.pairwise(sizes)
        )
        for lin in [*self.w_sum, *self.w_int]:
            nn.init.xavier_uniform_(lin.weight)
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)
        assert data is not None  # not rebuildable: setup() always passes the data
        r = data.csr(self.train_behavior)
        if config.adjacency == "paper":
            adj = normalized_bipartite_adjacency(r)  # L (Eq. 8), symmetric
        else:
            adj = to_torch_csr(self_loop_row_normalized(r))  # Â = D̃⁻¹(A + I)
        self.register_buffer("adj", adj, persistent=False)
        self._ddp_params_and_buffers_to_ignore = ["adj"]

    # ------------------------------------------------------------------ propagation
    def _graph(self) -> Tensor:
        """The adjacency of this forward pass: with node dropout (training only), a fresh mask
        over its entries, survivors rescaled by 1 / (1 − p)."""
        p = self.config.node_dropout
        if not (self.training and p > 0):
            return self.adj
        vals = self.adj.values()
        keep = torch.rand_like(vals) >= p
        return with_values(self.adj, vals * keep / (1.0 - p))

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """e* = e⁽⁰⁾ ‖ e⁽¹⁾ ‖ … ‖ e⁽ᴸ⁾ (Eq. 9) for every user and item."""
        config = self.config
        adj = self._graph()
        # the symmetric product's custom backward holds for the paper's L without edge dropout
        symmetric = config.adjacency == "paper" and adj is self.adj
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=0)  # E⁽⁰⁾
        parts = [ego]
        for w1, w2 in zip(self.w_sum, self.w_int, strict=True):
            side = spmm(adj, ego, symmetric=symmetric)  # L E (paper) or Â E (code)
            # Eq. 7: (L + I) E W₁ — the code's Â already holds the self-loop
            summed = w1(side + ego) if config.adjacency == "paper" else w1(side)
            inter = w2(side * ego)  # (L E ⊙ E) W₂: own embedding × aggregated neighbourhood
            slope = config.negative_slope
            if config.separate_activations:
                ego = F.leaky_relu(summed, slope) + F.leaky_relu(inter, slope)
            else:
                ego = F.leaky_relu(summed + inter, slope)
            ego = F.dropout(ego, config.message_dropout, training=self.training)
            parts.append(F.normalize(ego, p=2, dim=1) if config.normalize_layers else ego)
        final = torch.cat(parts, dim=1)
        users, items = torch.split(final, [self.n_users, self.n_items], dim=0)
        return users, items

    # ------------------------------------------------------------------ training
    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        users, items = self.final_embeddings()
        if self.config.reg_on == "ego":
            return bpr_terms((self.user_emb, self.item_emb), users, items, batch, self.config.reg)
        # Eq. 11 as the authors' code: BPR + λ·½(‖e*_u‖² + ‖e*_i‖² + ‖e*_j‖²)/B on the batch's
        # final embeddings
        eu, ep, en = users[batch.user], items[batch.pos], items[batch.neg]
        pos, neg = (eu * ep).sum(-1), (eu * en).sum(-1)
        penalty = losses.l2_reg(eu, ep, en, batch_size=len(batch.user))
        return {"bpr": losses.bpr(pos, neg), "reg": self.config.reg * penalty}


def self_loop_row_normalized(r: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    """D̃⁻¹(A + I) of the bipartite A of ``r`` (the authors' code's 'norm' adjacency): each
    node's row averages its neighbours and itself."""
    a = bipartite_adjacency(sp.csr_matrix(r, dtype=np.float32) > 0)
    return normalize(a + sp.identity(a.shape[0], dtype=np.float32, format="csr"), "left")


__all__ = ["NGCF", "NGCFConfig", "self_loop_row_normalized"]
