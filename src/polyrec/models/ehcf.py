"""EHCF: efficient heterogeneous collaborative filtering without negative sampling
(Chen et al., "Efficient Heterogeneous Collaborative Filtering without Negative-Sampling for
Recommendation", AAAI 2020)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polyrec.data.views import DataSchema, TrainData
from polyrec.models._common import GraphScorer, check_behaviors, csr_rows
from polyrec.models.base import ModelConfig

Weight = Annotated[float, Field(ge=0.0)]


class EHCFConfig(ModelConfig):
    """Settings of :class:`EHCF`. The paper's text is not in ``../shared``: defaults are the
    authors' released code's (chenchongthu/EHCF, its README's Taobao settings where the code
    and README differ), each named below."""

    dim: int = Field(64, ge=1)
    """Embedding size d (code: 64)."""
    negative_weight: dict[str, Weight] = Field(default_factory=dict)
    """c⁻_k, the weight of the missing entries of behavior k in its whole-data loss, by behavior
    name; a behavior not named gets ``default_negative_weight``."""
    default_negative_weight: float = Field(0.01, ge=0.0, lt=1.0)
    """c⁻ of the behaviors not in ``negative_weight`` (README, Taobao: 0.01; Beibei: 0.1)."""
    task_weight: dict[str, Weight] = Field(default_factory=dict)
    """λ_k of the multi-task loss Σ_k λ_k L_k, by behavior name. Empty (default): with three
    behaviors the README's Taobao [1/6, 4/6, 1/6] in chain order (the middle one, cart, weighs
    most), otherwise 1/B each; a behavior named here replaces its default."""
    dropout: float = Field(0.5, ge=0.0, lt=1.0)
    """Dropout rate on the batch's user embeddings (code: keep probability 0.5), training only."""
    transfer_reg: float = Field(1e-4, ge=0.0)
    """L2 (½‖W‖²) on the transfer matrices (code: ``lambda_bilinear[0]`` = 1e-4; nothing else
    is regularised)."""
    init_std: float = Field(0.01, gt=0.0)
    """Std of the truncated-normal (±2σ) embedding init (code: 0.01)."""


class EHCF(
    GraphScorer,
    name="ehcf",
    paper=(
        "Chen et al., Efficient Heterogeneous Collaborative Filtering without Negative-Sampling "
        "for Recommendation, AAAI 2020"
    ),
    Config=EHCFConfig,
):
    """EHCF (Chen et al., AAAI 2020), as the authors' released code computes it.

    Behaviors form a chain b₁ → … → b_B (the data's order: auxiliary ones first, the target
    last). Each behavior k predicts ``ŷ_k(u, i) = h_kᵀ (p_u ⊙ q_i)`` with one shared user table
    P and item table Q. Only h₁ is free; every later prediction vector is transferred from the
    earlier ones::

        h_k = Σ_{j<k} (W_{j→k} h_j + r_{j→k})

    (with view, cart, buy: h_cart = W_vc h_view + r_vc, h_buy = W_vb h_view + r_vb + W_cb h_cart
    + r_cb, the code's three transfers). Ranking uses the target's h.

    Non-sampling loss of behavior k on a batch of users B (every item of every user counts;
    positives weigh 1 with target 1, missing entries weigh c⁻_k with target 0)::

        L_k = Σ_{u∈B} Σ_{i∈R_k(u)} ((1 − c⁻_k) ŷ² − 2ŷ)
            + c⁻_k Σ_{a,b} (Σ_i q_i q_iᵀ)_{ab} (Σ_{u∈B} p_u p_uᵀ)_{ab} (h_k h_kᵀ)_{ab}

    the second line is c⁻_k Σ_{u∈B} Σ_{all i} ŷ² in O((|B| + |I|) d²) — no pair is enumerated
    (:func:`whole_data_term`). Total: Σ_k λ_k L_k + transfer_reg · ½ Σ ‖W‖². Dropout on the
    batch's user embeddings (also inside the user Gram matrix).

    Choices and differences from the code: behaviors are any chain (the code hard-codes view,
    cart, buy); positives are distinct (user, item) pairs (the code keeps repeated rows); the
    item Gram covers the real items only (the code's padding row is left out); the last
    partial batch of users is kept (the code drops it). Batches are users with at least one
    training pair of the target behavior, as in the code. The code trains with Adagrad
    (lr 0.05) and no early stopping; polyrec's configs use Adagrad and select on validation.
    """

    config: EHCFConfig
    c_neg: Tensor
    lam: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        check_behaviors("negative_weight", config.negative_weight, schema)
        check_behaviors("task_weight", config.task_weight, schema)
        self.chain = list(schema.behaviors)  # aux first, target last (schema order)
        n_b, d = len(self.chain), config.dim
        self.user_emb = nn.Embedding(schema.n_users, d)
        self.item_emb = nn.Embedding(schema.n_items, d)
        for emb in (self.user_emb, self.item_emb):
            nn.init.trunc_normal_(emb.weight, std=config.init_std, a=-2 * config.init_std,
                                  b=2 * config.init_std)  # fmt: skip
        bound = math.sqrt(3.0 / d)
        self.h1 = nn.Parameter(torch.empty(d).uniform_(-bound, bound))
        # one (W, r) per earlier behavior j of each later behavior k: pairs (j, k), j < k
        self.pairs = [(j, k) for k in range(1, n_b) for j in range(k)]
        self.w = nn.Parameter(torch.empty(len(self.pairs), d, d).uniform_(-bound, bound))
        self.r = nn.Parameter(torch.empty(len(self.pairs), d).uniform_(-bound, bound))
        c_neg = [config.negative_weight.get(b, config.default_negative_weight) for b in self.chain]
        default = [1 / 6, 4 / 6, 1 / 6] if n_b == 3 else [1.0 / n_b] * n_b
        lam = [config.task_weight.get(b, default[k]) for k, b in enumerate(self.chain)]
        self.register_buffer("c_neg", torch.tensor(c_neg), persistent=False)
        self.register_buffer("lam", torch.tensor(lam), persistent=False)
        assert data is not None  # not rebuildable: setup() always passes the data
        # per behavior: its distinct training pairs as CSR (crow, col) buffers
        self._ddp_params_and_buffers_to_ignore = ["c_neg", "lam"]
        for k, b in enumerate(self.chain):
            crow, col = data.csr_t(b)
            self.register_buffer(f"crow_{k}", crow, persistent=False)
            self.register_buffer(f"col_{k}", col, persistent=False)
            self._ddp_params_and_buffers_to_ignore += [f"crow_{k}", f"col_{k}"]
        target_crow = data.csr_t(schema.target)[0]
        self.train_users = torch.from_numpy(
            np.flatnonzero(np.diff(target_crow.numpy()) > 0).astype(np.int64)
        )

    # ------------------------------------------------------------------ predictions
    def prediction_vectors(self) -> list[Tensor]:
        """h₁ … h_B: h₁ free, h_k = Σ_{j<k} (W_{j→k} h_j + r_{j→k}) (the transfer)."""
        hs: list[Tensor] = [self.h1]
        for k in range(1, len(self.chain)):
            terms = [
                self.w[n] @ hs[j] + self.r[n] for n, (j, kk) in enumerate(self.pairs) if kk == k
            ]
            hs.append(torch.stack(terms).sum(0))
        return hs

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """(p_u ⊙ h_target, q_i): the target's ŷ is their inner product."""
        h = self.prediction_vectors()[-1]
        return self.user_emb.weight * h, self.item_emb.weight

    # ------------------------------------------------------------------ training
    def batches(
        self, data: TrainData, batch_size: int, generator: torch.Generator
    ) -> Iterator[Tensor]:
        """Shuffled batches of the users with a training pair of the target behavior."""
        users = self.train_users[torch.randperm(len(self.train_users), generator=generator)]
        yield from users.split(batch_size)

    def n_batches(self, data: TrainData, batch_size: int) -> int:
        return -(-len(self.train_users) // batch_size)

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        users = batch
        p = F.dropout(self.user_emb(users), self.config.dropout, training=self.training)
        q = self.item_emb.weight
        g_items = q.T @ q  # Σ_i q_i q_iᵀ
        g_users = p.T @ p  # Σ_{u∈B} p_u p_uᵀ (dropped-out rows, as the code)
        out: dict[str, Tensor] = {}
        for k, h in enumerate(self.prediction_vectors()):
            rows = csr_rows(
                getattr(self, f"crow_{k}"),
                getattr(self, f"col_{k}"),
                torch.ones_like(getattr(self, f"col_{k}"), dtype=q.dtype),
                users,
                self.n_items,
            )
            n_pos = rows.crow_indices().diff()
            row_of = torch.repeat_interleave(torch.arange(len(users), device=q.device), n_pos)
            y = ((p[row_of] * q[rows.col_indices()]) * h).sum(-1)  # ŷ_k of the positives
            c = self.c_neg[k]
            positive = ((1 - c) * y.square() - 2 * y).sum()
            out[f"l_{self.chain[k]}"] = self.lam[k] * (
                positive + c * whole_data_term(g_items, g_users, h)
            )
        out["reg"] = self.config.transfer_reg * 0.5 * self.w.square().sum()
        return out


def whole_data_term(g_items: Tensor, g_users: Tensor, h: Tensor) -> Tensor:
    """``Σ_{a,b} G_I[a,b] · G_U[a,b] · h_a h_b`` = ``Σ_u Σ_i (hᵀ(p_u ⊙ q_i))²`` for the Gram
    matrices ``G_U = Σ_u p_u p_uᵀ``, ``G_I = Σ_i q_i q_iᵀ``: the squared predictions of every
    (user, item) pair without enumerating the pairs."""
    return (g_items * g_users * torch.outer(h, h)).sum()


__all__ = ["EHCF", "EHCFConfig", "whole_data_term"]
