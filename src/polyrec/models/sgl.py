"""SGL: LightGCN plus self-supervised contrast between two augmented views of the graph."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from polyrec import losses
from polyrec.data.graphs import normalized_bipartite_from_pairs
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models.lightgcn import LightGCN, LightGCNConfig
from polyrec.models.propagation import propagate, propagate_layerwise

Augmentation = Literal["ed", "nd", "rw"]


class SGLConfig(LightGCNConfig):
    """Settings of :class:`SGL`: the LightGCN encoder's (SGL SIGIR 2021 §4.1.3 keeps LightGCN's
    d = 64, 3 layers, Xavier init, λ2 = 1e-4; Adam lr 1e-3, batch 2048) plus the
    self-supervised task's (§3.1–3.3, defaults of §4.1.3 and the authors' ``conf/SGL.ini``)."""

    augmentation: Augmentation = "ed"
    """Graph augmentation of both views (§3.1.1): 'ed' edge dropout (Eq. 6, SGL-ED, the paper's main
    variant), 'nd' node dropout (Eq. 5, SGL-ND) or 'rw' random walk = a fresh edge-dropout mask per
    layer (Eq. 7, SGL-RW)."""
    drop_ratio: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout ratio ρ of nodes (nd) or edges (ed, rw) in each view (§3.1.1; §4.1.3 searches {0, 0.1,
    …, 0.5}; 0.1 in the authors' settings)."""
    temperature: float = Field(0.2, gt=0.0)
    """Temperature τ of the InfoNCE loss (Eq. 10; §4.1.3 / §4.5: 0.2 works best)."""
    ssl_weight: float = Field(0.1, ge=0.0)
    """λ1, the weight of L_ssl in L = L_main + λ1 L_ssl + λ2‖Θ‖² (Eq. 12; §4.1.3 searches {0.005, 0.01,
    0.05, 0.1, 0.5, 1.0}; 0.1 in the authors' settings). 0 switches the self-supervised task off
    (then SGL is LightGCN)."""
    ssl_negatives: Literal["batch", "all"] = "batch"
    """Negatives of each node in L_ssl (Eq. 9–10): 'batch' = the other distinct users (items) of the
    batch, the usual in-batch implementation; 'all' = every user (item) of the other view, Eq. 10 as
    printed and the authors' SGL-Torch code."""
    ssl_reduction: Literal["sum", "mean"] = "sum"
    """How the per-node InfoNCE terms combine: 'sum' = summed over the batch's users and items and
    divided by the batch size, the same scale as our mean BPR (the authors' code sums BPR and
    InfoNCE alike, so λ1 keeps its meaning); 'mean' = mean over the users plus mean over the items.
    """


class SGL(
    LightGCN,
    name="sgl",
    paper="Wu et al., Self-supervised Graph Learning for Recommendation, SIGIR 2021",
    Config=SGLConfig,
):
    """SGL (Wu et al., "Self-supervised Graph Learning for Recommendation", SIGIR 2021).

    **Encoder and main task.** LightGCN (:class:`~polyrec.models.lightgcn.LightGCN`, inherited:
    Eq. 1–2 of SGL are LightGCN's propagation and layer mean) on the un-augmented graph, BPR on
    the training pairs (Eq. 3; ``behaviors = "target" | "all"`` as for LightGCN) and λ2·L2 on
    the batch's ego embeddings. Scoring uses the un-augmented graph only.

    **Augmented views (§3.1).** Two views of the training graph, regenerated once per epoch in
    :meth:`on_epoch_start` (§3.1: the augmentations are redrawn at every epoch): node dropout ND
    (Eq. 5: ⌊ρ·|U|⌋ users and ⌊ρ·|I|⌋ items dropped with all their edges), edge dropout ED
    (Eq. 6: ⌊(1−ρ)·|E|⌋ edges kept) or random walk RW (Eq. 7: an ED mask per layer). Each view is
    the symmetric-normalised adjacency of its sub-graph (degrees of the sub-graph), built
    vectorised from a mask over the edge list
    (:func:`~polyrec.data.graphs.normalized_bipartite_from_pairs`); exact-size draws like the
    authors' ``randint_choice(…, replace=False)``. The views are a pure function of (a seed drawn
    from the run's seeded RNG at construction, epoch), so a resumed run rebuilds the same views.

    **Contrastive task (§3.2).** The views' LightGCN embeddings z′, z″ (layer mean) of the
    batch's distinct users and distinct positive items; InfoNCE with cosine similarity and τ
    (Eq. 9–10) for users and for items, L_ssl = L_ssl^user + L_ssl^item (Eq. 11), total loss
    L_main + λ1 L_ssl + λ2‖Θ‖² (Eq. 12). Loss terms: ``bpr``, ``reg``, ``ssl`` (λ1 included).

    **Choices** (configurable): in-batch negatives (``ssl_negatives="batch"``; the authors'
    PyTorch code and Eq. 10 use every node, ``"all"``); InfoNCE summed over nodes and divided
    by the batch size (``ssl_reduction``), matching the authors' summed losses; duplicate users
    and items of a batch counted once in L_ssl. The paper is not in this repository: equation
    and section numbers are cited from its published version as recalled here (check them
    against the paper); defaults follow the authors' SGL-Torch ``conf/SGL.ini`` where they agree.
    """

    config: SGLConfig
    edge_user: Tensor
    edge_item: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        assert data is not None  # not rebuildable: setup() always passes the data
        users, items = data.pairs(self.train_behavior)  # distinct training pairs = graph edges
        self.register_buffer("edge_user", torch.from_numpy(users), persistent=False)
        self.register_buffer("edge_item", torch.from_numpy(items), persistent=False)
        self._ddp_params_and_buffers_to_ignore = ["adj", "edge_user", "edge_item"]
        # views are a pure function of (this seed, epoch); drawn from the run's seeded RNG
        self._aug_seed = int(torch.randint(0, 2**62, (1,)).item())
        self._view_epoch = 0
        self._views: list[list[Tensor]] | None = None

    # ------------------------------------------------------------------ augmented views
    def _keep_exactly(self, n: int, n_keep: int, gen: torch.Generator) -> Tensor:
        """Boolean mask over ``n`` entries with exactly ``n_keep`` True, uniformly at random."""
        keep = torch.zeros(n, dtype=torch.bool)
        keep[torch.randperm(n, generator=gen)[:n_keep]] = True
        return keep.to(self.edge_user.device)

    def augmented_graph(self, gen: torch.Generator) -> Tensor:
        """One augmented sub-graph s(G) (Eq. 5 or 6) as a normalised adjacency (torch CSR)."""
        rho = self.config.drop_ratio
        eu, ei = self.edge_user, self.edge_item
        if self.config.augmentation == "nd":
            # Eq. 5: drop ⌊ρ|U|⌋ users and ⌊ρ|I|⌋ items (masking vector M′) with their edges
            keep_u = self._keep_exactly(self.n_users, self.n_users - int(self.n_users * rho), gen)
            keep_i = self._keep_exactly(self.n_items, self.n_items - int(self.n_items * rho), gen)
            keep = keep_u[eu] & keep_i[ei]
        else:
            # Eq. 6 (and each layer of Eq. 7): keep ⌊(1−ρ)|E|⌋ edges (masking vector M)
            keep = self._keep_exactly(len(eu), int(len(eu) * (1.0 - rho)), gen)
        dtype = self.user_emb.weight.dtype
        return normalized_bipartite_from_pairs(
            eu[keep], ei[keep], self.n_users, self.n_items, dtype=dtype
        )

    def make_views(self, epoch: int) -> list[list[Tensor]]:
        """The two views of ``epoch``: ``[view1, view2]``, each a list of adjacencies (one for
        ND/ED, shared by every layer; one per layer for RW)."""
        gen = torch.Generator().manual_seed(self._aug_seed + int(epoch))
        per_view = self.config.n_layers if self.config.augmentation == "rw" else 1
        return [[self.augmented_graph(gen) for _ in range(per_view)] for _ in range(2)]

    def on_epoch_start(self, epoch: int) -> None:
        """§3.1: a new pair of augmented sub-graphs at the start of every epoch."""
        self._view_epoch = int(epoch)
        self._views = self.make_views(epoch) if self.config.ssl_weight > 0 else None

    def views(self) -> list[list[Tensor]]:
        """The current epoch's views (built on first use, e.g. after ``.to(device)``)."""
        if self._views is None:
            self._views = self.make_views(self._view_epoch)
        return self._views

    def propagate_view(self, graphs: list[Tensor]) -> tuple[Tensor, Tensor]:
        """LightGCN's layer mean (Eq. 1–2) over one augmented view (Eq. 4)."""
        n_layers = self.config.n_layers
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=0)
        weights = [1.0 / (n_layers + 1)] * (n_layers + 1)
        if len(graphs) == 1:
            final = propagate(graphs[0], ego, weights, symmetric=True)
        else:  # RW: a different sub-graph per layer (Eq. 7)
            final = propagate_layerwise(graphs, ego, weights, symmetric=True)
        users, items = torch.split(final, [self.n_users, self.n_items], dim=0)
        return users, items

    # ------------------------------------------------------------------ loss
    def _nce(self, z1: Tensor, z2: Tensor, nodes: Tensor) -> Tensor:
        """Per-node InfoNCE rows between the two views (Eq. 9–10)."""
        tau = self.config.temperature
        if self.config.ssl_negatives == "all":
            return losses.info_nce_candidates_rows(z1[nodes], z2, nodes, tau)
        return losses.info_nce_rows(z1[nodes], z2[nodes], tau)

    def ssl_loss(self, batch: BPRBatch) -> Tensor:
        """L_ssl = L_ssl^user + L_ssl^item (Eq. 11) over the batch's distinct users and items."""
        (u1, i1), (u2, i2) = (self.propagate_view(v) for v in self.views())
        users = torch.unique(batch.user)
        items = torch.unique(batch.pos)
        rows_u = self._nce(u1, u2, users)
        rows_i = self._nce(i1, i2, items)
        if self.config.ssl_reduction == "sum":
            return (rows_u.sum() + rows_i.sum()) / len(batch.user)
        return rows_u.mean() + rows_i.mean()

    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        """Eq. 12: ``bpr`` (L_main, un-augmented graph) + ``ssl`` (λ1·L_ssl) + ``reg``."""
        terms = super().loss(batch)
        weight = self.config.ssl_weight
        if weight > 0:
            terms["ssl"] = weight * self.ssl_loss(batch)
        else:
            terms["ssl"] = torch.zeros((), device=self.user_emb.weight.device)
        return terms

    # ------------------------------------------------------------------ copies / devices
    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # views live on the old device/dtype: rebuild them (same seed, same epoch) on first use
        self._views = None
        return super()._apply(fn, recurse)

    def __deepcopy__(self, memo: dict[int, Any]) -> SGL:
        for view in self._views or []:
            for adj in view:  # sparse tensors cannot be deep-copied; the copy shares them
                memo[id(adj)] = adj
        out: SGL = super().__deepcopy__(memo)  # type: ignore[assignment]
        return out


__all__ = ["SGL", "SGLConfig"]
