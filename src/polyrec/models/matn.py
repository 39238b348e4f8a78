"""MATN (Xia, Huang, Xu, Dai, Zhang, Yin & Bo, "Multiplex Behavioral Relation Learning for
Recommendation via Memory Augmented Transformer Network", SIGIR 2020): a user's items of each
behavior, a transformer across the behavior types, memory-augmented projections, and a learned
fusion of the behaviors."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.sampling import sorted_member_t
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import BPRScorer, GraphScorer, csr_rows
from polyrec.models.base import ModelConfig


class MATNConfig(ModelConfig):
    """Settings of :class:`MATN` (the authors' released code's defaults; CML §4.1.2 tunes the
    memory units in [2, 8])."""

    dim: int = Field(8, ge=1)
    """Latent size d (the authors' code: 8)."""
    n_heads: int = Field(2, ge=1)
    """Heads of the behavior self-attention (the authors' code: 2); d must be divisible by it."""
    memory_units: int = Field(4, ge=1)
    """Memory units M of the memory-augmented projection (the authors' code: 4; CML tunes it in
    [2, 8])."""
    behavior_projections: bool = True
    """True (the authors' code): each behavior's query attends through its own query, key and
    value projections; False: one set shared by every behavior (a plain transformer layer)."""
    loss: str = Field("hinge", pattern="^(hinge|bpr)$")
    """'hinge' (the authors' code: max(0, 1 − (ŷ_ui − ŷ_uj))) or 'bpr'."""
    hide_positive: Literal["none", "target", "all", "auto"] = "none"
    """Whether a training pair (u, i) is left out of its own user's input: 'none' (the authors'
    code: the input holds every training row, so the purchase being predicted is in it),
    'target' (its target-behavior row left out), 'all' (its rows of every behavior left out),
    'auto' (as the split hid the evaluated pairs: 'all' under hide = 'all', else 'target'). An
    evaluated pair is never in its user's input; with 'none' the training pairs always are."""
    reg: float = Field(2.5e-4, ge=0.0)
    """λ of the L2 penalty λ Σ_θ ‖θ‖² on every parameter, each step. The authors' code adds
    1e-2 Σ‖θ‖² to a loss summed over each user's 40 sampled pairs; polyrec's loss is the mean
    over pairs, so the same balance is 1e-2 / 40."""


class MATN(
    BPRScorer,
    GraphScorer,
    name="matn",
    paper="Xia et al., Multiplex Behavioral Relation Learning for Recommendation via Memory "
    "Augmented Transformer Network, SIGIR 2020",
    Config=MATNConfig,
):
    """MATN: a user is encoded from the items of each behavior k ∈ 1..K:

    * Behavior embeddings: h_k = x_uᵏ V, with x_uᵏ ∈ {0, 1}^|I| the user's training items of
      behavior k (the target behavior included) and V ∈ ℝ^{|I|×d} shared by every behavior.
    * Multi-behavior transformer (self-attention across the K behavior types, H heads): for
      query behavior k, q = h_k W_kᵠ + b, key and value of behavior k' h_k' W_kᴷ + b and
      h_k' W_kⱽ + b; per head α_kk' = softmax_k'(2 · q·key), a_k = Σ_k' α_kk' value_k' + h_k.
    * Memory-augmented projection: r_k = a_k + h_k; the memory attention
      m_k = ReLU(r_k A_k + c_k) ∈ ℝ^M over M memory units T_1..T_M ∈ ℝ^{d×d} shared by the
      behaviors; z_k = r_k Σ_m m_km T_m.
    * Cross-behavior aggregation: f = Σ_k softmax(2ω)_k z_k with ω ∈ ℝ^K learned from 0, then
      two residual layers f ← ReLU(f W + b) + f.
    * ŷ_ui = f_u · w_i with an item table W separate from V; pairwise hinge loss on the target
      behavior and λ Σ‖θ‖² on every parameter.

    Choices, stated (the paper is not in ``../shared/papers``; the details above follow the
    authors' released code, read, not copied): the attention's factor 2 on its logits and on
    the fusion weights, per-behavior projections (``behavior_projections``), the memory
    attention per behavior with the memory matrices shared, and the residual terms are the
    code's. Training differs in its sampling only: polyrec's uniform (u, i, j) triples over the
    target pairs (the code: 40 positives with one negative each for 32 users at a time, 10,000
    users an epoch) and a constant learning rate (the code decays it by 0.96 every |I|/32
    steps). The input rows are the user's training rows, so a training purchase is in its own
    user's input, as in the code.

    Measured (``multibehavior.md``, Retailrocket, CML's protocol, 3 seeds): 1 + 99 sampled
    NDCG@10 0.148 (CML's Table 2: 0.181), but full-ranking NDCG@10 0.0013, far below
    popularity (0.021): its top-10 lists avoid the most popular items (exploratory, lr 3e-3,
    d = 16: 232 distinct items in all users' top-10, none of the 10 most popular).
    ``hide_positive = 'all'`` at the same settings lifts full-ranking test NDCG@10 only from
    0.0022 to 0.0037.
    """

    config: MATNConfig
    x_crow: Tensor
    x_col: Tensor
    x_key: Tensor
    # the attention projections [P, d, d] and biases [P, d] (registered by name in build)
    wq: Tensor
    wk: Tensor
    wv: Tensor
    wq_bias: Tensor
    wk_bias: Tensor
    wv_bias: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        d, k, m = config.dim, len(schema.behaviors), config.memory_units
        if d % config.n_heads:
            raise ValueError(f"dim {d} is not divisible by n_heads {config.n_heads}")
        self.train_behavior = schema.target
        self.n_behaviors = k
        self.v = nn.Parameter(nn.init.xavier_uniform_(torch.empty(schema.n_items, d)))
        self.w = nn.Parameter(nn.init.xavier_uniform_(torch.empty(schema.n_items, d)))
        p = k if config.behavior_projections else 1
        for name in ("wq", "wk", "wv"):  # [P, d, d] and their biases [P, d]
            weight = torch.stack([nn.init.xavier_uniform_(torch.empty(d, d)) for _ in range(p)])
            self.register_parameter(name, nn.Parameter(weight))
            self.register_parameter(f"{name}_bias", nn.Parameter(torch.zeros(p, d)))
        mem_att = torch.stack([nn.init.xavier_uniform_(torch.empty(d, m)) for _ in range(k)])
        self.mem_att = nn.Parameter(mem_att)  # A_k [K, d, M]
        self.mem_att_bias = nn.Parameter(torch.zeros(k, m))
        memory = torch.empty(m, d * d)
        self.memory = nn.Parameter(nn.init.xavier_uniform_(memory).view(m, d, d))  # T_m
        self.fuse = nn.Parameter(torch.zeros(k))  # ω
        self.ffn = nn.ModuleList(nn.Linear(d, d) for _ in range(2))
        assert data is not None  # not rebuildable: setup() always passes the data
        # row b·|U| + u: user u's items of behavior b (binary)
        x = sp.vstack([data.csr(b) for b in schema.behaviors]).tocsr()
        x.sort_indices()
        self.register_buffer("x_crow", torch.from_numpy(x.indptr.astype(np.int64)), False)
        self.register_buffer("x_col", torch.from_numpy(x.indices.astype(np.int64)), False)
        # sorted keys (row, item) of X's entries: membership by searchsorted
        rows = np.repeat(np.arange(x.shape[0], dtype=np.int64), np.diff(x.indptr))
        key = rows * schema.n_items + x.indices.astype(np.int64)
        self.register_buffer("x_key", torch.from_numpy(key), False)
        self._ddp_params_and_buffers_to_ignore = ["x_crow", "x_col", "x_key"]
        hide = config.hide_positive
        if hide == "auto":
            hide = "all" if data.hide == "all" else "target"
        target = schema.behaviors.index(schema.target)
        # the behaviors a training pair is left out of its own input in
        self.hidden = [b for b in range(k) if hide == "all" or (hide == "target" and b == target)]

    def behavior_embeddings(self, users: Tensor) -> Tensor:
        """h ``[B, K, d]``: h_k = x_uᵏ V for each user of ``users``."""
        k, n = self.n_behaviors, len(users)
        rows = (torch.arange(k, device=users.device) * self.n_users).unsqueeze(0)
        rows = (rows + users.unsqueeze(1)).reshape(-1)  # user-major: [B·K]
        ones = torch.ones_like(self.x_col, dtype=self.v.dtype)
        part = csr_rows(self.x_crow, self.x_col, ones, rows, self.n_items)
        crow, col = part.crow_indices(), part.col_indices()
        row_of = torch.repeat_interleave(torch.arange(len(rows), device=crow.device), crow.diff())
        out = self.v.new_zeros(len(rows), self.v.shape[1])
        out = out.index_add(0, row_of, self.v.index_select(0, col))
        return out.view(n, k, -1)

    def without_pairs(self, h: Tensor, users: Tensor, items: Tensor) -> Tensor:
        """``h`` ``[B, K, d]`` less V_i in each behavior of :attr:`hidden` where user ``users[b]``
        has item ``items[b]``: the input the pair would have if it were held out."""
        v_i = self.v.index_select(0, items)
        drop = torch.zeros(h.shape[:2], dtype=h.dtype, device=h.device)
        for k in self.hidden:
            key = (k * self.n_users + users) * self.n_items + items
            drop[:, k] = sorted_member_t(self.x_key, key).to(h.dtype)
        return h - drop.unsqueeze(-1) * v_i.unsqueeze(1)

    def encode(self, users: Tensor, items: Tensor | None = None) -> Tensor:
        """f ``[B, d]``: the fused representation of each user of ``users`` (with ``items``:
        of the user without the pair (users[b], items[b]) in :attr:`hidden` behaviors)."""
        h = self.behavior_embeddings(users)  # [B, K, d]
        if items is not None and self.hidden:
            h = self.without_pairs(h, users, items)
        n, k, d = h.shape
        heads = self.config.n_heads
        if self.wq.shape[0] > 1:
            # query of behavior k through its own projections, keys and values of every
            # behavior k' through the query's: [B, K, K', d]
            q = torch.einsum("bkd,kde->bke", h, self.wq) + self.wq_bias
            keys = torch.einsum("bjd,kde->bkje", h, self.wk) + self.wk_bias.unsqueeze(1)
            vals = torch.einsum("bjd,kde->bkje", h, self.wv) + self.wv_bias.unsqueeze(1)
        else:  # one shared set: the same keys and values for every query
            q = h @ self.wq[0] + self.wq_bias[0]
            keys = (h @ self.wk[0] + self.wk_bias[0]).unsqueeze(1).expand(n, k, k, d)
            vals = (h @ self.wv[0] + self.wv_bias[0]).unsqueeze(1).expand(n, k, k, d)
        q = q.view(n, k, 1, heads, d // heads)
        keys = keys.reshape(n, k, k, heads, d // heads)
        vals = vals.reshape(n, k, k, heads, d // heads)
        att = torch.softmax(2 * (q * keys).sum(-1), dim=2)  # over k': [B, K, K', H]
        a = (att.unsqueeze(-1) * vals).sum(2).reshape(n, k, d) + h
        r = a + h
        # memory attention per behavior over the shared memory units
        mem = F.relu(torch.einsum("bkd,kdm->bkm", r, self.mem_att) + self.mem_att_bias)
        trans = torch.einsum("bkm,mde->bkde", mem, self.memory)  # Σ_m m_km T_m
        z = torch.einsum("bkd,bkde->bke", r, trans)
        f = (torch.softmax(2 * self.fuse, 0).unsqueeze(1) * z).sum(1)
        for layer in self.ffn:
            f = F.relu(layer(f)) + f
        return f

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        users = torch.arange(self.n_users, device=self.x_col.device)
        out = (
            torch.cat([self.encode(chunk) for chunk in users.split(4096)])
            if len(users)
            else (self.w.new_zeros(0, self.w.shape[1]))
        )
        return out, self.w

    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        if self.hidden:  # each pair's own input
            f = self.encode(batch.user, batch.pos)
        else:
            uniq, inverse = torch.unique(batch.user, return_inverse=True)
            f = self.encode(uniq).index_select(0, inverse)
        pos = (f * self.w.index_select(0, batch.pos)).sum(-1)
        neg = (f * self.w.index_select(0, batch.neg)).sum(-1)
        rank = (
            losses.max_margin(pos, neg, 1.0)
            if self.config.loss == "hinge"
            else (losses.bpr(pos, neg))
        )
        penalty = sum((p.square().sum() for p in self.parameters()), pos.new_zeros(()))
        return {self.config.loss: rank, "reg": self.config.reg * penalty}


__all__ = ["MATN", "MATNConfig"]
