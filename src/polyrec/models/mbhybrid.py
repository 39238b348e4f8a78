"""MB-Hybrid: polyrec's multi-behavior model — the user's own auxiliary history, item
neighbourhoods reached through every behavior, and a graph embedding over all behaviors, weighed
against each other end to end on the target behavior."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.graphs import normalized_bipartite_adjacency
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.models._common import (
    BPRScorer,
    GraphScorer,
    Init,
    conversion_rate,
    csr_rows,
    deepcopy_sharing_sparse,
    embedding_tables,
)
from polyrec.models.base import ModelConfig, make_optimizer
from polyrec.models.itemknn import MULTI_BEHAVIOR_KNN, knn_similarity
from polyrec.models.propagation import propagate

PositiveHistory = Literal["auto", "keep", "drop"]


class MBHybridConfig(ModelConfig):
    """Settings of :class:`MBHybrid` (polyrec's own model: every default is a choice, each part
    can be switched off for the ablation in ``benchmarks/multibehavior.py``)."""

    dim: int = Field(64, ge=1)
    """Embedding size d of the graph term (LightGCN's 64)."""
    n_layers: int = Field(2, ge=0)
    """Propagation layers of the graph term over every behavior merged (0: MF)."""
    reg: float = Field(1e-4, ge=0.0)
    """λ of the L2 penalty on the batch's ego embeddings and item biases (LightGCN's 1e-4)."""
    init: Init = "xavier"
    """Embedding init (as LightGCN)."""
    init_std: float = Field(0.1, gt=0.0)
    """Standard deviation of the 'normal' init."""
    graph: bool = False
    """The collaborative term e_u·e_i. Off by default: on Retailrocket (lr 1e-3 to 5e-3) and
    JData it overfits within a few epochs and lowers validation NDCG@10 (the ``graph`` row of
    the ablation in ``multibehavior.md``); on it adds LightGCN over every behavior merged."""
    neighbours: bool = True
    """The neighbourhood terms Σ_b β_b (R_b S)_ui (False: the ablation without them)."""
    history: bool = True
    """The own-history terms Σ_{b≠target} γ_b R_b[u, i] (False: the ablation without them)."""
    item_bias: bool = False
    """A learned per-item score bias (how often the item converts, whoever the user); off by
    default (measured with ``graph``, the same ablation row)."""
    knn_k: int = Field(int(MULTI_BEHAVIOR_KNN["k"]), ge=1)
    """Neighbours kept per item in S. The four ``knn_*`` defaults are
    :data:`~polyrec.models.itemknn.MULTI_BEHAVIOR_KNN`: the values of ItemKNN that held on the
    validation of every multi-behavior dataset without tuning there (90-98 % of ItemKNN tuned
    per dataset, ``knn-defaults.md``). The benchmark tables pass ItemKNN's values tuned on each
    dataset's validation (``polyrec tune``); do the same on your data for the last few %."""
    knn_shrink: float = Field(MULTI_BEHAVIOR_KNN["shrink"], ge=0.0)
    """Shrink term of the cosine in S (damps neighbours supported by few users)."""
    knn_alpha: float = Field(MULTI_BEHAVIOR_KNN["alpha"], ge=0.0, le=1.0)
    """Asymmetric-cosine exponent of S (ItemKNN's α; 0.5 is the cosine, below it a popular
    neighbour weighs less)."""
    knn_other_weight: float = Field(MULTI_BEHAVIOR_KNN["other_weight"], ge=0.0)
    """Weight of the auxiliary behaviors in the matrix S is computed on (0: co-purchases only;
    every behavior also reaches S through its own β_b)."""
    loss: Literal["bpr", "softmax", "full"] = "softmax"
    """'bpr' (one uniform negative per purchase), 'softmax' (each purchase against
    ``negatives`` uniform items shared by the batch, :func:`polyrec.losses.
    softmax_over_candidates`): many negatives per step teach the fine order among the items a
    user's neighbourhood and history put near the top, which one easy negative does not; or
    'full' (each purchase against every item the user has not bought in training: the exact
    cross-entropy of the full ranking that is evaluated, so the user's own viewed, carted and
    neighbouring items, which uniform draws almost never reach, are the negatives that count).
    'full' forms a dense ``[batch, n_items]`` score block per step (memory: batch × items ×
    ~16 bytes) and does not combine with ``propensity`` or ``user_context``. Measured on MBA's
    splits (seed 2020, batch 1024, exploratory runs stopped once validation had flattened, not
    a committed benchmark), it ranks as the sampled softmax does at many times its cost:
    Retailrocket best validation Recall@20 0.6849 (epoch 69 of 78) against 0.6841, 23 s per
    epoch against 1.6; Tmall 0.2541 (epoch 2 of 10) against 0.2541, 130 s against 40. The
    features, not the loss, bound the model."""
    negatives: int = Field(256, ge=1)
    """Shared uniform negatives per batch of the 'softmax' loss."""
    weight_lr_scale: float = Field(1.0, gt=0.0)
    """The term weights β, γ learn at ``train.lr × weight_lr_scale``. 1 by default: without the
    graph term everything learns at one rate (``train.lr`` 5e-3 by default for this model). With
    ``graph`` on, 10 at LightGCN's lr 1e-3 lets the handful of scalars settle within the first
    epochs while the embeddings keep their slow rate (at one shared rate either the embeddings
    overfit within 3 epochs or the weights barely move)."""
    positive_history: PositiveHistory = "auto"
    """Whether a training purchase keeps its own auxiliary rows in the history features: 'keep'
    (the held-out purchases of the split kept theirs: hide = 'target'), 'drop' (they did not:
    hide = 'all', so the model must learn how a never-touched item converts), 'auto' (follow the
    split: 'drop' when the training data says its held-out pairs were removed from every
    behavior, else 'keep'). Training targets thus mirror the evaluated ones."""
    history_counts: bool = False
    """Add, per auxiliary behavior b, the feature ln(1 + n_b(u, i)) with n_b the user's number of
    b-rows with the item (repeat views say more than one view)."""
    conversion: bool | Literal["auto"] = "auto"
    """Add, per auxiliary behavior b, the feature R_b[u, i] · c_b(i): the item's smoothed rate of
    b → target conversion, c_b(i) = (buyers_b(i) + α·prior_b) / (users_b(i) + α), counted over
    distinct training users (the ``history`` baseline's rate, per behavior). A training
    purchase's own row is left out of its item's rate (leave-one-out), so that the rate a
    training pair sees is the one an unseen pair would see. 'auto' (default): on when training
    purchases keep their own history (``positive_history``), off when they do not — then no
    positive ever has the feature and its weight could only learn to push history down."""
    conversion_alpha: float = Field(10.0, ge=0.0)
    """Smoothing α of ``conversion`` and ``user_conversion`` (the ``history`` baseline's
    default)."""
    user_conversion: bool | Literal["auto"] = False
    """Add, per auxiliary behavior b, the feature R_b[u, i] · r_b(u): the *user's* smoothed
    rate of b → target conversion, r_b(u) = (k_b(u) + α·prior_b) / (n_b(u) + α), n_b(u) the
    user's distinct b-items in training and k_b(u) those of them the user bought there. It is
    the same for all of a user's b-items, so it moves the user's own items as a block against
    the neighbourhood items: a user who buys most of what they cart gets their cart first,
    one who views hundreds of items and buys few gets neighbours of their purchases first. A
    training purchase's own item is left out of k_b(u) (leave-one-out), as a held-out purchase
    is not among the user's training purchases. 'auto': as ``conversion`` (on where training
    purchases keep their own history).

    Off by default: the signal is real — on MBA's Retailrocket split (seed 2020) a test user's
    viewed, unbought items are held-out purchases 1.4 % of the time in the lowest quartile of
    r_view(u) and 7.2 % in the highest, while the item rate c_view(i) spreads only from 2.4 %
    to 3.2 % — yet the learned combination barely moves: validation Recall@20 0.6863 against
    0.6841 without (test NDCG@10 0.580 against 0.579; at lr 0.03 0.6864 against 0.6841); on
    MBA's Tmall 0.2542 against 0.2541 (exploratory runs, not a committed benchmark)."""
    history_score: bool = False
    """Add the ``history`` baseline's own score as one feature: the user's count of auxiliary
    rows with the item × the item's smoothed conversion rate over every behavior (leave-one-out
    for training purchases), so that the model can at least rank the user's own items as that
    rule does. Off by default: on MBA's Tmall split (seed 2020, where ``history`` is the
    strongest baseline) validation Recall@20 0.2540 against 0.2541 without (test NDCG@10 0.157
    against 0.155), an exploratory run, not a committed benchmark."""
    propensity: bool = False
    """Add a learned item-level conversion propensity per auxiliary behavior, Σ_b R_b[u, i]
    ρ_{b,i} (ρ starts at 0, L2-penalised like the embeddings): how much more than the behavior's
    own weight γ_b a touch of *this* item says about its purchase."""
    behavior_similarity: bool = True
    """Add, per auxiliary behavior b, the neighbourhood term β'_b (R_b S_b)_ui with S_b the
    top-``knn_k`` cosine of behavior b's own columns ("who viewed this also viewed"), β'_b
    learned from 0: the auxiliary behaviors' co-occurrences reach items that S (built on
    purchases) never links. On by default: +0.9 % mean validation NDCG@10 over five datasets
    and protocols, up to +44 % on test where held-out items were never touched (the
    ``no-cosim`` rows of ``multibehavior.md``)."""
    temporal: bool = False
    """Add, per auxiliary behavior b and half-life h, two features of the user's latest b-row
    with the item, counted in positions of the user's time-ordered training rows (units-free:
    timestamps of different logs have different units):

    * recency R_b[u, i] · 0.5^(a / h), a = the user's rows after it (``recency_half_lives``);
    * purchase proximity R_b[u, i] · 0.5^(g / h), g = the rows between it and the nearest
      other target row of the user (``proximity_half_lives``): an item carted within a
      purchase session is bought far more often than one carted a week before any purchase.

    A training purchase sees both as an unseen purchase would: its own target rows do not
    count (neither among the rows after, nor as the nearest purchase). Logs without
    timestamps give no such features.

    Off by default. On MBA's Retailrocket split both signals are strong on their own (among
    carted, unbought items of a test user (seed 2020), 61 % of the most recently carted are held-out
    purchases against ~30 % of the others), yet with the other terms present the features lowered
    validation Recall@20 on both seeds tried (2020 / 2021, patience 30: 0.679 / 0.634 against
    0.684 / 0.639 without; with 8 ``history_negatives`` 0.681 / 0.637). Those were exploratory
    runs, not a committed benchmark."""
    recency_half_lives: list[float] = Field(default_factory=lambda: [2.0, 10.0])
    """Half-lives (positions) of the recency features of ``temporal``."""
    proximity_half_lives: list[float] = Field(default_factory=lambda: [1.0, 5.0])
    """Half-lives (positions) of the purchase-proximity features of ``temporal``."""
    user_context: bool = False
    """Weigh every term per user: each feature's weight becomes w_f + Σ_b V_fb z_b(u), with
    z_b(u) the standardised ln(1 + number of the user's items in behavior b) over every behavior
    (V learned from 0). A view says more from a user who viewed ten items than from one who
    viewed a thousand, and a heavy buyer's neighbourhood says more than a new user's; the
    scalar weights give every user the same trade-off. Off by default: on MBA's Retailrocket
    split it lowered validation Recall@20 on three seeds out of three (patience 30: 0.682 /
    0.638 / 0.660 against 0.684 / 0.639 / 0.664; exploratory runs, not a committed
    benchmark)."""
    loo_neighbours: bool = False
    """Compute a training purchase's neighbourhood features with S as it would be without that
    purchase (leave-one-out): S is built on the training purchases, so a training pair (u, i)
    reaches its own item through co-purchases that exist only because u bought i — an item
    bought by u alone is still u's neighbour of every other item u bought — while a held-out
    purchase has no such links. With this on, the pair's own entry of the matrix S is computed
    on is lowered to what an evaluated pair has (its auxiliary rows kept under hide = 'target',
    nothing under hide = 'all'; the auxiliary behaviors' own S_b likewise under hide = 'all')
    and S's entries towards i are recomputed from the co-occurrence counts and norms without
    it (the neighbour sets of S are kept), so that the weights are learned on the features an
    unseen purchase has.

    Off by default: measured, it lowers test NDCG@10 although it removes a real train/test
    mismatch — MBA's Retailrocket split, seeds 2020 / 2021 (patience 30): validation Recall@20
    0.688 / 0.630 against 0.684 / 0.639 without, test NDCG@10 0.567 / 0.553 against 0.579 /
    0.559; leave-one-out Retailrocket (hide = 'all', seed 2024, the model's defaults):
    validation NDCG@10 0.0234 against 0.0237, test 0.0368 against 0.0445 (exploratory runs, not
    a committed benchmark)."""
    interactions: bool = False
    """Add the products of the user's own history with the other terms: per auxiliary behavior
    b, R_b[u, i] times each neighbourhood feature ((R_b' S)_ui, (R_b' S_b')_ui), and
    R_b[u, i] R_b'[u, i] for each pair of auxiliary behaviors, each with its own learned
    weight. The linear terms give an item the user viewed the same neighbourhood weight as one
    the user never touched; with the products the neighbourhood can count for more (or less)
    on the user's own items, and a view and a cart of the same item can count for more than
    their sum. The products are as sparse as R_b, so scoring stays a sum of sparse rows.

    Off by default: on MBA's Retailrocket split (patience 30) validation Recall@20 0.691 /
    0.639 on seeds 2020 / 2021 against 0.684 / 0.639 without (test NDCG@10 0.587 / 0.560
    against 0.579 / 0.559): within the seeds' noise (exploratory runs, not a committed
    benchmark). With ``loo_neighbours`` the products keep the full neighbourhood values.

    Together with ``user_conversion``, ``history_counts`` and ``temporal`` (lr 3e-2) validation
    Recall@20 on MBA's Retailrocket split is higher on all three seeds (0.6704 against 0.6623
    mean; test NDCG@10 0.565 against 0.558: the ``MB-Hybrid (history detail)`` row of
    ``mba-reproduce.md``), on MBA's Tmall lower (seed 2020, exploratory, validation NDCG@10
    0.131 against 0.142 at epoch 5): off by default, a choice to make on your validation."""
    popularity: bool = False
    """Add the item's popularity as one feature with a learned weight: π_i = ln(1 + n_i) /
    ln(1 + max n), n_i the item's distinct training users over every behavior; a training
    purchase's own user is left out of its item's count (leave-one-out), as an evaluated pair
    has no such user. Items outside every neighbourhood and history otherwise all score 0.

    Off by default: on Retailrocket (leave-one-out, hide = 'all', 3 seeds, the
    ``popularity`` rows of ``multibehavior.md``) it lowers validation NDCG@10 under both
    protocols (full 0.0190 against 0.0245, sampled 1 + 99 0.149 against 0.157), so selection
    on validation keeps it off — although on the sampled test it lifts NDCG@10 from 0.157 to
    0.239 (popular negatives are rare among 99 uniform ones); full-ranking test 0.036 against
    0.044."""
    history_negatives: int = Field(0, ge=0)
    """Per purchase, this many items the user has in an auxiliary behavior but not in the
    target (drawn uniformly from those rows) join the softmax candidates: the uniform negatives
    almost never fall in a user's own history, so without them nothing teaches the order among
    the items the user already touched. 'softmax' loss only."""

    @model_validator(mode="after")
    def _history_negatives_need_softmax(self) -> MBHybridConfig:
        if self.history_negatives and self.loss != "softmax":
            raise ValueError("history_negatives needs loss = 'softmax'")
        if self.loss == "full" and (self.propensity or self.user_context):
            raise ValueError("loss = 'full' does not combine with propensity or user_context")
        return self


class MBHybrid(
    BPRScorer,
    GraphScorer,
    name="mbhybrid",
    paper="polyrec's multi-behavior model (own history + item neighbourhoods + graph; no paper)",
    Config=MBHybridConfig,
):
    """MB-Hybrid: the score of item i for user u is ::

        ŷ_ui = e_u·e_i                                    (graph term)
             + Σ_b β_b (R_b S)_ui                          (neighbourhood terms, every behavior)
             + Σ_{b ≠ target} β'_b (R_b S_b)_ui            (behavior_similarity)
             + Σ_{b ≠ target} γ_b R_b[u, i]                (own-history terms)
             + c_i                                         (item bias)

    * ``e_u, e_i``: LightGCN over every behavior merged (the strongest trained baseline on
      Retailrocket under full ranking is LightGCN on all behaviors).
    * ``S``: item × item (asymmetric, shrunk) cosine of the columns of the target behavior plus
      ``knn_other_weight`` × the auxiliary ones, top-``knn_k`` per item, diagonal 0
      (:func:`~polyrec.models.itemknn.knn_similarity`; defaults ``MULTI_BEHAVIOR_KNN``), fixed;
      ``R_b S`` carries the user's items of behavior b to their co-purchased neighbours (ItemKNN
      is the strongest baseline on JData). ``β_b`` is learned per behavior.
    * ``S_b``: the same cosine on auxiliary behavior b's own columns ("who viewed this also
      viewed"; ``behavior_similarity``, on by default): it reaches
      items that S, built on purchases, never links. ``β'_b`` learned from 0.
    * ``R_b[u, i]``: whether u viewed/carted/... i in training; ``γ_b`` learned per auxiliary
      behavior (the target's own rows are masked at evaluation, so they get no term).
    * ``c_i``: a learned item bias (popularity of conversion).
    * ``R_b[u, i] · c_b(i)``, the item's smoothed b → target conversion rate (``conversion``,
      on wherever training purchases keep their own history: hide = 'target', MBA's split),
      each with its own learned weight.
    * optional (measured, off in the shipped configs): ``ln(1 + n_b(u, i))``
      (``history_counts``); the ``history`` rule's own score n_ui · c_i (``history_score``);
      learned item-level propensities Σ_b R_b[u, i] ρ_{b,i} (``propensity``); hard negatives
      from the user's own untargeted history (``history_negatives``).

    Trained on the target behavior's training pairs with a softmax over shared uniform
    candidates (``loss``; or BPR); the L2 penalty covers the batch's ego embeddings, item biases
    and propensities. The neighbourhood and history features of the batch's pairs
    are looked up in precomputed sparse matrices (sorted keys + ``searchsorted``); scoring adds
    the learned combination of those matrices' rows to ``E_u E_iᵀ``.

    Training targets follow the split (``positive_history``): under hide = 'all' no held-out
    purchase has an auxiliary row, so a training purchase's own auxiliary rows are dropped from
    its history features (else the model learns that "viewed" means "will buy", which the
    evaluation never rewards).

    The sparse features and the graph are training data (non-persistent buffers): the model is
    not rebuildable from its weights alone.
    """

    config: MBHybridConfig
    # the rate the term weights were chosen at (configs/mbhybrid-retailrocket.toml), for a run
    # that names the model and nothing else (``polyrec train -m mbhybrid -d …``)
    run_defaults: ClassVar[dict[str, Any]] = {"train.lr": 0.005}
    adj: Tensor
    context: Tensor
    loo: Tensor
    loo_user: Tensor
    score_keep: Tensor
    hn_crow: Tensor
    hn_col: Tensor
    pop: Tensor
    pop_loo: Tensor
    features: nn.ModuleList  # of _Feature

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        assert data is not None  # not rebuildable: setup() always passes the data
        config = self.config
        self.train_behavior = schema.target
        self.aux = [b for b in schema.behaviors if b != schema.target]
        self.user_emb, self.item_emb = embedding_tables(schema, config)
        self.bias = nn.Parameter(torch.zeros(schema.n_items))
        # β_b: the target's neighbours start at 1, the others at 0.1; γ_b at 0 (learned)
        beta = [1.0 if b == schema.target else 0.1 for b in schema.behaviors]
        if config.neighbours and config.behavior_similarity:
            beta += [0.0] * (len(schema.behaviors) - 1)  # β'_b of the R_b S_b terms
        self.beta = nn.Parameter(torch.tensor(beta))
        mode = config.positive_history
        self.drop_positive = mode == "drop" or (mode == "auto" and data.hide == "all")
        self.conversion = (
            not self.drop_positive if config.conversion == "auto" else config.conversion
        )
        self.user_conversion = (
            not self.drop_positive if config.user_conversion == "auto" else config.user_conversion
        )
        self.features, loo, score_keep, loo_user = _features(
            data, schema, config, self.conversion, self.user_conversion
        )
        # leave-one-out neighbourhood features of the training purchases (``loo_neighbours``)
        loo_nb = (
            _loo_neighbourhood_features(data, schema, config, self.drop_positive)
            if config.neighbours and config.loo_neighbours
            else []
        )
        self._loo_cols = [col for col, _ in loo_nb]
        self.loo_features = nn.ModuleList([f for _, f in loo_nb])
        temporal = (
            _temporal_features(data, schema, config) if config.history and config.temporal else []
        )
        self.features.extend(temporal)
        n_aux = len(self.aux)
        n_neighbourhood = (
            len(schema.behaviors) + n_aux * config.behavior_similarity if config.neighbours else 0
        )
        inter = (
            _interaction_features(self._feats(), n_neighbourhood, n_aux, self.n_items)
            if config.history and config.interactions
            else []
        )
        self.features.extend(inter)
        self.n_history = (
            n_aux * (1 + config.history_counts + self.conversion + self.user_conversion)
            + config.history_score
            + len(temporal)
            + len(inter)
            if config.history
            else 0
        )
        # positions of the history columns in a feature row (neighbourhood columns first,
        # then R_b, ln(1 + n_b), R_b c_b, the history score, the temporal features, the
        # interactions)
        self._hist_at = len(self.features) - self.n_history
        conv_at = self._hist_at + n_aux * (1 + config.history_counts)
        self._conv_at = conv_at if self.conversion and config.history else None
        uconv_at = conv_at + n_aux * self.conversion
        self._uconv_at = uconv_at if self.user_conversion and config.history else None
        score_at = uconv_at + n_aux * self.user_conversion
        self._score_at = score_at if config.history_score and config.history else None
        self.gamma = nn.Parameter(torch.zeros(max(self.n_history, 1)))
        # ρ_{b,i}: learned per-item propensities of the auxiliary behaviors (``propensity``)
        n_rho = len(self.aux) if config.propensity and self.n_history else 0
        self.rho = nn.Parameter(torch.zeros(n_rho, schema.n_items))
        # z_b(u) and V of ``user_context`` (V is [0, 0] when off)
        n_w = len(self.weights())
        self.context_weight = nn.Parameter(
            torch.zeros((n_w, len(schema.behaviors)) if config.user_context else (0, 0))
        )
        context = _user_context(data, schema) if config.user_context else torch.zeros(0, 0)
        self.register_buffer("context", context, persistent=False)
        adj = normalized_bipartite_adjacency(data.csr(None))
        self.register_buffer("adj", adj, persistent=False)
        # per auxiliary behavior: what a purchase's own row adds to its item's conversion rate
        self.register_buffer("loo", loo, persistent=False)
        # per auxiliary behavior: what a purchase adds to its user's conversion rate
        self.register_buffer("loo_user", loo_user, persistent=False)
        self.register_buffer("score_keep", score_keep, persistent=False)
        # π_i and π_i without one user (``popularity``), and its weight
        n_i = np.asarray((data.csr(None) > 0).sum(axis=0), dtype=np.float64).ravel()
        scale = np.log1p(n_i.max()) if len(n_i) and n_i.max() > 0 else 1.0
        pop = torch.from_numpy(np.log1p(n_i) / scale).float()
        pop_loo = torch.from_numpy(np.log1p(np.maximum(n_i - 1.0, 0.0)) / scale).float()
        self.register_buffer("pop", pop, persistent=False)
        self.register_buffer("pop_loo", pop_loo, persistent=False)
        self.pop_weight = nn.Parameter(torch.zeros(1 if config.popularity else 0))
        # the training purchases: left out of the denominator of the 'full' loss, as they are
        # masked when the full ranking is evaluated
        self.bought = _Feature(data.csr(schema.target) if config.loss == "full" else
                               sp.csr_matrix((schema.n_users, schema.n_items)))  # fmt: skip
        crow, col = _untargeted_history(data, schema)
        self.register_buffer("hn_crow", crow, persistent=False)
        self.register_buffer("hn_col", col, persistent=False)
        self._ddp_params_and_buffers_to_ignore = [
            "adj", "loo", "loo_user", "score_keep", "hn_crow", "hn_col", "context", "pop", "pop_loo",
        ]  # fmt: skip

    # ------------------------------------------------------------------ terms
    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """The graph term's embeddings: LightGCN over every behavior merged."""
        ego = torch.cat([self.user_emb.weight, self.item_emb.weight], dim=0)
        if not self.config.graph:
            zeros = torch.zeros_like(ego)
            return zeros[: self.n_users], zeros[self.n_users :]
        k = self.config.n_layers
        final = propagate(self.adj, ego, [1.0 / (k + 1)] * (k + 1), symmetric=True)
        users, items = torch.split(final, [self.n_users, self.n_items], dim=0)
        return users, items

    def weights(self) -> Tensor:
        """The learned weight of each feature matrix (neighbour terms, then history terms)."""
        parts: list[Tensor] = []
        if self.config.neighbours:
            parts.append(self.beta)
        if self.n_history:
            parts.append(self.gamma[: self.n_history])
        return torch.cat(parts) if parts else self.beta[:0]

    def user_weights(self, users: Tensor) -> Tensor:
        """``[len(users), n_features]``: each feature's weight for each user, w_f + Σ_b V_fb
        z_b(u) (``user_context``; else w_f for every user)."""
        w = self.weights()
        if not self.config.user_context:
            return w.expand(len(users), -1)
        return w + self.context[users] @ self.context_weight.T

    def pair_features(self, users: Tensor, items: Tensor) -> Tensor:
        """``[len(users), n_features]``: each feature matrix's value at the pairs."""
        cols = [f.lookup(users, items, self.n_items) for f in self._feats()]
        return torch.stack(cols, dim=1) if cols else users.new_zeros((len(users), 0)).float()

    # ------------------------------------------------------------------ training
    def pair_scores(self, users: Tensor, items: Tensor, eu: Tensor, ei: Tensor) -> Tensor:
        """ŷ of the pairs (users[k], items[k]) given their graph embeddings ``eu``, ``ei``."""
        feats = self.pair_features(users, items)
        return (eu * ei).sum(-1) + self.feature_scores(users, items, feats)

    def feature_scores(
        self, users: Tensor, items: Tensor, feats: Tensor, positive: bool = False
    ) -> Tensor:
        """Every term but the graph one, for pairs whose feature rows are ``feats``: the
        weighted features, the item bias c_i, the popularity term (for ``positive`` training
        purchases without their own user) and the propensities Σ_b R_b[u, i] ρ_{b,i}."""
        if self.config.user_context:
            out = (feats * self.user_weights(users)).sum(1)
        else:
            out = feats @ self.weights()
        if self.config.item_bias:
            out = out + self.bias[items]
        if len(self.pop_weight):
            out = out + self.pop_weight * (self.pop_loo if positive else self.pop)[items]
        if len(self.rho):
            had = feats[:, self._hist_at : self._hist_at + len(self.aux)]  # R_b[u, i]
            out = out + (had * self.rho[:, items].T).sum(1)
        return out

    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        users, items = self.final_embeddings()
        u, p = batch.user, batch.pos
        eu = users[u]
        pos = (eu * items[p]).sum(-1) + self.feature_scores(
            u, p, self.positive_features(u, p), positive=True
        )
        if self.config.loss == "bpr":
            neg_items = batch.neg
            neg = self.pair_scores(u, neg_items, eu, items[neg_items])
            main = {"bpr": losses.bpr(pos, neg)}
        elif self.config.loss == "full":
            # every item is a candidate: the batch's dense score rows, the user's training
            # purchases (the positive among them) out of the denominator
            neg = self.dense_scores(u, eu, items)
            main = {"softmax": losses.softmax_over_candidates(pos, neg, self.bought.mask(u, neg))}
            neg_items = p[:0]  # every item's embedding is penalised through its batch users
        else:
            # S uniform items shared by the batch (the global RNG, seeded by the trainer)
            s = self.config.negatives
            neg_items = torch.randint(self.n_items, (s,), device=p.device)
            b = len(u)
            uu, ii = u.repeat_interleave(s), neg_items.repeat(b)
            neg = eu @ items[neg_items].T + self.feature_scores(
                uu, ii, self.pair_features(uu, ii)
            ).view(b, s)
            accidental = neg_items.unsqueeze(0) == p.unsqueeze(1)
            if self.config.history_negatives:
                hard, none = self.history_negatives(u, self.config.history_negatives)
                hu = u.repeat_interleave(hard.shape[1])
                hard_scores = self.pair_scores(
                    hu, hard.reshape(-1), eu.repeat_interleave(hard.shape[1], 0),
                    items[hard.reshape(-1)],
                ).view(hard.shape)  # fmt: skip
                neg = torch.cat([neg, hard_scores], dim=1)
                accidental = torch.cat([accidental, none], dim=1)
                neg_items = torch.cat([neg_items, hard.reshape(-1)])
            main = {"softmax": losses.softmax_over_candidates(pos, neg, accidental)}
        reg = losses.l2_reg(
            self.user_emb(u),
            self.item_emb(p),
            self.item_emb(neg_items),
            self.bias[p].unsqueeze(1),
            self.bias[neg_items].unsqueeze(1),
            self.rho[:, p].T,
            self.rho[:, neg_items].T,
            batch_size=len(u),
        )
        return {**main, "reg": self.config.reg * reg}

    def positive_features(self, users: Tensor, items: Tensor) -> Tensor:
        """The features of training purchases as an unseen purchase would have them: under
        hide = 'all' without their own auxiliary rows (``positive_history``); with
        ``conversion``, each item's rate without this purchase (leave-one-out)."""
        f = self.pair_features(users, items)
        for col, feat in zip(self._loo_cols, self.loo_features, strict=True):
            if isinstance(feat, _Feature):
                f[:, col] = feat.lookup(users, items, self.n_items)
        n_aux = len(self.aux)
        if not self.n_history:
            return f
        if self.drop_positive:
            f[:, self._hist_at :] = 0.0  # the purchase's own auxiliary rows: not seen
            return f
        had = f[:, self._hist_at : self._hist_at + n_aux]  # R_b[u, i] ∈ {0, 1}
        if self._conv_at is not None:  # its own purchase out of its item's rates
            f[:, self._conv_at : self._conv_at + n_aux] -= had * self.loo[:, items].T
        if self._uconv_at is not None:  # and out of its user's rates
            f[:, self._uconv_at : self._uconv_at + n_aux] -= had * self.loo_user[:, users].T
        if self._score_at is not None:  # n · c_i → n · c_i without this purchase
            f[:, self._score_at] *= self.score_keep[items]
        return f

    def dense_scores(self, users: Tensor, eu: Tensor, items: Tensor) -> Tensor:
        """``[len(users), n_items]``: every item's score for the batch users, differentiable in
        the embeddings, the term weights, the item bias and the popularity weight (what
        :meth:`scores` gives without gradients; ``loss = 'full'``)."""
        out = eu @ items.T if self.config.graph else eu.new_zeros((len(users), self.n_items))
        w = self.weights()
        if len(w):
            out = out + _WeightedRows.apply(w, users, self._feats(), self.n_items)
        if self.config.item_bias:
            out = out + self.bias
        if len(self.pop_weight):
            out = out + self.pop_weight * self.pop
        return out

    def history_negatives(self, users: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """``[len(users), n]`` items drawn uniformly from each user's auxiliary rows that are not
        training purchases, and a mask of the draws that do not exist (users without such rows:
        the item is a placeholder 0)."""
        start = self.hn_crow[users]
        count = self.hn_crow[users + 1] - start
        pick = (torch.rand(len(users), n, device=users.device) * count.unsqueeze(1)).long()
        none = (count == 0).unsqueeze(1).expand(-1, n)
        idx = (start.unsqueeze(1) + pick).clamp(max=max(len(self.hn_col) - 1, 0))
        items = self.hn_col[idx] if len(self.hn_col) else torch.zeros_like(idx)
        return items.masked_fill(none, 0), none

    # ------------------------------------------------------------------ scoring
    def scores(self, users: Tensor) -> Tensor:
        """``E_u E_iᵀ + Σ_f w_f F_f[users] + c``: ``[len(users), n_items]`` (a fresh tensor).
        The sparse terms are added entry by entry (no dense copy of a feature matrix); without
        the graph term no embedding product is formed."""
        u_all, i_all = GraphScorer.user_item_embeddings(self)  # the cached graph term
        users = users.to(u_all.device)
        if self.config.graph:
            out = u_all[users] @ i_all.T
        else:
            out = u_all.new_zeros((len(users), self.n_items))
        if self.config.user_context:
            uw = self.user_weights(users).detach()
            for k, f in enumerate(self._feats()):
                f.add_rows(out, users, 1.0, row_scale=uw[:, k])
        else:
            _add_weighted(out, users, self.weights().detach(), self._feats())
        if self.config.item_bias:
            out += self.bias.detach()
        if len(self.pop_weight):
            out += self.pop_weight.detach() * self.pop
        if len(self.rho):  # Σ_b R_b[u, i] ρ_{b,i}: the binary history features, item-weighted
            feats = self._feats()
            for k in range(len(self.aux)):
                feats[self._hist_at + k].add_rows(out, users, 1.0, self.rho[k].detach())
        return out

    def make_optimisers(
        self, lr: float, weight_decay: float, optimizer: str
    ) -> list[torch.optim.Optimizer]:
        """One optimiser, two groups: the embeddings and item biases at ``lr``, the term weights
        β, γ at ``lr × weight_lr_scale``."""
        scalars = [self.beta, self.gamma, self.context_weight, self.pop_weight]
        rest = [
            p for p in self.parameters() if p.requires_grad and all(p is not q for q in scalars)
        ]
        groups = [{"params": rest}, {"params": scalars, "lr": lr * self.config.weight_lr_scale}]
        return [make_optimizer(groups, optimizer, lr, weight_decay)]

    def user_item_embeddings(self) -> None:  # type: ignore[override]
        """None: the scores are not an inner product of embeddings (export serves scores)."""
        return None

    def _feats(self) -> list[_Feature]:
        return [f for f in self.features if isinstance(f, _Feature)]

    def __deepcopy__(self, memo: dict[int, Any]) -> MBHybrid:
        return deepcopy_sharing_sparse(self, memo)


class _Feature(nn.Module):
    """A users × items sparse feature matrix kept as CSR buffers and as sorted pair keys."""

    crow: Tensor
    col: Tensor
    val: Tensor
    key: Tensor

    def __init__(self, m: sp.csr_matrix) -> None:
        super().__init__()
        m = sp.csr_matrix(m, dtype=np.float32)
        m.eliminate_zeros()
        m.sort_indices()
        crow = torch.from_numpy(m.indptr.astype(np.int64))
        col = torch.from_numpy(m.indices.astype(np.int64))
        rows = torch.repeat_interleave(torch.arange(m.shape[0]), crow.diff())
        self.register_buffer("crow", crow, persistent=False)
        self.register_buffer("col", col, persistent=False)
        self.register_buffer("val", torch.from_numpy(m.data), persistent=False)
        # row-major CSR with sorted columns: the keys row·n_cols + col are sorted
        self.register_buffer("key", rows * m.shape[1] + col, persistent=False)

    def lookup(self, users: Tensor, items: Tensor, n_items: int) -> Tensor:
        """The values at the pairs (0 where the matrix has none)."""
        if len(self.key) == 0:
            return torch.zeros(len(users), device=self.val.device)
        q = users.to(self.key.device) * n_items + items.to(self.key.device)
        pos = torch.searchsorted(self.key, q).clamp(max=len(self.key) - 1)
        return torch.where(self.key[pos] == q, self.val[pos], torch.zeros_like(self.val[pos]))

    def matrix(self, n_items: int) -> sp.csr_matrix:
        """The matrix again as scipy CSR (users × ``n_items``)."""
        n_users = len(self.crow) - 1
        return sp.csr_matrix(
            (self.val.numpy(), self.col.numpy(), self.crow.numpy()), shape=(n_users, n_items)
        )

    def rows(self, users: Tensor, n_items: int) -> Tensor:
        return csr_rows(self.crow, self.col, self.val, users, n_items)

    def entries(self, users: Tensor, n_items: int) -> tuple[Tensor, Tensor]:
        """The stored entries of ``M[users]``: their flat positions in a ``[len(users),
        n_items]`` block and their values."""
        part = self.rows(users, n_items)
        crow = part.crow_indices()
        rows = torch.repeat_interleave(torch.arange(len(users), device=crow.device), crow.diff())
        return rows * n_items + part.col_indices(), part.values()

    def mask(self, users: Tensor, like: Tensor) -> Tensor:
        """A bool block shaped ``like`` (``[len(users), n_items]``), True at M's entries."""
        flat, _ = self.entries(users, like.shape[1])
        out = torch.zeros(like.numel(), dtype=torch.bool, device=like.device)
        out[flat] = True
        return out.view_as(like)

    def add_rows(
        self,
        out: Tensor,
        users: Tensor,
        weight: float,
        col_scale: Tensor | None = None,
        row_scale: Tensor | None = None,
    ) -> None:
        """``out += weight · M[users]`` (each entry of column j also times ``col_scale[j]``,
        of batch row r times ``row_scale[r]``) in place, touching only the stored entries."""
        n = out.shape[1]
        flat, vals = self.entries(users, n)
        if col_scale is not None:
            vals = vals * col_scale[flat % n]
        if row_scale is not None:
            vals = vals * row_scale[flat // n]
        out.view(-1).index_add_(0, flat, vals, alpha=weight)


def _add_weighted(out: Tensor, users: Tensor, w: Tensor, feats: list[_Feature]) -> None:
    """``out += Σ_f w_f F_f[users]`` in place (features with weight 0 skipped)."""
    for weight, f in zip(w.tolist(), feats, strict=True):
        if weight:
            f.add_rows(out, users, weight)


class _WeightedRows(torch.autograd.Function):
    """``Σ_f w_f F_f[users]`` as a dense block, differentiable in ``w``: the backward pass reads
    each feature's stored entries again (∂L/∂w_f = Σ_entries v · ∂L/∂out at them) instead of
    keeping a dense copy of every feature."""

    @staticmethod
    def forward(ctx: Any, w: Tensor, users: Tensor, feats: list[_Feature], n_items: int) -> Tensor:
        out = torch.zeros(len(users), n_items, device=w.device)
        _add_weighted(out, users, w, feats)
        ctx.save_for_backward(users)
        ctx.feats, ctx.n_items = feats, n_items
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        (users,) = ctx.saved_tensors
        g = grad.reshape(-1)
        parts = []
        for f in ctx.feats:
            flat, vals = f.entries(users, ctx.n_items)
            parts.append((vals * g[flat]).sum())
        return torch.stack(parts), None, None, None


def _features(
    data: TrainData,
    schema: DataSchema,
    config: MBHybridConfig,
    conversion: bool,
    user_conversion: bool = False,
) -> tuple[nn.ModuleList, Tensor, Tensor, Tensor]:
    """The feature matrices in :meth:`MBHybrid.weights` order: ``R_b S`` per behavior, then the
    auxiliary behaviors' ``R_b``, ``ln(1 + n_b)``, ``R_b · c_b``, ``R_b · r_b(u)`` and the
    history score ``n · c``; ``[n_aux, n_items]`` the leave-one-out correction of ``c_b``, ``1
    / (users_b(i) + α)``; ``[n_items]`` the factor that takes a buyer out of the history
    score's rate; ``[n_aux, n_users]`` the leave-one-out correction of ``r_b``, ``1 / (n_b(u)
    + α)``."""
    feats = []
    aux = [b for b in schema.behaviors if b != schema.target]
    loo = torch.zeros(len(aux), schema.n_items)
    loo_user = torch.zeros(len(aux), schema.n_users)
    score_keep = torch.ones(schema.n_items)
    if config.neighbours:
        x = _similarity_input(data, schema, config)
        s = knn_similarity(x, config.knn_k, config.knn_shrink, config.knn_alpha)
        feats += [_Feature(data.csr(b).astype(np.float64) @ s) for b in schema.behaviors]
        if config.behavior_similarity:
            for b in aux:
                r_b = data.csr(b).astype(np.float64)
                s_b = knn_similarity(r_b, config.knn_k, config.knn_shrink, config.knn_alpha)
                feats.append(_Feature(r_b @ s_b))
    if config.history:
        feats += [_Feature(data.csr(b)) for b in aux]
        if config.history_counts:
            feats += [_Feature(_log_counts(data, schema.behaviors.index(b))) for b in aux]
        if conversion:
            bought = data.csr(schema.target)
            for k, b in enumerate(aux):
                r_b = data.csr(b)
                rate, loo_b = conversion_rate(
                    r_b.multiply(bought).sum(axis=0), r_b.sum(axis=0), config.conversion_alpha
                )
                feats.append(_Feature(r_b @ sp.diags(rate)))
                loo[k] = torch.from_numpy(loo_b)
        if user_conversion:
            bought = data.csr(schema.target) > 0
            for k, b in enumerate(aux):
                r_b = sp.csr_matrix(data.csr(b) > 0, dtype=np.float64)
                rate, loo_b = conversion_rate(
                    r_b.multiply(bought).sum(axis=1), r_b.sum(axis=1), config.conversion_alpha
                )
                feats.append(_Feature(sp.diags(rate) @ r_b))
                loo_user[k] = torch.from_numpy(loo_b)
        if config.history_score:
            n = sp.csr_matrix(data.csr(schema.target).shape, dtype=np.float64)
            for b in aux:  # the user's auxiliary rows with the item
                n = n + _counts(data, schema.behaviors.index(b))
            rate, one = conversion_rate(
                data.csr(schema.target).sum(axis=0), data.csr(None).sum(axis=0),
                config.conversion_alpha,
            )  # fmt: skip
            feats.append(_Feature(sp.csr_matrix(n) @ sp.diags(rate)))
            keep = np.divide(rate - one, rate, out=np.ones_like(rate), where=rate > 0)
            score_keep = torch.from_numpy(np.clip(keep, 0.0, 1.0).astype(np.float32))
    return nn.ModuleList(feats), loo, score_keep, loo_user


def _similarity_input(data: TrainData, schema: DataSchema, config: MBHybridConfig) -> sp.csr_matrix:
    """The users × items matrix S is computed on: the target behavior plus
    ``knn_other_weight`` × each auxiliary one."""
    x = data.csr(schema.target).astype(np.float64)
    if config.knn_other_weight:
        for b in schema.behaviors:
            if b != schema.target:
                x = x + config.knn_other_weight * data.csr(b).astype(np.float64)
    return sp.csr_matrix(x)


def _loo_neighbourhood_features(
    data: TrainData, schema: DataSchema, config: MBHybridConfig, drop: bool
) -> list[tuple[int, _Feature]]:
    """``(column, matrix)`` per neighbourhood feature that differs for the training purchases
    without their own entry (``loo_neighbours``): ``R_b S`` for every behavior b (the pair's
    entry of X lowered by its target part, or by all of it under hide = 'all', ``drop``), and
    under ``drop`` also ``R_b S_b`` per auxiliary b. Each matrix holds values at the training
    purchases only."""
    target = data.csr(schema.target)
    tc = target.tocoo()
    users, items = tc.row.astype(np.int64), tc.col.astype(np.int64)
    shape = target.shape
    knn = (config.knn_k, config.knn_shrink, config.knn_alpha)
    x = _similarity_input(data, schema, config)
    s = knn_similarity(x, *knn)
    x_ut = _values_at(x, users, items)
    delta = x_ut if drop else np.ones(len(users))
    out = []
    for col, b in enumerate(schema.behaviors):
        r_b = data.csr(b).astype(np.float64)
        vals = leave_out_knn_scores(x, s, r_b, users, items, delta, config.knn_shrink,
                                    config.knn_alpha)  # fmt: skip
        out.append((col, _Feature(sp.csr_matrix((vals, (users, items)), shape=shape))))
    if drop and config.behavior_similarity:
        col = len(schema.behaviors)
        for b in schema.behaviors:
            if b == schema.target:
                continue
            r_b = data.csr(b).astype(np.float64)
            s_b = knn_similarity(r_b, *knn)
            d_b = _values_at(r_b, users, items)
            vals = leave_out_knn_scores(r_b, s_b, r_b, users, items, d_b, config.knn_shrink,
                                        config.knn_alpha)  # fmt: skip
            out.append((col, _Feature(sp.csr_matrix((vals, (users, items)), shape=shape))))
            col += 1
    return out


def _values_at(m: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``m[rows[p], cols[p]]`` for every p (0 where m stores nothing), vectorised."""
    m = sp.csr_matrix(m)
    m.sum_duplicates()
    m.sort_indices()
    n_cols = m.shape[1]
    key = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr)) * n_cols
    key += m.indices
    q = np.asarray(rows, np.int64) * n_cols + np.asarray(cols, np.int64)
    pos = np.minimum(np.searchsorted(key, q), max(len(key) - 1, 0))
    if len(key) == 0:
        return np.zeros(len(q))
    return np.where(key[pos] == q, m.data[pos], 0.0)


def leave_out_knn_scores(
    x: sp.csr_matrix,
    s: sp.csr_matrix,
    r: sp.csr_matrix,
    users: np.ndarray,
    items: np.ndarray,
    delta: np.ndarray,
    shrink: float,
    alpha: float,
    chunk: int = 1 << 22,
) -> np.ndarray:
    """``(r S⁻)[users[p], items[p]]`` for every pair p, with S⁻ the similarity of
    :func:`~polyrec.models.itemknn.knn_similarity` recomputed with x's entry at the pair lowered
    by ``delta[p]``: for each neighbour i of the pair's item t, the co-occurrence
    ``C_it = S_it ((‖x_t‖²)^α (‖x_i‖²)^(1−α) + shrink)`` loses ``x_ui δ`` and ``‖x_t‖²`` becomes
    ``‖x_t‖² − x_ut² + (x_ut − δ)²``. The neighbour sets of S are kept (no new top-k). Pairs are
    expanded over their user's row of r in chunks of about ``chunk`` entries."""
    x = sp.csr_matrix(x, dtype=np.float64)
    sq = np.asarray(x.multiply(x).sum(axis=0)).ravel()
    r = sp.csr_matrix(r, dtype=np.float64)
    r.sort_indices()
    users = np.asarray(users, np.int64)
    items = np.asarray(items, np.int64)
    x_ut = _values_at(x, users, items)
    lengths = r.indptr[users + 1] - r.indptr[users]
    out = np.zeros(len(users))
    ends = np.cumsum(lengths)
    a = 0
    while a < len(users):
        b = int(np.searchsorted(ends, ends[a] - lengths[a] + chunk, side="right"))
        b = max(b, a + 1)
        n = lengths[a:b]
        p = np.repeat(np.arange(a, b), n)
        first = np.cumsum(n) - n
        pos = np.repeat(r.indptr[users[a:b]] - first, n) + np.arange(int(n.sum()))
        i, w = r.indices[pos].astype(np.int64), r.data[pos]
        t, u, d = items[p], users[p], delta[p]
        s_it = _values_at(s, i, t)
        x_ui = _values_at(x, u, i)
        old = sq[t] ** alpha * sq[i] ** (1.0 - alpha) + shrink
        c = s_it * old - x_ui * d
        sq_t = sq[t] - x_ut[p] ** 2 + (x_ut[p] - d) ** 2
        new = np.maximum(sq_t, 0.0) ** alpha * sq[i] ** (1.0 - alpha) + shrink
        ok = (s_it > 0) & (i != t) & (c > 1e-12) & (new > 0)
        sim = np.divide(c, new, out=np.zeros_like(c), where=ok)
        out[a:b] = np.bincount(p - a, weights=w * sim, minlength=b - a)
        a = b
    return out


def _counts(data: TrainData, code: int) -> sp.csr_matrix:
    """users × items n, the training rows of behavior ``code`` per (user, item)."""
    log = data.log
    rows = log.behavior == code
    m = sp.csr_matrix(
        (np.ones(int(rows.sum())), (log.user[rows], log.item[rows])),
        shape=(log.n_users, log.n_items),
    )
    m.sum_duplicates()
    return m


def _log_counts(data: TrainData, code: int) -> sp.csr_matrix:
    """users × items ``ln(1 + n)``, n the rows of behavior ``code`` per (user, item)."""
    m = _counts(data, code)
    m.data = np.log1p(m.data)
    return m


def _temporal_features(
    data: TrainData, schema: DataSchema, config: MBHybridConfig
) -> list[_Feature]:
    """The ``temporal`` feature matrices: per auxiliary behavior, the recency features (one per
    ``recency_half_lives``), then the purchase-proximity ones (one per
    ``proximity_half_lives``); none when the log has no timestamps.

    Positions: the user's training rows ordered by time (ties in log order). For the latest
    b-row of (u, i) at position p, a = the rows after p, and g = the rows between p and the
    nearest target row of u with another item, plus one; the target rows of (u, i) itself are
    not counted in either (leave-one-out: a training purchase looks like a held-out one)."""
    log = data.log
    if log.timestamp is None:
        return []
    order = np.lexsort((log.timestamp, log.user))  # stable: ties keep log order
    user, item, beh = log.user[order], log.item[order], log.behavior[order]
    n = len(user)
    at = np.arange(n, dtype=np.int64)  # global position: user-major, time within user
    last_of_user = np.zeros(log.n_users, dtype=np.int64)
    np.maximum.at(last_of_user, user, at)
    key = user.astype(np.int64) * log.n_items + item
    tgt = beh == log.target_code
    # target rows sorted by (key, position): the rows of a pair are one contiguous run
    t_at = at[tgt]
    by_key = np.lexsort((t_at, key[tgt]))
    t_key, t_key_at = key[tgt][by_key], t_at[by_key]
    t_user, t_item = user[tgt], item[tgt]  # target rows in position order (t_at ascending)
    feats: list[_Feature] = []
    for b in schema.behaviors:
        if b == schema.target:
            continue
        rows = np.flatnonzero(beh == schema.behaviors.index(b))
        # the latest row of each (user, item): the last of its key in position order
        _, last = np.unique(key[rows][::-1], return_index=True)
        rows = rows[len(rows) - 1 - last]
        p, k, u, i = at[rows], key[rows], user[rows], item[rows]
        lo, hi = np.searchsorted(t_key, k), np.searchsorted(t_key, k, side="right")
        # [rows, most own target rows]: the positions of the pair's own target rows, -1 padded
        slot = lo[:, None] + np.arange(int((hi - lo).max(initial=0)))
        own = np.where(slot < hi[:, None], t_key_at[np.minimum(slot, len(t_key_at) - 1)], -1)
        after = last_of_user[u] - p - (own > p[:, None]).sum(1)
        # the nearest target row of the user with another item, on either side
        gap = np.full(len(rows), np.inf)
        pos = np.searchsorted(t_at, p)
        width = own.shape[1] + 1
        for side in (-1, 1) if len(t_at) else ():
            found = np.zeros(len(rows), dtype=bool)
            for step in range(width):
                idx = pos - 1 - step if side < 0 else pos + step
                ok = (idx >= 0) & (idx < len(t_at)) & ~found
                idx = np.clip(idx, 0, len(t_at) - 1)
                ok &= (t_user[idx] == u) & (t_item[idx] != i)
                if not ok.any():
                    continue
                other = t_at[idx]
                near, far = np.minimum(p, other)[:, None], np.maximum(p, other)[:, None]
                between = ((own > near) & (own < far)).sum(1)  # own target rows in between
                gap = np.where(ok, np.minimum(gap, np.abs(other - p) - between), gap)
                found |= ok
        shape = (log.n_users, log.n_items)
        for dist, lives in ((after, config.recency_half_lives),
                            (gap, config.proximity_half_lives)):  # fmt: skip
            for h in lives:
                val = np.power(0.5, dist / h)
                feats.append(_Feature(sp.csr_matrix((val, (u, i)), shape=shape)))
    return feats


def _interaction_features(
    feats: list[_Feature], n_neighbourhood: int, n_aux: int, n_items: int
) -> list[_Feature]:
    """The ``interactions`` matrices, built from the features before them (the
    ``n_neighbourhood`` neighbourhood ones first, then the auxiliary behaviors' ``R_b``): per
    auxiliary behavior b, ``R_b ∘ N`` for each neighbourhood matrix N, then ``R_b ∘ R_b'`` per
    pair of auxiliary behaviors."""
    own = [feats[n_neighbourhood + k].matrix(n_items) for k in range(n_aux)]
    neighbourhood = [f.matrix(n_items) for f in feats[:n_neighbourhood]]
    out = [_Feature(r.multiply(m)) for r in own for m in neighbourhood]
    out += [_Feature(own[a].multiply(own[b])) for a in range(n_aux) for b in range(a + 1, n_aux)]
    return out


def _user_context(data: TrainData, schema: DataSchema) -> Tensor:
    """``[n_users, n_behaviors]`` z_b(u): ln(1 + the user's distinct items in behavior b),
    standardised over the users (a behavior nobody varies in gives 0)."""
    cols = []
    for b in schema.behaviors:
        m = data.csr(b)
        cols.append(np.log1p(np.diff(m.indptr)))
    z = np.stack(cols, axis=1).astype(np.float64)
    sd = z.std(axis=0)
    z = (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    return torch.from_numpy(z.astype(np.float32))


def _untargeted_history(data: TrainData, schema: DataSchema) -> tuple[Tensor, Tensor]:
    """CSR ``(crow, col)`` of the (user, item) pairs in some auxiliary behavior and not in the
    target: the user's own items that were not bought."""
    m = sp.csr_matrix(data.csr(schema.target).shape, dtype=np.float64)
    for b in schema.behaviors:
        if b != schema.target:
            m = m + data.csr(b)
    m = sp.csr_matrix(m > 0, dtype=np.float64) - sp.csr_matrix(m > 0).multiply(
        data.csr(schema.target)
    )
    m = sp.csr_matrix(m)
    m.eliminate_zeros()
    m.sort_indices()
    return (
        torch.from_numpy(m.indptr.astype(np.int64)),
        torch.from_numpy(m.indices.astype(np.int64)),
    )


__all__ = ["MBHybrid", "MBHybridConfig"]
