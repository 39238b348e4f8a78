"""CML: contrastive meta learning with behavior multiplicity (Wei et al., WSDM 2022)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.graphs import bipartite_adjacency, normalized_bipartite_adjacency, to_torch_csr
from polyrec.data.views import BehaviorBatch, DataSchema, TrainData, behavior_batches
from polyrec.models._common import (
    GraphScorer,
    Init,
    init_embedding,
)
from polyrec.models.base import ModelConfig, make_optimizer
from polyrec.models.propagation import spmm


class CMLConfig(ModelConfig):
    """Settings of :class:`CML`; defaults are the paper's (§4.1.3, §4.5) or, where it is silent,
    the documented choices of the class docstring."""

    dim: int = Field(16, ge=1)
    """Embedding size d (CML WSDM 2022 §4.5 / Fig. 3b: good performance for 16 ≤ d ≤ 32; the default is
    not stated, 16 chosen)."""
    n_layers: int = Field(3, ge=1)
    """Graph propagation layers L (§4.5 / Fig. 3a: better up to L = 3; §4.1.3 grid 1..4)."""
    reg: float = Field(1e-3, ge=0.0)
    """λ of the L2 penalty on the batch's ego embeddings, λ·½Σ‖e‖²/B (Eq. 7 λ‖Θ‖²; §4.1.3: 'L2
    regularization for the learned embeddings' tuned in {1e-3, 5e-3, 1e-2})."""
    init: Init = "xavier"
    """Embedding init (§4.1.3: Xavier)."""
    init_std: float = Field(0.1, gt=0.0)
    """Standard deviation of the 'normal' init."""
    normalization: Literal["sym", "none"] = "sym"
    """Per-behavior adjacency: 'sym' = D^{-1/2} A_k D^{-1/2} (LightGCN-style, which §3.1 cites as its
    motivation) or 'none' = the plain neighbour sum of Eq. 1 as printed (and as the official code
    does)."""
    propagation: Literal["behavior", "aggregated"] = "behavior"
    """What layer l+1 of behavior k propagates: 'behavior' = e^{k,(l)} (Eq. 1 as printed: one chain per
    behavior from the shared ego embeddings) or 'aggregated' = the aggregated e^{(l)} of Eq. 2 (the
    official code's reading)."""
    layer_combination: Literal["mean", "concat"] = "mean"
    """Layer-wise aggregation into the final embeddings (paper silent): 'mean' over layers 0..L
    (LightGCN) or 'concat' of layers 1..L (official code; final size L·d)."""
    temperature: float = Field(0.2, gt=0.0)
    """τ of the InfoNCE loss (Eq. 3; value not given in the paper, SGL's 0.2 chosen)."""
    similarity: Literal["cosine", "dot"] = "cosine"
    """φ of Eq. 3: cosine similarity or inner product (§3.2.2 allows both)."""
    cl_weight: float = Field(1.0, ge=0.0)
    """Global factor on the contrastive terms (not in the paper, whose meta weights play this role; 1 =
    Eq. 8 as printed)."""
    gamma: float = Field(1.0, gt=0.0)
    """γ, the scale factor of the duplicated loss value in Z_1 (Eq. 4; value not given)."""
    weight_squash: Literal["none", "sigmoid"] = "sigmoid"
    """Applied to ω = ξ(Z_1) + ξ(Z_2) (Eq. 6): 'sigmoid' (as the official code and Meta-Weight-Net) or
    'none' (Eq. 5–6 as printed; the weights then grow without bound under the meta step, see the
    class docstring)."""
    meta_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout on the meta-knowledge inputs of the meta weight network (§4.1.3: 'dropout is used in our
    designed meta network'; rate not given)."""
    meta_batch_size: int = Field(512, ge=1)
    """Size of the held-out meta batch of target triples (§3.4.2 step ii; §4.5 / Fig. 3c: a meta batch
    smaller than the train batch works better; default not given)."""
    meta_lr: float | None = Field(None, gt=0.0)
    """Learning rate of the meta-network optimiser (None: the training lr)."""
    inner_lr: float | None = Field(None, gt=0.0)
    """Step size α of the virtual SGD step θ' = θ − α∇θL_train (§3.4.2 step i; None: the training lr,
    as in Meta-Weight-Net)."""
    meta_order: Literal["second", "first"] = "second"
    """Meta gradient: 'second' = exact, by differentiating through the virtual step (create_graph);
    'first' = the finite-difference Hessian-vector approximation of DARTS (two extra no-grad
    forwards, no double backward)."""
    fd_epsilon: float = Field(0.01, gt=0.0)
    """'first' meta order: ε = fd_epsilon / ‖∇θ'L_meta‖ (DARTS §2.3)."""
    contrastive: bool = True
    """Multi-behavior contrastive learning (§3.2); False = CML(w/o)-CLF of Table 3."""
    meta_network: bool = True
    """Meta contrastive network (§3.3); False = CML(w/o)-MCN of Table 3: every loss term with weight 1
    and a plain single-step schedule."""
    meta_knowledge: bool = True
    """Meta-knowledge encoder (§3.3.1); False = CML(w/o)-MKE of Table 3: one learnable gate 2·σ(g) per
    loss term, shared by every user, still trained by the meta schedule."""
    pairs_per_user: int = Field(1, ge=1)
    """BPR (positive, negative) pairs drawn per batch user and behavior (paper silent; the official
    code samples several per user). A user's BPR value fed to the meta network is the mean over its
    pairs."""
    aux_bpr: bool = True
    """BPR on every behavior (Eq. 7–8 sum over k = 1..K); False = BPR on the target behavior only.
    """


def _mean(xs: list[Tensor]) -> Tensor:
    """Element-wise mean of equally shaped tensors by a running sum: unlike
    ``torch.stack(xs).mean(0)`` it never materialises a ``[len(xs), N, d]`` block, neither
    forward nor in (double) backward, where those blocks dominated a CML step's time."""
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total / len(xs)


class _Xi(nn.Module):
    """ξ(Z) = PReLU(Z·W_ξ + b_ξ) (Eq. 5), W_ξ ∈ R^{in×D}, b_ξ ∈ R^D, reduced to a scalar by the
    mean over its D outputs (the paper's ξ is D-dimensional but its ω is a scalar)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, n_out)
        self.act = nn.PReLU()
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, z: Tensor) -> Tensor:
        out: Tensor = self.act(self.linear(z)).mean(-1)
        return out


class _MetaWeightNet(nn.Module):
    """Meta-knowledge encoder (Eq. 4) + meta weight network (Eq. 5–6) for one loss family."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.xi1 = _Xi(3 * dim, dim)
        self.xi2 = _Xi(2 * dim, dim)

    def forward(
        self, loss: Tensor, e_beh: Tensor, e_agg: Tensor, gamma: float, dropout: float
    ) -> Tensor:
        lv = loss[:, None]
        # Eq. 4: Z_1 = (d(L)·γ) ∥ e_u^{k'} ∥ e_u;  Z_2 = L · (e_u^{k'} ∥ e_u)
        z1 = torch.cat([lv.expand_as(e_beh) * gamma, e_beh, e_agg], dim=1)
        z2 = lv * torch.cat([e_beh, e_agg], dim=1)
        if dropout > 0:
            z1 = F.dropout(z1, dropout, training=True)
            z2 = F.dropout(z2, dropout, training=True)
        return self.xi1(z1) + self.xi2(z2)  # Eq. 6: ω = ξ(Z_1) + ξ(Z_2)


@dataclass
class _Term:
    """One loss term's per-row values and the (detached) meta knowledge of its rows."""

    name: str
    family: str  # "bpr" or "cl"
    rows: Tensor  # [n] per-row loss
    e_beh: Tensor  # [n, D] behavior-specific user embedding (detached)
    e_agg: Tensor  # [n, D] aggregated user embedding (detached)
    scale: float = 1.0


class CML(
    GraphScorer,
    name="cml",
    paper=(
        "Wei et al., Contrastive Meta Learning with Behavior Multiplicity for Recommendation, "
        "WSDM 2022"
    ),
    Config=CMLConfig,
):
    """CML (Wei et al., "Contrastive Meta Learning with Behavior Multiplicity for
    Recommendation", WSDM 2022).

    **Behavior-aware graph encoder (§3.1).** Shared ego embeddings E⁽⁰⁾ (Xavier). For each
    behavior k, a normalised user–item adjacency Â_k (built once as a non-persistent sparse CSR
    buffer) propagates ``e^{k,(l+1)} = Â_k e^{k,(l)}`` (Eq. 1; ``propagation="aggregated"``
    propagates the aggregated e^{(l)} instead). Per layer the behaviors are aggregated by
    ``e^{(l+1)} = PReLU(W_l · mean_k e^{k,(l+1)})`` (Eq. 2). The final behavior-specific user
    embeddings e_u^k and the aggregated e_u, e_i combine the layers (mean of 0..L by default).
    Scores are ``e_u · e_i`` (aggregated embeddings).

    **Contrastive learning (§3.2).** For each auxiliary behavior k', InfoNCE (Eq. 3) between the
    target-behavior user embedding e_u^k and e_u^{k'} of the batch's distinct users, the other
    users of the batch being negatives (``losses.info_nce_rows``, φ = cosine, τ = 0.2).

    **Meta contrastive encoding (§3.3).** For every per-user loss value L (InfoNCE of pair
    (k, k') or BPR of behavior k, Eq. 7): Z_1 = (d(L)·γ) ∥ e_u^{k'} ∥ e_u and
    Z_2 = L·(e_u^{k'} ∥ e_u) (Eq. 4), ω = ξ(Z_1) + ξ(Z_2) with ξ = PReLU(Z W + b) (Eq. 5–6).
    Two networks: one for the contrastive terms, one for BPR ("two lists of loss weights").
    The objective is Eq. 8: Σ_k mean_u ω_u·L_cl + Σ_k mean_u ω_u·L_bpr (+ L2).

    **Meta-optimisation (§3.4.2)**, in :meth:`train_step` (one encoder forward per stage):
    i) virtual step θ' = θ − α∇θ L_train(θ; Φ) on the train batch with the current meta network
    Φ; ii) Φ ← Φ − η∇Φ L_meta(θ'), with L_meta the unweighted target-behavior BPR of a held-out
    meta batch (target triples outside the train batch); iii) θ is updated with the
    weights of the updated Φ (detached), reusing the forward of step i. ``meta_order="second"``
    differentiates through the virtual step exactly (as Meta-Weight-Net, the paper's [34]);
    ``"first"`` replaces the Hessian-vector product by DARTS' finite difference. Per batch the
    encoder runs forward twice (at θ, shared by steps i and iii; at θ' for step ii), plus two
    no-grad forwards for ``"first"``; negatives, per-behavior positives and the meta batch are
    drawn vectorised for the whole batch. On the embedded Retailrocket data (5 batches of 2,048)
    both orders cost about the same (0.6–1.1 s per epoch on 2 shared cores), so the exact
    second order is the default.

    **Choices where the paper is silent or ambiguous** (each configurable):

    * Â_k is symmetrically normalised (Eq. 1 prints a plain sum); each behavior has its own
      propagation chain (Eq. 1 as printed); layers are combined by their mean.
    * φ = cosine, τ = 0.2; γ = 1.
    * ξ's D outputs are reduced to a scalar by their mean.
    * ω is squashed by a sigmoid — a deviation from Eq. 5–6, shared with the official code and
      Meta-Weight-Net: with the unbounded PReLU output the one-step lookahead meta gradient
      keeps enlarging the weights of every term aligned with the meta loss, which acts as an
      ever larger learning rate; measured here the weighted loss then rises from the first
      epoch. ``weight_squash="none"`` gives the printed form.
    * Meta knowledge (loss values and embeddings) enters the meta network detached, and the
      weights are constants for the encoder update (step iii).
    * BPR of every behavior uses the aggregated embeddings; every behavior's BPR rows come from
      the target-behavior batch's users (``pairs_per_user`` positives of behavior k drawn per
      user, users without behavior k skipped); a user's BPR value for the meta network is the
      mean over its pairs.
    * Meta loss = the target BPR; α = η = the training lr; meta dropout 0.1 on Z; meta batch
      512.
    * The paper's CyclicLR is the trainer's ``train.lr_schedule = "cyclic"`` (set in the
      shipped configs).
    """

    config: CMLConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        self.behaviors: tuple[str, ...] = schema.behaviors
        self.target = schema.target
        self.target_index = self.behaviors.index(self.target)
        self.aux_index = [k for k in range(len(self.behaviors)) if k != self.target_index]
        d, n_layers = config.dim, config.n_layers
        self.user_emb = nn.Parameter(torch.empty(self.n_users, d))
        self.item_emb = nn.Parameter(torch.empty(self.n_items, d))
        init_embedding(self.user_emb, config.init, config.init_std)
        init_embedding(self.item_emb, config.init, config.init_std)
        self.weight = nn.Parameter(torch.empty(n_layers, d, d))  # W_l of Eq. 2
        for layer in range(n_layers):
            nn.init.xavier_uniform_(self.weight[layer])
        self.prelu = nn.Parameter(torch.full((n_layers,), 0.25))  # PReLU slopes of Eq. 2
        out_dim = d if config.layer_combination == "mean" else n_layers * d
        self.out_dim = out_dim
        self.meta_cl = _MetaWeightNet(out_dim)
        self.meta_bpr = _MetaWeightNet(out_dim)
        n_terms = len(self.behaviors) + len(self.aux_index)
        self.gates = nn.Parameter(torch.zeros(n_terms))  # CML(w/o)-MKE: ω = 2σ(g)
        # one normalised graph per behavior (Eq. 1): not saved, rebuilt from the training data
        assert data is not None  # not rebuildable: setup() always passes the data
        self._adj_names: list[str] = []
        for k, beh in enumerate(self.behaviors):
            r = data.csr(beh)
            adj = (
                normalized_bipartite_adjacency(r)
                if config.normalization == "sym"
                else to_torch_csr(bipartite_adjacency(r))
            )
            name = f"adj_{k}"
            self.register_buffer(name, adj, persistent=False)
            self._adj_names.append(name)
        self._ddp_params_and_buffers_to_ignore = list(self._adj_names)
        self._inner_lr = config.inner_lr or 1e-3

    # ------------------------------------------------------------------ parameters
    def _theta(self) -> dict[str, Tensor]:
        """The graph encoder's parameters Θ_G (what the virtual step updates)."""
        return {
            "user_emb": self.user_emb,
            "item_emb": self.item_emb,
            "weight": self.weight,
            "prelu": self.prelu,
        }

    def _phi(self) -> list[nn.Parameter]:
        """The meta network's parameters Θ_M (gates for CML(w/o)-MKE)."""
        if not self.config.meta_knowledge:
            return [self.gates]
        return [*self.meta_cl.parameters(), *self.meta_bpr.parameters()]

    @property
    def _meta_schedule(self) -> bool:
        return self.config.meta_network

    # ------------------------------------------------------------------ encoder
    def _encode(self, p: dict[str, Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Aggregated users/items and per-behavior users: ``(e_u [U, D], e_i [I, D], [e_u^k])``."""
        cfg = self.config
        ego = torch.cat([p["user_emb"], p["item_emb"]], dim=0)
        n_beh = len(self.behaviors)
        adjs = [getattr(self, n) for n in self._adj_names]
        cur_beh = [ego] * n_beh
        cur_agg = ego
        agg_layers: list[Tensor] = [ego]
        beh_layers: list[list[Tensor]] = [[ego] for _ in range(n_beh)]
        for layer in range(cfg.n_layers):
            src = cur_beh if cfg.propagation == "behavior" else [cur_agg] * n_beh
            # Eq. 1: e_u^{k,(l+1)} = Σ_{i∈N_u^k} e_i^{k,(l)} (normalised by Â_k), same for items
            outs = [spmm(adj, x, symmetric=True) for adj, x in zip(adjs, src, strict=True)]
            # Eq. 2: e^{(l+1)} = PReLU(W_l · mean_k e^{k,(l+1)})
            cur_agg = F.prelu(_mean(outs) @ p["weight"][layer], p["prelu"][layer : layer + 1])
            cur_beh = outs
            agg_layers.append(cur_agg)
            for k in range(n_beh):
                beh_layers[k].append(outs[k])
        if cfg.layer_combination == "mean":
            agg = _mean(agg_layers)
            beh_users = [_mean(ls)[: self.n_users] for ls in beh_layers]
        else:
            agg = torch.cat(agg_layers[1:], dim=1)
            beh_users = [torch.cat(ls[1:], dim=1)[: self.n_users] for ls in beh_layers]
        users, items = torch.split(agg, [self.n_users, self.n_items], dim=0)
        return users, items, beh_users

    # ------------------------------------------------------------------ batches
    def n_batches(self, data: TrainData, batch_size: int) -> int:
        return math.ceil(len(data.pairs_t(self.target)[0]) / batch_size)

    def batches(
        self, data: TrainData, batch_size: int, generator: torch.Generator
    ) -> Iterator[BehaviorBatch]:
        """One epoch over the target-behavior pairs, with per-behavior positives drawn for the
        batch's users and a held-out meta batch (everything vectorised)."""
        return behavior_batches(
            data,
            self.behaviors,
            self.target,
            batch_size,
            generator,
            pairs_per_user=self.config.pairs_per_user,
            meta_batch_size=self.config.meta_batch_size,
        )

    # ------------------------------------------------------------------ loss terms
    def _terms(
        self, users: Tensor, items: Tensor, beh_users: list[Tensor], batch: BehaviorBatch
    ) -> list[_Term]:
        cfg = self.config
        terms: list[_Term] = []
        eu_all = users.detach()
        for k, beh in enumerate(self.behaviors):
            if k != self.target_index and not cfg.aux_bpr:
                continue
            ok = batch.valid[k]
            u, p, n = batch.user[ok], batch.pos[k][ok], batch.neg[k][ok]
            eu = users[u][:, None]
            x = (eu * items[p]).sum(-1) - (eu * items[n]).sum(-1)
            # Eq. 7: −ln σ(x̂_{u,i+} − x̂_{u,i−}), a user's value = the mean over its S pairs
            rows = F.softplus(-x).mean(-1)
            terms.append(_Term(f"bpr_{beh}", "bpr", rows, beh_users[k][u].detach(), eu_all[u]))
        if cfg.contrastive and self.aux_index:
            uniq = torch.unique(batch.user)
            anchor = beh_users[self.target_index][uniq]
            for k in self.aux_index:
                other = beh_users[k][uniq]
                rows = losses.info_nce_rows(anchor, other, cfg.temperature, cfg.similarity)  # Eq. 3
                terms.append(
                    _Term(
                        f"cl_{self.behaviors[k]}",
                        "cl",
                        rows,
                        other.detach(),
                        eu_all[uniq],
                        cfg.cl_weight,
                    )
                )
        return terms

    def _term_index(self, name: str) -> int:
        beh = name.split("_", 1)[1]
        k = self.behaviors.index(beh)
        if name.startswith("bpr_"):
            return k
        return len(self.behaviors) + self.aux_index.index(k)

    def _weights(self, terms: list[_Term], dropout: bool) -> list[Tensor | None]:
        """Per-row weights ω of each term (None: weight 1, CML(w/o)-MCN)."""
        cfg = self.config
        if not cfg.meta_network:
            return [None] * len(terms)
        out: list[Tensor | None] = []
        p = cfg.meta_dropout if dropout else 0.0
        for t in terms:
            if not cfg.meta_knowledge:
                g = self.gates[self._term_index(t.name)]
                out.append(2 * torch.sigmoid(g).expand_as(t.rows))
                continue
            net = self.meta_cl if t.family == "cl" else self.meta_bpr
            w = net(t.rows.detach(), t.e_beh, t.e_agg, cfg.gamma, p)
            out.append(torch.sigmoid(w) if cfg.weight_squash == "sigmoid" else w)
        return out

    @staticmethod
    def _combine(terms: list[_Term], weights: list[Tensor | None]) -> dict[str, Tensor]:
        """Eq. 8: each term's mean of ω_u·L_u (0 for a term with no rows in this batch)."""
        out: dict[str, Tensor] = {}
        for t, w in zip(terms, weights, strict=True):
            if len(t.rows) == 0:
                out[t.name] = t.rows.sum()
                continue
            v = t.rows if w is None else w * t.rows
            out[t.name] = t.scale * v.mean()
        return out

    def _reg(self, p: dict[str, Tensor], batch: BehaviorBatch) -> Tensor:
        items = torch.cat([batch.pos[batch.valid].flatten(), batch.neg[batch.valid].flatten()])
        return self.config.reg * losses.l2_reg(
            p["user_emb"][batch.user], p["item_emb"][items], batch_size=len(batch.user)
        )

    def _meta_loss(self, p: dict[str, Tensor], batch: BehaviorBatch) -> Tensor:
        """Step ii's objective: unweighted target-behavior BPR on the meta batch."""
        users, items, _ = self._encode(p)
        eu = users[batch.meta_user]
        return losses.bpr(
            (eu * items[batch.meta_pos]).sum(-1), (eu * items[batch.meta_neg]).sum(-1)
        )

    def loss(self, batch: BehaviorBatch) -> dict[str, Tensor]:
        """Eq. 8 with the current meta network's weights (constants) and the L2 term."""
        p = self._theta()
        users, items, beh_users = self._encode(p)
        terms = self._terms(users, items, beh_users, batch)
        with torch.no_grad():
            weights = self._weights(terms, dropout=False)
        out = self._combine(terms, weights)
        out["reg"] = self._reg(p, batch)
        return out

    # ------------------------------------------------------------------ training schedule
    def make_optimisers(
        self, lr: float, weight_decay: float, optimizer: str
    ) -> list[torch.optim.Optimizer]:
        """[encoder optimiser] or, with the meta network, [encoder, meta network]."""
        self._inner_lr = self.config.inner_lr or lr
        opts = [make_optimizer(list(self._theta().values()), optimizer, lr, weight_decay)]
        if self._meta_schedule:
            opts.append(
                make_optimizer(self._phi(), optimizer, self.config.meta_lr or lr, weight_decay)
            )
        return opts

    def train_step(
        self, batch: BehaviorBatch, optimisers: list[torch.optim.Optimizer]
    ) -> dict[str, float]:
        """The three-stage meta step of §3.4.2 (plain step when the meta network is off)."""
        if not self._meta_schedule or len(optimisers) < 2:
            return super().train_step(batch, optimisers)
        opt_model, opt_meta = optimisers[0], optimisers[1]
        cfg = self.config
        names = list(self._theta())
        theta = [self._theta()[n] for n in names]
        p = dict(zip(names, theta, strict=True))
        users, items, beh_users = self._encode(p)  # the one forward of θ (steps i and iii)
        terms = self._terms(users, items, beh_users, batch)
        reg = self._reg(p, batch)
        alpha = self._inner_lr
        phi = self._phi()

        # step i: virtual update of the encoder with the current meta weights
        weights = self._weights(terms, dropout=True)
        l_train = torch.stack(list(self._combine(terms, weights).values())).sum() + reg
        second = cfg.meta_order == "second"
        grads = torch.autograd.grad(l_train, theta, create_graph=second, retain_graph=True)
        if second:
            virtual = {n: t - alpha * g for n, t, g in zip(names, theta, grads, strict=True)}
            # step ii: meta loss at θ'(Φ), differentiated through the virtual step
            l_meta = self._meta_loss(virtual, batch)
            meta_grads = torch.autograd.grad(l_meta, phi, retain_graph=True, allow_unused=True)
        else:
            virtual = {
                n: (t.detach() - alpha * g).requires_grad_()
                for n, t, g in zip(names, theta, grads, strict=True)
            }
            l_meta = self._meta_loss(virtual, batch)
            v = torch.autograd.grad(l_meta, list(virtual.values()))
            norm = torch.sqrt(sum((x * x).sum() for x in v))  # type: ignore[arg-type]
            eps = cfg.fd_epsilon / float(norm.clamp(min=1e-12))
            with torch.no_grad():
                shifted = []
                for sign in (1.0, -1.0):
                    ps = {n: t + sign * eps * x for n, t, x in zip(names, theta, v, strict=True)}
                    shifted.append([t.rows for t in self._terms(*self._encode(ps), batch)])
            # ∂L_meta/∂ω_r ≈ −α ⟨∇θ'L_meta, ∇θ ℓ_r⟩ = −α (ℓ_r(θ+εv) − ℓ_r(θ−εv)) / 2ε
            surrogate = []
            for t, w, plus, minus in zip(terms, weights, shifted[0], shifted[1], strict=True):
                if w is None or len(t.rows) == 0:
                    continue
                c = -alpha * (plus - minus) / (2 * eps)
                surrogate.append(t.scale * (w * c).mean())
            meta_grads = (
                torch.autograd.grad(torch.stack(surrogate).sum(), phi, allow_unused=True)
                if surrogate
                else tuple(torch.zeros_like(prm) for prm in phi)
            )
        opt_meta.zero_grad(set_to_none=True)
        for prm, g in zip(phi, meta_grads, strict=True):
            prm.grad = None if g is None else g.detach()
        opt_meta.step()

        # step iii: update the encoder with the refined meta network's weights (constants)
        with torch.no_grad():
            new_weights = self._weights(terms, dropout=False)
        named = self._combine(terms, new_weights)
        named["reg"] = reg
        total = torch.stack(list(named.values())).sum()
        opt_model.zero_grad(set_to_none=True)
        total.backward()
        opt_model.step()
        self.invalidate()
        out = {k: float(v.detach()) for k, v in named.items()}
        out["loss"] = float(total.detach())
        out["meta_bpr"] = float(l_meta.detach())
        return out

    # ------------------------------------------------------------------ scoring
    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        users, items, _ = self._encode(self._theta())
        return users, items


__all__ = ["CML", "CMLConfig"]
