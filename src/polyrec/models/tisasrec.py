"""TiSASRec (Li, Wang & McAuley, "Time Interval Aware Self-Attention for Sequential
Recommendation", WSDM 2020)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec.data.views import DataSchema, TrainData
from polyrec.errors import DataError
from polyrec.models._layers import PreLNBlock, causal_mask, dropout
from polyrec.models._sequential import SequentialConfig, SequentialModel, key_padding, latest


class TiSASRecConfig(SequentialConfig):
    """Settings of :class:`TiSASRec` (defaults: TiSASRec WSDM 2020 §5.1.4 and its code)."""

    dim: int = Field(50, ge=1)
    """Latent dimension d (TiSASRec §5.1.4: 50)."""
    max_len: int = Field(50, ge=1)
    """Maximum sequence length n (TiSASRec §5.1.4: 50; 200 on MovieLens-1M)."""
    n_blocks: int = Field(2, ge=1)
    """Self-attention blocks (TiSASRec §5.1.4: 2)."""
    n_heads: int = Field(1, ge=1)
    """Attention heads (TiSASRec: 1)."""
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    """Dropout rate (TiSASRec §5.1.4: 0.2 on MovieLens-1M, 0.5 on the sparser sets; the code's
    default 0.2)."""
    time_span: int = Field(256, ge=1)
    """Largest relative interval k (TiSASRec §4.1: intervals are clipped at k; code default
    256)."""


class TiSASRec(
    SequentialModel, name="tisasrec", paper="Li, Wang & McAuley, WSDM 2020", Config=TiSASRecConfig
):
    """TiSASRec: SASRec's causal self-attention with the time interval between every two items
    of the history as a relation (§4).

    * Personalised intervals (§4.1): each history's timestamps are counted in units of its
      smallest non-zero gap between consecutive items, r^u_min, relative to its first item
      (rounded, as the authors' code does); the interval of items i and j is
      r_ij = min(|t_i − t_j|, k) in those units.
    * Embeddings (§4.2): items M^I (scaled by √d, as SASRec), absolute positions for keys and
      values M^P_K, M^P_V, and intervals for keys and values E^R_K, E^R_V ([k + 1, d]), shared
      by every block (as the code).
    * Time interval aware attention (§4.3, Eq. 4–5): with query q_i, key k_j and value v_j of
      the block's input,
      e_ij = q_i (k_j + r^K_ij + p^K_j)ᵀ / √d,  z_i = Σ_{j ≤ i} softmax_j(e_ij) (v_j + r^V_ij +
      p^V_j). The interval terms are computed without a ``[B, T, T, d]`` tensor: q_i against
      the k + 1 interval keys, gathered at r_ij; the attention weights summed per interval and
      multiplied with the k + 1 interval values.
    * Point-wise feed-forward, residuals, LayerNorm and dropout as polyrec's SASRec (pre-LN
      blocks, §4.4); the user vector is the output at the latest position.

    Choices where the paper or code differ from polyrec's shape, each stated:

    * r^u_min and the first time are taken over the history window the model reads (the latest
      ``max_len`` items), not over the user's whole log as in the code's preprocessing: the same
      computation at training and at evaluation time, and for users the split held out.
    * Dropout on the interval and position tables (once per step) instead of on every gathered
      ``[B, T, T, d]`` relation entry.
    * Trained on (prefix → next item) cuts with the shared sampled softmax (``loss``), as every
      polyrec sequential model, instead of the paper's per-position binary cross-entropy with
      one negative.
    * Under leave-one-out, a test user's appended validation item has no stored timestamp: it
      is placed at the user's latest training time (interval 0 to it).

    Needs timestamps: a log without a timestamp column is refused with one clear message.
    """

    config: TiSASRecConfig
    uses_times: ClassVar[bool] = True

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        if data is not None and data.log.timestamp is None:
            raise DataError(
                f"tisasrec reads the time between a user's interactions, and dataset "
                f"{data.log.name!r} has no timestamp column; import the data with its time "
                "column (polyrec data import --time-col), or use sasrec"
            )
        super().build(schema, data)
        config = self.config
        if config.dim % config.n_heads:
            raise ValueError(f"dim {config.dim} is not divisible by n_heads {config.n_heads}")
        d, k = config.dim, config.time_span
        self.pos_k = nn.Embedding(config.max_len, d)
        self.pos_v = nn.Embedding(config.max_len, d)
        self.rel_k = nn.Embedding(k + 1, d)
        self.rel_v = nn.Embedding(k + 1, d)
        self.blocks = nn.ModuleList(
            _TimeAwareBlock(d, config.n_heads, config.dropout) for _ in range(config.n_blocks)
        )
        self.norm = nn.LayerNorm(d)

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        raise DataError(
            "tisasrec needs the timestamps of the history (interests_at); this caller gave "
            "items only"
        )

    def interests_at(self, histories: Tensor, lengths: Tensor, times: Tensor | None) -> Tensor:
        if times is None:
            return self.interests(histories, lengths)
        t_full = histories.shape[1]
        histories, lengths = latest(histories, lengths, self.max_len)
        t = histories.shape[1]
        times = times[:, t_full - t :]
        pad = key_padding(lengths, t)
        rel = intervals(times, pad, self.config.time_span)
        p = self.config.dropout
        x = self.item_emb(histories) * (self.dim**0.5)
        x = dropout(x, p, self.training) * (~pad).unsqueeze(-1).to(x.dtype)
        tables = [
            dropout(w, p, self.training)
            for w in (
                self.pos_k.weight[self.max_len - t :],
                self.pos_v.weight[self.max_len - t :],
                self.rel_k.weight,
                self.rel_v.weight,
            )
        ]
        allowed = causal_mask(pad)
        for block in self.blocks:
            x = block(x, allowed, rel, *tables)
        return self.norm(x[:, -1]).unsqueeze(1)


def intervals(times: Tensor, pad: Tensor, span: int) -> Tensor:
    """``[B, T, T]`` r_ij = min(|t_i − t_j|, k) with each row's times counted in units of its
    smallest positive gap between consecutive real items, from its first real item (rounded;
    TiSASRec §4.1). ``times`` ``[B, T]`` (float64), ``pad`` True at the padding (whose
    intervals are 0)."""
    real = ~pad
    t = times.double()
    gap = t[:, 1:] - t[:, :-1]
    ok = real[:, 1:] & real[:, :-1] & (gap > 0)
    inf = torch.full_like(gap, math.inf)
    scale = torch.where(ok, gap, inf).min(dim=1).values if gap.shape[1] else t.new_ones(len(t))
    scale = torch.where(torch.isfinite(scale), scale, torch.ones_like(scale))
    first = torch.where(real, t, torch.full_like(t, math.inf)).min(dim=1).values
    first = torch.where(torch.isfinite(first), first, torch.zeros_like(first))
    units = torch.round((t - first.unsqueeze(1)) / scale.unsqueeze(1))
    units = torch.where(real, units, torch.zeros_like(units))
    rel = (units.unsqueeze(2) - units.unsqueeze(1)).abs().clamp(max=span)
    return rel.long()


class _TimeAwareBlock(PreLNBlock):
    """``x + Dropout(TimeAwareAttention(LN(x)))`` then ``x + Dropout(FFN(LN(x)))`` (TiSASRec
    §4.3–4.4 in polyrec's pre-LN form; the FFN d wide, ReLU)."""

    def __init__(self, dim: int, n_heads: int, p: float) -> None:
        super().__init__(dim, n_heads, dim, p)

    def forward(
        self,
        x: Tensor,
        allowed: Tensor,
        rel: Tensor,
        pos_k: Tensor,
        pos_v: Tensor,
        rel_k: Tensor,
        rel_v: Tensor,
    ) -> Tensor:
        """``x`` ``[B, T, d]``, ``allowed`` ``[B, 1, T, T]``, ``rel`` ``[B, T, T]`` interval ids,
        ``pos_*`` ``[T, d]``, ``rel_*`` ``[k + 1, d]``."""
        b, t, d = x.shape
        h = self.n_heads
        dh = d // h
        n_rel = rel_k.shape[0]
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, h, dh).permute(2, 0, 3, 1, 4)
        pk = pos_k.view(t, h, dh).transpose(0, 1)  # [h, T, dh]
        pv = pos_v.view(t, h, dh).transpose(0, 1)
        rk = rel_k.view(n_rel, h, dh).permute(1, 2, 0)  # [h, dh, k + 1]
        rv = rel_v.view(n_rel, h, dh).transpose(0, 1)  # [h, k + 1, dh]
        index = rel.unsqueeze(1).expand(-1, h, -1, -1)  # [B, h, T, T]
        # Eq. 4: q_i · (k_j + p^K_j) + q_i · r^K_ij
        e = q @ (k + pk).transpose(-1, -2) + (q @ rk).gather(-1, index)
        e = (e / math.sqrt(dh)).masked_fill(~allowed, -math.inf)
        a = dropout(torch.softmax(e, dim=-1), self.p, self.training)
        # Eq. 5: Σ_j α_ij (v_j + p^V_j) + Σ_r (Σ_{j: r_ij = r} α_ij) r^V_r
        per_rel = a.new_zeros(b, h, t, n_rel).scatter_add_(-1, index, a)
        z = a @ (v + pv) + per_rel @ rv
        return self.residual_ffn(x, z.transpose(1, 2).reshape(b, t, d))


__all__ = ["TiSASRec", "TiSASRecConfig", "intervals"]
