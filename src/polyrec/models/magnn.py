"""MA-GNN (Ma, Ma, Zhang, Sun, Liu & Coates, "Memory Augmented Graph Neural Networks for
Sequential Recommendation", AAAI 2020): a graph network over the latest L items for the
short-term interest, a multi-head attention and a memory network over the earlier items for the
long-term one, a gate between them, and an item–item bilinear term."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec.data.views import DataSchema, TrainData
from polyrec.models._layers import sinusoid_positions
from polyrec.models._sequential import SequentialConfig, SequentialModel, key_padding, latest


class MAGNNConfig(SequentialConfig):
    """Settings of :class:`MAGNN` (the paper's where it gives them, §4.1)."""

    dim: int = Field(50, ge=1)
    """Embedding size d (50, as the authors' HGN; the MA-GNN paper tunes it)."""
    max_len: int = Field(50, ge=2)
    """Latest items read: the short-term window of ``short_len`` and the earlier ones for the
    long-term interest (the paper reads the user's whole earlier sequence; 50 bounds it)."""
    short_len: int = Field(5, ge=1)
    """|L|, the short-term window (paper: 5)."""
    neighbours: int = Field(3, ge=1)
    """Each window item is linked to its next (and previous) this many items (paper: "the three
    subsequent items")."""
    gnn_steps: int = Field(1, ge=1)
    """Graph layers over the window (paper Eq. 1-2: one)."""
    n_heads: int = Field(20, ge=1)
    """Heads h of the long-term multi-dimensional attention (paper: 20)."""
    memory_units: int = Field(20, ge=1)
    """Memory units m (paper: 20)."""


class MAGNN(SequentialModel, name="magnn", paper="Ma et al., AAAI 2020", Config=MAGNNConfig):
    """MA-GNN. For a history, the window L = its latest ``short_len`` items (embeddings e_i) and
    H = the items before it (at most ``max_len − short_len``):

    * Short-term (Eq. 1-3): on the window's graph (item i linked to the ``neighbours`` items
      before and after it, A row-normalised over the real items), h_i = tanh(W⁽¹⁾ [Σ_k A_ik e_k;
      e_i]); p_S = tanh(W⁽²⁾ mean_i h_i).
    * Long-term (Eq. 4-8): Ĥ = H + sinusoidal positions; S = softmax over the positions of
      W_a⁽³⁾ tanh(W_a⁽¹⁾ Ĥ) (h heads); z = mean over the heads of tanh(Ĥᵀ S); memory read
      o = Σ_m softmax_m(z · k_m) v_m; p_H = z + o.
    * Fusion (Eq. 9): g = σ(W_g⁽¹⁾ mean_i e_i + W_g⁽²⁾ p_H); p_C = g ⊙ p_S + (1 − g) ⊙ p_H.
    * Score (Eq. 10): ŷ_j = p_C · q_j + mean_i e_iᵀ W_r q_j, so the user vector is
      p_C + W_r mean_i e_i (one interest).

    **Choices** (shared with polyrec's other sequential models, as HGN here): the user
    embedding p_u and its terms (in p_S, the attention, the gate and the score) are left out —
    the user vector comes from the history alone (the ComiRec protocol scores users unseen in
    training); one item table embeds the history and the candidates; the paper's BPR over the
    next T = 3 items is replaced by the shared next-item softmax over (prefix → next item) cuts
    (``loss``). A history of at most ``short_len`` items has no long-term part: z = 0 and p_H is
    the memory's read of it.
    """

    config: MAGNNConfig
    adjacency: Tensor
    positions: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        c = self.config
        d = c.dim
        self.w1 = nn.Linear(2 * d, d, bias=False)  # W⁽¹⁾
        self.w2 = nn.Linear(d, d, bias=False)  # W⁽²⁾
        self.att1 = nn.Linear(d, d, bias=False)  # W_a⁽¹⁾
        self.att3 = nn.Linear(d, c.n_heads, bias=False)  # W_a⁽³⁾
        self.mem_key = nn.Parameter(nn.init.xavier_uniform_(torch.empty(c.memory_units, d)))
        self.mem_val = nn.Parameter(nn.init.xavier_uniform_(torch.empty(c.memory_units, d)))
        self.gate_short = nn.Linear(d, d, bias=False)  # W_g⁽¹⁾
        self.gate_long = nn.Linear(d, d, bias=False)  # W_g⁽²⁾
        self.item_item = nn.Linear(d, d, bias=False)  # W_r
        # window adjacency by position: |i − j| ≤ neighbours, i ≠ j
        pos = torch.arange(c.short_len)
        gap = (pos.unsqueeze(0) - pos.unsqueeze(1)).abs()
        self.register_buffer("adjacency", ((gap > 0) & (gap <= c.neighbours)).float(), False)
        self.register_buffer("positions", sinusoid_positions(c.max_len, d), False)

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        c = self.config
        histories, lengths = latest(histories, lengths, c.max_len)
        t = histories.shape[1]
        real = ~key_padding(lengths, t)  # [B, T]
        e_all = self.item_emb(histories) * real.unsqueeze(-1)
        n_short = min(c.short_len, t)
        e, real_s = e_all[:, t - n_short :], real[:, t - n_short :]
        # short-term: the window's graph, rows normalised over the real neighbours (Eq. 1-2)
        adj = self.adjacency[-n_short:, -n_short:] * real_s.unsqueeze(1) * real_s.unsqueeze(2)
        adj = adj / adj.sum(-1, keepdim=True).clamp(min=1.0)
        h = e
        for _ in range(c.gnn_steps):
            h = torch.tanh(self.w1(torch.cat([adj @ h, e], dim=-1))) * real_s.unsqueeze(-1)
        n_real = real_s.sum(1, keepdim=True).clamp(min=1).to(e.dtype)
        p_short = torch.tanh(self.w2(h.sum(1) / n_real))  # Eq. 3
        # long-term: multi-dimensional attention over the earlier items, then memory (Eq. 4-8)
        hl, real_l = e_all[:, : t - n_short], real[:, : t - n_short]
        if hl.shape[1]:
            hl = (hl + self.positions[c.max_len - t : c.max_len - n_short]) * real_l.unsqueeze(-1)
            logits = self.att3(torch.tanh(self.att1(hl)))  # [B, T_l, h]
            att = torch.softmax(logits.masked_fill(~real_l.unsqueeze(-1), float("-inf")), dim=1)
            att = torch.nan_to_num(att)  # a history without earlier items: no attention
            z = torch.tanh(hl.transpose(1, 2) @ att).mean(-1)  # [B, d]
        else:
            z = e.new_zeros(e.shape[0], e.shape[2])
        read = torch.softmax(z @ self.mem_key.T, dim=-1) @ self.mem_val
        p_long = z + read
        mean_e = e.sum(1) / n_real
        g = torch.sigmoid(self.gate_short(mean_e) + self.gate_long(p_long))  # Eq. 9
        p = g * p_short + (1 - g) * p_long
        return (p + self.item_item(mean_e)).unsqueeze(1)  # Eq. 10: p_C + W_r mean e


__all__ = ["MAGNN", "MAGNNConfig"]
