"""HGN (Ma, Kang & Liu, "Hierarchical Gating Networks for Sequential Recommendation", KDD 2019)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec.data.views import DataSchema, TrainData
from polyrec.models._sequential import SequentialConfig, SequentialModel, key_padding, latest


class HGNConfig(SequentialConfig):
    """Settings of :class:`HGN` (defaults: HGN §5.1.4 and its released code)."""

    dim: int = Field(50, ge=1)
    """Embedding size d (HGN §5.1.4: d = 50)."""
    max_len: int = Field(5, ge=1)
    """The latest L items the gates read (HGN §5.1.4: L = 5)."""
    item_item: bool = True
    """The item–item product Σ_l e_l · q_j (HGN §4.4): the candidate's affinity to each recent
    item on its own (False: the ablation without it)."""


class HGN(SequentialModel, name="hgn", paper="Ma, Kang & Liu, KDD 2019", Config=HGNConfig):
    """HGN: the latest L item embeddings E ∈ R^{L×d} pass

    * a **feature gate** (§4.2): ``E_f = E ⊗ σ(E W_1 + b)``, per item and feature, how much of
      each latent feature goes on (W_1 ∈ R^{d×d});
    * an **instance gate** (§4.3): ``a = σ(E_f w_3)`` ∈ R^L, then the gated average
      ``s = Σ_l a_l E_f,l / Σ_l a_l``: which of the recent items speak for the next one;

    and the score of item j is ``(s + Σ_l e_l) · q_j``: the gated sequence plus the item–item
    product (§4.4), so the user vector is ``s + Σ_l e_l`` (K = 1).

    **Choices** (shared with polyrec's other sequential models): the paper's user embedding and
    the user terms of both gates (``u W_2`` in the feature gate, ``u W_4`` in the instance gate,
    ``u · q_j`` in the score) are left out — the user vector comes from the history alone (the
    ComiRec protocol scores users unseen in training); one item table embeds the history and
    the candidates (the code keeps a second output table); a history shorter than L is padded,
    its padding positions gated out of both sums; the paper's BPR over the next T items is
    replaced by the shared next-item softmax over (prefix → next item) cuts (``loss``).
    """

    config: HGNConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        d = self.config.dim
        self.feature_gate = nn.Linear(d, d)  # W_1, b (§4.2)
        self.instance_gate = nn.Linear(d, 1, bias=False)  # w_3 (§4.3)

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        histories, lengths = latest(histories, lengths, self.config.max_len)
        real = (~key_padding(lengths, histories.shape[1])).unsqueeze(-1).to(self.item_emb.weight)
        e = self.item_emb(histories) * real  # [B, L, d], padding rows 0
        ef = e * torch.sigmoid(self.feature_gate(e))  # feature gating
        a = torch.sigmoid(self.instance_gate(ef)) * real  # [B, L, 1] instance gating
        s = (a * ef).sum(1) / a.sum(1).clamp(min=1e-12)
        if self.config.item_item:
            s = s + e.sum(1)  # Σ_l e_l: the item–item product with the candidate
        return s.unsqueeze(1)


__all__ = ["HGN", "HGNConfig"]
