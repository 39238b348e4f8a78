"""EGCM: multi-behavior dynamic graph contrastive learning over time slots (ICLR 2023
submission), reconstructed from its appendix (the main text is not available)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.graphs import normalize, to_torch_csr_pair, with_values
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.errors import ConfigError
from polyrec.models._common import (
    BPRScorer,
    GraphScorer,
    Init,
    check_behaviors,
    init_embedding,
)
from polyrec.models.base import ModelConfig
from polyrec.models.propagation import co_interaction_spmm, spmm_pair


class EGCMConfig(ModelConfig):
    """Settings of :class:`EGCM`. The appendix gives d, the layer range, the temperature grid,
    the optimiser and the initialiser (A.9.4); every other value is a documented choice."""

    dim: int = Field(16, ge=1)
    """Embedding size d (A.9.4: 'the embedding dimensionality ... set as 16')."""
    n_layers: int = Field(2, ge=0)
    """Item propagation layers L over Γ(MᵀM) (A.4, A.6; A.3 / A.9.4: selected from 1..4, the chosen
    value is not given; 2 chosen). 0 = no propagation."""
    n_heads: int = Field(2, ge=1)
    """Heads h of the cross-behavior memory attention (A.6 notation h, A.7 Table 5; value not given, 2
    chosen). Must divide dim; each head reduces over its d/h channels."""
    normalization: Literal["asymmetric", "symmetric"] = "asymmetric"
    """Γ(·) of the slot graphs: 'asymmetric' = A.5 Eq. 19: item→user messages divided by the user
    degree D (Γ(M) = D⁻¹M), user→item by the item degree B (Γ(Mᵀ) = B⁻¹Mᵀ), item–item Γ(MᵀM) =
    B⁻¹Mᵀ·D⁻¹M; 'symmetric' = D^{-1/2} M B^{-1/2} both ways (the Kipf & Welling form A.5 contrasts
    itself with; for comparison)."""
    item_embeddings: Literal["slot_behavior", "behavior", "shared"] = "slot_behavior"
    """Ego item embeddings E^{b,(0)}_{t,i}: one table per slot and behavior (A.6 notation and Algorithm
    1 'behavior-specific short term item embeddings'), one per behavior shared by the slots, or one
    shared by all."""
    slot_weights: Literal["per_slot", "shared"] = "per_slot"
    """Whether the encoder weights W^{b,(l)}_{t,i}, W^b_{t,u}, W^b_{t,cat} and the memory's W^Q_t,
    W^K_t, W^V_t have a copy per slot t (A.6 parameter list, indexed by t) or are shared by the
    slots (still per behavior for the encoder)."""
    attention_scale: bool = True
    """Divide the memory attention scores by √(d/h) (Transformer convention; Table 5 shows no scaling,
    shapes are the same either way)."""
    memory_carry: Literal["mean", "add"] = "mean"
    """How memory passes from slot t−1 to t (A.6 Algorithm 1 'convey across t'; rule not given): the
    memory input of slot t is X_t = (Ê_t + Ẽ_{t−1})/2 ('mean': older slots fade geometrically) or
    Ê_t + Ẽ_{t−1} ('add'); X_1 = Ê_1."""
    memory_value_init: Literal["xavier", "zero"] = "xavier"
    """Init of the memory attention's W_V (A.9.4: Xavier for every weight). 'zero' starts γ_t at 0, so
    that with the residual the memory begins as the plain carry (w/o memory) and the attention is
    learned only where it helps (paper silent)."""
    memory_residual: bool = True
    """Ẽ_t = X_t + γ_t(X_t) (residual) or Ẽ_t = γ_t(X_t), γ_t the cross-behavior attention of Eq. 4 /
    Table 5 (paper silent)."""
    temperature: float = Field(0.1, gt=0.0)
    """τ of the InfoNCE terms (A.1.1; A.9.4 grid {0.02, 0.035, 0.05, 0.07, 0.1, 0.3, 0.5, 0.7}; A.9.3:
    smaller is better until gradients explode; 0.1 chosen)."""
    alpha: float = Field(1.0, ge=0.0)
    """α, short-term contrastive strength (A.6 notation; value not given)."""
    beta: float = Field(1.0, ge=0.0)
    """β, long-term contrastive strength (A.6 notation; value not given)."""
    zeta: float = Field(0.1, ge=0.0)
    """ζ, the combined weight (A.6 notation): L = L_BPR + ζ·(α·L_short + β·L_long) (Eq. 7–8; value not
    given, 0.1 chosen)."""
    exclude_batch_pairs: bool = True
    """Encode the users of a training batch without the pairs the batch asks them to rank (its (user,
    positive) pairs leave every slot and behavior graph for that step, Eq. 19's degrees recomputed),
    as FISM excludes the rated item. A user here is only the mean of its items (A.6 has no user
    table), so with its positive inside, BPR can be solved by self-similarity (measured on a
    Retailrocket slice: training BPR 0.02 after 6 epochs without this, 0.2 with it; validation equal
    within noise); the held-out pairs are absent from every training graph too (hide = all). Paper
    silent; False = the full graph in training as well."""
    inactive_behaviors: Literal["auto", "attend", "mask"] = "auto"
    """Long-term behaviors a node never had (A.6 silent). 'attend': they stay in the fusion (Eq. 6) and
    in L^long_cl, filled by the memory's cross-behavior attention; 'mask': they are left out of
    both, as the short-term fusion leaves out behaviors inactive in a slot; 'auto': 'attend' with
    memory, 'mask' without (where such a node's behavior-b memory is only zeros)."""
    item_bias: bool = False
    """Add a learned per-item scalar b_i to every score, ŷ_ui = E_u·E_i + b_i (init 0, trained by BPR
    only; not in the appendix). Without it an item's score carries no popularity: Γ is a mean
    operator and an item is an average of per-(slot, behavior) ego rows, so a popular item's
    embedding shrinks and full ranking fills the top-10 with rarely seen items (see
    benchmarks/results/score-diagnose-*.md)."""
    init: Init = "normal"
    """Init of the ego item table (the weight matrices are Xavier, A.9.4). Deviation: A.9.4 names
    Xavier for all parameters, but Xavier on a table of 10⁴–10⁵ rows gives rows of norm ≈ 0.03 and
    final embeddings of norm ≈ 0.005; the cosine InfoNCE gradients scale with 1/‖e‖ and were then ≈
    10⁴ times BPR's (measured on Retailrocket: BPR stayed at ln 2 for 10 epochs, lr 3e-3). N(0, 1)
    gives final norms ≈ 0.5 and gradients of the same order. 'xavier' = the appendix as printed."""
    init_std: float = Field(1.0, gt=0.0)
    """Standard deviation of the 'normal' init (see init)."""
    memory: bool = True
    """Dynamic cross-relational memory (A.6 γ(·), Eq. 4–5); False = w/o memory: Ẽ_t is the carried X_t
    without cross-behavior attention."""
    short_term_cl: bool = True
    """Short-term contrastive term L^short_cl (weight α); False = w/o it."""
    long_term_cl: bool = True
    """Long-term contrastive term L^long_cl (weight β); False = w/o it."""
    drop_behaviors: list[str] = Field(default_factory=list)
    """Behaviors removed from the model (A.8 behavioral ablation: w/o-View, w/o-Cart, …; all
    auxiliaries removed = 'Purchase'). The target behavior cannot be removed."""

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> EGCMConfig:
        if self.dim % self.n_heads:
            raise ValueError(f"n_heads={self.n_heads} must divide dim={self.dim}")
        return self


# ---------------------------------------------------------------------- slot graphs (A.5)
def slot_incidence(
    user: np.ndarray,
    item: np.ndarray,
    group: np.ndarray,
    n_users: int,
    n_items: int,
    n_groups: int,
) -> sp.csr_matrix:
    """Block-diagonal binary incidence ``diag(M_0, …, M_{G−1})`` of shape
    ``[G·n_users, G·n_items]``: block g is the users × items matrix M_g of the (distinct)
    interactions whose group (slot t, behavior b) is g. Row ``g·n_users + u`` is user u in
    group g, column ``g·n_items + i`` item i in group g."""
    rows = group.astype(np.int64) * n_users + user.astype(np.int64)
    cols = group.astype(np.int64) * n_items + item.astype(np.int64)
    shape = (n_groups * n_users, n_groups * n_items)
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0  # distinct pairs
    return m


def gamma_normalize(
    m: sp.csr_matrix, how: Literal["asymmetric", "symmetric"] = "asymmetric"
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Γ of A.5: ``(item→user, user→item)`` operators of an incidence matrix M (users × items).

    ``"asymmetric"`` (Eq. 19): with D = diag of the row (user) degrees and B = diag of the column
    (item) degrees, ``(D⁻¹M, B⁻¹Mᵀ)`` — a user receives the mean of its items, an item the mean
    of its users. ``"symmetric"``: ``(D^{-1/2} M B^{-1/2}, its transpose)``. Zero degrees give
    empty rows (no inf). Works block-wise on :func:`slot_incidence` output.
    """
    if how == "asymmetric":
        return normalize(m, "left"), normalize(m.T, "left")
    p = normalize(m, "sym")
    return p, sp.csr_matrix(p.T)


# ---------------------------------------------------------------------- attention modules
class CrossBehaviorAttention(nn.Module):
    """Multi-head self-attention **across behaviors**, node by node (A.7 Table 5, Eq. 4).

    Input ``[|B|, N, d]``; Q, K, V = input·W (d×d each). Q is extended to ``[|B|, 1, N, d]``,
    K and V to ``[1, |B|, N, d]``; the element-wise product Q⊙K ``[|B|, |B|, N, d]`` is
    reduce-summed over each head's d/h channels to scores ``[|B|, |B|, N, h]`` (h = 1: Table 5's
    ``[|B|, |B|, N, 1]``), softmax over the **second** behavior axis, multiplied with V and
    reduce-summed over that axis: output ``[|B|, N, d]``. Computed with ``einsum`` (the same
    sums, without materialising the ``[|B|, |B|, N, d]`` product).
    """

    def __init__(self, dim: int, n_heads: int, scale: bool = True) -> None:
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide dim={dim}")
        self.n_heads = n_heads
        self.scale = 1.0 / math.sqrt(dim // n_heads) if scale else 1.0
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)
        for lin in (self.w_q, self.w_k, self.w_v):
            nn.init.xavier_uniform_(lin.weight)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(output [|B|, N, d], attention [|B|, |B|, N, h])``."""
        nb, n, d = x.shape
        h = self.n_heads
        q = self.w_q(x).view(nb, n, h, d // h)
        k = self.w_k(x).view(nb, n, h, d // h)
        v = self.w_v(x).view(nb, n, h, d // h)
        # Table 5 "Self-attention" + "Reduce Sum": Σ_d Q[b,1,n,:]·K[1,c,n,:] → [|B|, |B|, N, h]
        scores = torch.einsum("bnhk,cnhk->bcnh", q, k) * self.scale
        att = torch.softmax(scores, dim=1)  # "Softmax" over the second behavior axis
        # "Attention Matrix*V" then "reduce sum + squeeze" over that axis → [|B|, N, d]
        out = torch.einsum("bcnh,cnhk->bnhk", att, v).reshape(nb, n, d)
        return out, att


class BehaviorFusion(nn.Module):
    """Behavior fusion attention (Eq. 6, parameters W_f): for per-behavior embeddings
    ``x [..., |B|, N, d]``, weights ``a_b = softmax_b(wᵀ tanh(W_f x_b + c))`` per node and the
    fused ``Σ_b a_b x_b`` ``[..., N, d]``. ``mask [..., |B|, N]`` (True = the node has that
    behavior) restricts the softmax to active behaviors; a node with none gets 0 (its inputs
    are 0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.query = nn.Parameter(torch.empty(dim))
        nn.init.xavier_uniform_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        nn.init.uniform_(self.query, -1.0 / math.sqrt(dim), 1.0 / math.sqrt(dim))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        s = torch.tanh(self.proj(x)) @ self.query  # [..., |B|, N]
        if mask is not None:
            s = s.masked_fill(~mask, -1e9)  # finite: an all-masked node gets uniform weights
        a = torch.softmax(s, dim=-2)
        return (a.unsqueeze(-1) * x).sum(dim=-3)


def _grouped_mm(x: Tensor, sizes: list[int], weights: Tensor, index: list[int]) -> Tensor:
    """Consecutive blocks of ``sizes[g]`` rows of ``x`` times ``weights[index[g]]``, for every
    group g (rows sorted by group; one small matmul per group). ``torch.split`` rather than
    slicing: its backward is one concatenation, not a zero-filled copy of ``x`` per group."""
    parts = [blk @ weights[w] for blk, w in zip(x.split(sizes), index, strict=True)]
    return torch.cat(parts)


@dataclass
class EGCMEmbeddings:
    """Everything the forward pass produces.

    ``short`` holds the short-term behavior-specific embeddings Ê (E^b_{t,u}, E^b_{t,i}) of the
    slot nodes: row s is node ``slot_nodes[s]`` (users ``0..U-1``, items ``U + i``) in the slot
    whose rows are the ``slot_sizes[t]`` consecutive ones; column b is behavior b (0 where the
    node has no behavior-b interaction in that slot). ``memory`` is Ẽ after the last slot.
    """

    short: Tensor  # [S, |B|, d]
    memory: Tensor  # [U + I, |B|, d]  Ẽ^b (long-term, behavior-specific)
    users: Tensor  # [U, d]  E_u (Eq. 6 over Ẽ^b_u)
    items: Tensor  # [I, d]  E_i


class EGCM(
    BPRScorer,
    GraphScorer,
    name="egcm",
    paper=(
        "EGCM: multi-behavior dynamic graph contrastive learning with a cross-relational memory, "
        "ICLR 2023 submission (appendix only; reconstructed)"
    ),
    Config=EGCMConfig,
):
    """EGCM — multi-behavior dynamic graph contrastive learning (ICLR 2023 submission), as
    reconstructed from its appendix (see ``shared/papers/INDEX.md``).

    **Time-slot multi-behavior graphs (A.5).** The training log is cut into Λ slots by the
    data layer's ``time-slots`` protocol (``data.slot_days``; ``TrainData.slot``); empty slots
    are skipped, and Λ = 1 when the data has no slots (leave-one-out: the static special case).
    For every slot t and kept behavior b (G = Λ·|B| groups) the distinct pairs give the
    incidence matrix M^b_t of the slot graph G^b_t = (V^b_t, E^b_t, M^b_t) with Eq. 19's degree
    matrices D^b_t (users) and B^b_t (items). All G blocks, restricted to their nodes V^b_t,
    sit in one block-diagonal sparse CSR matrix (kept with its transpose): each propagation
    step is **one** sparse product for every slot and behavior, and every dense operation is
    on the slot graphs' nodes only, so the cost is linear in Λ and in the interactions (A.4).

    **Short-term graph encoder (A.4, A.6; Eq. 1–2).** Ego items E^{b,(0)}_{t,i} (Xavier), one
    per node of V^b_t; ``E^{(l+1)} = Γ(MᵀM) E^{(l)} W^{b,(l)}_{t,i}`` with Γ(MᵀM) = B⁻¹Mᵀ·D⁻¹M
    applied as two sparse products (the item–item graph is never materialised); layers 0..L are
    concatenated and transformed, ``E^b_{t,i} = σ([E^{(0)} ∥ … ∥ E^{(L)}] W^b_{t,cat})``; users
    aggregate their slot's items, ``E^b_{t,u} = σ(D⁻¹M E^b_{t,i} W^b_{t,u})``; σ = PReLU. Users
    have no free embedding (Algorithm 1 initialises items only): a user is what it interacted
    with. A node has no behavior-b short-term embedding in a slot where it has no behavior-b
    interaction (it is not in G^b_t).

    **Dynamic cross-relational memory (A.7, Eq. 4–5).** Memory Ẽ ``[U + I, |B|, d]`` starts
    at 0. In slot t, for the nodes of the slot (any behavior): X_t = Ê_t on a node's first
    slot, else (Ê_t + Ẽ)/2 (``memory_carry``); Ẽ ← X_t + γ_t(X_t) (``memory_residual``),
    γ_t the multi-head attention across behaviors of Table 5 (:class:`CrossBehaviorAttention`,
    weights per slot). Nodes absent from slot t keep their memory (A.4: the memory costs
    O(Λ·|V|·|B|²·d)).

    **Behavior fusion (Eq. 6).** :class:`BehaviorFusion` (one W_f) gives the short-term fused
    users E_{t,u} (over the behaviors the user has in slot t) and the long-term E_u, E_i from
    the memory after the last slot. Scores are ``E_u · E_i``.

    **Losses (Eq. 7–8, A.1.1).** BPR on target-behavior triples with E_u, E_i (``bpr``); for
    every kept behavior b, InfoNCE (cosine, τ, the batch's other users as negatives) between the
    fused and the behavior-specific user embedding: short-term per slot over the batch users
    active in (t, b), averaged over all such (t, user) rows (``cl_short_<b>``, weight ζ·α), and
    long-term over the batch users (``cl_long_<b>``, weight ζ·β). L2 is AdamW's weight decay
    (A.9.4). In training, the batch's (user, positive) pairs are taken out of the graphs for
    that step (``exclude_batch_pairs``): users have no embedding of their own, and an encoder
    that sees the pair to rank lets BPR be solved by self-similarity.

    **Choices** (each a config field or stated here): Γ as row-normalised (mean) operators;
    layer 0 in the concatenation; per-layer weights linear, PReLU after the concatenation
    transform and after the user aggregation; memory input, residual and √(d/h) scaling as
    above; W_V without bias and no output projection (Table 5 has neither); memory updated
    only for the slot's nodes; fusion scores ``wᵀ tanh(W_f x + c)``, inactive behaviors masked
    (short-term; long-term per ``inactive_behaviors``: by default only without memory, where a
    node keeps zeros for behaviors it never had); the short-term term averaged over slots (its
    weight does not grow with Λ), the per-behavior terms summed (A.1.1: "the sum of a set of
    pair-wise objectives"); ζ scales the sum of the contrastive terms; the item table N(0, 1)
    instead of Xavier (see ``init``). Items with no training interaction score 0 (their b_i
    with ``item_bias``, an option outside the appendix for full ranking). Without a
    ``time-slots`` split (``data.protocol``, the default this model sets) there is one slot.
    """

    run_defaults: ClassVar[dict[str, object]] = {"data.protocol": "time-slots"}

    config: EGCMConfig
    # graph buffers (not saved; rebuilt from the data)
    p: Tensor  # D⁻¹M, [J, K] (slot-graph users × items, block-diagonal over groups)
    p_t: Tensor
    q: Tensor  # B⁻¹Mᵀ, [K, J]
    q_t: Tensor
    ego_rows: Tensor  # [K] row of item_emb for each slot-graph item
    short_index: Tensor  # [J + K] flat position (s·|B| + b) of each slot-graph user, then item
    slot_nodes: Tensor  # [S] node id of each slot row
    fresh: Tensor  # [S] True on a node's first slot
    slot_row: Tensor  # [Λ, U] slot row of user u in slot t (−1: absent)
    active: Tensor  # [Λ, |B|, U] user u has behavior b in slot t
    ever: Tensor  # [U + I, |B|] node has behavior b in some slot
    edge_row: Tensor  # [nnz] compact user row of each edge of p (CSR order)
    edge_col: Tensor  # [nnz] compact item column of each edge
    edge_key: Tensor  # [nnz] user · I + item of each edge
    edge_perm: Tensor  # [nnz] p_t.values() == p.values()[edge_perm]

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        assert data is not None  # not rebuildable: setup() always passes the data
        log = data.log
        check_behaviors("drop_behaviors", config.drop_behaviors, schema)
        if log.target in config.drop_behaviors:
            raise ConfigError(
                f"params.drop_behaviors: the target behavior {log.target!r} cannot be removed"
            )
        # BPR triples over the distinct target-behavior pairs (vectorised negatives)
        self.target = self.train_behavior = log.target
        self.behaviors: tuple[str, ...] = tuple(
            b for b in log.behaviors if b not in config.drop_behaviors
        )
        self._build_graphs(data)
        self._build_parameters()

    # ------------------------------------------------------------------ construction
    def _build_graphs(self, data: TrainData) -> None:
        """Slot graphs (A.5) and the index tables of the compact slot-node layout."""
        log, cfg = data.log, self.config
        nb, n_u, n_i = len(self.behaviors), self.n_users, self.n_items
        n_nodes = n_u + n_i
        if data.slot is None:
            slot = np.zeros(len(log), dtype=np.int64)
        else:
            slot = np.asarray(data.slot, dtype=np.int64)
            if slot.shape != (len(log),):
                raise ValueError(f"TrainData.slot has shape {slot.shape}, expected ({len(log)},)")
        keep = np.full(len(log.behaviors), -1, dtype=np.int64)
        keep[[log.behavior_code(b) for b in self.behaviors]] = np.arange(nb)
        beh = keep[np.asarray(log.behavior, dtype=np.int64)]
        rows = beh >= 0
        # slots renumbered 0..Λ-1 in time order, empty ones skipped
        self.slot_ids, slot_index = np.unique(slot[rows], return_inverse=True)
        self.n_slots = max(len(self.slot_ids), 1)
        self.n_groups = self.n_slots * nb
        group = slot_index.astype(np.int64).ravel() * nb + beh[rows]
        m = slot_incidence(log.user[rows], log.item[rows], group, n_u, n_i, self.n_groups)
        # keep only the slot graphs' nodes V^b_t (rows/columns with an edge), sorted by group
        urows = np.flatnonzero(np.diff(m.indptr) > 0)
        icols = np.flatnonzero(np.bincount(m.indices, minlength=m.shape[1]) > 0)
        m = sp.csr_matrix(m[urows][:, icols])
        m.sort_indices()  # the CSR order of every operator below
        u_group, u_node = urows // n_u, urows % n_u
        i_group, i_node = icols // n_i, icols % n_i
        self._graph_nodes = (u_group, u_node, i_group, i_node)
        self._user_sizes = _sizes(u_group, self.n_groups)
        self._item_sizes = _sizes(i_group, self.n_groups)
        # Eq. 19: Γ(M) = D⁻¹M (item → user), Γ(Mᵀ) = B⁻¹Mᵀ (user → item)
        item_to_user, user_to_item = gamma_normalize(m, cfg.normalization)
        p, p_t, perm = to_torch_csr_pair(item_to_user)
        q, q_t, _ = to_torch_csr_pair(user_to_item)
        # per edge of p (CSR order): compact user row, compact item column, (user, item) key
        edge_row = np.repeat(np.arange(len(urows)), np.diff(m.indptr))
        edge_col = np.asarray(m.indices, dtype=np.int64)
        edge_key = u_node[edge_row] * n_i + i_node[edge_col]
        # slot rows: the distinct (slot, node) pairs, node = user or U + item
        g_all = np.concatenate([u_group, i_group])
        node_all = np.concatenate([u_node, n_u + i_node])
        key = (g_all // nb) * n_nodes + node_all
        slot_keys, pos = np.unique(key, return_inverse=True)
        slot_of_row, node_of_row = slot_keys // n_nodes, slot_keys % n_nodes
        self._slot_sizes = _sizes(slot_of_row, self.n_slots)
        _, first = np.unique(node_of_row, return_index=True)  # rows are in slot order
        fresh = np.zeros(len(slot_keys), dtype=bool)
        fresh[first] = True
        slot_row = np.full((self.n_slots, n_u), -1, dtype=np.int64)
        is_user = node_of_row < n_u
        slot_row[slot_of_row[is_user], node_of_row[is_user]] = np.flatnonzero(is_user)
        active = np.zeros((self.n_slots, nb, n_u), dtype=bool)
        active[u_group // nb, u_group % nb, u_node] = True
        ever = np.zeros((n_nodes, nb), dtype=bool)
        ever[node_all, g_all % nb] = True
        # ego item rows (A.6 E^{b,(0)}_{t,i}): per slot-graph item, per behavior, or shared
        ego_rows = {
            "slot_behavior": np.arange(len(icols)),
            "behavior": (i_group % nb) * n_i + i_node,
            "shared": i_node,
        }[cfg.item_embeddings]
        self._n_ego = {"slot_behavior": len(icols), "behavior": nb * n_i, "shared": n_i}[
            cfg.item_embeddings
        ]
        n_w = self.n_groups if cfg.slot_weights == "per_slot" else nb
        self._weight_index = [g % n_w for g in range(self.n_groups)]
        self._n_weights = n_w
        buffers = {
            "p": p,
            "p_t": p_t,
            "q": q,
            "q_t": q_t,
            "edge_row": torch.from_numpy(edge_row),
            "edge_col": torch.from_numpy(edge_col),
            "edge_key": torch.from_numpy(edge_key),
            "edge_perm": perm,
            "ego_rows": torch.from_numpy(np.asarray(ego_rows, dtype=np.int64)),
            "short_index": torch.from_numpy(pos.ravel() * nb + g_all % nb),
            "slot_nodes": torch.from_numpy(node_of_row),
            "fresh": torch.from_numpy(fresh),
            "slot_row": torch.from_numpy(slot_row),
            "active": torch.from_numpy(active),
            "ever": torch.from_numpy(ever),
        }
        for name, t in buffers.items():
            self.register_buffer(name, t, persistent=False)
        self._ddp_params_and_buffers_to_ignore = list(buffers)

    def _build_parameters(self) -> None:
        """A.6's parameters: ego items, encoder weights, memory attention, fusion."""
        cfg = self.config
        d, n_w = cfg.dim, self._n_weights
        self.item_emb = nn.Parameter(torch.empty(self._n_ego, d))
        init_embedding(self.item_emb, cfg.init, cfg.init_std)
        self.w_layer = nn.Parameter(torch.empty(cfg.n_layers, n_w, d, d))  # W^{b,(l)}_{t,i}
        self.w_cat = nn.Parameter(torch.empty(n_w, (cfg.n_layers + 1) * d, d))  # W^b_{t,cat}
        self.w_user = nn.Parameter(torch.empty(n_w, d, d))  # W^b_{t,u}
        for w in (*self.w_layer.data.flatten(0, 1), *self.w_cat.data, *self.w_user.data):
            nn.init.xavier_uniform_(w)
        self.act_item = nn.PReLU()
        self.act_user = nn.PReLU()
        n_mem = (self.n_slots if cfg.slot_weights == "per_slot" else 1) if cfg.memory else 0
        self.memory_attention = nn.ModuleList(
            CrossBehaviorAttention(d, cfg.n_heads, cfg.attention_scale) for _ in range(n_mem)
        )
        if cfg.memory_value_init == "zero":
            for att in self.memory_attention:
                assert isinstance(att, CrossBehaviorAttention)
                nn.init.zeros_(att.w_v.weight)
        self.fusion = BehaviorFusion(d)
        if cfg.item_bias:
            self.bias = nn.Parameter(torch.zeros(self.n_items))

    # ------------------------------------------------------------------ encoder
    def operators(self, drop: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(Γ(M), Γ(M)ᵀ, Γ(Mᵀ), Γ(Mᵀ)ᵀ)`` of every slot graph (Eq. 19), without the edges whose
        (user, item) key ``u·I + i`` is in ``drop`` (degrees recomputed; same sparsity
        pattern, dropped edges weigh 0)."""
        if drop is None or len(drop) == 0:
            return self.p, self.p_t, self.q, self.q_t
        w = (~torch.isin(self.edge_key, drop)).to(self.p.values().dtype)
        deg_u = torch.zeros(self.p.shape[0], dtype=w.dtype, device=w.device)
        deg_u = deg_u.index_add(0, self.edge_row, w)[self.edge_row]
        deg_i = torch.zeros(self.p.shape[1], dtype=w.dtype, device=w.device)
        deg_i = deg_i.index_add(0, self.edge_col, w)[self.edge_col]
        if self.config.normalization == "asymmetric":
            p_vals = w / deg_u.clamp(min=1.0)  # D⁻¹M
            q_vals = w / deg_i.clamp(min=1.0)  # B⁻¹Mᵀ, entry (i, u), in p's edge order
        else:
            p_vals = q_vals = w / (deg_u * deg_i).clamp(min=1.0).sqrt()
        perm = self.edge_perm
        return (
            with_values(self.p, p_vals),
            with_values(self.p_t, p_vals[perm]),
            with_values(self.q, q_vals[perm]),
            with_values(self.q_t, q_vals),
        )

    def short_term(self, drop: Tensor | None = None) -> Tensor:
        """Ê: the short-term behavior-specific embeddings of the slot nodes, ``[S, |B|, d]``
        (row layout: :class:`EGCMEmbeddings`); ``drop``: see :meth:`operators`."""
        p, p_t, q, q_t = self.operators(drop)
        h = self.item_emb[self.ego_rows]  # E^{b,(0)}_{t,i}, [K, d]
        layers = [h]
        for w in self.w_layer:
            # Γ(MᵀM) E^{(l)} = B⁻¹Mᵀ (D⁻¹M E^{(l)}): two block-diagonal sparse products
            x = co_interaction_spmm(p, p_t, h, outer=(q, q_t))
            h = _grouped_mm(x, self._item_sizes, w, self._weight_index)  # · W^{b,(l)}_{t,i}
            layers.append(h)
        # E^b_{t,i} = σ([E^{(0)} ∥ … ∥ E^{(L)}] W^b_{t,cat})
        cat = torch.cat(layers, dim=1)
        items = self.act_item(_grouped_mm(cat, self._item_sizes, self.w_cat, self._weight_index))
        # E^b_{t,u} = σ(Γ(M) E^b_{t,i} W^b_{t,u}), Γ(M) = D⁻¹M: the mean of the slot's items
        agg = spmm_pair(p, p_t, items)
        users = self.act_user(_grouped_mm(agg, self._user_sizes, self.w_user, self._weight_index))
        n_rows = len(self.slot_nodes) * len(self.behaviors)
        flat = users.new_zeros(n_rows, self.config.dim)
        flat = flat.index_copy(0, self.short_index, torch.cat([users, items]))
        return flat.view(len(self.slot_nodes), len(self.behaviors), self.config.dim)

    def long_term(self, short: Tensor) -> Tensor:
        """The memory Ẽ after the last slot, ``[U + I, |B|, d]`` (Eq. 4–5, Table 5)."""
        cfg = self.config
        mem = short.new_zeros(self.n_users + self.n_items, len(self.behaviors), cfg.dim)
        sizes = self._slot_sizes
        slots = zip(
            short.split(sizes), self.slot_nodes.split(sizes), self.fresh.split(sizes), strict=True
        )
        for t, (e, nodes, fresh) in enumerate(slots):  # Ê_t of the slot's nodes
            prev = mem[nodes]
            carried = 0.5 * (e + prev) if cfg.memory_carry == "mean" else e + prev
            x = torch.where(fresh[:, None, None], e, carried)  # X_t
            if cfg.memory:
                att = self.memory_attention[t if len(self.memory_attention) > 1 else 0]
                out, _ = att(x.transpose(0, 1))  # γ_t(X_t) on [|B|, N_t, d]
                out = out.transpose(0, 1)
                x = x + out if cfg.memory_residual else out
            mem = mem.index_copy(0, nodes, x)
        return mem

    def embeddings(self, drop: Tensor | None = None) -> EGCMEmbeddings:
        """The whole forward pass (differentiable); ``drop``: see :meth:`operators`."""
        short = self.short_term(drop)
        mem = self.long_term(short)
        mask = self.ever.T if self._mask_inactive() else None
        fused = self.fusion(mem.transpose(0, 1), mask)  # Eq. 6 over Ẽ^b → [U + I, d]
        users, items = torch.split(fused, [self.n_users, self.n_items], dim=0)
        return EGCMEmbeddings(short, mem, users, items)

    def _mask_inactive(self) -> bool:
        """Whether behaviors a node never had leave the long-term fusion and contrast."""
        how = self.config.inactive_behaviors
        return how == "mask" or (how == "auto" and not self.config.memory)

    def slot_operators(
        self, t: int, behavior: str, drop: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Γ(M^b_t) (item → user, ``[U, I]``) and Γ(M^b_tᵀ) (user → item, ``[I, U]``) of slot t
        (0-based, empty slots skipped) as sparse COO tensors in user / item ids (inspection);
        ``drop``: see :meth:`operators`."""
        g = t * len(self.behaviors) + self.behaviors.index(behavior)
        u_group, u_node, i_group, i_node = (torch.from_numpy(a) for a in self._graph_nodes)
        p, _, q, _ = self.operators(drop)
        out = []
        for mat, (grp, r_node, c_node) in (
            (p, (u_group, u_node, i_node)),
            (q, (i_group, i_node, u_node)),
        ):
            coo = mat.to_sparse_coo().coalesce()
            r, c = coo.indices().cpu()
            keep = grp[r] == g  # block-diagonal: the block's columns follow its rows
            idx = torch.stack([r_node[r[keep]], c_node[c[keep]]])
            shape = (self.n_users, self.n_items) if mat is p else (self.n_items, self.n_users)
            sparse = torch.sparse_coo_tensor(
                idx, coo.values().cpu()[keep], shape, check_invariants=True
            )
            out.append(sparse.coalesce())
        return out[0], out[1]

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """``(E_u, E_i)``; with ``item_bias`` ``([E_u ∥ 1], [E_i ∥ b_i])``, so that the dot
        products every scorer takes are E_u·E_i + b_i."""
        e = self.embeddings()
        if not self.config.item_bias:
            return e.users, e.items
        return (
            torch.cat([e.users, e.users.new_ones(self.n_users, 1)], dim=1),
            torch.cat([e.items, self.bias[:, None]], dim=1),
        )

    # ------------------------------------------------------------------ training
    def n_batches(self, data: TrainData, batch_size: int) -> int:
        return math.ceil(int(data.csr(self.target).nnz) / batch_size)

    def short_term_users(self, e: EGCMEmbeddings, users: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For ``users``: E^b_{t,u} ``[Λ, |B|, n, d]``, the activity mask ``[Λ, |B|, n]`` and the
        fused short-term E_{t,u} (Eq. 6 over the active behaviors) ``[Λ, n, d]``."""
        rows = self.slot_row[:, users]  # [Λ, n]
        beh = e.short[rows.clamp(min=0)].permute(0, 2, 1, 3)  # [Λ, |B|, n, d]
        beh = torch.where((rows >= 0)[:, None, :, None], beh, 0.0)
        act = self.active[:, :, users]
        return beh, act, self.fusion(beh, act)

    def _short_term_cl(self, e: EGCMEmbeddings, users: Tensor) -> list[Tensor]:
        """Per behavior: mean over the (slot, batch user) rows active in (t, b) of InfoNCE between
        E_{t,u} and E^b_{t,u} (the slot's other batch users active in b as negatives)."""
        beh, act, fused = self.short_term_users(e, users)
        nb = len(self.behaviors)
        t, b, j = act.nonzero(as_tuple=True)  # sorted by group g = t·|B| + b
        sizes = [int(c) for c in act.sum(-1).flatten()]
        anchors, positives = fused[t, j].split(sizes), beh[t, b, j].split(sizes)
        rows: list[list[Tensor]] = [[] for _ in range(nb)]
        for g, (anchor, positive) in enumerate(zip(anchors, positives, strict=True)):
            if len(anchor):
                rows[g % nb].append(losses.info_nce_rows(anchor, positive, self.config.temperature))
        return [torch.cat(r).mean() if r else fused.sum() * 0.0 for r in rows]

    def _long_term_cl(self, e: EGCMEmbeddings, users: Tensor) -> list[Tensor]:
        """Per behavior: InfoNCE between the fused long-term E_u and Ẽ^b_u of the batch users
        (only those that ever had behavior b when inactive behaviors are masked)."""
        out = []
        mask = self._mask_inactive()
        for b in range(len(self.behaviors)):
            u = users[self.ever[users, b]] if mask else users
            if len(u) == 0:
                out.append(e.users.sum() * 0.0)
                continue
            rows = losses.info_nce_rows(e.users[u], e.memory[u, b], self.config.temperature)
            out.append(rows.mean())
        return out

    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        """``bpr`` (Eq. 8) plus ``cl_short_<b>`` (ζ·α) and ``cl_long_<b>`` (ζ·β) per behavior."""
        cfg = self.config
        drop = batch.user * self.n_items + batch.pos if cfg.exclude_batch_pairs else None
        e = self.embeddings(drop)
        eu = e.users[batch.user]
        pos, neg = (eu * e.items[batch.pos]).sum(-1), (eu * e.items[batch.neg]).sum(-1)
        if cfg.item_bias:
            pos, neg = pos + self.bias[batch.pos], neg + self.bias[batch.neg]
        out = {"bpr": losses.bpr(pos, neg)}
        uniq = torch.unique(batch.user)
        if cfg.short_term_cl:
            for name, v in zip(self.behaviors, self._short_term_cl(e, uniq), strict=True):
                out[f"cl_short_{name}"] = cfg.zeta * cfg.alpha * v
        if cfg.long_term_cl:
            for name, v in zip(self.behaviors, self._long_term_cl(e, uniq), strict=True):
                out[f"cl_long_{name}"] = cfg.zeta * cfg.beta * v
        return out


def _sizes(group: np.ndarray, n_groups: int) -> list[int]:
    """Number of rows of each group 0..n_groups-1 (for ``torch.split`` of group-sorted rows)."""
    return [int(c) for c in np.bincount(group.astype(np.int64), minlength=n_groups)]


__all__ = [
    "EGCM",
    "BehaviorFusion",
    "CrossBehaviorAttention",
    "EGCMConfig",
    "EGCMEmbeddings",
    "gamma_normalize",
    "slot_incidence",
]
