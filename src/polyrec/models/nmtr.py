"""NMTR: neural multi-task recommendation from multi-behavior data (Gao et al., "Neural
Multi-Task Recommendation from Multi-Behavior Data", ICDE 2019)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from typing import Annotated, Literal, cast

import numpy as np
import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.sampling import PairSet, sample_negatives_t
from polyrec.data.views import DataSchema, LabelledPairs, TrainData
from polyrec.errors import ConfigError
from polyrec.models._common import behavior_chain, chain_values
from polyrec.models.base import ModelConfig, Scorer

Weight = Annotated[float, Field(ge=0.0)]
Base = Literal["ncf", "gmf", "mlp"]
Labels = Literal["membership", "count"]


class NMTRConfig(ModelConfig):
    """Settings of :class:`NMTR`. The paper's text is not in ``../shared`` (CML and EGCM name it
    as "NCF + multi-task learning over the cascade of behaviors"); defaults are the authors'
    released code's (tsinghua-fib-lab/NMTR, ``Main_MTL.py``) where it has a working default, and
    a stated choice where it has none."""

    dim: int = Field(64, ge=1)
    """Embedding size E of the shared user and item tables (code: 64)."""
    base: Base = "ncf"
    """The per-behavior interaction function f_k (code ``--model``, whose default has no
    multi-behavior branch): 'ncf' — a ReLU tower over [p_u; q_i; p_u ⊙ q_i] (the NCF base EGCM
    and CML describe; one tower over the concatenation, not NeuMF's two branches); 'mlp' — over
    [p_u; q_i]; 'gmf' — one bias-free ReLU layer E → E over p_u ⊙ q_i."""
    n_layers: int = Field(1, ge=1)
    """ReLU layers of an 'ncf' / 'mlp' tower, each halving the width (3E → 1.5E → …; code
    ``--layer_num``, whose default 0 crashes; 1 is our choice, the lab's refactor's default)."""
    behavior_order: list[str] = Field(default_factory=list)
    """The cascade b₁ → … → b_B, target last (empty: the data's behaviors, target last)."""
    task_weight: dict[str, Weight] = Field(default_factory=dict)
    """λ_k of the multi-task loss by behavior name (default 1/B each, the code's [1/3, 1/3,
    1/3])."""
    negatives: int = Field(4, ge=1)
    """Uniform negatives per positive pair, redrawn every epoch, never a pair of any behavior
    (code: 4)."""
    labels: Labels = "membership"
    """Labels of a positive pair: 'membership' — y_k = 1 iff the pair is in behavior k (the
    lab's refactor, right on any data); 'count' — the official code's map from the number c of
    behaviors holding the pair to the first c stages of the cascade (view only, view + cart,
    all three), right only when every bought pair was also carted and viewed."""
    reg: float = Field(0.0, ge=0.0)
    """λ of λ·(Σ‖P‖² + Σ‖Q‖² + Σ‖W‖²) over the whole tables and tower weights, added per batch
    (code: ``--regs [0,0]``, so 0)."""
    init_std: float = Field(0.01, gt=0.0)
    """Std of the truncated-normal (±2σ) init of the embedding tables (code: 0.01)."""
    score_budget: int = Field(1 << 18, ge=1 << 10)
    """Floats of the largest intermediate when scoring every item (users × items × width): the
    towers are not inner products, so full ranking evaluates them on every (user, item) pair in
    chunks of this size. Cache-sized chunks are fastest: on this 2-core CPU, 256 users × 30k
    items took 8.1 s at 2^18 against 19.8 s at 2^23."""


class NMTR(
    Scorer,
    name="nmtr",
    paper="Gao et al., Neural Multi-Task Recommendation from Multi-Behavior Data, ICDE 2019",
    Config=NMTRConfig,
):
    """NMTR (Gao et al., ICDE 2019), as the authors' released code computes it.

    Shared embeddings P (users), Q (items) and an item bias b_i (the code's "item popularity").
    Each behavior k of the cascade b₁ → … → b_B has its own tower f_k and output vector h_k:
    ``t_k(u, i) = h_kᵀ f_k(p_u, q_i)`` (no sigmoid, no output bias). The cascade (the paper's
    cascaded predictions; the code's form) averages each stage's logit with the previous one
    and adds the item bias at every stage::

        s₁ = t₁ + b_i,    s_k = (t_k + s_{k−1}) / 2 + b_i,    ŷ_k = σ(s_k)

    so with view → cart → buy, s_buy = t_buy/2 + t_cart/4 + t_view/4 + 1.75 b_i. Ranking uses
    s_B (the target). Training: every distinct (user, item) pair of any behavior is a positive
    sample with a label per behavior (``labels``), plus ``negatives`` uniform items per pair
    labelled 0 everywhere; loss Σ_k λ_k · mean log loss(y_k, ŷ_k) (:func:`polyrec.losses.
    multitask_log_loss`), all towers trained jointly by one optimiser.

    Choices and differences from the code: labels by membership by default (``labels``);
    the partial last batch is kept (the code drops it); polyrec selects the epoch on
    validation (the code reports its best test epoch). Full ranking masks training purchases
    like every polyrec model (the code ranks them too).
    """

    config: NMTRConfig
    lam: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        self.chain = behavior_chain(schema, config.behavior_order)
        chain_values("task_weight", config.task_weight, self.chain, schema)
        if config.base == "gmf" and config.n_layers != 1:
            raise ConfigError("params.n_layers: the 'gmf' tower has exactly one layer")
        e = config.dim
        self.user_emb = nn.Embedding(schema.n_users, e)
        self.item_emb = nn.Embedding(schema.n_items, e)
        for emb in (self.user_emb, self.item_emb):
            std = config.init_std
            nn.init.trunc_normal_(emb.weight, std=std, a=-2 * std, b=2 * std)
        self.item_bias = nn.Parameter(torch.zeros(schema.n_items))
        widths = tower_widths(config.base, e, config.n_layers)
        self.towers = nn.ModuleList()
        for _ in self.chain:
            layers: list[nn.Module] = []
            for w_in, w_out in itertools.pairwise(widths):
                lin = nn.Linear(w_in, w_out, bias=config.base != "gmf")
                bound = math.sqrt(3.0 / w_in)  # code: U(±√(3 / fan_in)), biases 0
                nn.init.uniform_(lin.weight, -bound, bound)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)
                layers += [lin, nn.ReLU()]
            self.towers.append(nn.Sequential(*layers))
        bound = math.sqrt(3.0 / widths[-1])
        self.h = nn.Parameter(torch.empty(len(self.chain), widths[-1]).uniform_(-bound, bound))
        n_b = len(self.chain)
        lam = [config.task_weight.get(b, 1.0 / n_b) for b in self.chain]
        self.register_buffer("lam", torch.tensor(lam), persistent=False)
        self._ddp_params_and_buffers_to_ignore = ["lam"]

    # ------------------------------------------------------------------ predictions
    def tower_logits(self, p: Tensor, q: Tensor) -> Tensor:
        """``t_k`` for every behavior of the chain: ``[..., B]`` from user and item embeddings
        broadcast against each other (``[..., E]``)."""
        p, q = torch.broadcast_tensors(p, q)
        if self.config.base == "ncf":
            z = torch.cat([p, q, p * q], -1)
        elif self.config.base == "mlp":
            z = torch.cat([p, q], -1)
        else:
            z = p * q
        return torch.stack([tower(z) @ self.h[k] for k, tower in enumerate(self.towers)], -1)

    def cascade(self, t: Tensor, bias: Tensor) -> Tensor:
        """Cascaded logits ``s_k`` (``[..., B]``) from tower logits ``t`` and the item bias."""
        s = [t[..., 0] + bias]
        for k in range(1, t.shape[-1]):
            s.append((t[..., k] + s[-1]) / 2 + bias)
        return torch.stack(s, -1)

    def logits(self, users: Tensor, items: Tensor) -> Tensor:
        """``s_k(u, i)`` for aligned ``users`` and ``items``: ``[N, B]``."""
        t = self.tower_logits(self.user_emb(users), self.item_emb(items))
        return self.cascade(t, self.item_bias[items])

    def scores(self, users: Tensor) -> Tensor:
        """The target's logit s_B for every item, in chunks of about ``score_budget`` floats.

        Every tower's first layer is linear in [p; q; p ⊙ q], so it splits into a user part
        p W_p, an item part q W_q (each computed once) and the product part
        (p ⊙ q) W_pq = q (diag(p) W_pq), one batched matmul per chunk for the B towers at once
        — the same values as :meth:`logits` at a third of the multiply-adds, with no
        concatenated input materialised."""
        users = users.to(self.device)
        e = self.config.dim
        p = self.user_emb(users)  # [U, E]
        q, bias = self.item_emb.weight, self.item_bias
        towers = [cast(nn.Sequential, tower) for tower in self.towers]
        firsts = [cast(nn.Linear, tower[0]) for tower in towers]
        w = torch.cat([lin.weight for lin in firsts])  # [B·H, in]
        b0 = torch.cat([lin.bias if lin.bias is not None else w.new_zeros(len(lin.weight))
                        for lin in firsts])  # fmt: skip
        base = self.config.base
        w_pq = w[:, 2 * e :] if base == "ncf" else w if base == "gmf" else None
        pre_u = b0 + p @ w[:, :e].T if base != "gmf" else b0.expand(len(users), -1)  # [U, B·H]
        pre_i = q @ w[:, e : 2 * e].T if base != "gmf" else None  # [I, B·H]
        width = w.shape[0]
        n_u = max(1, min(len(users), self.config.score_budget // (width * self.n_items)))
        n_i = max(1, min(self.n_items, self.config.score_budget // (width * n_u)))
        out = torch.empty(len(users), self.n_items, device=p.device)
        heads = len(self.towers)
        single = all(len(tower) == 2 for tower in towers)  # one layer: Linear, ReLU
        for a in range(0, len(users), n_u):
            pu = p[a : a + n_u]
            m = len(pu)
            # diag(p_u) W_pqᵀ of every user side by side: [E, n_u·B·H], one GEMM per item chunk
            scaled = (
                (pu[:, :, None] * w_pq.T[None]).transpose(0, 1).reshape(e, m * width)
                if w_pq is not None
                else None
            )
            for c in range(0, self.n_items, n_i):
                qc = q[c : c + n_i]
                if scaled is not None:
                    pre = (qc @ scaled).view(len(qc), m, width).transpose(0, 1)
                    pre = pre + pre_u[a : a + n_u, None, :]
                else:
                    pre = pre_u[a : a + n_u, None, :].expand(m, len(qc), width).clone()
                if pre_i is not None:
                    pre += pre_i[None, c : c + n_i]
                g = pre.relu_().unflatten(-1, (heads, -1))  # [n_u, n_i, B, H]
                if single:
                    t = torch.einsum("uibh,bh->uib", g, self.h)
                else:
                    t = torch.stack(
                        [tower[2:](g[..., k, :]) @ self.h[k] for k, tower in enumerate(towers)],
                        -1,
                    )
                out[a : a + n_u, c : c + n_i] = self.cascade(t, bias[c : c + n_i])[..., -1]
        return out

    # ------------------------------------------------------------------ training
    def positives(self, data: TrainData) -> tuple[Tensor, Tensor, Tensor]:
        """Every distinct pair of any chain behavior, with its labels ``[N, B]`` (float)."""

        def make() -> tuple[Tensor, Tensor, Tensor]:
            n_items = data.n_items
            keys = []  # per behavior, its sorted distinct user * n_items + item keys
            for b in self.chain:
                u, i = data.pairs(b)
                keys.append(u * n_items + i)
            union = np.unique(np.concatenate(keys))
            member = np.stack([np.isin(union, k, assume_unique=True) for k in keys], 1)
            if self.config.labels == "count":
                c = member.sum(1)
                member = np.arange(len(self.chain))[None, :] < c[:, None]
            return (
                torch.from_numpy(union // n_items),
                torch.from_numpy(union % n_items),
                torch.from_numpy(member.astype(np.float32)),
            )

        return data.cached(("nmtr-positives", self.chain, self.config.labels), make)

    def batches(
        self, data: TrainData, batch_size: int, generator: torch.Generator
    ) -> Iterator[LabelledPairs]:
        """One epoch: every positive pair and ``negatives`` fresh uniform negatives per pair
        (none a pair of any behavior), shuffled together, in batches of ``batch_size``."""
        users, items, labels = self.positives(data)
        n_neg = self.config.negatives
        exclude = data.cached(
            ("nmtr-exclude", self.chain),
            lambda: PairSet(users.numpy(), items.numpy(), data.n_items),
        )
        neg = sample_negatives_t(users, data.n_items, exclude, generator, n=n_neg)
        all_u = torch.cat([users, users.repeat_interleave(n_neg)])
        all_i = torch.cat([items, neg.reshape(-1)])
        all_y = torch.cat([labels, labels.new_zeros(len(users) * n_neg, labels.shape[1])])
        perm = torch.randperm(len(all_u), generator=generator)
        for idx in perm.split(batch_size):
            yield LabelledPairs(all_u[idx], all_i[idx], all_y[idx])

    def n_batches(self, data: TrainData, batch_size: int) -> int:
        n = len(self.positives(data)[0]) * (1 + self.config.negatives)
        return -(-n // batch_size)

    def loss(self, batch: LabelledPairs) -> dict[str, Tensor]:
        logits = self.logits(batch.user, batch.item)
        out = {"log_loss": losses.multitask_log_loss(logits, batch.label, self.lam)}
        if self.config.reg:
            weights = [m.weight for m in self.towers.modules() if isinstance(m, nn.Linear)]
            out["reg"] = self.config.reg * sum(
                (w.square().sum() for w in [self.user_emb.weight, self.item_emb.weight, *weights]),
                torch.zeros((), device=self.device),
            )
        return out


def tower_widths(base: Base, dim: int, n_layers: int) -> list[int]:
    """Input and layer widths of one tower: 'gmf' E → E; 'ncf' 3E and 'mlp' 2E, halved per
    layer (at least 1)."""
    if base == "gmf":
        return [dim, dim]
    w = (3 if base == "ncf" else 2) * dim
    return [w] + [max(1, w >> (k + 1)) for k in range(n_layers)]


__all__ = ["NMTR", "NMTRConfig", "tower_widths"]
