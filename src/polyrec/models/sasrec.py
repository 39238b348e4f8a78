"""SASRec (Kang & McAuley, "Self-Attentive Sequential Recommendation", ICDM 2018)."""

from __future__ import annotations

from pydantic import Field
from torch import Tensor, nn

from polyrec.data.views import DataSchema, TrainData
from polyrec.models._layers import SelfAttentionBlock, causal_mask, dropout
from polyrec.models._sequential import SequentialConfig, SequentialModel, key_padding, latest


class SASRecConfig(SequentialConfig):
    """Settings of :class:`SASRec` (defaults: SASRec ICDM 2018 §IV-C / ComiRec's d and T)."""

    n_blocks: int = Field(2, ge=1)
    """Self-attention blocks b (SASRec §IV-C: b = 2)."""
    n_heads: int = Field(1, ge=1)
    """Attention heads (SASRec §III-B: single head)."""
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    """Dropout rate (SASRec §IV-C: 0.2 on MovieLens-1M, 0.5 on the sparse sets)."""


class SASRec(
    SequentialModel, name="sasrec", paper="Kang & McAuley, ICDM 2018", Config=SASRecConfig
):
    """SASRec: causal self-attention over the history (SASRec §III-B/C, pre-LayerNorm residual
    blocks with a point-wise feed-forward network, learned positions §III-A); the user vector
    is the output at the latest position (K = 1). Trained here on (prefix → next item) cuts with
    the shared sampled softmax instead of the paper's per-position binary cross-entropy."""

    config: SASRecConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        config = self.config
        if config.dim % config.n_heads:
            raise ValueError(f"dim {config.dim} is not divisible by n_heads {config.n_heads}")
        self.pos_emb = nn.Embedding(config.max_len, config.dim)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(config.dim, config.n_heads, config.dim, config.dropout)
            for _ in range(config.n_blocks)
        )
        self.norm = nn.LayerNorm(config.dim)

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        histories, lengths = latest(histories, lengths, self.max_len)
        t = histories.shape[1]
        pad = key_padding(lengths, t)
        x = self.item_emb(histories) * (self.dim**0.5)
        x = x + self.pos_emb.weight[self.max_len - t :].unsqueeze(0)
        x = dropout(x, self.config.dropout, self.training) * (~pad).unsqueeze(-1).to(x.dtype)
        allowed = causal_mask(pad)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x[:, -1]).unsqueeze(1)
