"""BERT4Rec (Sun et al., "BERT4Rec: Sequential Recommendation with Bidirectional Encoder
Representations from Transformer", CIKM 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.sequences import SeqBatch
from polyrec.data.views import DataSchema, TrainData
from polyrec.models._layers import SelfAttentionBlock, dropout, padding_mask
from polyrec.models._sequential import SequentialConfig, SequentialModel, key_padding, latest


class BERT4RecConfig(SequentialConfig):
    """Settings of :class:`BERT4Rec` (defaults: BERT4Rec §4.3 for Beauty)."""

    max_len: int = Field(50, ge=2)
    """Maximum sequence length N, the [mask] slot included (§4.3: 50 on Beauty and Steam, 200
    on MovieLens)."""
    n_blocks: int = Field(2, ge=1)
    """Transformer layers L (§4.3: 2)."""
    n_heads: int = Field(2, ge=1)
    """Attention heads h (§4.3: 2)."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout (§4.3: 0.1)."""
    mask_prob: float = Field(0.6, gt=0.0, le=1.0)
    """Cloze mask proportion ρ (§4.3 / Fig. 5: 0.6 on Beauty, 0.4 Steam, 0.2 MovieLens)."""


class BERT4Rec(
    SequentialModel, name="bert4rec", paper="Sun et al., CIKM 2019", Config=BERT4RecConfig
):
    """BERT4Rec: a bidirectional transformer over the item sequence (§3.3), trained by the
    **cloze** task (§3.6): a share ρ of the positions is replaced by a learned [mask]
    embedding and each masked position predicts its item from both sides. The output of a
    position is ``GELU(h W^P + b^P)`` matched against the item table (§3.5, the shared
    embedding). At inference [mask] is appended after the history and its output is the user
    vector (K = 1).

    **Choices.** Training sequences are the shared (prefix → next item) cuts with the next item
    appended (each a sequence of at most N items whose last position is the next item); a
    sequence that draws no masked position gets its last one masked (the paper adds samples
    that mask only the last item, to match inference). Pre-LayerNorm blocks (every polyrec
    transformer; BERT's are post-LN), GELU feed-forward (§3.3); the loss over the masked
    positions is the shared softmax (``loss``: 'full' is the paper's cross-entropy over every
    item, 'sampled' the log-uniform sampled softmax); the paper's per-item output bias b^O is
    left out (polyrec scores items by inner product with the item table).
    """

    config: BERT4RecConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        config = self.config
        if config.dim % config.n_heads:
            raise ValueError(f"dim {config.dim} is not divisible by n_heads {config.n_heads}")
        d = config.dim
        self.mask_emb = nn.Parameter(torch.randn(d) * config.dim**-0.5)  # [mask] (§3.6)
        self.pos_emb = nn.Embedding(config.max_len, d)  # learnable positions (§3.4)
        self.blocks = nn.ModuleList(
            SelfAttentionBlock(d, config.n_heads, 4 * d, config.dropout, activation="gelu")
            for _ in range(config.n_blocks)
        )
        self.norm = nn.LayerNorm(d)
        self.project = nn.Linear(d, d)  # W^P, b^P of the output layer (§3.5)

    def encode(self, seq: Tensor, lengths: Tensor, masked: Tensor) -> Tensor:
        """Hidden states ``[B, T, d]`` of left-padded +1-shifted ``seq`` whose ``masked``
        positions read the [mask] embedding."""
        t = seq.shape[1]
        pad = key_padding(lengths, t)
        # the item table is N(0, 1/d) (it also scores items): × √d brings the inputs to the
        # positions' scale, as SASRec's §III-A scaling
        x = torch.where(masked.unsqueeze(-1), self.mask_emb, self.item_emb(seq)) * self.dim**0.5
        x = x + self.pos_emb.weight[self.max_len - t :].unsqueeze(0)
        x = dropout(x, self.config.dropout, self.training) * (~pad).unsqueeze(-1).to(x.dtype)
        allowed = padding_mask(pad)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x)

    def output(self, h: Tensor) -> Tensor:
        return F.gelu(self.project(h))

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        # the latest N − 1 items, then [mask]
        histories, lengths = latest(histories, lengths, self.max_len - 1)
        seq = F.pad(histories, (0, 1))
        masked = torch.zeros_like(seq, dtype=torch.bool)
        masked[:, -1] = True
        h = self.encode(seq, lengths + 1, masked)
        return self.output(h[:, -1]).unsqueeze(1)

    def cloze(self, batch: SeqBatch) -> tuple[Tensor, Tensor]:
        """The training queries ``[M, d]`` at the masked positions and their items ``[M]``."""
        hist, lengths = latest(batch.history, batch.lengths, self.max_len - 1)
        seq = torch.cat([hist, (batch.target + 1).unsqueeze(1)], dim=1)  # next item appended
        lengths = lengths + 1
        real = ~key_padding(lengths, seq.shape[1])
        masked = (torch.rand(seq.shape, device=seq.device) < self.config.mask_prob) & real
        masked[:, -1] |= ~masked.any(dim=1)  # at least one masked position per sequence
        h = self.encode(seq, lengths, masked)
        return self.output(h[masked]), seq[masked] - 1

    def loss(self, batch: SeqBatch) -> dict[str, Tensor]:
        query, target = self.cloze(batch)
        items = self.item_embeddings()
        if self.config.loss == "full" or batch.negatives is None:
            return {"cloze_softmax": losses.full_softmax(query, items, target)}
        sampled = losses.sampled_softmax(
            query, items, target, batch.negatives, self.negative_log_q(batch)
        )
        return {"cloze_sampled_softmax": sampled}


__all__ = ["BERT4Rec", "BERT4RecConfig"]
