"""Re4 (Zhang et al., "Re4: Learning to Re-contrast, Re-attend, Re-construct for Multi-interest
Recommendation", WWW 2022) on the ComiRec-SA and ComiRec-DR backbones.

The forward flow (§2.1) is the backbone's own: :meth:`ComiRecSA.extract` /
:meth:`ComiRecDR.extract` give the K interests z_k, their attention a_{k,i} over the history
and the history's item embeddings x_i. Three backward flows (§2.2) re-examine it during training
only; inference is the backbone's (Eq. 17: each interest retrieves, scores merged by max):

* **Re-contrast** (Eq. 3–6, :func:`polyrec.losses.re_contrast`): positives P_k = the history
  items with a_{k,j} > γ_c (γ_c = 1/N_x, the user's history length, by default — the paper's
  adaptive threshold), negatives = the other history items, the user's other interests and
  items drawn beyond the history; InfoNCE on L2-normalised vectors with temperature τ.
* **Re-attend** (Eq. 7–8, :func:`polyrec.losses.re_attend`): the attention must agree with the
  recommendation criterion ã_{k,i} = z_k · x_i.
* **Re-construct** (Eq. 9–12, :class:`Reconstructor` and :func:`polyrec.losses.re_construct`):
  each interest is up-sampled into N_x units and an attention decoder rebuilds the items of P_k.
  Only the positive pairs (k, j) are decoded, with the decoder's backward written out
  (:class:`_Decode`); the mathematics is the dense formulation's.

Total loss (Eq. 16): L_Rec + λ_CL L_CL + λ_Att L_Att + λ_CT L_CT, L_Rec the backbone's sampled
softmax over the interest nearest the target (Eq. 13–15).

Choices where the paper is silent or ambiguous (each is a config field):

* Eq. 8's cross-entropy direction: the forward attention a_k predicts softmax_i(ã_k) over the
  same history; gradients reach both sides (``attend_detach_target`` stops the target's).
* Eq. 11 prints W̃₅ ∈ R^{d_b×d_b}, which cannot rebuild x_j ∈ R^d when d_b ≠ d (paper: d_b = 32,
  d = 64); here W̃₅ maps d_b → d. The reconstruction target x_j carries gradient (the paper
  puts no stop-gradient; ``construct_detach_items`` adds one).
* Items "sampled beyond the behavior sequence" (Eq. 5): the first ``contrast_negatives`` of
  each row's log-uniform negatives that the backbone's sampled softmax already draws (uniform
  item ids with ``loss = "full"``).
* Eq. 6 and Eq. 12 are sums; the losses here are means over their positives, so that the
  weights do not scale with batch size or history length.
* Loss weights: the paper searched {0.01, 0.1, 1, 10} and gives no final values; the defaults
  are the best single-flow weights of its Table 6 by NDCG@20 (λ_Att 0.01, λ_CL 0.01, λ_CT 0.1).
* ComiRec-DR has no attention over the history: its coupling coefficients (softmax over the K
  capsules) renormalised over the history play a_{k,i}'s part. The routing computes them
  without gradient (as ComiRec's code), so on DR Re-attend moves the interests and items only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from polyrec import losses
from polyrec.data.sequences import SeqBatch
from polyrec.data.views import DataSchema, TrainData
from polyrec.models._sequential import SequentialModel
from polyrec.models.base import ModelConfig
from polyrec.models.comirec import (
    ComiRecDR,
    ComiRecDRConfig,
    ComiRecSA,
    ComiRecSAConfig,
    Extraction,
)


class Re4Fields(ModelConfig):
    """The backward flows' settings (defaults: Re4 WWW 2022 §4.1 and Tables 5-6)."""

    temperature: float = Field(0.02, gt=0.0)
    """Re-contrast temperature τ (§4.1)."""
    lambda_cl: float = Field(0.01, ge=0.0)
    """Weight λ_CL of Re-contrast (Eq. 16; Table 6's best: 0.01)."""
    lambda_att: float = Field(0.01, ge=0.0)
    """Weight λ_Att of Re-attend (Eq. 16; Table 6's best: 0.01)."""
    lambda_ct: float = Field(0.1, ge=0.0)
    """Weight λ_CT of Re-construct (Eq. 16; Table 6's best: 0.1)."""
    gamma_c: float | None = Field(None, gt=0.0, lt=1.0)
    """Positive threshold γ_c of Eq. 3; None: the adaptive 1/N_x with N_x the user's history length
    (§2.2.1, Table 5 'Ada')."""
    contrast_negatives: int = Field(10, ge=0)
    """Items drawn beyond the history per user, negatives of Re-contrast (Eq. 5)."""
    reconstruct_dim: int = Field(32, ge=1)
    """Hidden size d_b of the Re-construct decoder (§4.1: 32)."""
    re_contrast: bool = True
    """Use the Re-contrast flow (ablation switch)."""
    re_attend: bool = True
    """Use the Re-attend flow (ablation switch)."""
    re_construct: bool = True
    """Use the Re-construct flow (ablation switch)."""
    attend_detach_target: bool = False
    """Stop the gradient into softmax(z·x), Re-attend's target (Eq. 8)."""
    construct_detach_items: bool = False
    """Stop the gradient into the items Re-construct rebuilds (Eq. 12)."""


class Re4SAConfig(ComiRecSAConfig, Re4Fields):
    """Settings of :class:`Re4SA`: ComiRec-SA's and the backward flows'."""

    n_interests: int = Field(8, ge=1)
    """Number of interests N_z (Re4 §4.1: 8)."""


class Re4DRConfig(ComiRecDRConfig, Re4Fields):
    """Settings of :class:`Re4DR`: ComiRec-DR's and the backward flows'."""

    n_interests: int = Field(8, ge=1)
    """Number of interests N_z (Re4 §4.1: 8)."""


class _Decode(torch.autograd.Function):
    """Eq. 9-11 at selected (interest, position) pairs, with the backward written out.

    Inputs: ``z[R, d]`` the R = B·K interests, ``w4[N·d_b, d]``, ``b4[N·d_b]`` (W̃₄),
    ``w3[d_b, d_b]`` (W̃₃), ``queries[T, d_b]`` (w̃_j of the latest T positions), ``w5[d, d_b]``
    (W̃₅), and the n selected pairs in *slots*: pairs grouped by interest row, ``row[n]`` and
    ``slot[n]`` the row and the pair's rank in it, ``position[R, M]`` the history position j of
    every slot (unused slots: any position; their outputs are never read). Output: ``x̂[n, d]``.

    Only the M ≤ T slots a row uses are scored and mixed (Eq. 10-11 are independent per j; on
    the benchmark data M is about 6 of T = 20 on ComiRec-SA, 12 on ComiRec-DR), ``tanh`` runs
    in place, and the backward accumulates the gradient of the units c (reached through
    ``tanh(W̃₃ c)`` and through the β-sum) in one buffer instead of summing two: fewer passes
    over the ``[R, N, d_b]`` unit tensors than autograd makes for the same formulas. Same values
    and gradients up to float rounding (tests/test_re4_equivalence.py checks them against the
    plain dense formulation)."""

    @staticmethod
    def forward(
        ctx: Any,
        z: Tensor,
        w4: Tensor,
        b4: Tensor,
        w3: Tensor,
        queries: Tensor,
        w5: Tensor,
        row: Tensor,
        slot: Tensor,
        position: Tensor,
    ) -> Tensor:
        r, hidden = len(z), w3.shape[0]
        c = torch.addmm(b4, z, w4.T)  # Eq. 9: units c_{k,i} = W̃₄ z_k, [R, N·d_b]
        n_units = c.shape[1] // hidden
        units = c.view(r, n_units, hidden)
        u = torch.mm(c.view(-1, hidden), w3.T).tanh_().view(r, n_units, hidden)  # tanh(W̃₃ c)
        q = queries[position]  # w̃_j of every slot: [R, M, d_b]
        beta = torch.softmax(torch.bmm(q, u.transpose(1, 2)), dim=2)  # Eq. 10 over i: [R, M, N]
        mixed = torch.bmm(beta, units)[row, slot]  # Σ_i β_{k,i,j} c_{k,i}: [n, d_b]
        ctx.save_for_backward(z, w4, w3, w5, units, u, q, beta, mixed, row, slot, position)
        ctx.n_queries = len(queries)
        return mixed @ w5.T  # Eq. 11 (W̃₅ after the sum: it is linear)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        z, w4, w3, w5, units, u, q, beta, mixed, row, slot, position = ctx.saved_tensors
        r, _, hidden = units.shape
        g_w5 = grad.T @ mixed
        g_mixed = grad.new_zeros(r, position.shape[1], hidden)  # unused slots: 0
        g_mixed[row, slot] = grad @ w5
        g_beta = torch.bmm(g_mixed, units.transpose(1, 2))  # [R, M, N]
        g_units = torch.bmm(beta.transpose(1, 2), g_mixed)  # through the β-sum: [R, N, d_b]
        g_scores = beta * (g_beta - (beta * g_beta).sum(dim=2, keepdim=True))  # softmax'
        g_q = torch.bmm(g_scores, u)  # [R, M, d_b]
        g_queries = grad.new_zeros(ctx.n_queries, hidden)
        g_queries.index_add_(0, position.reshape(-1), g_q.reshape(-1, hidden))
        g_u = torch.bmm(g_scores.transpose(1, 2), q).view(-1, hidden)  # [R·N, d_b]
        g_h = torch.ops.aten.tanh_backward(g_u, u.view(-1, hidden))
        g_w3 = g_h.T @ units.view(-1, hidden)
        g_c = g_units.view(-1, hidden).addmm_(g_h, w3).view(r, -1)  # + through tanh(W̃₃ c)
        g_z = g_c @ w4 if ctx.needs_input_grad[0] else None
        return g_z, g_c.T @ z, g_c.sum(dim=0), g_w3, g_queries, g_w5, None, None, None


class Reconstructor(nn.Module):
    """Re-construct's decoder (Eq. 9-11): ``C_k = Upsample(z_k)`` (linear W̃₄ to N_x·d_b, reshaped
    to N_x units), ``β_{k,i,j} = softmax_i(w̃_jᵀ tanh(W̃₃ c_{k,i}))`` with one query w̃_j per history
    position j, ``x̂_{k,j} = Σ_i β_{k,i,j} W̃₅ c_{k,i}``."""

    def __init__(self, dim: int, hidden: int, max_len: int) -> None:
        super().__init__()
        self.max_len, self.hidden = max_len, hidden
        self.upsample = nn.Linear(dim, max_len * hidden)  # W̃₄
        self.w3 = nn.Linear(hidden, hidden, bias=False)  # W̃₃
        self.queries = nn.Parameter(torch.empty(max_len, hidden))  # w̃_j
        nn.init.xavier_uniform_(self.queries)
        self.w5 = nn.Linear(hidden, dim, bias=False)  # W̃₅ (d_b → d, see the module docstring)

    def forward(self, interests: Tensor, t: int, where: tuple[Tensor, ...] | None = None) -> Tensor:
        """``interests[B, K, d]`` → ``x̂[B, K, T, d]`` for the latest ``t`` history positions, or
        with ``where = (b, k, j)`` index vectors in row-major order (``mask.nonzero``) only the
        selected ``x̂_{k,j}`` as ``[n_selected, d]`` — the positives of Eq. 12, 7-14 % of the
        pairs on the benchmark data. W̃₅ is linear, so it is applied after the β-weighted sum
        (Eq. 11 unchanged)."""
        b, k, _ = interests.shape
        pairs = where
        if pairs is None:  # every (k, j)
            pairs = torch.ones(b, k, t, dtype=torch.bool, device=interests.device).nonzero(
                as_tuple=True
            )
        row = pairs[0] * k + pairs[1]  # the interest row b·K + k of every pair
        # slots: each row's selected positions side by side, M = the most any row has
        per_row = torch.bincount(row, minlength=b * k)
        slot = torch.arange(len(row), device=row.device) - (per_row.cumsum(0) - per_row)[row]
        width = max(int(per_row.max()), 1)
        position = row.new_zeros(b * k, width).index_put_((row, slot), pairs[2])
        out: Tensor = _Decode.apply(
            interests.reshape(b * k, -1),
            self.upsample.weight,
            self.upsample.bias,
            self.w3.weight,
            self.queries[self.max_len - t :],
            self.w5.weight,
            row,
            slot,
            position,
        )
        return out.view(b, k, t, -1) if where is None else out


class BackwardFlows(nn.Module):
    """Re4's three backward flows (§2.2) as weighted loss terms of one batch."""

    def __init__(self, config: Re4Fields, dim: int, max_len: int) -> None:
        super().__init__()
        self.config = config
        self.decoder = Reconstructor(dim, config.reconstruct_dim, max_len)

    def positives(self, ext: Extraction) -> Tensor:
        """P_k of Eq. 3 as a ``[B, K, T]`` mask: attention above γ_c (default 1/N_x)."""
        valid = ~ext.pad
        if self.config.gamma_c is None:
            n = valid.sum(dim=1).clamp_min(1).to(ext.attention.dtype)
            threshold = (1.0 / n).view(-1, 1, 1)
        else:
            threshold = torch.full_like(ext.attention[:, :1, :1], self.config.gamma_c)
        return (ext.attention > threshold) & valid.unsqueeze(1)

    def forward(self, ext: Extraction, sampled: Tensor) -> dict[str, Tensor]:
        cfg = self.config
        valid = ~ext.pad
        positive = self.positives(ext)
        t = ext.items.shape[1]
        out: dict[str, Tensor] = {}
        dots = None
        if cfg.re_contrast and cfg.re_attend:
            # z_k · c for c = the history items (ã of Eq. 7), the interests and the sampled items
            # (the candidates of Eq. 5): computed once for both flows
            cands = torch.cat([ext.items, ext.interests, sampled], dim=1)
            dots = losses.interest_dots(ext.interests, cands)
        if cfg.re_contrast:
            out["re_contrast"] = cfg.lambda_cl * losses.re_contrast(
                ext.interests, ext.items, sampled, positive, valid, cfg.temperature, dots=dots
            )
        if cfg.re_attend:
            out["re_attend"] = cfg.lambda_att * losses.re_attend(
                ext.attention,
                ext.interests,
                ext.items,
                valid,
                cfg.attend_detach_target,
                scores=None if dots is None else dots[:, :, :t],
            )
        if cfg.re_construct:
            target = ext.items.detach() if cfg.construct_detach_items else ext.items
            where = positive.nonzero(as_tuple=True)  # (b, k, j) of the pairs x_j ∈ P_k
            rebuilt = self.decoder(ext.interests, t, where)
            out["re_construct"] = cfg.lambda_ct * losses.re_construct(rebuilt, target, where)
        return out


def beyond_history(
    items: Tensor, batch: SeqBatch, n: int, negative_rows: Tensor | None = None
) -> Tensor:
    """``[B, n, d]`` embeddings of items drawn beyond each history (Eq. 5's sampled negatives):
    the first ``n`` of each row's share of the batch's log-uniform negatives, or uniform ids.
    ``negative_rows = items[batch.negatives]`` when the caller has gathered them already."""
    b = len(batch.target)
    if batch.negatives is not None and batch.negatives.numel() >= b * n:
        per_row = batch.negatives.numel() // b
        rows = items[batch.negatives] if negative_rows is None else negative_rows
        if len(rows) > b * per_row:
            rows = rows[: b * per_row]
        rows = rows.view(b, per_row, -1)
        return rows if per_row == n else rows[:, :n]
    ids = torch.randint(0, items.shape[0], (b, n), device=items.device)
    return items[ids]


class Re4Flows(SequentialModel):
    """Re4's training-time part, mixed in before a ComiRec backbone (``Re4SA(Re4Flows,
    ComiRecSA)``): the backbone builds and runs the forward flow (its ``extract``) and
    inference; this adds the three backward flows to its loss."""

    config: Re4SAConfig | Re4DRConfig
    extract: Callable[[Tensor, Tensor], Extraction]  # the backbone's forward flow (§2.1)

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        config = self.config
        self.flows = BackwardFlows(config, config.dim, config.max_len)

    def loss(self, batch: SeqBatch) -> dict[str, Tensor]:
        """Eq. 16: the backbone's recommendation loss (Eq. 13-15) and the weighted backward
        flows. The sampled softmax's negatives are gathered once and serve Re-contrast too
        (Eq. 5)."""
        ext = self.extract(batch.history, batch.lengths)
        items = self.item_embeddings()
        rows = None if batch.negatives is None else items[batch.negatives]
        sampled = beyond_history(items, batch, self.flows.config.contrast_negatives, rows)
        return self.next_item_loss(ext.interests, batch, items, rows) | self.flows(ext, sampled)


class Re4SA(Re4Flows, ComiRecSA, name="re4-sa", paper="Zhang et al., WWW 2022", Config=Re4SAConfig):
    """Re4 on ComiRec-SA (the paper's base model): ComiRec-SA's forward flow and inference, plus
    the three backward flows at training time."""

    config: Re4SAConfig


class Re4DR(Re4Flows, ComiRecDR, name="re4-dr", paper="Zhang et al., WWW 2022", Config=Re4DRConfig):
    """Re4 on ComiRec-DR: ComiRec-DR's routing and inference, plus the three backward flows at
    training time (the coupling coefficients act as the attention, see the module docstring)."""

    config: Re4DRConfig


__all__ = ["BackwardFlows", "Re4DR", "Re4DRConfig", "Re4Fields", "Re4Flows", "Re4SA", "Re4SAConfig"]
