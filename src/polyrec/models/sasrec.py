"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018)."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec.models._sequential import SequentialConfig, SequentialModel, key_padding
from polyrec.models.base import ModelConfig, TrainData


class SASRecConfig(SequentialConfig):
    """Settings of :class:`SASRec` (defaults: SASRec ICDM 2018 §IV-C / ComiRec's d and T)."""

    n_blocks: int = Field(2, ge=1, description="Self-attention blocks b (SASRec §IV-C: b = 2).")
    n_heads: int = Field(1, ge=1, description="Attention heads (SASRec §III-B: single head).")
    dropout: float = Field(
        0.2,
        ge=0.0,
        lt=1.0,
        description="Dropout rate (SASRec §IV-C: 0.2 on MovieLens-1M, 0.5 on the sparse sets).",
    )


class SASRec(SequentialModel):
    """SASRec: causal self-attention over the history (SASRec §III-B/C, pre-LayerNorm residual
    blocks with a point-wise feed-forward network, learned positions §III-A); the user vector
    is the output at the latest position (K = 1). Trained here on (prefix → next item) cuts with
    the shared sampled softmax instead of the paper's per-position binary cross-entropy."""

    name: ClassVar[str] = "sasrec"
    paper: ClassVar[str] = "Kang & McAuley, ICDM 2018"
    Config: ClassVar[type[ModelConfig]] = SASRecConfig
    config: SASRecConfig

    def __init__(self, config: SASRecConfig, data: TrainData) -> None:
        super().__init__(config, data)
        if config.dim % config.n_heads:
            raise ValueError(f"dim {config.dim} is not divisible by n_heads {config.n_heads}")
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.drop = nn.Dropout(config.dropout)
        layer = nn.TransformerEncoderLayer(
            config.dim,
            config.n_heads,
            dim_feedforward=config.dim,
            dropout=config.dropout,
            activation="relu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, config.n_blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(config.dim)

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        b, t = histories.shape
        if t > self.max_len:
            histories, t = histories[:, -self.max_len :], self.max_len
            lengths = lengths.clamp(max=t)
        pad = key_padding(lengths, t)
        x = self.item_emb(histories) * (self.dim**0.5)
        x = x + self.pos_emb.weight[self.max_len - t :].unsqueeze(0)
        x = self.drop(x) * (~pad).unsqueeze(-1).to(x.dtype)
        # additive float masks (large negative, not -inf): a left-padding query that may see
        # only padding keys stays finite; its output is never read
        neg = torch.finfo(x.dtype).min / 4
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=x.device), 1)
        mask = torch.zeros(b, t, t, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(causal.unsqueeze(0) | pad.unsqueeze(1), neg)
        mask = mask.repeat_interleave(self.config.n_heads, dim=0)
        h = self.blocks(x, mask=mask)
        return self.norm(h[:, -1]).unsqueeze(1)
