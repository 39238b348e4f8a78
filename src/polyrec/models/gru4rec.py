"""GRU4Rec (Hidasi et al., "Session-based Recommendations with Recurrent Neural Networks",
ICLR 2016) as a sequential baseline of ComiRec."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec.data.views import DataSchema, TrainData
from polyrec.models._sequential import SequentialConfig, SequentialModel


class GRU4RecConfig(SequentialConfig):
    """Settings of :class:`GRU4Rec` (defaults: ComiRec §4.1.4's d; GRU4Rec §3: one GRU layer)."""

    n_layers: int = Field(1, ge=1)
    """GRU layers (GRU4Rec §4: one layer is best)."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on the item embeddings (GRU4Rec §4: 0-0.5)."""


class GRU4Rec(
    SequentialModel, name="gru4rec", paper="Hidasi et al., ICLR 2016", Config=GRU4RecConfig
):
    """GRU4Rec: a GRU over the history's item embeddings; the user vector is the final hidden
    state at the latest item (K = 1), trained on (prefix → next item) cuts with the shared sampled softmax (the
    paper's session-parallel mini-batches and ranking losses are not reproduced)."""

    config: GRU4RecConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        config = self.config
        self.drop = nn.Dropout(config.dropout)
        self.gru = nn.GRU(config.dim, config.dim, config.n_layers, batch_first=True)

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        b, t = histories.shape
        lengths = lengths.clamp(min=1, max=t)
        # left padding → right padding (real items first): the output at position length - 1
        # has seen exactly the history (padding after it cannot reach it)
        col = torch.arange(t, device=histories.device).unsqueeze(0)
        src = (col + (t - lengths).unsqueeze(1)).clamp(max=t - 1)
        right = torch.gather(histories, 1, src)
        out, _ = self.gru(self.drop(self.item_emb(right)))
        last = out[torch.arange(b, device=out.device), lengths - 1]
        return last.unsqueeze(1)
