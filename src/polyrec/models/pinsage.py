"""PinSage: graph convolutions over random-walk importance neighbourhoods (Ying et al., "Graph
Convolutional Neural Networks for Web-Scale Recommender Systems", KDD 2018), on the user–item
graph as CML (WSDM 2022, §4.1.2) compares against it."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.graphs import bipartite_adjacency, to_torch_csr_pair
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import (
    Behaviors,
    BPRScorer,
    GraphScorer,
    Init,
    embedding_tables,
    train_behavior,
)
from polyrec.models.base import ModelConfig
from polyrec.models.propagation import spmm_pair

NeighbourType = Literal["any", "same"]


class PinSageConfig(ModelConfig):
    """Settings of :class:`PinSage`. The paper has no public code (Pinterest); defaults are the
    paper's where it states them for its own data, else a stated choice."""

    dim: int = Field(64, ge=1)
    """Embedding size d of every layer (the paper: 1024 on Pinterest's visual/text features;
    64 here, the size LightGCN and CML give every compared model)."""
    n_layers: int = Field(2, ge=1)
    """Convolution layers K (§3.2 / Algorithm 2; the paper uses K = 2)."""
    n_neighbours: int = Field(50, ge=1)
    """T, the neighbours kept per node: the T most visited by its random walks (§3.4: 'the top
    T nodes with the highest normalized visit counts'; T = 50, as we read the paper's
    experiments)."""
    n_walks: int = Field(100, ge=1)
    """Random walks started from every node to count visits (the paper does not give its walk
    budget; ours)."""
    walk_length: int = Field(3, ge=1)
    """Steps of each walk (ours: 3 reaches items through users and back, and users beyond)."""
    neighbour_type: NeighbourType = "any"
    """Which visited nodes may be neighbours: 'any' (users and items: a user's neighbourhood
    holds the items it bought and the users who bought them too) or 'same' (an item's
    neighbours are items, a user's users — the pin-to-pin neighbourhoods of Pinterest's
    pin–board graph)."""
    walk_seed: int = 0
    """Seed of the random walks (the neighbourhoods are fixed before training)."""
    negatives: int = Field(500, ge=1)
    """Uniform negative items shared by every pair of a batch (§3.3: 500 per minibatch): with
    one negative per pair the hinge of Eq. 1 is met by nearly every random item within an
    epoch and training stalls."""
    margin: float = Field(0.1, ge=0.0)
    """Δ of the max-margin loss (§3.3, Eq. 1; the paper's value is not stated: ours)."""
    reg: float = Field(1e-4, ge=0.0)
    """λ of the L2 penalty ½Σ‖e‖²/B on the batch's ego embeddings (ours: the paper trains
    features, not ID embeddings)."""
    init: Init = "xavier"
    """Init of the ID embeddings (the input features h⁽⁰⁾)."""
    init_std: float = Field(0.1, gt=0.0)
    """Standard deviation of the 'normal' init."""
    behaviors: Behaviors = "target"
    """Which pairs form the graph and train the model: 'target' (CML compares PinSage as a
    single-behavior method) or 'all' (every behavior merged)."""


class PinSage(
    BPRScorer,
    GraphScorer,
    name="pinsage",
    paper=(
        "Ying et al., Graph Convolutional Neural Networks for Web-Scale Recommender Systems, "
        "KDD 2018"
    ),
    Config=PinSageConfig,
):
    """PinSage (Ying et al., KDD 2018) on the user–item graph.

    Importance neighbourhoods (§3.4): from every node, ``n_walks`` random walks of
    ``walk_length`` steps; the node's neighbours N(v) are the ``n_neighbours`` nodes it visits
    most, with weights α = their L1-normalised visit counts (:func:`importance_neighbourhoods`;
    fixed before training, kept as a sparse matrix A with A[v, u] = α_u).

    Each layer k is Algorithm 1, CONVOLVE, for every node at once::

        n_v = Σ_{u∈N(v)} α_u ReLU(Q_k h_u + q_k)          (importance pooling γ: weighted mean)
        h_v ← ReLU(W_k [h_v ; n_v] + w_k),  h_v ← h_v / ‖h_v‖₂

    then z_v = G₂ ReLU(G₁ h_v⁽ᴷ⁾ + g) (Algorithm 2, line 15); ŷ_ui = z_u · z_i. Loss: the
    max-margin ranking loss of §3.3 (Eq. 1), max(0, z_u·z_j − z_u·z_i + Δ), of every training pair (u, i)
    against ``negatives`` uniform items j shared by the batch (:func:`polyrec.losses.
    max_margin`), plus L2 on the batch's ego embeddings.

    Differences from the paper, each because the setting differs: the input features are free ID
    embeddings (Pinterest's pins have visual and text features); the whole graph is convolved per
    batch with sparse products (the paper samples computation graphs for billions of nodes —
    the same values for nodes whose neighbourhoods it keeps); the paper's curriculum of hard negatives
    (items ranked 2000–5000 by personalised PageRank, §3.6) is not implemented: negatives are
    uniform.
    """

    config: PinSageConfig
    imp: Tensor
    imp_t: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        self.train_behavior = train_behavior(schema, config.behaviors)
        self.user_emb, self.item_emb = embedding_tables(schema, config)
        d = config.dim
        self.q_lin = nn.ModuleList(nn.Linear(d, d) for _ in range(config.n_layers))
        self.w_lin = nn.ModuleList(nn.Linear(2 * d, d) for _ in range(config.n_layers))
        self.g1, self.g2 = nn.Linear(d, d), nn.Linear(d, d, bias=False)
        assert data is not None  # not rebuildable: setup() always passes the data
        adj = bipartite_adjacency(data.csr(self.train_behavior))
        importance = importance_neighbourhoods(
            adj,
            n_walks=config.n_walks,
            walk_length=config.walk_length,
            top=config.n_neighbours,
            n_users=schema.n_users if config.neighbour_type == "same" else None,
            seed=config.walk_seed,
        )
        a, a_t, _ = to_torch_csr_pair(importance)
        self.register_buffer("imp", a, persistent=False)
        self.register_buffer("imp_t", a_t, persistent=False)
        self._ddp_params_and_buffers_to_ignore = ["imp", "imp_t"]

    # ------------------------------------------------------------------ convolutions
    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        h = torch.cat([self.user_emb.weight, self.item_emb.weight])  # h⁽⁰⁾
        for q_lin, w_lin in zip(self.q_lin, self.w_lin, strict=True):
            n = spmm_pair(self.imp, self.imp_t, torch.relu(q_lin(h)))  # importance pooling
            h = F.normalize(torch.relu(w_lin(torch.cat([h, n], -1))), dim=-1)  # Alg. 1, 3-4
        z = self.g2(torch.relu(self.g1(h)))  # Alg. 2, line 15
        users, items = torch.split(z, [self.n_users, self.n_items])
        return users, items

    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        users, items = self.final_embeddings()
        eu = users[batch.user]
        pos = (eu * items[batch.pos]).sum(-1)
        # shared uniform negatives (§3.3; the global RNG, seeded by the trainer)
        shared = torch.randint(self.n_items, (self.config.negatives,), device=pos.device)
        neg = eu @ items[shared].T
        own = shared.unsqueeze(0) == batch.pos.unsqueeze(1)
        penalty = losses.l2_reg(
            self.user_emb(batch.user),
            self.item_emb(batch.pos),
            self.item_emb(shared),
            batch_size=len(batch.user),
        )
        return {
            "max_margin": losses.max_margin(pos, neg, self.config.margin, own),
            "reg": self.config.reg * penalty,
        }


def importance_neighbourhoods(
    adj: sp.csr_matrix,
    *,
    n_walks: int,
    walk_length: int,
    top: int,
    seed: int,
    n_users: int | None = None,
) -> sp.csr_matrix:
    """PinSage's importance neighbourhoods (§3.4) of every node of the graph ``adj``: row v
    holds the ``top`` nodes most visited by ``n_walks`` random walks of ``walk_length`` steps
    from v (v itself excluded; ties broken by node id), with their visit counts L1-normalised
    over the kept ones. A node without edges gets an empty row. ``n_users`` (the bipartite
    graph's first ``n_users`` nodes are users): keep only visited nodes of v's own type.
    Vectorised over all walks at once."""
    n = adj.shape[0]
    indptr = np.asarray(adj.indptr, dtype=np.int64)
    indices = np.asarray(adj.indices, dtype=np.int64)
    rng = np.random.default_rng(seed)
    start = np.repeat(np.arange(n, dtype=np.int64), n_walks)
    at = start.copy()
    starts, visits = [], []
    for _ in range(walk_length):
        deg = indptr[at + 1] - indptr[at]
        moving = deg > 0
        off = (rng.random(len(at)) * deg).astype(np.int64)
        nxt = (
            indices[np.minimum(indptr[at] + off, max(len(indices) - 1, 0))] if len(indices) else at
        )
        at = np.where(moving, nxt, at)
        starts.append(start[moving])
        visits.append(at[moving])
    s = np.concatenate(starts) if starts else np.zeros(0, np.int64)
    v = np.concatenate(visits) if visits else np.zeros(0, np.int64)
    keep = s != v
    if n_users is not None:
        keep &= (s < n_users) == (v < n_users)
    keys, counts = np.unique(s[keep] * n + v[keep], return_counts=True)
    rows, cols = keys // n, keys % n
    order = np.lexsort((cols, -counts, rows))  # by row, most visited first, then node id
    rows, cols, counts = rows[order], cols[order], counts[order]
    first = np.searchsorted(rows, rows, side="left")
    kept = (np.arange(len(rows)) - first) < top
    rows, cols, counts = rows[kept], cols[kept], counts[kept].astype(np.float64)
    totals = np.bincount(rows, weights=counts, minlength=n)
    alpha = (counts / totals[rows]).astype(np.float32)
    return sp.csr_matrix((alpha, (rows, cols)), shape=(n, n))


__all__ = ["PinSage", "PinSageConfig", "importance_neighbourhoods"]
