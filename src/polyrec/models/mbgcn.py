"""MBGCN: multi-behavior graph convolution with behavior-aware user–item and item–item propagation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.graphs import normalize, to_torch_csr_pair, with_values
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import (
    BPRScorer,
    GraphScorer,
    Init,
    embedding_tables,
)
from polyrec.models.base import ModelConfig
from polyrec.models.propagation import (
    co_interaction_degree,
    co_interaction_diagonal,
    co_interaction_spmm,
    spmm_pair,
)


class MBGCNConfig(ModelConfig):
    """Settings of :class:`MBGCN`; defaults are the paper's (§4.1) or, where it gives none, the
    authors' released settings (``MBGCN.sh`` / ``main.py`` of tsinghua-fib-lab/MBGCN)."""

    dim: int = Field(64, ge=1)
    """Embedding size d (MBGCN SIGIR 2020 §4.1.3: 64 for every model; MBGCN.sh: 64)."""
    n_layers: int = Field(1, ge=1)
    """Propagation layers L of both propagations (§3.3–3.4 define L layers; the authors' code runs one;
    CML WSDM 2022 §4.1.3 tunes graph baselines in 1..4)."""
    lamb: float = Field(1.0, ge=0.0)
    """λ of ŷ(u,i) = y1(u,i) + λ·y2(u,i), the weight of the item-based CF score (§3.5 Eq. 9; MBGCN.sh:
    lamb = 1)."""
    reg: float = Field(1e-4, ge=0.0)
    """λ of the L2 penalty λ·½Σ‖e⁽⁰⁾‖²/B on the batch's ego embeddings (§3.6 Eq. 10 regularisation;
    MBGCN.sh: L2 = 1e-4)."""
    node_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    """Node dropout ratio (§3.6 'message dropout and node dropout', after NGCF): inverted dropout on
    the user–item edge weights of every propagation matrix, per training batch (MBGCN.sh: 0.2)."""
    message_dropout: float = Field(0.2, ge=0.0, lt=1.0)
    """Message dropout ratio (§3.6): dropout on the final user and item embeddings of the user-based
    score y1 during training (MBGCN.sh: 0.2)."""
    behavior_weight_init: float = 1.0
    """Initial value of every learnable behavior importance weight w_t (§3.3 Eq. 1; MBGCN.sh:
    mgnn_weight = 1 for each behavior)."""
    init: Init = "xavier"
    """Embedding init: 'xavier' (Glorot uniform; the authors' code uses Xavier normal, same variance,
    and optionally MF-pretrained embeddings) or 'normal'."""
    init_std: float = Field(0.1, gt=0.0)
    """Standard deviation of the 'normal' init."""
    item_neighbors: Literal["all", "target"] = "all"
    """Users an item aggregates from in user-to-item propagation (§3.3 Eq. 3): 'all' = its neighbours
    in the unified multi-behavior graph; 'target' = only target-behavior neighbours (the authors'
    code, which uses the purchase matrix)."""
    item_aggregation: Literal["mean", "sum"] = "mean"
    """Aggregator of user-to-item propagation (§3.3 Eq. 3): 'mean' over the item's users or 'sum' (the
    authors' code)."""
    item_graph_self_loops: bool = False
    """Whether item i counts as its own neighbour in the behavior-t item–item graph A_tᵀA_t (§3.4:
    relevance between two items co-interacted by a user; False drops the diagonal)."""
    item_score_transform: bool = True
    """Item-based score with a learnable behavior matrix M_t, y2 = Σ_t ū_tᵀ M_t s_it* (the authors'
    code, item_behaviour_W) instead of the plain inner product ū_tᵀ s_it* (§3.5 Eq. 8)."""
    item_score_reduce: Literal["mean", "sum"] = "mean"
    """How y2 combines the behaviors (§3.5 Eq. 8): 'mean' over behaviors (the authors' code divides by
    their number) or 'sum'."""


_Block = tuple[Tensor, Tensor | None]  # (base, W): the table base @ W (W None: base)


@dataclass
class _Encoded:
    """MBGCN's propagated pieces: p* (users, materialised), q* and s_t* as blocks, ū_t."""

    p_star: Tensor
    q_blocks: list[_Block]
    u_side: list[Tensor]
    s_blocks: list[list[_Block]]


def _materialise(
    blocks: list[_Block], rows: Tensor | None = None, cache: dict[int, Tensor] | None = None
) -> Tensor:
    """The concatenation of ``base @ W`` over the blocks, for every row or only ``rows``.

    ``cache`` (keyed by the base tensor's id) gathers a base shared by several tables (the
    layer-0 item embeddings start q* and every s_t*) once.
    """
    parts = []
    for base, weight in blocks:
        if rows is None:
            x = base
        elif cache is not None and id(base) in cache:
            x = cache[id(base)]
        else:
            x = base.index_select(0, rows)
            if cache is not None:
                cache[id(base)] = x
        parts.append(x if weight is None else x @ weight)
    return torch.cat(parts, dim=1)


class MBGCN(
    BPRScorer,
    GraphScorer,
    name="mbgcn",
    paper="Jin et al., Multi-behavior Recommendation with Graph Convolutional Networks, SIGIR 2020",
    Config=MBGCNConfig,
):
    """MBGCN (Jin et al., "Multi-behavior Recommendation with Graph Convolutional Networks",
    SIGIR 2020).

    **Unified graph (§3.1).** Every behavior t of the log (target included) gives a users ×
    items matrix R_t; n_ut is user u's number of behavior-t items. Item–item relevance under t is
    co-interaction by a user, the graph A_tᵀA_t (here R_tᵀR_t), which is never materialised:
    its products are ``R_tᵀ(R_t X)`` (:func:`~polyrec.models.propagation.co_interaction_spmm`) with
    left (mean) degree normalisation by its row sums R_tᵀ(R_t 1) and, by default, no self-loop.

    **Behavior-aware user–item propagation (§3.3).** Learnable behavior importance w_t and
    α_ut = w_t n_ut / Σ_m w_m n_um (Eq. 1); item→user p_u⁽ˡ⁺¹⁾ = Σ_t α_ut · mean_{i∈N_t(u)}
    q_i⁽ˡ⁾ (Eq. 2); user→item q_i⁽ˡ⁺¹⁾ = mean_{u∈N(i)} p_u⁽ˡ⁾ (Eq. 3); both transformed by a
    shared W⁽ˡ⁾ (Eq. 4), no non-linearity (as the authors' code).

    **Item–item propagation (§3.4).** Behavior-specific item embeddings s_it⁽⁰⁾ = q_i⁽⁰⁾ and
    s_it⁽ˡ⁺¹⁾ = W_t⁽ˡ⁾ · mean_{j∈N_t(i)} s_jt⁽ˡ⁾ over the behavior-t item graph (Eq. 5).

    **Prediction (§3.5) and learning (§3.6).** Layer-wise aggregation by concatenation
    p_u* = p_u⁽⁰⁾‖…‖p_u⁽ᴸ⁾, likewise q_i*, s_it* (Eq. 6); user-based score y1 = p_u*ᵀq_i*
    (Eq. 7); item-based score y2 = Σ_t mean_{j∈N_t(u)} s_jt*ᵀ M_t s_it* = Σ_t ū_tᵀ M_t s_it*
    (Eq. 8, ``item_score_transform``, ``item_score_reduce``); ŷ = y1 + λ·y2 (Eq. 9); BPR on the
    target behavior with L2 (Eq. 10); node dropout on the propagation edges and message dropout
    on p*, q* in training.

    Because y2 is linear in the user side, ŷ is one inner product of
    ``[p* ‖ c·ū_1M_1 ‖ … ‖ c·ū_TM_T]`` and ``[q* ‖ s_1* ‖ … ‖ s_T*]`` (c = λ/T for the mean):
    :meth:`final_embeddings` returns these, so scoring, caching and export are the
    :class:`~polyrec.models._common.GraphScorer` ones; :meth:`score_parts` gives y1 and y2.

    **Cost.** One full propagation per training batch (all sparse, graphs built once as
    non-persistent CSR buffers, each stored with its transpose so no backward transposes a CSR
    tensor). Degree normalisations are folded into the sparse values; the R_t are also stacked
    so R_t q runs as one product for every t; the last layer's item-side transforms are applied
    to the batch's rows only (q⁽ᴸ⁾, s_t⁽ᴸ⁾ feed no further layer) and the item-based user side
    uses R_t(agg·W_t) = (R_t agg)·W_t. Node dropout redraws one mask over the edge weights per
    batch; message dropout is drawn on the batch's rows of p*, q* (the authors' code draws it on
    the full tables before gathering: the same distribution per row).

    **Choices** (configurable; the paper is not in this repository, so its section and
    equation numbers are cited from the published version as recalled here; check them against
    it): one layer (the authors' code); mean aggregation of items over every behavior's users
    (the code: a sum over purchasers); no item self-loops; the behavior matrix M_t and the mean
    over behaviors in y2 (the code); raw, unconstrained w_t (Eq. 1; the code too); L2 on the
    batch's ego embeddings (the code penalises the final features). Not implemented: the
    authors' optional initialisation from pretrained MF embeddings.
    """

    config: MBGCNConfig
    user_counts: Tensor
    user_inv_counts: Tensor
    stack: Tensor
    stack_t: Tensor
    stack_perm: Tensor
    nbr: Tensor
    nbr_t: Tensor
    nbr_perm: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        self.behaviors: tuple[str, ...] = schema.behaviors
        self.target = self.train_behavior = schema.target  # BPR triples of the target (§3.6)
        n_beh, d, n_layers = len(self.behaviors), config.dim, config.n_layers
        self.user_emb, self.item_emb = embedding_tables(schema, config)
        # w_t of Eq. 1
        self.behavior_weight = nn.Parameter(torch.full((n_beh,), config.behavior_weight_init))
        # W⁽ˡ⁾ of Eq. 4 (shared by users and items) and W_t⁽ˡ⁾ of Eq. 5 (per behavior)
        self.weight = nn.Parameter(torch.empty(n_layers, d, d))
        self.item_weight = nn.Parameter(torch.empty(n_beh, n_layers, d, d))
        out = (n_layers + 1) * d
        self.out_dim = out
        # M_t of the item-based score (authors' code); an empty [0, D, D] tensor when off
        self.score_weight = nn.Parameter(
            torch.empty(n_beh if config.item_score_transform else 0, out, out)
        )
        for mat in (*self.weight, *self.item_weight.flatten(0, 1), *self.score_weight):
            nn.init.xavier_normal_(mat)

        # the behavior graphs (not saved, rebuilt from the training data)
        assert data is not None  # not rebuildable: setup() always passes the data
        graph_buffers: list[str] = []
        counts = []
        csrs = [data.csr(beh) for beh in self.behaviors]
        self._self_loops = config.item_graph_self_loops
        for k, r in enumerate(csrs):
            counts.append(np.diff(r.indptr).astype(np.float32))
            mat, mat_t, perm = to_torch_csr_pair(r)
            self.register_buffer(f"r_{k}", mat, persistent=False)
            self.register_buffer(f"rt_{k}", mat_t, persistent=False)
            self.register_buffer(f"perm_{k}", perm, persistent=False)
            # the item–item graph R_tᵀR_t (§3.4): its degree and diagonal, never the matrix;
            # the mean D_t⁻¹R_tᵀR_t folded into the outer factor's values: (D_t⁻¹R_tᵀ, R_t D_t⁻¹)
            deg = co_interaction_degree(mat, mat_t, self_loops=self._self_loops)
            inv = torch.where(deg > 0, 1.0 / deg.clamp(min=1e-12), torch.zeros_like(deg))
            scaled = mat.values() * inv[mat.col_indices()]
            self.register_buffer(f"outer_{k}", with_values(mat_t, scaled[perm]), persistent=False)
            self.register_buffer(f"outer_t_{k}", with_values(mat, scaled), persistent=False)
            self.register_buffer(
                f"igraph_self_{k}", inv * co_interaction_diagonal(mat_t), persistent=False
            )
            graph_buffers += [
                f"{b}_{k}" for b in ("r", "rt", "perm", "outer", "outer_t", "igraph_self")
            ]
        # every R_t stacked ([R_1; …; R_T], T·U × I): R_t q for all t in one product, and one
        # gradient product Σ_t R_tᵀ G_t instead of T
        stack, stack_t, stack_perm = to_torch_csr_pair(sp.vstack(csrs, format="csr"))
        self.register_buffer("stack", stack, persistent=False)
        self.register_buffer("stack_t", stack_t, persistent=False)
        self.register_buffer("stack_perm", stack_perm, persistent=False)
        self._stack_offsets = np.concatenate([[0], np.cumsum([r.nnz for r in csrs])]).tolist()
        n_ut = torch.from_numpy(np.stack(counts, axis=1))  # [U, T]
        self.register_buffer("user_counts", n_ut, persistent=False)
        self.register_buffer(
            "user_inv_counts",
            torch.where(n_ut > 0, 1.0 / n_ut.clamp(min=1.0), torch.zeros_like(n_ut)),
            persistent=False,
        )
        # user-to-item neighbourhood (Eq. 3), items × users, mean folded into the values
        nbr_csr = data.csr(None if config.item_neighbors == "all" else self.target).T
        if config.item_aggregation == "mean":
            nbr_csr = normalize(nbr_csr, "left")
        nbr, nbr_t, nbr_perm = to_torch_csr_pair(nbr_csr)
        self.register_buffer("nbr", nbr, persistent=False)
        self.register_buffer("nbr_t", nbr_t, persistent=False)
        self.register_buffer("nbr_perm", nbr_perm, persistent=False)
        graph_buffers += ["stack", "stack_t", "stack_perm", "user_counts", "user_inv_counts"]
        graph_buffers += ["nbr", "nbr_t", "nbr_perm"]
        # DDP must not broadcast the (replicated, derived) graph buffers.
        self._ddp_params_and_buffers_to_ignore = graph_buffers

    # ------------------------------------------------------------------ graph pieces
    def _behavior_matrices(self, k: int) -> tuple[Tensor, Tensor, Tensor]:
        return getattr(self, f"r_{k}"), getattr(self, f"rt_{k}"), getattr(self, f"perm_{k}")

    def _drop_values(self, mat: Tensor, drop: bool) -> Tensor | None:
        """Node dropout (§3.6) on a matrix's edge weights: inverted dropout, or None (off)."""
        p = self.config.node_dropout
        if not drop or p == 0.0 or mat.values().numel() == 0:
            return None
        return F.dropout(mat.values(), p, training=True)

    def _propagation_matrices(
        self, drop: bool
    ) -> tuple[tuple[Tensor, Tensor], list[tuple[Tensor, Tensor]], tuple[Tensor, Tensor]]:
        """``((S, Sᵀ), [(R_t, R_tᵀ)], (N, Nᵀ))`` with one node-dropout mask per edge: the
        stacked and the per-behavior matrices share it (the authors' code drops each relation
        matrix once per batch)."""
        n_beh = len(self.behaviors)
        vals = self._drop_values(self.stack, drop)
        if vals is None:
            stack = (self.stack, self.stack_t)
            mats = [(getattr(self, f"r_{k}"), getattr(self, f"rt_{k}")) for k in range(n_beh)]
        else:
            stack = (
                with_values(self.stack, vals),
                with_values(self.stack_t, vals[self.stack_perm]),
            )
            mats = []
            off = self._stack_offsets
            for k in range(n_beh):
                mat, mat_t, perm = self._behavior_matrices(k)
                vk = vals[off[k] : off[k + 1]]
                mats.append((with_values(mat, vk), with_values(mat_t, vk[perm])))
        nvals = self._drop_values(self.nbr, drop)
        nbr = (
            (self.nbr, self.nbr_t)
            if nvals is None
            else (with_values(self.nbr, nvals), with_values(self.nbr_t, nvals[self.nbr_perm]))
        )
        return stack, mats, nbr

    def behavior_attention(self) -> Tensor:
        """α_ut = w_t n_ut / Σ_m w_m n_um (Eq. 1), ``[n_users, n_behaviors]``; 0 for a user
        with no training interaction."""
        weighted = self.user_counts * self.behavior_weight  # w_t n_ut
        total = weighted.sum(1, keepdim=True)
        has_any = self.user_counts.sum(1, keepdim=True) > 0
        return torch.where(has_any, weighted / (total + 1e-8), torch.zeros_like(weighted))

    def _encode_blocks(self, drop: bool) -> _Encoded:
        """The propagation of §3.3–3.4 with the last layer's item-side transforms deferred.

        Every item-side table is kept as blocks ``(base, W)`` meaning ``base @ W`` (``W`` None:
        ``base``): the last layer's q⁽ᴸ⁾ = msg·W⁽ᴸ⁻¹⁾ and s_t⁽ᴸ⁾ = agg·W_t⁽ᴸ⁻¹⁾ feed no further
        layer, so training multiplies only the batch's rows by W, and the item-based user side
        uses R_t(agg·W_t) = (R_t agg)·W_t on the (few) users. ``drop``: node dropout on the
        propagation edges (message dropout is applied by :meth:`loss` to the batch's rows).
        """
        cfg = self.config
        n_beh, n_layers = len(self.behaviors), cfg.n_layers
        (stack, stack_t), mats, (nbr, nbr_t) = self._propagation_matrices(drop)
        # α_ut / n_ut, [T, U, 1]: Eq. 1's weights times the mean over N_t(u)
        alpha = (self.behavior_attention() * self.user_inv_counts).T.unsqueeze(2)
        n_users, d = self.n_users, cfg.dim
        p, q = self.user_emb.weight, self.item_emb.weight
        p_layers = [p]
        q_blocks: list[_Block] = [(q, None)]
        s = [q] * n_beh
        s_blocks: list[list[_Block]] = [[(q, None)] for _ in range(n_beh)]
        # R_t q⁽⁰⁾ for every t (one stacked product): item→user messages of layer 0 (Eq. 2)
        # and layer 0 of ū_t (Eq. 8)
        rq = spmm_pair(stack, stack_t, q).view(n_beh, n_users, d)
        u_blocks: list[list[_Block]] = [[(rq[k], None)] for k in range(n_beh)]
        for layer in range(n_layers):
            last = layer == n_layers - 1
            w = self.weight[layer]
            if layer > 0:
                rq = spmm_pair(stack, stack_t, q).view(n_beh, n_users, d)
            # Eq. 2: item→user, Σ_t α_ut · mean_{i∈N_t(u)} q_i⁽ˡ⁾
            msg_u = (alpha * rq).sum(0)
            # Eq. 3: user→item, mean (or sum) over the item's users of p_u⁽ˡ⁾ (N normalised)
            msg_i = spmm_pair(nbr, nbr_t, p)
            # Eq. 4: shared transformation W⁽ˡ⁾
            p = msg_u @ w
            p_layers.append(p)
            if last:
                q_blocks.append((msg_i, w))
            else:
                q = msg_i @ w
                q_blocks.append((q, None))
            # Eq. 5: item–item over R_tᵀR_t (undropped, as the authors' code), mean, W_t⁽ˡ⁾
            for k in range(n_beh):
                r, rt, _ = self._behavior_matrices(k)
                outer = (getattr(self, f"outer_{k}"), getattr(self, f"outer_t_{k}"))
                loops = None if self._self_loops else getattr(self, f"igraph_self_{k}")
                agg = co_interaction_spmm(r, rt, s[k], loops, outer=outer)
                wk = self.item_weight[k, layer]
                mat, mat_t = mats[k]
                if last:
                    s_blocks[k].append((agg, wk))
                    u_blocks[k].append((spmm_pair(mat, mat_t, agg), wk))
                else:
                    s[k] = agg @ wk
                    s_blocks[k].append((s[k], None))
                    u_blocks[k].append((spmm_pair(mat, mat_t, s[k]), None))
        # Eq. 6: layer-wise aggregation by concatenation (users: few rows, materialised)
        p_star = torch.cat(p_layers, dim=1)
        u_side: list[Tensor] = []
        for k in range(n_beh):
            # Eq. 8's user side: mean_{j∈N_t(u)} s_jt* = R_t s_t* / n_ut
            uk = _materialise(u_blocks[k]) * self.user_inv_counts[:, k : k + 1]
            if cfg.item_score_transform:
                uk = uk @ self.score_weight[k]
            u_side.append(uk)
        return _Encoded(p_star, q_blocks, u_side, s_blocks)

    def encode(self, drop: bool = False) -> tuple[Tensor, Tensor, list[Tensor], list[Tensor]]:
        """``(p* [U, D], q* [I, D], [ū_t [U, D]], [s_t* [I, D]])`` with D = (L+1)·d, full tables.

        ``ū_t`` is the item-based user side ``mean_{j∈N_t(u)} s_jt*`` (times M_t when
        ``item_score_transform``). ``drop``: node dropout (training only).
        """
        enc = self._encode_blocks(drop)
        s_star = [_materialise(blocks) for blocks in enc.s_blocks]
        return enc.p_star, _materialise(enc.q_blocks), enc.u_side, s_star

    def _item_score_scale(self) -> float:
        """c of ŷ = y1 + c·Σ_t ū_tᵀ s_it*: λ, divided by the number of behaviors for 'mean'."""
        c = self.config.lamb
        return c / len(self.behaviors) if self.config.item_score_reduce == "mean" else c

    def _combine(
        self, p_star: Tensor, q_star: Tensor, u_side: list[Tensor], s_star: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Eq. 9 as one inner product: ``[p* ‖ c·ū_t …] · [q* ‖ s_t* …]``."""
        c = self._item_score_scale()
        users = torch.cat([p_star, *(c * u for u in u_side)], dim=1)
        items = torch.cat([q_star, *s_star], dim=1)
        return users, items

    # ------------------------------------------------------------------ training
    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        """BPR of ŷ = y1 + λ·y2 (Eq. 9–10) on target triples, with node and message dropout."""
        drop = self.training
        md = self.config.message_dropout if drop else 0.0
        enc = self._encode_blocks(drop)  # one full propagation, last layer's rows deferred
        n = len(batch.user)
        items = torch.cat([batch.pos, batch.neg])
        # Only the batch's rows of the item tables are formed. index_select, not x[idx]: the
        # backward of advanced indexing on CPU adds repeated rows with parallel atomic float
        # adds (run-to-run differences in the last bits once B·D ≥ 32k); index_select's
        # backward (index_add_) is deterministic.
        cache: dict[int, Tensor] = {}
        eu = F.dropout(enc.p_star.index_select(0, batch.user), md)  # message dropout (§3.6)
        ei = F.dropout(_materialise(enc.q_blocks, items, cache), md)
        scores = (eu.repeat(2, 1) * ei).sum(-1)  # y1 (Eq. 7), pos rows then neg rows
        c = self._item_score_scale()
        for uk, blocks in zip(enc.u_side, enc.s_blocks, strict=True):  # c·Σ_t ū_tᵀM_t s_it*
            ub = uk.index_select(0, batch.user).repeat(2, 1)
            scores = scores + c * (ub * _materialise(blocks, items, cache)).sum(-1)  # Eq. 8
        reg = losses.l2_reg(
            self.user_emb(batch.user),
            self.item_emb(batch.pos),
            self.item_emb(batch.neg),
            batch_size=n,
        )
        return {"bpr": losses.bpr(scores[:n], scores[n:]), "reg": self.config.reg * reg}

    # ------------------------------------------------------------------ scoring
    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        return self._combine(*self.encode(drop=False))

    def score_parts(self, users: Tensor) -> tuple[Tensor, Tensor]:
        """``(y1, y2)`` of Eq. 7 and Eq. 8 for ``users`` × every item (no dropout, no grad)."""
        with torch.no_grad():
            p_star, q_star, u_side, s_star = self.encode(drop=False)
            users = users.to(p_star.device)
            y1 = p_star[users] @ q_star.T
            y2 = torch.stack([u[users] @ s.T for u, s in zip(u_side, s_star, strict=True)])
            y2 = y2.mean(0) if self.config.item_score_reduce == "mean" else y2.sum(0)
        return y1, y2


__all__ = ["MBGCN", "MBGCNConfig"]
