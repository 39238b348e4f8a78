"""MB-CGCN: cascading LightGCN blocks over a behavior chain, linked by feature transformations."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import (
    BPRScorer,
    CascadeScorer,
    Init,
    LayerCombination,
    bpr_terms,
    embedding_tables,
    init_embedding,
)
from polyrec.models.base import ModelConfig


class MBCGCNConfig(ModelConfig):
    """Settings of :class:`MBCGCN`. MB-CGCN WWW 2023 reports d, lr, batch size and the L2 weight
    of its experiments; where it gives none, the value of the authors' released code
    (SS-00-SS/MBCGCN: ``README``, ``utility/parser.py``, ``MBCGCN.py``) is used and named."""

    dim: int = Field(64, ge=1)
    """Embedding size d (MB-CGCN experiments: 64; README / parser.py ``--embed_size 64``)."""
    n_layers: int = Field(3, ge=1)
    """LightGCN layers of every behavior block not named in behavior_layers (the paper tunes the
    depth per behavior; the released README and parser.py both run 3 layers on the target
    behavior, as LightGCN's default)."""
    behavior_layers: dict[str, Annotated[int, Field(ge=1)]] = Field(default_factory=dict)
    """Layers of each named behavior's block, e.g. {view = 2, cart = 4, buy = 3} (the released
    README's Tmall command: --layer_size4 two layers for view, --layer_size3 four for cart,
    --layer_size2 three for buy; parser.py's defaults are view 1, cart 5, buy 3)."""
    behavior_order: list[str] = Field(default_factory=list)
    """The behavior chain, first to last, ending with the target (e.g. ["view", "cart", "buy"], the
    paper's click > cart > buy chain); empty = the data's behaviors in schema order with the target
    moved last. A subset is allowed (the paper's ablations drop behaviors)."""
    transform: Literal["separate", "shared"] = "separate"
    """Feature transformation between blocks b and b+1 (§3.2): 'separate' = W_u^b for users and W_i^b
    for items, both d×d (the paper's transformation; the released MBCGCN.py: W_u1/W_i1, W_u2/W_i2)
    or 'shared' = one W_b for both (a lighter variant, not in the paper)."""
    layer_combination: LayerCombination = "mean"
    """How a block combines its layers 0..L into the behavior's embedding: 'mean' (§3.2, LightGCN Eq. 8
    with α_l = 1/(L+1); the released code's reduce_mean over the stacked layers) or 'last' (a
    variant)."""
    reg: float = Field(1e-4, ge=0.0)
    """λ of the L2 penalty λ·½(Σ‖e⁽⁰⁾‖² [+ Σ‖W‖²])/B on the batch's first-behavior (free) embeddings
    [and the transformation matrices] (the paper's BPR loss with L2; README / parser.py
    ``--regs [1e-4]``)."""
    reg_transforms: bool = True
    """Whether the L2 penalty also covers the transformation matrices (the paper's λ‖Θ‖² over all
    parameters; the released create_bpr_loss adds l2_loss of every W)."""
    init: Init = "normal"
    """Init of the embeddings and the transformation matrices: 'normal' = N(0, init_std²) (the released
    code: tf.random_normal_initializer(stddev=0.01) for both) or 'xavier' (Glorot uniform)."""
    init_std: float = Field(0.01, gt=0.0)
    """Standard deviation of the 'normal' init (released code: 0.01)."""


class MBCGCN(
    BPRScorer,
    CascadeScorer,
    name="mbcgcn",
    paper=(
        "Cheng et al., Multi-Behavior Recommendation with Cascading Graph Convolution Networks, "
        "WWW 2023"
    ),
    Config=MBCGCNConfig,
):
    """MB-CGCN (Cheng et al., "Multi-Behavior Recommendation with Cascading Graph Convolution
    Networks", WWW 2023).

    **Embedding initialisation (§3.1).** Free user and item embeddings P, Q (one ID embedding per
    node) are the input of the first behavior's block only.

    **Cascading GCN blocks (§3.2).** For each behavior b of the chain b_1 → … → b_B (target last)
    a LightGCN block on that behavior's own graph Â_b = D_b^{-1/2} A_b D_b^{-1/2}: light graph
    convolution e⁽ˡ⁺¹⁾ = Â_b e⁽ˡ⁾ (LightGCN Eq. 3 / 7, no transformation, no non-linearity) and the
    layer combination e_b = Σ_l α_l e⁽ˡ⁾ (LightGCN Eq. 4 / 8, ``layer_combination``). Behavior b's
    layer-0 embeddings are the previous behavior's output after a feature transformation,
    e_{b+1}⁽⁰⁾ = e_b W_b (row vectors; W_b ∈ R^{d×d}, one for users and one for items by default,
    ``transform``): the transformation passes on what the next behavior can use and filters the
    rest (the paper's argument for it).

    **Prediction (§3.3).** The behavior-specific embeddings are combined linearly, by summing:
    e_u = Σ_b e_{u,b}, e_i = Σ_b e_{i,b} (the untransformed block outputs; the released code sums
    ua_embeddings1 + ua_embeddings2 + ua_embeddings3, not their transformed copies), and
    ŷ_ui = e_uᵀ e_i.

    **Learning (§3.4).** BPR on the target behavior's triples only (the auxiliary behaviors act
    through the cascade), plus λ·½(‖e_u⁽⁰⁾‖² + ‖e_i⁽⁰⁾‖² + ‖e_j⁽⁰⁾‖² + Σ_b‖W_b‖²)/B on the batch's
    free (first-block) embeddings and the transformation matrices (``reg_transforms``), as the
    released ``create_bpr_loss``.

    **Cost.** One propagation per behavior per training batch (each one
    :class:`~polyrec.models.propagation.SymmetricPolynomial` node over that behavior's
    non-persistent CSR graph, shared with :class:`~polyrec.models.crgcn.CRGCN` through
    :class:`~polyrec.models._common.CascadeScorer`); the transformations are dense d×d products
    over the node tables.

    **Choices where the paper is silent** (each a config option; the paper is not in this
    repository, so its section numbers are cited from the published version as recalled here,
    and the details below were read in the authors' code): per-behavior depths
    (``behavior_layers``; the README's Tmall values are in ``configs/mbcgcn-retailrocket.toml``);
    N(0, 0.01²) init of embeddings and matrices (``init``, ``init_std``; the code); L2 on the
    batch's free embeddings plus the matrices (``reg_transforms``; the code); the default chain =
    schema order with the target last (``behavior_order``). Variants offered as options, not in
    the paper: one matrix shared by users and items (``transform='shared'``) and the last layer
    as a block's output (``layer_combination='last'``). Training pairs: one epoch over the target behavior's distinct pairs
    with uniform negatives (:func:`~polyrec.data.views.bpr_batches`); the released code draws
    n_train/B batches of random users with one positive each. Not implemented: the released
    README's optional pre-training step (LightGCN on a single behavior, loaded as the initial
    embeddings) and its node/message dropout flags (off by default there).
    """

    config: MBCGCNConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        self.train_behavior = schema.target  # BPR on the target behavior only (§3.4)
        self.user_emb, self.item_emb = embedding_tables(schema, config)  # §3.1
        self.build_cascade(schema, data, config)
        # W_b of each transition b → b+1 (§3.2): [B-1, 2 (users, items) or 1 (shared), d, d]
        n_sides = 2 if config.transform == "separate" else 1
        d = config.dim
        self.transforms = nn.Parameter(torch.empty(len(self.chain) - 1, n_sides, d, d))
        for k in range(len(self.chain) - 1):
            for side in range(n_sides):
                init_embedding(self.transforms.data[k, side], config.init, config.init_std)

    # ------------------------------------------------------------------ propagation
    def _transform(self, k: int, x: Tensor, out: Tensor) -> Tensor:
        """Layer-0 embeddings of behavior k+1: behavior k's output times W_k (§3.2)."""
        w = self.transforms[k]
        users, items = self.split(out)
        return torch.cat([users @ w[0], items @ w[-1]], dim=0)

    def encode(self) -> tuple[list[Tensor], list[Tensor]]:
        """``([e_b⁽⁰⁾], [e_b])``: every block's layer-0 input and output, node tables
        ``[n_users + n_items, d]`` in chain order."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=0)  # §3.1
        return self.cascade(ego, self._transform)

    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """e = Σ_b e_b over the chain's blocks (§3.3), as user and item tables."""
        _, outputs = self.encode()
        return self.split(torch.stack(outputs).sum(0))

    # ------------------------------------------------------------------ training
    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        users, items = self.final_embeddings()  # one cascade per batch
        # ŷ_ui = e_uᵀ e_i (§3.3); L2 on the batch's free embeddings (and the W_b, as the code)
        extra = [self.transforms] if self.config.reg_transforms else []
        tables = (self.user_emb, self.item_emb)
        return bpr_terms(tables, users, items, batch, self.config.reg, *extra)


__all__ = ["MBCGCN", "MBCGCNConfig"]
