"""ComiRec (Cen et al., "Controllable Multi-Interest Framework for Recommendation", KDD 2020):
ComiRec-SA (self-attentive, §3.3.2) and ComiRec-DR (dynamic routing, §3.3.1), K interests each.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec.data.views import DataSchema, TrainData
from polyrec.models._sequential import SequentialConfig, SequentialModel, key_padding, latest


def squash(z: Tensor, eps: float = 1e-9) -> Tensor:
    """Capsule squashing ``‖z‖² / (1 + ‖z‖²) · z / ‖z‖`` over the last dimension (Eq. 3)."""
    n2 = (z * z).sum(-1, keepdim=True)
    return n2 / (1.0 + n2) * z / torch.sqrt(n2 + eps)


class Extraction(NamedTuple):
    """What a multi-interest extractor computed for a batch of histories (the forward flow that
    Re4's backward flows re-examine)."""

    interests: Tensor  # [B, K, d]
    attention: Tensor  # [B, K, T]: each interest's weights over the history (0 at padding)
    items: Tensor  # [B, T, d]: the history's item embeddings
    pad: Tensor  # [B, T]: True at the (left) padding


def dynamic_routing(hat: Tensor, pad: Tensor, logits: Tensor, iterations: int) -> Tensor:
    """Interest capsules of :func:`routing` (its coupling coefficients dropped)."""
    return routing(hat, pad, logits, iterations)[0]


def routing(
    hat: Tensor, pad: Tensor, logits: Tensor, iterations: int, *, detach: bool = True
) -> tuple[Tensor, Tensor]:
    """Dynamic routing of behaviour capsules to K interest capsules (ComiRec Alg. 1, MIND §3.3).

    ``hat[B, K, T, d]`` the predictions ``ê_{j|i}`` of each history item i for capsule j,
    ``pad[B, T]`` True at padding, ``logits[B, K, T]`` the initial routing logits ``b_{ij}``.
    Each iteration: ``w = softmax_K(b)`` (padding weights 0), ``z_j = Σ_i w_ij ê_{j|i}``,
    ``v_j = squash(z_j)``, ``b_ij += v_j · ê_{j|i}``; the logit updates see ``ê`` without
    gradient (as in ComiRec's code), the last iteration with; ``detach=False`` keeps the
    gradient through every iteration (the coupling coefficients then have one). Returns
    ``v [B, K, d]`` and the last iteration's coupling coefficients ``w [B, K, T]`` (softmax over
    K, 0 at padding).
    """
    hat_ng = hat.detach() if detach else hat
    keep = (~pad).unsqueeze(1).to(hat.dtype)  # [B, 1, T]
    b = logits
    v = hat.new_zeros(hat.shape[0], hat.shape[1], hat.shape[3])
    w = b
    for it in range(iterations):
        w = torch.softmax(b, dim=1) * keep
        last = it == iterations - 1
        z = torch.einsum("bkt,bktd->bkd", w, hat if last else hat_ng)
        v = squash(z)
        if not last:
            b = b + torch.einsum("bkd,bktd->bkt", v, hat_ng)
    return v, w


def capsules(
    bilinear: Tensor, e: Tensor, pad: Tensor, iterations: int, *, detach: bool = True
) -> tuple[Tensor, Tensor]:
    """ComiRec-DR's capsule layer on history vectors ``e[B, T, d]``: one bilinear map per
    (history position, interest) ``ê_{k|i} = W_{ik} e_i`` from ``bilinear[max_len, K, d, d]``,
    right-aligned to the latest ``T`` positions, routing logits initialised to zero, then
    :func:`routing`. Returns the capsules ``[B, K, d]`` and the coupling ``[B, K, T]``."""
    b, t, _ = e.shape
    w = bilinear[bilinear.shape[0] - t :]  # [T, K, d, d]
    hat = torch.einsum("tkij,btj->bkti", w, e)
    logits = hat.new_zeros(b, bilinear.shape[1], t)
    return routing(hat, pad, logits, iterations, detach=detach)


class ComiRecSAConfig(SequentialConfig):
    """Settings of :class:`ComiRecSA` (defaults: ComiRec KDD 2020 §4.1.4)."""

    n_interests: int = Field(4, ge=1)
    """Number of interests K (ComiRec §4.1.4: K = 4)."""
    att_factor: int = Field(4, ge=1)
    """Attention hidden size d_a = att_factor · d (ComiRec code: 4d)."""
    add_pos: bool = True
    """Add learned position embeddings before the attention (ComiRec code: add_pos)."""


class ComiRecSA(
    SequentialModel, name="comirec-sa", paper="Cen et al., KDD 2020", Config=ComiRecSAConfig
):
    """ComiRec-SA: ``A = softmax(W₂ tanh(W₁ Hᵀ))`` over the history positions (§3.3.2 Eq. 7-8),
    interests ``V_u = A H`` (K × d); training reads out the interest nearest the target
    (§3.5 Eq. 14, argmax), sampled softmax (Eq. 15)."""

    config: ComiRecSAConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        config = self.config
        d = config.dim
        self.pos_emb = nn.Embedding(config.max_len, d) if config.add_pos else None
        if self.pos_emb is not None:
            nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.w1 = nn.Linear(d, config.att_factor * d)
        self.w2 = nn.Linear(config.att_factor * d, config.n_interests)

    def extract(self, histories: Tensor, lengths: Tensor) -> Extraction:
        """Interests and their attention ``A`` over the history (Eq. 7-8)."""
        histories, lengths = latest(histories, lengths, self.max_len)
        t = histories.shape[1]
        h = self.item_emb(histories)  # [B, T, d]
        x = h if self.pos_emb is None else h + self.pos_emb.weight[self.max_len - t :]
        att = self.w2(torch.tanh(self.w1(x))).transpose(1, 2)  # [B, K, T]
        pad = key_padding(lengths, t)
        att = att.masked_fill(pad.unsqueeze(1), float("-inf"))
        att = torch.softmax(att, dim=2)
        return Extraction(torch.bmm(att, h), att, h, pad)

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        return self.extract(histories, lengths).interests


class ComiRecDRConfig(SequentialConfig):
    """Settings of :class:`ComiRecDR` (defaults: ComiRec KDD 2020 §4.1.4 and its code)."""

    n_interests: int = Field(4, ge=1)
    """Number of interests K (ComiRec §4.1.4: K = 4)."""
    routing_iterations: int = Field(3, ge=1)
    """Dynamic-routing iterations r (ComiRec Alg. 1 / code: 3)."""


class ComiRecDR(
    SequentialModel, name="comirec-dr", paper="Cen et al., KDD 2020", Config=ComiRecDRConfig
):
    """ComiRec-DR: capsule dynamic routing (§3.3.1, Alg. 1) with one bilinear map per (history
    position, interest) ``ê_{j|i} = W_{ij} e_i`` (ComiRec code ``bilinear_type = 2``), routing
    logits initialised to zero, three iterations, squash (Eq. 3); argmax read-out (§3.5)."""

    config: ComiRecDRConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        config = self.config
        d, k = config.dim, config.n_interests
        self.bilinear = nn.Parameter(torch.randn(config.max_len, k, d, d) / d**0.5)
        # ComiRec's routing stops the gradient in the logit updates; subclasses may keep it
        self.detach_routing = True

    def extract(self, histories: Tensor, lengths: Tensor) -> Extraction:
        """Interest capsules; their ``attention`` is each capsule's coupling coefficients
        renormalised over the history (the coupling itself sums to 1 over the K capsules), so
        that it is a distribution over history items like ComiRec-SA's (used by Re4)."""
        histories, lengths = latest(histories, lengths, self.max_len)
        e = self.item_emb(histories)  # [B, T, d]
        pad = key_padding(lengths, histories.shape[1])
        caps, coupling = capsules(
            self.bilinear, e, pad, self.config.routing_iterations, detach=self.detach_routing
        )
        att = coupling / coupling.sum(dim=2, keepdim=True).clamp_min(1e-12)
        return Extraction(caps, att, e, pad)

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        return self.extract(histories, lengths).interests
