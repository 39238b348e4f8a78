"""HeCo (Wang, Liu, Shi & Shi, "Self-supervised Heterogeneous Graph Neural Network with
Co-contrastive Learning", KDD 2021) on the multi-behavior user–item graph, as CML (WSDM 2022
§4.1.2) applies it: the network-schema view over each behavior's neighbours, the meta-path view
over user–behavior–item–behavior–user (and item–…–item) paths, and the cross-view contrast."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.graphs import normalize, to_torch_csr
from polyrec.data.sampling import sorted_member_t
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import BPRScorer, GraphScorer, Init, bpr_terms, embedding_tables
from polyrec.models.base import ModelConfig
from polyrec.models.itemknn import knn_similarity
from polyrec.models.propagation import segment_softmax, spmm


class HeCoConfig(ModelConfig):
    """Settings of :class:`HeCo` (HeCo §4-5's where they carry over; the recommendation side as
    polyrec's other graph baselines)."""

    dim: int = Field(64, ge=1)
    """Hidden size d (HeCo §5.1: 64)."""
    tau: float = Field(0.8, gt=0.0)
    """Temperature τ of the contrast (HeCo §5.1 tunes it; 0.8 on ACM)."""
    lam: float = Field(0.5, ge=0.0, le=1.0)
    """λ balancing the two views' contrastive losses (Eq. 13; HeCo: 0.5)."""
    cl_weight: float = Field(0.1, ge=0.0)
    """Weight of HeCo's contrastive loss beside BPR on the target behavior (HeCo is
    self-supervised; CML trains it for recommendation, which needs a ranking loss)."""
    n_neighbours: int = Field(20, ge=1)
    """Meta-path neighbours kept per node and meta-path (the most similar by co-interaction
    cosine; the full U–b–I–b–U graphs of popular items are dense)."""
    n_positives: int = Field(5, ge=1)
    """Positives per node, itself included: the nodes it shares the most meta-path
    neighbourhood with (HeCo §4.3 T_pos; 5-7 in its experiments)."""
    feat_drop: float = Field(0.3, ge=0.0, lt=1.0)
    """Dropout on the projected features (HeCo's code: 0.3 on ACM)."""
    contrast_nodes: int = Field(512, ge=2)
    """Nodes per type contrasted per step (the batch's users and positive items, filled up with
    random ones): the contrast's denominator runs over these instead of every node."""
    reg: float = Field(1e-4, ge=0.0)
    """λ of the L2 penalty on the batch's input embeddings."""
    init: Init = "xavier"
    """Input embedding init (CML §4.1.3: Xavier)."""
    init_std: float = Field(0.1, gt=0.0)
    """Standard deviation of the 'normal' init."""


class HeCo(
    BPRScorer,
    GraphScorer,
    name="heco",
    paper="Wang et al., Self-supervised Heterogeneous GNN with Co-contrastive Learning, KDD 2021",
    Config=HeCoConfig,
):
    """HeCo on the behavior graph. For each node type (users, items) and node i:

    * Features (Eq. 1): h_i = ELU(W_τ x_i + b_τ), x_i a learned ID embedding, dropout.
    * Network-schema view (Eq. 2-4): per behavior b, the node-level attention
      α_ij = softmax_j(LeakyReLU(a_bᵀ [h_i ‖ h_j])) over i's neighbours j in behavior b, and
      h_i^b = ELU(Σ_j α_ij h_j); the type-level (here behavior-level) attention
      w_b = mean_i a_scᵀ tanh(W_sc h_i^b + b_sc), β = softmax(w), z_i^sc = Σ_b β_b h_i^b.
    * Meta-path view (Eq. 5-7): per behavior b the meta-path U–b–I–b–U (items: I–b–U–b–I),
      one GCN layer h_i^P = PReLU(Σ_j Â_P[i, j] h_j W_P) on its normalised graph with self
      loops, and the semantic attention of the same form → z_i^mp.
    * Co-contrast (Eq. 9-13): a shared projection (Linear, ELU, Linear); for the nodes of a step
      L_i^sc = −log Σ_{j ∈ P_i} e^{cos(z_i^sc, z_j^mp)/τ} / Σ_k e^{cos(z_i^sc, z_k^mp)/τ}, L^mp
      the same with the views swapped, L = λ L^sc + (1 − λ) L^mp; P_i = i and the nodes with
      the most meta-path neighbourhood in common (``n_positives``).

    Recommendation (CML's use): ŷ_ui = z_u^mp · z_i^mp (HeCo's downstream embedding is the
    meta-path view's), trained with BPR on the target behavior plus ``cl_weight`` × the
    co-contrast.

    Choices, stated: every behavior's neighbours form one schema "type" (the bipartite graph has
    one neighbour node type); all neighbours are attended instead of HeCo's sampled fixed
    number; meta-path neighbours are the ``n_neighbours`` most similar by the cosine of their
    co-interactions, and positives the ``n_positives − 1`` highest in that similarity summed
    over meta-paths (HeCo counts meta-path instances); the contrast runs over
    ``contrast_nodes`` nodes per type and step instead of all nodes.
    """

    config: HeCoConfig
    src: Tensor
    dst: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        d = config.dim
        self.train_behavior = schema.target
        self.user_emb, self.item_emb = embedding_tables(schema, config)
        nb = len(schema.behaviors)
        self.fc = nn.ModuleList(nn.Linear(d, d) for _ in range(2))  # Eq. 1, per node type
        self.att_node = nn.Parameter(torch.empty(2, nb, 2 * d))  # a_b per target type
        nn.init.xavier_normal_(self.att_node, gain=1.414)
        self.sc_att = nn.ModuleList(_SemanticAttention(d) for _ in range(2))
        self.mp_lin = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(2 * nb))
        self.mp_act = nn.ModuleList(nn.PReLU() for _ in range(2 * nb))
        self.mp_att = nn.ModuleList(_SemanticAttention(d) for _ in range(2))
        self.proj = nn.Sequential(nn.Linear(d, d), nn.ELU(), nn.Linear(d, d))
        assert data is not None  # not rebuildable: setup() always passes the data
        # schema edges (neighbour j → target i), per target type and behavior, node ids with
        # users first; edges of (type τ, behavior b) at bounds[τ · nb + b]
        src, dst, bounds = [], [], [0]
        for tau in (0, 1):
            for b in schema.behaviors:
                u, i = data.pairs(b)
                i = i + schema.n_users
                src.append(i if tau == 0 else u)
                dst.append(u if tau == 0 else i)
                bounds.append(bounds[-1] + len(u))
        self.register_buffer("src", torch.from_numpy(np.concatenate(src)), persistent=False)
        self.register_buffer("dst", torch.from_numpy(np.concatenate(dst)), persistent=False)
        self.bounds = bounds
        # meta-path graphs and positives per node type
        graphs: list[Tensor] = []
        positives = []
        for tau in (0, 1):
            sims = []
            for b in schema.behaviors:
                r = data.csr(b).astype(np.float64)
                x = r.T if tau == 0 else r  # columns = the nodes of type τ
                s = knn_similarity(sp.csr_matrix(x), config.n_neighbours)
                sims.append(s)
                a = sp.csr_matrix(((s + s.T) > 0).astype(np.float32))
                a = a + sp.identity(a.shape[0], dtype=np.float32, format="csr")
                graphs.append(to_torch_csr(normalize(a, "sym")))
            positives.append(_top_per_column(sum(sims[1:], sims[0]), config.n_positives - 1))
        self.n_paths = len(graphs)  # node types × behaviors
        for k, g in enumerate(graphs):
            self.register_buffer(f"mp_graph_{k}", g, persistent=False)
        self.pos_keys = [torch.from_numpy(p) for p in positives]  # sorted i·n + j, i ≠ j
        self._ddp_params_and_buffers_to_ignore = ["src", "dst"] + [
            f"mp_graph_{k}" for k in range(self.n_paths)
        ]

    # ------------------------------------------------------------------ views
    def features(self) -> tuple[Tensor, Tensor]:
        """Eq. 1: h = ELU(W_τ x + b_τ) of users and items (dropout in training)."""
        p = self.config.feat_drop
        hu = F.dropout(F.elu(self.fc[0](self.user_emb.weight)), p, self.training)
        hi = F.dropout(F.elu(self.fc[1](self.item_emb.weight)), p, self.training)
        return hu, hi

    def schema_view(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 2-4: z^sc of users and items (``h``: every node, users first)."""
        nb, n = len(self.bounds) // 2, len(h)
        out = []
        for tau in (0, 1):
            per_behavior = []
            for b in range(nb):
                lo, hi = self.bounds[tau * nb + b], self.bounds[tau * nb + b + 1]
                s_e, t_e = self.src[lo:hi], self.dst[lo:hi]
                a = self.att_node[tau, b]
                d = h.shape[1]
                logit = F.leaky_relu(
                    h.index_select(0, t_e) @ a[:d] + h.index_select(0, s_e) @ a[d:]
                )
                alpha = segment_softmax(logit.unsqueeze(1), t_e, n)
                msg = alpha * h.index_select(0, s_e)
                per_behavior.append(F.elu(h.new_zeros(h.shape).index_add_(0, t_e, msg)))
            views = torch.stack(per_behavior)  # [B, N, d]: the type's own rows only
            views = views[:, : self.n_users] if tau == 0 else views[:, self.n_users :]
            out.append(self.sc_att[tau](views))
        return out[0], out[1]

    def metapath_view(self, hu: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """Eq. 5-7: z^mp of users and items."""
        nb = self.n_paths // 2
        out = []
        for tau, h in ((0, hu), (1, hi)):
            per_path = []
            for b in range(nb):
                k = tau * nb + b
                g = getattr(self, f"mp_graph_{k}")
                per_path.append(self.mp_act[k](spmm(g, self.mp_lin[k](h), symmetric=True)))
            out.append(self.mp_att[tau](torch.stack(per_path)))
        return out[0], out[1]

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        return self.metapath_view(*self.features())

    # ------------------------------------------------------------------ training
    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        hu, hi = self.features()
        zu_mp, zi_mp = self.metapath_view(hu, hi)
        terms = bpr_terms((self.user_emb, self.item_emb), zu_mp, zi_mp, batch, self.config.reg)
        if self.config.cl_weight:
            zu_sc, zi_sc = self.schema_view(torch.cat([hu, hi]))
            cl = zu_mp.new_zeros(())
            for tau, (sc, mp, seed) in enumerate(((zu_sc, zu_mp, batch.user),
                                                  (zi_sc, zi_mp, batch.pos))):  # fmt: skip
                nodes = self._contrast_nodes(seed, len(sc))
                pos = self._positive_mask(tau, nodes, len(sc))
                a, b = self.proj(sc[nodes]), self.proj(mp[nodes])
                lam = self.config.lam
                cl = cl + lam * losses.multi_positive_nce(a, b, pos, self.config.tau)
                cl = cl + (1 - lam) * losses.multi_positive_nce(b, a, pos, self.config.tau)
            terms["heco"] = self.config.cl_weight * cl
        return terms

    def _contrast_nodes(self, seed: Tensor, n: int) -> Tensor:
        """Up to ``contrast_nodes`` distinct nodes: the batch's own first, then random ones."""
        want = min(self.config.contrast_nodes, n)
        own = torch.unique(seed)[:want]
        if len(own) >= want:
            return own
        extra = torch.randperm(n, device=seed.device)[: 2 * want]
        extra = extra[~torch.isin(extra, own)][: want - len(own)]
        return torch.cat([own, extra])

    def _positive_mask(self, tau: int, nodes: Tensor, n: int) -> Tensor:
        """``[B, B]`` bool: j ∈ P_i (the node itself and its positives)."""
        keys = self.pos_keys[tau].to(nodes.device)
        q = (nodes.unsqueeze(1) * n + nodes.unsqueeze(0)).reshape(-1)
        hit = sorted_member_t(keys, q)
        eye = torch.eye(len(nodes), dtype=torch.bool, device=nodes.device)
        return hit.view(len(nodes), len(nodes)) | eye


class _SemanticAttention(nn.Module):
    """HeCo's type-level / semantic attention (Eq. 4, 7): w_p = mean_i aᵀ tanh(W h_i^p + b),
    β = softmax(w), z_i = Σ_p β_p h_i^p over the stacked ``[P, N, d]`` views."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.a = nn.Parameter(torch.empty(1, d))
        nn.init.xavier_normal_(self.a, gain=1.414)

    def forward(self, views: Tensor) -> Tensor:
        w = (torch.tanh(self.lin(views)).mean(dim=1) * self.a).sum(-1)  # [P]
        beta = torch.softmax(w, dim=0)
        return (beta[:, None, None] * views).sum(0)


def _top_per_column(s: sp.spmatrix, n: int) -> np.ndarray:
    """Sorted keys ``i · N + j`` of the ``n`` largest off-diagonal entries of each column j of
    the square ``s`` (``i`` positive for node ``j``; symmetrised: j for i too)."""
    m = sp.csc_matrix(s)
    m.setdiag(0)
    m.eliminate_zeros()
    size = m.shape[0]
    cols = np.repeat(np.arange(size, dtype=np.int64), np.diff(m.indptr))
    rows = m.indices.astype(np.int64)
    order = np.lexsort((-m.data, cols))  # by column, largest first
    rank = np.arange(len(order)) - np.repeat(m.indptr[:-1], np.diff(m.indptr))
    keep = order[rank < n]
    i, j = rows[keep], cols[keep]
    keys = np.unique(np.concatenate([i * size + j, j * size + i]))
    return keys


__all__ = ["HeCo", "HeCoConfig"]
