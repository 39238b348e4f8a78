"""KHGT (Xia, Huang, Xu, Dai, Zhang, Yin & Bo, "Knowledge-Enhanced Hierarchical Graph
Transformer Network for Multi-Behavior Recommendation", AAAI 2021): per-behavior graph attention
with temporal encoding of each interaction, a transformer across the behaviors' messages, a
gated aggregation, and item–item relations beside the user–item graph."""

from __future__ import annotations

import math
from typing import cast

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import BPRScorer, GraphScorer
from polyrec.models._layers import sinusoid_positions
from polyrec.models.base import ModelConfig
from polyrec.models.propagation import segment_softmax

LEAKY = 0.1  # slope of the authors' two-way leaky ReLU6 below 0 and above 6


class KHGTConfig(ModelConfig):
    """Settings of :class:`KHGT` (the authors' released code's defaults)."""

    dim: int = Field(16, ge=1)
    """Latent size d (the authors' code: 16)."""
    n_heads: int = Field(2, ge=1)
    """Attention heads of the graph attention and the behavior transformer (code: 2)."""
    n_layers: int = Field(2, ge=1)
    """Graph layers (code: 2)."""
    memory_units: int = Field(2, ge=1)
    """Memory units: each behavior's query, key and value projections are learned mixtures of
    this many shared d × d matrices (code: 2)."""
    slot: float = Field(432000.0, gt=0.0)
    """Length of a time slot in the log's time unit (code: 5 days; the default assumes seconds).
    Each interaction's slot (from the log's first timestamp) indexes a sinusoidal, trainable
    time embedding added to its message. A log without timestamps puts every interaction in
    slot 0: the temporal encoding becomes one learned offset per behavior."""
    item_item_weight: float = Field(0.3, ge=0.0, le=1.0)
    """Weight of the item–item messages in an item's update, against 1 − it for the user–item
    messages (code: 0.3; 0 drops the item–item relations)."""
    item_item_edges: int = Field(100_000, ge=0)
    """Item–item edges per behavior: pairs of items one user interacted with under it, sampled
    uniformly among all such pairs with a fixed seed (code: 100,000; data without a knowledge
    graph gets its relations from co-interactions, as the authors' code builds them)."""
    item_item_seed: int = 0
    """Seed of the item–item sample (fixed, so that a saved model rebuilds the same graph)."""
    reg: float = Field(2.5e-4, ge=0.0)
    """λ of the L2 penalty λ Σ‖θ‖² on the regularised parameters (input embeddings, time
    embedding and projections, attention matrices, output layer). The authors' code adds 1e-2
    Σ‖θ‖² to a loss summed over each user's 40 sampled pairs; polyrec's loss is the mean over
    pairs, so the same balance is 1e-2 / 40."""


class KHGT(
    BPRScorer,
    GraphScorer,
    name="khgt",
    paper="Xia et al., Knowledge-Enhanced Hierarchical Graph Transformer Network for "
    "Multi-Behavior Recommendation, AAAI 2021",
    Config=KHGTConfig,
):
    """KHGT on the multi-behavior user–item graph. Per layer l, a node t's update from its
    neighbours s over the edges of each behavior k (users from items, items from users; items
    also from items over the item–item relations, without time):

    * Temporal encoding: the message of an edge adds the behavior's projection of the
      interaction's time-slot embedding, s̃ = h_s + T_k τ(slot(s, t)), τ sinusoidal and
      trainable (2d wide).
    * Memory-augmented graph attention, per behavior: W_kᵠ = Σ_m a_kmᵠ Qₘ (likewise K, V) from
      M shared matrices; per head α_st = softmax over t's edges of (h_t W_kᵠ)·(s̃ W_kᴷ)/√(d/H),
      ĥ_kt = Σ_s α_st s̃ W_kⱽ.
    * Behavior transformer: g_k = σ(ĥ_k), g'_k = g_k + Σ_k' softmax_k'((g_k P)·(g_k' P)/√(d/H))
      g_k' per head (one projection P for query and key, the values unprojected).
    * Gated aggregation: c = σ(Σ_k ĥ_k), β_k = softmax_k(w₂ᵀ σ(W₁ [g'_k; c])) × 8,
      m_t = Σ_k β_k g'_k.
    * h_uˡ⁺¹ = m_u + h_uˡ; h_iˡ⁺¹ = ω m_i^(item–item) + (1 − ω) m_i^(user–item) + h_iˡ.

    σ is the authors' two-way leaky ReLU6. Final representations e = e⁰ + Σ_{l≥1} hˡ, where the
    layer-0 term is a second (unregularised) embedding table, as in the code; ŷ_ui =
    w·(e_u ⊙ e_i) (the code's output layer; its bias cancels in every pairwise comparison and
    ranking, so it is left out). Pairwise hinge loss on the target behavior.

    Choices, stated (the paper is not in ``../shared/papers``; the details follow the authors'
    released code, read, not copied): the two-way leaky ReLU6, the factor 8 on the gate, the
    separate layer-0 tables; the item–item relations from sampled co-interaction pairs (the
    data here has no external knowledge graph, ``item_item_edges``); an edge's time is its pair's
    latest training timestamp. The whole training graph propagates each step (the code samples
    subgraphs of 25,000 nodes, needed only for graphs that do not fit in memory); polyrec's
    uniform (u, i, j) triples replace the code's 40 pairs for each of 32 users a batch, and the
    learning rate is constant (the code decays it by 0.96 every 312 steps).
    """

    config: KHGTConfig
    ui_src: Tensor
    ui_dst: Tensor
    ui_slot: Tensor
    ii_src: Tensor
    ii_dst: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        d, k = config.dim, len(schema.behaviors)
        if d % config.n_heads:
            raise ValueError(f"dim {d} is not divisible by n_heads {config.n_heads}")
        self.train_behavior = schema.target
        self.n_behaviors = k
        emb = [nn.Embedding(n, d) for n in (schema.n_users, schema.n_items) for _ in range(2)]
        for e in emb:
            nn.init.xavier_uniform_(e.weight)
        self.user_emb, self.user_pred, self.item_emb, self.item_pred = emb
        assert data is not None  # not rebuildable: setup() always passes the data
        n_slots = self._user_item_edges(data, schema)
        self.time_emb = nn.Parameter(sinusoid(n_slots, d))
        with_ii = config.item_item_weight > 0 and config.item_item_edges > 0
        self._item_item_edges(data, schema, config.item_item_edges if with_ii else 0)
        # per layer: users ← items, items ← users (with time), items ← items (without)
        self.layers = nn.ModuleList(
            nn.ModuleList(
                _Propagation(d, config.n_heads, config.memory_units, k, timed)
                for timed in (True, True, False)
            )
            for _ in range(config.n_layers)
        )
        self.out = nn.Parameter(nn.init.xavier_uniform_(torch.empty(1, d)).squeeze(0))  # w
        self._ddp_params_and_buffers_to_ignore = ["ui_src", "ui_dst", "ui_slot", "ii_src", "ii_dst"]

    def _user_item_edges(self, data: TrainData, schema: DataSchema) -> int:
        """Buffers of the user → item edges of each behavior (behavior-major), their time slots;
        returns the number of slots."""
        log = data.log
        us, its, slots, self.ui_bounds = [], [], [], [0]
        t0 = float(log.timestamp.min()) if log.timestamp is not None and len(log.user) else 0.0
        for code, _ in enumerate(schema.behaviors):
            rows = np.flatnonzero(log.behavior == code)
            key = log.user[rows].astype(np.int64) * schema.n_items + log.item[rows]
            if log.timestamp is None:
                uniq = np.unique(key)
                slot = np.zeros(len(uniq), dtype=np.int64)
            else:  # the pair's latest training timestamp
                order = np.lexsort((log.timestamp[rows], key))
                key_sorted = key[order]
                last = np.r_[key_sorted[1:] != key_sorted[:-1], True]
                uniq = key_sorted[last]
                t = log.timestamp[rows][order][last]
                slot = ((t - t0) // self.config.slot).astype(np.int64)
            us.append(uniq // schema.n_items)
            its.append(uniq % schema.n_items)
            slots.append(slot)
            self.ui_bounds.append(self.ui_bounds[-1] + len(uniq))
        for name, parts in (("ui_src", us), ("ui_dst", its), ("ui_slot", slots)):
            buf = torch.from_numpy(np.concatenate(parts).astype(np.int64))
            self.register_buffer(name, buf, persistent=False)
        return int(self.ui_slot.max()) + 1 if len(self.ui_slot) else 1

    def _item_item_edges(self, data: TrainData, schema: DataSchema, per_behavior: int) -> None:
        """Buffers of ``per_behavior`` item pairs (i, j) per behavior drawn uniformly among the
        pairs of items one user has under it (pairs with i = j included, as the code's)."""
        # a fixed seed: a model rebuilt from its saved weights gets the same relations
        rng = np.random.default_rng(self.config.item_item_seed)
        src, dst, self.ii_bounds = [], [], [0]
        for b in schema.behaviors:
            m = data.csr(b)
            counts = np.diff(m.indptr).astype(np.float64)
            total = float((counts**2).sum())
            n = per_behavior if total > 0 else 0
            # a user with n_u items holds n_u² of the pairs: draw users by n_u², then two items
            users = rng.choice(len(counts), size=n, p=counts**2 / total) if n else np.zeros(0, int)
            start, c = m.indptr[users], counts[users]
            a = m.indices[start + (rng.random(n) * c).astype(np.int64)]
            b_ = m.indices[start + (rng.random(n) * c).astype(np.int64)]
            src.append(a)
            dst.append(b_)
            self.ii_bounds.append(self.ii_bounds[-1] + n)
        for name, parts in (("ii_src", src), ("ii_dst", dst)):
            buf = torch.from_numpy(np.concatenate(parts).astype(np.int64))
            self.register_buffer(name, buf, persistent=False)

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        hu, hi = self.user_emb.weight, self.item_emb.weight
        sum_u, sum_i = self.user_pred.weight, self.item_pred.weight
        n_u, n_i = self.n_users, self.n_items
        ui = (self.ui_src, self.ui_dst, self.ui_bounds)
        iu = (self.ui_dst, self.ui_src, self.ui_bounds)
        ii = (self.ii_src, self.ii_dst, self.ii_bounds)
        w = self.config.item_item_weight if len(self.ii_src) else 0.0
        for layer in self.layers:
            to_user, to_item, item_item = (cast(_Propagation, m) for m in layer.children())
            mu = to_user(hi, hu, iu, n_u, self.time_emb, self.ui_slot)
            mi = to_item(hu, hi, ui, n_i, self.time_emb, self.ui_slot)
            if w > 0:
                mi = w * item_item(hi, hi, ii, n_i, None, None) + (1 - w) * mi
            hu, hi = mu + hu, mi + hi
            sum_u, sum_i = sum_u + hu, sum_i + hi
        return sum_u * self.out, sum_i

    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        users, items = self.final_embeddings()
        eu = users.index_select(0, batch.user)
        pos = (eu * items.index_select(0, batch.pos)).sum(-1)
        neg = (eu * items.index_select(0, batch.neg)).sum(-1)
        penalty = sum(
            (p.square().sum() for name, p in self.named_parameters() if _regularised(name)),
            pos.new_zeros(()),
        )
        return {"hinge": losses.max_margin(pos, neg, 1.0), "reg": self.config.reg * penalty}


def _regularised(name: str) -> bool:
    """Whether the code's L2 penalty covers a parameter: not the layer-0 output tables, the
    behavior transformer's projection or the gate (its ``reg=False`` ones)."""
    leaf = name.rsplit(".", 2)
    return not any(part in ("user_pred", "item_pred", "att", "gate1", "gate2") for part in leaf)


def sinusoid(n: int, d: int) -> Tensor:
    """The initial time embedding ``[n, 2d]``: sin and cos (interleaved) of slot × 10000^(−2j/d)
    for j < d, scaled by 1 / (4√d) (the authors' code)."""
    return sinusoid_positions(n, 2 * d, d) / (4 * math.sqrt(d))


def two_way_leaky_relu6(x: Tensor) -> Tensor:
    """x on [0, 6], slope 0.1 below 0 and above 6: 0.1 x + 0.9 clamp(x, 0, 6)."""
    return LEAKY * x + (1 - LEAKY) * x.clamp(0.0, 6.0)


class _Propagation(nn.Module):
    """One KHGT message propagation into one node type over K relations (the behaviors, or the
    item–item relations): memory-augmented graph attention per relation, the behavior
    transformer and the gated aggregation."""

    def __init__(self, d: int, heads: int, memory: int, k: int, timed: bool) -> None:
        super().__init__()
        self.heads, self.timed = heads, timed

        qkv = torch.stack([nn.init.xavier_uniform_(torch.empty(d, d)) for _ in range(3 * memory)])
        self.qkv = nn.Parameter(qkv.view(3, memory, d, d))  # Q_m, K_m, V_m
        self.mix = nn.Parameter(torch.randn(3, k, memory) * 0.1)  # a_km for Q, K, V
        # T_k: each behavior's projection of the time embedding
        self.time_k = (
            nn.ModuleList(nn.Linear(2 * d, d, bias=False) for _ in range(k)) if timed else None
        )
        self.att = nn.Parameter(nn.init.xavier_uniform_(torch.empty(d, d)))  # P
        self.gate1 = nn.Linear(2 * d, d // 2 if d > 1 else 1, bias=False)
        self.gate2 = nn.Linear(d // 2 if d > 1 else 1, 1, bias=False)

    def forward(
        self,
        src_h: Tensor,
        tgt_h: Tensor,
        edges: tuple[Tensor, Tensor, list[int]],
        n_tgt: int,
        time_emb: Tensor | None,
        slots: Tensor | None,
    ) -> Tensor:
        src, dst, bounds = edges
        d = tgt_h.shape[1]
        h, dh = self.heads, d // self.heads
        raw, acts = [], []
        for k in range(len(bounds) - 1):
            s_e, t_e = src[bounds[k] : bounds[k + 1]], dst[bounds[k] : bounds[k + 1]]
            w_q, w_k, w_v = torch.einsum("cm,cmde->cde", self.mix[:, k], self.qkv)
            # (h_s + T_k τ) W = h_s W + (T_k τ) W: project nodes and slots, then gather per edge
            x_k = src_h @ w_k
            x_v = src_h @ w_v
            key = x_k.index_select(0, s_e)
            val = x_v.index_select(0, s_e)
            if self.time_k is not None and time_emb is not None and slots is not None:
                tau = self.time_k[k](time_emb)
                slot_e = slots[bounds[k] : bounds[k + 1]]
                key = key + (tau @ w_k).index_select(0, slot_e)
                val = val + (tau @ w_v).index_select(0, slot_e)
            q = (tgt_h @ w_q).index_select(0, t_e).view(-1, h, dh)
            logits = (key.view(-1, h, dh) * q).sum(-1) / math.sqrt(dh)
            att = segment_softmax(logits, t_e, n_tgt)  # over t's edges of relation k
            msg = att.unsqueeze(-1) * val.view(-1, h, dh)
            out = tgt_h.new_zeros(n_tgt, h, dh).index_add(0, t_e, msg).view(n_tgt, d)
            raw.append(out)
            acts.append(two_way_leaky_relu6(out))
        g = torch.stack(acts, dim=1)  # [N, K, d]
        n, kk = g.shape[:2]
        p = (g @ self.att).view(n, kk, h, dh)
        # K is a handful: broadcast products beat batched matmuls of K × K blocks here
        logits = (p.unsqueeze(2) * p.unsqueeze(1)).sum(-1) / math.sqrt(dh)  # [N, K, K', h]
        att = torch.softmax(logits, dim=2)
        g2 = (att.unsqueeze(-1) * g.view(n, 1, kk, h, dh)).sum(2).reshape(n, kk, d) + g
        c = two_way_leaky_relu6(torch.stack(raw).sum(0))  # the gate's global query
        gate_in = torch.cat([g2, c.unsqueeze(1).expand(n, kk, d)], dim=-1)
        beta = torch.softmax(self.gate2(two_way_leaky_relu6(self.gate1(gate_in))), dim=1) * 8
        return (beta * g2).sum(1)


__all__ = ["KHGT", "KHGTConfig"]
