"""Caser (Tang & Wang, "Personalized Top-N Sequential Recommendation via Convolutional Sequence
Embedding", WSDM 2018)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from polyrec.data.views import DataSchema, TrainData
from polyrec.models._layers import dropout
from polyrec.models._sequential import SequentialConfig, SequentialModel, latest


class CaserConfig(SequentialConfig):
    """Settings of :class:`Caser` (defaults: Caser §4.2 and its released code)."""

    dim: int = Field(50, ge=1)
    """Embedding size d (Caser §4.2: d = 50)."""
    max_len: int = Field(5, ge=1)
    """Markov order L: the latest L items form the "image" E ∈ R^{L×d} (Caser §4.2: L = 5)."""
    n_h: int = Field(16, ge=0)
    """Horizontal filters per height h = 1..L (Caser §4.2: n = 16)."""
    n_v: int = Field(4, ge=0)
    """Vertical filters (Caser §4.2: ñ = 4)."""
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    """Dropout on the concatenated convolution outputs before the fully-connected layer (Caser
    §3.3: 0.5)."""

    @model_validator(mode="after")
    def _some_filter(self) -> CaserConfig:
        if self.n_h == 0 and self.n_v == 0:
            raise ValueError("Caser needs at least one filter: n_h or n_v must be positive")
        return self


class Caser(SequentialModel, name="caser", paper="Tang & Wang, WSDM 2018", Config=CaserConfig):
    """Caser: the latest L item embeddings as an L × d "image" (§3.1), read by

    * **horizontal** filters F^k ∈ R^{h×d}, n_h for each height h = 1..L (§3.2): each slides
      over the L − h + 1 windows of h consecutive items, ``c_i = ReLU(Σ E_{i:i+h−1} ⊙ F^k)``,
      and keeps its maximum (max pooling): union-level and point-level sequential patterns;
    * **vertical** filters F̃^k ∈ R^{L×1}, n_v of them (§3.2): each a learned weighted sum of
      the L embeddings, ``c̃^k = Σ_l F̃^k_l E_l`` ∈ R^d (no activation, no pooling);

    then ``z = ReLU(W [o; õ] + b)`` with dropout on [o; õ] (§3.3), the user's d-vector (K = 1).

    **Choices** (every polyrec sequential model shares the last two): a history shorter than
    L is left-padded with the zero padding embedding (the paper trains on users with ≥ L
    items; the code pads too); the paper's user embedding P_u and separate output table
    W' ∈ R^{|I|×2d} are not used — the user vector comes from the history alone (the ComiRec
    protocol scores users unseen in training) and is matched against the one item table; the
    paper's binary cross-entropy over the next T items with 3 sampled negatives is replaced by
    the shared next-item softmax over (prefix → next item) cuts (``loss``).
    """

    config: CaserConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        config = self.config
        d, length = config.dim, config.max_len
        # horizontal filters of height h as Conv1d over positions, channels = the d features
        heights = range(1, length + 1) if config.n_h else range(0)
        self.horizontal = nn.ModuleList(nn.Conv1d(d, config.n_h, kernel_size=h) for h in heights)
        # F̃ ∈ R^{n_v × L}, initialised as the code's Conv2d(1, n_v, (L, 1)): U(±1/√L)
        bound = 1.0 / math.sqrt(length)
        self.vertical = nn.Parameter(torch.empty(config.n_v, length).uniform_(-bound, bound))
        self.fc = nn.Linear(config.n_h * len(self.horizontal) + config.n_v * d, d)

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        length = self.config.max_len
        histories, _ = latest(histories, lengths, length)
        if histories.shape[1] < length:  # left-pad to L with the padding item
            histories = F.pad(histories, (length - histories.shape[1], 0))
        e = self.item_emb(histories)  # [B, L, d] (padding rows are 0)
        parts = []
        if self.config.n_v:
            parts.append(torch.einsum("vl,bld->bvd", self.vertical, e).flatten(1))  # õ
        x = e.transpose(1, 2)  # [B, d, L]
        for conv in self.horizontal:  # o: max over the windows of each height
            parts.append(F.relu(conv(x)).amax(dim=2))
        o = torch.cat(parts, dim=1)
        z = F.relu(self.fc(dropout(o, self.config.dropout, self.training)))
        return z.unsqueeze(1)


__all__ = ["Caser", "CaserConfig"]
