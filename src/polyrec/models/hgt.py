"""HGT (Hu, Dong, Wang & Sun, "Heterogeneous Graph Transformer", WWW 2020) on the multi-behavior
user–item graph, as CML (WSDM 2022 §4.1.2) applies it: users and items are the node types,
every behavior in each direction an edge type."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import BPRScorer, GraphScorer, Init, bpr_terms, embedding_tables
from polyrec.models.base import ModelConfig
from polyrec.models.propagation import segment_softmax

USER, ITEM = 0, 1  # node types τ


class HGTConfig(ModelConfig):
    """Settings of :class:`HGT` (the HGT paper's where it gives them; CML §4.1.3 for what it
    tunes; d as polyrec's other graph baselines)."""

    dim: int = Field(64, ge=1)
    """Embedding and hidden size d (HGT uses 256 on the Open Academic Graph; CML does not give
    the baselines' d: 64, as NGCF, LightGCN and PinSage here)."""
    n_heads: int = Field(8, ge=1)
    """Attention heads h (HGT §4: 8); d must be divisible by h."""
    n_layers: int = Field(2, ge=1)
    """HGT layers L (CML §4.1.3 tunes every graph baseline's layers in {1, 2, 3, 4})."""
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    """Dropout on each layer's A-Linear output (the authors' code: 0.2)."""
    gated_skip: bool = False
    """False (paper Eq. 5): H⁽ˡ⁾[t] = A-Linear(σ(H̃⁽ˡ⁾[t])) + H⁽ˡ⁻¹⁾[t]. True (the authors'
    code): a learned gate per node type, α·A-Linear(…) + (1 − α)·H⁽ˡ⁻¹⁾[t], α = sigmoid(s)."""
    reg: float = Field(1e-4, ge=0.0)
    """λ of the L2 penalty on the batch's input embeddings (CML §4.1.3 tunes it)."""
    init: Init = "xavier"
    """Input embedding init (CML §4.1.3: Xavier)."""
    init_std: float = Field(0.1, gt=0.0)
    """Standard deviation of the 'normal' init."""


class HGT(
    BPRScorer,
    GraphScorer,
    name="hgt",
    paper="Hu et al., Heterogeneous Graph Transformer, WWW 2020",
    Config=HGTConfig,
):
    """HGT on the user–item graph of every behavior (CML §4.1.2: "the heterogeneous message
    passing schema to encode the multiplex behaviors with dedicated representations").

    Node types τ ∈ {user, item}; edge types φ = (behavior, direction), 2|B| of them; each meta
    relation ⟨τ(s), φ(e), τ(t)⟩ is fixed by φ. Per layer l and head i (HGT §3):

    * Heterogeneous mutual attention (Eq. 3): K^i(s) = K-Linear^i_τ(s)(H⁽ˡ⁻¹⁾[s]),
      Q^i(t) = Q-Linear^i_τ(t)(H⁽ˡ⁻¹⁾[t]), ATT-head^i(s, e, t) = (K^i(s) W^ATT_φ(e) Q^i(t)ᵀ) ·
      μ_⟨τ(s),φ(e),τ(t)⟩ / √(d/h), a softmax over every neighbour s of t (all edge types).
    * Heterogeneous message (Eq. 4): MSG-head^i(s, e, t) = M-Linear^i_τ(s)(H⁽ˡ⁻¹⁾[s]) W^MSG_φ(e).
    * Aggregation (Eq. 5): H̃⁽ˡ⁾[t] = ⊕_i Σ_s attention · message; H⁽ˡ⁾[t] =
      A-Linear_τ(t)(σ(H̃⁽ˡ⁾[t])) + H⁽ˡ⁻¹⁾[t], σ = GELU (the authors' code), dropout on the
      A-Linear output.

    H⁽⁰⁾ are learned user and item embeddings (the graph has no node features); ŷ_ui =
    H⁽ᴸ⁾[u] · H⁽ᴸ⁾[i]; BPR on the target behavior's pairs with an L2 penalty on the batch's
    input embeddings (as every graph baseline here). W^ATT, W^MSG start at the identity and μ at
    1 (the authors' code); the linears are PyTorch's default init.

    Choices, stated: the relative temporal encoding (HGT §3.4) is left out, as CML's use of
    HGT on a static behavior graph does not describe one; the graph is the whole training graph
    (full-batch propagation per step, as NGCF here) instead of HGSampling's sampled subgraphs,
    which the paper needs only for graphs that do not fit in memory.
    """

    config: HGTConfig
    src: Tensor
    dst: Tensor
    bounds: list[int]

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        if config.dim % config.n_heads:
            raise ValueError(f"dim {config.dim} is not divisible by n_heads {config.n_heads}")
        self.train_behavior = schema.target
        self.user_emb, self.item_emb = embedding_tables(schema, config)
        n_edge_types = 2 * len(schema.behaviors)
        self.layers = nn.ModuleList(
            _HGTLayer(config.dim, config.n_heads, n_edge_types, config.dropout, config.gated_skip)
            for _ in range(config.n_layers)
        )
        assert data is not None  # not rebuildable: setup() always passes the data
        # edges in node ids (users first, then items): each behavior user → item and back
        src, dst, etype = [], [], []
        for b_code, b in enumerate(schema.behaviors):
            u, i = data.pairs(b)
            i = i + schema.n_users
            src += [u, i]
            dst += [i, u]
            etype += [np.full(len(u), 2 * b_code), np.full(len(u), 2 * b_code + 1)]
        for name, parts in (("src", src), ("dst", dst)):
            buf = torch.from_numpy(np.concatenate(parts).astype(np.int64))
            self.register_buffer(name, buf, persistent=False)
        # the edges of type φ are the contiguous slice bounds[φ]:bounds[φ + 1]
        self.bounds = np.concatenate([[0], np.cumsum([len(e) for e in etype])]).tolist()
        self._ddp_params_and_buffers_to_ignore = ["src", "dst"]

    def node_types(self) -> Tensor:
        """τ of every node: users 0, items 1."""
        out = torch.full((self.n_users + self.n_items,), ITEM, device=self.src.device)
        out[: self.n_users] = USER
        return out

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        h = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=0)
        tau = self.node_types()
        for layer in self.layers:
            h = layer(h, tau, self.src, self.dst, self.bounds)
        users, items = torch.split(h, [self.n_users, self.n_items], dim=0)
        return users, items

    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        users, items = self.final_embeddings()
        return bpr_terms((self.user_emb, self.item_emb), users, items, batch, self.config.reg)


class _HGTLayer(nn.Module):
    """One HGT layer (Eq. 3-5) over an edge list, two node types."""

    def __init__(self, dim: int, n_heads: int, n_edge_types: int, p: float, gated: bool) -> None:
        super().__init__()
        self.h, self.dh, self.p, self.gated = n_heads, dim // n_heads, p, gated
        # K-, Q-, M-, A-Linear per node type
        self.k_lin = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))
        self.q_lin = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))
        self.m_lin = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))
        self.a_lin = nn.ModuleList(nn.Linear(dim, dim) for _ in range(2))
        eye = torch.eye(self.dh).expand(n_edge_types, n_heads, -1, -1).clone()
        self.w_att = nn.Parameter(eye.clone())  # [φ, h, dh, dh]
        self.w_msg = nn.Parameter(eye)
        self.mu = nn.Parameter(torch.ones(n_edge_types, n_heads))  # μ per meta relation
        self.skip = nn.Parameter(torch.ones(2))

    def _typed(self, lins: nn.ModuleList, h: Tensor, tau: Tensor) -> Tensor:
        """``[N, h, dh]``: each node through its own type's linear."""
        out = torch.where((tau == USER).unsqueeze(1), lins[USER](h), lins[ITEM](h))
        return out.view(len(h), self.h, self.dh)

    def forward(
        self, x: Tensor, tau: Tensor, src: Tensor, dst: Tensor, bounds: list[int]
    ) -> Tensor:
        """``x`` ``[N, d]``; edges ``src → dst``, those of type φ at ``bounds[φ]:bounds[φ+1]``."""
        n = len(x)
        k = self._typed(self.k_lin, x, tau)
        q = self._typed(self.q_lin, x, tau)
        m = self._typed(self.m_lin, x, tau)
        # Eq. 3-4, one edge type at a time: K(s) W^ATT_φ · Q(t) μ_φ / √(d/h) and M(s) W^MSG_φ
        logit_parts, msg_parts = [], []
        for phi in range(len(bounds) - 1):
            s_e, t_e = src[bounds[phi] : bounds[phi + 1]], dst[bounds[phi] : bounds[phi + 1]]
            # every node's K W^ATT_φ (per head: one block-diagonal d × d product), then the edges'
            k_phi = (k.reshape(n, -1) @ torch.block_diag(*self.w_att[phi])).view(n, self.h, -1)
            # index_select, not x[idx]: its backward (index_add_) is deterministic on CPU,
            # that of advanced indexing (parallel atomic adds) is not
            k_src, q_dst = k_phi.index_select(0, s_e), q.index_select(0, t_e)
            logit_parts.append((k_src * q_dst).sum(-1) * self.mu[phi])
            m_phi = (m.reshape(n, -1) @ torch.block_diag(*self.w_msg[phi])).view(n, self.h, -1)
            msg_parts.append(m_phi.index_select(0, s_e))
        logits = torch.cat(logit_parts) / math.sqrt(self.dh)  # [E, h]
        m_e = torch.cat(msg_parts)
        att = segment_softmax(logits, dst, n)
        agg = x.new_zeros(n, self.h, self.dh).index_add_(0, dst, att.unsqueeze(-1) * m_e)
        agg = F.gelu(agg.reshape(n, -1))
        out = torch.where((tau == USER).unsqueeze(1), self.a_lin[USER](agg), self.a_lin[ITEM](agg))
        out = F.dropout(out, self.p, self.training)
        if self.gated:
            alpha = torch.sigmoid(self.skip.index_select(0, tau)).unsqueeze(1)
            return alpha * out + (1 - alpha) * x
        return out + x  # Eq. 5's residual


__all__ = ["HGT", "HGTConfig"]
