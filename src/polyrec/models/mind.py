"""MIND (Li et al., "Multi-Interest Network with Dynamic Routing for Recommendation at Tmall",
CIKM 2019): behaviour-to-interest (B2I) dynamic routing and label-aware attention."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec.data.views import DataSchema, TrainData
from polyrec.models._sequential import SequentialConfig, SequentialModel, key_padding, latest
from polyrec.models.comirec import dynamic_routing


class MINDConfig(SequentialConfig):
    """Settings of :class:`MIND` (defaults: MIND CIKM 2019 §3 / ComiRec §4.1.4's K and d)."""

    n_interests: int = Field(4, ge=1)
    """Number of interests K (ComiRec §4.1.4: K = 4)."""
    routing_iterations: int = Field(3, ge=1)
    """B2I routing iterations (MIND §3.3, Alg. 1: 3)."""
    attention_pow: float = Field(2.0, gt=0.0)
    """Exponent p of the label-aware attention softmax(pow(V e_target, p)) (MIND §3.4 Eq. 11), applied
    sign-preserving: sign(x)·|x|^p (p → ∞: hard_readout)."""
    hard_readout: bool = False
    """Train on the interest nearest the target alone (the p → ∞ limit of Eq. 11), as ComiRec's MIND
    baseline does (hard_readout=True in its code)."""


class MIND(SequentialModel, name="mind", paper="Li et al., CIKM 2019", Config=MINDConfig):
    """MIND: B2I dynamic routing with one shared bilinear map ``S`` (§3.3 Eq. 8), routing logits
    drawn once from N(0, 1) at construction (§3.3: 'randomly initialised', fixed here so that
    inference is deterministic), squash, then a dense ReLU layer (§3.3 'H-layer' / ComiRec's
    MIND); training reads out by label-aware attention (§3.4 Eq. 11). The dynamic interest
    number K'_u (§3.3 Eq. 9) is not used: every user gets K interests (as ComiRec's MIND)."""

    config: MINDConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        config = self.config
        d, k = config.dim, config.n_interests
        self.bilinear = nn.Linear(d, d, bias=False)
        self.routing_init: Tensor
        self.register_buffer("routing_init", torch.randn(k, config.max_len))
        self.out = nn.Linear(d, d)

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        histories, lengths = latest(histories, lengths, self.max_len)
        b, t = histories.shape
        e = self.bilinear(self.item_emb(histories))  # [B, T, d]
        k = self.config.n_interests
        hat = e.unsqueeze(1).expand(b, k, t, e.shape[-1])
        pad = key_padding(lengths, t)
        logits = self.routing_init[:, self.max_len - t :].unsqueeze(0).expand(b, k, t)
        caps = dynamic_routing(hat, pad, logits, self.config.routing_iterations)
        return torch.relu(self.out(caps))

    def read_out(self, interests: Tensor, target_emb: Tensor) -> Tensor:
        if self.config.hard_readout:  # the argmax read-out of the base class
            return super().read_out(interests, target_emb)
        p = self.config.attention_pow
        x = (interests * target_emb.unsqueeze(1)).sum(-1)  # [B, K]
        att = torch.softmax(torch.sign(x) * x.abs().pow(p), dim=1)
        return (att.unsqueeze(-1) * interests).sum(1)
