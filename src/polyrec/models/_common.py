"""Small helpers shared by the embedding models and the closed-form baselines (not part of
the public API)."""

from __future__ import annotations

import copy
import warnings
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Annotated, Any, ClassVar, Literal, TypeVar

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.graphs import normalized_bipartite_adjacency
from polyrec.data.views import BPRBatch, DataSchema, TrainData, bpr_batches, weighted_matrix
from polyrec.errors import ConfigError
from polyrec.models.base import HistoryScoring, ModelConfig, Scorer
from polyrec.models.propagation import propagate

Behaviors = Literal["target", "all"]
Init = Literal["normal", "xavier"]
# how a cascading model combines the layers of one behavior's propagation (CascadeScorer)
LayerCombination = Literal["mean", "last"]
M = TypeVar("M", bound=nn.Module)


# Config fields several models declare; each model gives its own default and the description
# that names its paper's section.
def dim_field(default: int, description: str) -> Any:
    """An embedding size d (≥ 1)."""
    return Field(default, ge=1, description=description)


def reg_field(default: float, description: str) -> Any:
    """The weight λ (≥ 0) of an L2 penalty."""
    return Field(default, ge=0.0, description=description)


def init_std_field(
    default: float = 0.1, description: str = "Standard deviation of the 'normal' init."
) -> Any:
    """σ (> 0) of the ``normal`` embedding init (:func:`init_embedding`)."""
    return Field(default, gt=0.0, description=description)


def behaviors_field(description: str) -> Any:
    """Which behaviors train a single-behavior model (:data:`Behaviors`; default the target)."""
    return Field("target", description=description)


def train_behavior(schema: DataSchema, behaviors: Behaviors) -> str | None:
    """The behavior name whose pairs train a model: the log's target, or ``None`` (all merged)."""
    return schema.target if behaviors == "target" else None


def init_embedding(weight: Tensor, init: Init, std: float) -> None:
    """In-place init: ``normal`` = N(0, std²); ``xavier`` = Xavier/Glorot uniform over the
    ``[n, d]`` table (the TF ``xavier_initializer`` of the official LightGCN/NGCF code)."""
    if init == "normal":
        nn.init.normal_(weight, mean=0.0, std=std)
    elif init == "xavier":
        nn.init.xavier_uniform_(weight)
    else:  # pragma: no cover - guarded by the pydantic Literal
        raise ValueError(f"unknown init {init!r}")


def embedding_tables(schema: DataSchema, config: Any) -> tuple[nn.Embedding, nn.Embedding]:
    """User and item tables ``[n, config.dim]``, created then initialised
    (:func:`init_embedding` with ``config.init`` / ``config.init_std``) in that order (the order
    the global RNG is drawn in)."""
    users, items = (
        nn.Embedding(schema.n_users, config.dim),
        nn.Embedding(schema.n_items, config.dim),
    )
    init_embedding(users.weight, config.init, config.init_std)
    init_embedding(items.weight, config.init, config.init_std)
    return users, items


def deepcopy_sharing_sparse(module: M, memo: dict[int, Any]) -> M:
    """``copy.deepcopy`` of a module whose sparse buffers are shared, not copied.

    Sparse tensors cannot be deep-copied (no storage); graph buffers are never modified in
    place, so copies may share them. Use as ``def __deepcopy__(self, memo): return
    deepcopy_sharing_sparse(self, memo)``.
    """
    for buf in module.buffers():
        if buf.layout != torch.strided:
            memo[id(buf)] = buf
    new = module.__class__.__new__(module.__class__)
    memo[id(module)] = new
    new.__setstate__(copy.deepcopy(module.__dict__, memo))
    return new


def _drop_cache(module: nn.Module, incompatible_keys: Any) -> None:
    """load_state_dict post-hook: loaded weights make cached propagations stale."""
    if isinstance(module, GraphScorer):
        module.invalidate()


class GraphScorer(Scorer):
    """A scorer whose scores are ``e_u · e_i`` of embeddings propagated over a graph.

    Subclasses implement :meth:`final_embeddings` (differentiable, used by their losses). This
    class caches the propagation for scoring (:meth:`prepare_scoring`), drops the cache after
    every training step, ``load_state_dict`` and ``.to()``, and lets copies share the sparse
    graph buffers (sparse tensors cannot be deep-copied).
    """

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._final: tuple[Tensor, Tensor] | None = None
        self.register_load_state_dict_post_hook(_drop_cache)

    @abstractmethod
    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """Final user ``[n_users, d]`` and item ``[n_items, d]`` embeddings."""

    def prepare_scoring(self) -> None:
        with torch.no_grad():
            users, items = self.final_embeddings()
        self._final = (users.detach(), items.detach())

    def invalidate(self) -> None:
        self._final = None

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # .to(device) / .float(): a cached propagation would be on the old device/dtype
        self.invalidate()
        return super()._apply(fn, recurse)

    def __deepcopy__(self, memo: dict[int, Any]) -> GraphScorer:
        return deepcopy_sharing_sparse(self, memo)

    def user_item_embeddings(self) -> tuple[Tensor, Tensor]:
        if self._final is not None:
            return self._final
        with torch.no_grad():
            users, items = self.final_embeddings()
        return users.detach(), items.detach()

    def scores(self, users: Tensor) -> Tensor:
        """``E_u[users] @ E_iᵀ``; a cheap matmul after :meth:`prepare_scoring`."""
        u_all, i_all = self.user_item_embeddings()
        return u_all[users.to(u_all.device)] @ i_all.T


def pair_terms(
    tables: tuple[nn.Embedding, nn.Embedding],
    users: Tensor,
    items: Tensor,
    batch: BPRBatch,
    *extra: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    """The batch's positive and negative scores ŷ = e_u·e_i on the final tables
    ``users``/``items``, and the L2 penalty (LightGCN Eq. 15: ½Σ‖·‖²/B, before λ) on the batch's
    rows of the ego ``tables`` (user, item) and on ``extra``."""
    user_emb, item_emb = tables
    eu, ep, en = users[batch.user], items[batch.pos], items[batch.neg]
    pos = (eu * ep).sum(-1)
    neg = (eu * en).sum(-1)
    penalty = losses.l2_reg(
        user_emb(batch.user),
        item_emb(batch.pos),
        item_emb(batch.neg),
        *extra,
        batch_size=len(batch.user),
    )
    return pos, neg, penalty


def bpr_terms(
    tables: tuple[nn.Embedding, nn.Embedding],
    users: Tensor,
    items: Tensor,
    batch: BPRBatch,
    reg: float,
    *extra: Tensor,
) -> dict[str, Tensor]:
    """``bpr`` of :func:`pair_terms`' scores and ``reg``: λ times its penalty."""
    pos, neg, penalty = pair_terms(tables, users, items, batch, *extra)
    return {"bpr": losses.bpr(pos, neg), "reg": reg * penalty}


class BPRScorer(Scorer):
    """A scorer trained on BPR triples (u, i, j) of :attr:`train_behavior` (set by ``build``;
    ``None``: every behavior merged), drawn by :func:`~polyrec.data.views.bpr_batches`."""

    train_behavior: str | None

    def batches(
        self, data: TrainData, batch_size: int, generator: torch.Generator
    ) -> Iterator[BPRBatch]:
        return bpr_batches(data, self.train_behavior, batch_size, generator)

    def n_batches(self, data: TrainData, batch_size: int) -> int:
        """One batch per ``batch_size`` distinct pairs of :attr:`train_behavior`."""
        return -(-len(data.pairs_t(self.train_behavior)[0]) // batch_size)


class PairScorer(BPRScorer):
    """A BPR-trained scorer whose loss is a function of the batch's pair scores: it exposes
    :meth:`pair_scores`, so that a training framework (WBPR, T-CE) can wrap its backbone
    (MF, LightGCN) without copying it."""

    config: Any

    def pair_scores(self, batch: BPRBatch) -> tuple[Tensor, Tensor, Tensor]:
        """``(ŷ_ui [B], ŷ_uj [B], L2 penalty before λ)`` of the batch."""
        raise NotImplementedError

    def loss(self, batch: BPRBatch) -> dict[str, Tensor]:
        pos, neg, penalty = self.pair_scores(batch)
        return {"bpr": losses.bpr(pos, neg), "reg": self.config.reg * penalty}


# --------------------------------------------------------------------------- behavior cascades
def behavior_chain(
    schema: DataSchema, order: Sequence[str], key: str = "behavior_order"
) -> tuple[str, ...]:
    """The behavior chain b_1 → … → b_B of a cascading model (MB-CGCN, CRGCN).

    ``order`` empty: the data's behaviors in schema order with the target moved last. Otherwise
    ``order`` itself, which may leave behaviors out but must name each at most once, only
    behaviors the data has, and end with the target; :class:`ConfigError` naming ``key`` if not.
    """
    if not order:
        return (*(b for b in schema.behaviors if b != schema.target), schema.target)
    check_behaviors(key, order, schema)
    repeated = sorted({b for b in order if list(order).count(b) > 1})
    if repeated:
        raise ConfigError(
            f"params.{key}: behavior(s) {', '.join(map(repr, repeated))} appear more than once "
            f"in {list(order)}"
        )
    if order[-1] != schema.target:
        raise ConfigError(
            f"params.{key}: the chain must end with the target behavior {schema.target!r}, but "
            f"{list(order)} ends with {order[-1]!r}"
        )
    return tuple(order)


def chain_values(
    key: str, values: Mapping[str, Any], chain: tuple[str, ...], schema: DataSchema
) -> None:
    """:class:`ConfigError` naming ``key`` when the per-behavior ``values`` name a behavior the
    data lacks or one outside the chain."""
    check_behaviors(key, values, schema)
    outside = sorted(set(values) - set(chain))
    if outside:
        raise ConfigError(
            f"params.{key}: behavior(s) {', '.join(map(repr, outside))} are not in the behavior "
            f"chain {' → '.join(chain)}"
        )


class CascadeScorer(GraphScorer):
    """Base of the cascading multi-behavior models (MB-CGCN, CRGCN): one LightGCN-style
    propagation per behavior of a chain b_1 → … → b_B (target last), each starting from
    embeddings derived from the previous behavior's.

    :meth:`build_cascade` resolves the chain (:func:`behavior_chain`) and each behavior's depth
    and keeps every behavior's normalised graph Â_b = D^{-1/2} A_b D^{-1/2} (LightGCN Eq. 7 on
    that behavior's interactions alone) as a non-persistent sparse buffer ``adj_<k>``.
    :meth:`cascade` runs the chain with a model-specific ``step`` between behaviors.
    """

    chain: tuple[str, ...]
    depths: tuple[int, ...]
    combination: LayerCombination

    def build_cascade(self, schema: DataSchema, data: TrainData | None, config: Any) -> None:
        """Resolve the chain and depths from the model's config (``behavior_order``,
        ``n_layers``, ``behavior_layers`` overriding ``n_layers`` per behavior,
        ``layer_combination``) and build the chain's graphs from ``data``."""
        self.chain = behavior_chain(schema, config.behavior_order)
        layers: Mapping[str, int] = config.behavior_layers
        chain_values("behavior_layers", layers, self.chain, schema)
        self.depths = tuple(int(layers.get(b, config.n_layers)) for b in self.chain)
        self.combination = config.layer_combination
        assert data is not None  # not rebuildable: setup() always passes the data
        names = []
        for k, behavior in enumerate(self.chain):
            adj = normalized_bipartite_adjacency(data.csr(behavior))
            self.register_buffer(f"adj_{k}", adj, persistent=False)
            names.append(f"adj_{k}")
        # DDP must not broadcast the (replicated, sparse) graph buffers.
        self._ddp_params_and_buffers_to_ignore = names

    def adjacency(self, k: int) -> Tensor:
        """Â of the chain's ``k``-th behavior (users first, then items)."""
        adj: Tensor = getattr(self, f"adj_{k}")
        return adj

    def layer_weights(self, k: int) -> list[float]:
        """α_l of behavior ``k``'s output Σ_l α_l Â^l x: the mean over layers 0..L ('mean',
        LightGCN Eq. 8) or the last layer alone ('last')."""
        n = self.depths[k]
        if self.combination == "mean":
            return [1.0 / (n + 1)] * (n + 1)
        return [0.0] * n + [1.0]

    def split(self, nodes: Tensor) -> tuple[Tensor, Tensor]:
        """A node table ``[n_users + n_items, d]`` as its user and item parts."""
        users, items = torch.split(nodes, [self.n_users, self.n_items], dim=0)
        return users, items

    def cascade(
        self, ego: Tensor, step: Callable[[int, Tensor, Tensor], Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """``([x_1 … x_B], [o_1 … o_B])``: o_k = Σ_l α_l Â_k^l x_k (:meth:`layer_weights`) with
        x_1 = ``ego`` and x_{k+1} = ``step(k, x_k, o_k)`` (0-based k), full node tables.

        Each propagation is one :class:`~polyrec.models.propagation.SymmetricPolynomial` node
        (Â_k is symmetric), so the gradient flows back through the whole chain into ``ego`` and
        whatever ``step`` uses.
        """
        inputs: list[Tensor] = []
        outputs: list[Tensor] = []
        x = ego
        for k in range(len(self.chain)):
            if k:
                x = step(k - 1, x, outputs[-1])
            inputs.append(x)
            outputs.append(propagate(self.adjacency(k), x, self.layer_weights(k), symmetric=True))
        return inputs, outputs


# --------------------------------------------------------------------------- closed-form baselines
class WeightedMatrixConfig(ModelConfig):
    """The behavior weights of the users × items matrix ``X = Σ_b w_b · R_b`` the closed-form
    baselines (EASE, ItemKNN) start from (:func:`~polyrec.data.views.weighted_matrix`)."""

    behavior_weights: dict[str, Annotated[float, Field(ge=0.0)]] = Field(default_factory=dict)
    """Weight w_b ≥ 0 of each named behavior in X = Σ_b w_b·R_b (R_b: the binary users × items
    matrix of behavior b; a pair in several behaviors gets the sum). Unnamed behaviors: the target
    1.0, the others other_weight. Neither paper has several behaviors: this is polyrec's
    multi-behavior input."""
    other_weight: float = Field(0.0, ge=0.0)
    """Weight of each non-target behavior not named in behavior_weights. Default 0: the target
    behavior alone, like the single-behavior baselines (MF, LightGCN, POP with behaviors='target'),
    so that the model fits in memory on wide catalogues (EASE's dense matrix covers the items with
    a non-zero column only) and comparisons stay like for like; a small weight (e.g. 0.1) lets
    views and carts inform the item-item weights."""


def resolve_behavior_weights(schema: DataSchema, config: WeightedMatrixConfig) -> dict[str, float]:
    """Every behavior's weight: the named ones, then the target 1.0 and the others
    ``config.other_weight``; :class:`ConfigError` for a name the data does not have."""
    check_behaviors("behavior_weights", config.behavior_weights, schema)
    return {
        b: config.behavior_weights.get(b, 1.0 if b == schema.target else config.other_weight)
        for b in schema.behaviors
    }


def csr_tensor(crow: Tensor, col: Tensor, val: Tensor, size: tuple[int, int]) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, val, size=size, check_invariants=False)


def conversion_rate(buyers: Any, users: Any, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-item smoothed conversion rate ``(buyers_i + α·prior) / (users_i + α)``, ``prior =
    Σ buyers / Σ users`` (0 for an empty log), and ``1 / (users_i + α)``: how much one buyer
    adds to the rate (what leaving a buyer out removes). Zero where ``users_i + α`` is 0."""
    buyers = np.asarray(buyers, dtype=np.float64).ravel()
    users = np.asarray(users, dtype=np.float64).ravel()
    prior = buyers.sum() / users.sum() if users.sum() > 0 else 0.0
    denom = users + alpha
    rate = np.divide(buyers + alpha * prior, denom, out=np.zeros_like(denom), where=denom > 0)
    one = np.divide(1.0, denom, out=np.zeros_like(denom), where=denom > 0)
    return rate.astype(np.float32), one.astype(np.float32)


def csr_rows(crow: Tensor, col: Tensor, val: Tensor, rows: Tensor, n_cols: int) -> Tensor:
    """Rows ``rows`` (repeats allowed) of the CSR matrix ``(crow, col, val)`` as a sparse CSR
    tensor ``[len(rows), n_cols]``, gathered vectorised (torch has no ``index_select`` for CSR)."""
    rows = rows.to(crow.device, torch.int64)
    starts = crow[rows]
    lengths = crow[rows + 1] - starts
    out_crow = torch.zeros(len(rows) + 1, dtype=torch.int64, device=starts.device)
    torch.cumsum(lengths, 0, out=out_crow[1:])
    row_start = torch.repeat_interleave(starts - out_crow[:-1], lengths)
    pos = row_start + torch.arange(int(out_crow[-1]), device=starts.device)
    return csr_tensor(out_crow, col[pos], val[pos], (len(rows), n_cols))


class ClosedForm:
    """Mixin of the closed-form scorers (Pop, History, EASE, ItemKNN): fitted in ``build``,
    nothing to train — empty epochs, and a loss that is an error."""

    trainable: ClassVar[bool] = False
    name: ClassVar[str]

    def batches(
        self, data: TrainData, batch_size: int, generator: torch.Generator
    ) -> Iterator[Any]:
        """Closed form: nothing to train, an empty epoch."""
        return iter(())

    def loss(self, batch: Any) -> dict[str, Tensor]:
        raise RuntimeError(f"{self.name} is not trainable (trainable = False): it has no loss")


def check_behaviors(key: str, names: Iterable[str], schema: DataSchema) -> None:
    """:class:`ConfigError` naming ``key`` when ``names`` holds a behavior the data lacks."""
    unknown = sorted(set(names) - set(schema.behaviors))
    if unknown:
        raise ConfigError(
            f"params.{key}: unknown behavior(s) {', '.join(map(repr, unknown))}; the data has "
            f"{', '.join(schema.behaviors)}"
        )


def history_weights(
    histories: Tensor, n_items: int, half_life: float | None = None, binary: bool = False
) -> Tensor:
    """Dense ``[B, n_items]`` weight of each row's history items (left-padded, +1-shifted ids,
    0 = padding, the latest item last): per occurrence 1, or ``0.5^(k / half_life)`` for the
    occurrence ``k`` positions before the latest item; summed over an item's occurrences
    (``binary``: 1 for every history item)."""
    mask = histories > 0
    w = mask.float()
    if half_life is not None:
        t = histories.shape[1]
        age = torch.arange(t - 1, -1, -1, device=histories.device, dtype=torch.float32)
        w = w * torch.exp2(-age / half_life)
    out = torch.zeros(histories.shape[0], n_items, device=histories.device)
    out.scatter_add_(1, (histories - 1).clamp(min=0), w)
    return (out > 0).float() if binary else out


class MatrixScorer(ClosedForm, HistoryScoring, Scorer):
    """A closed-form, non-trainable scorer whose scores are ``X[users] @ W`` for the
    behavior-weighted training matrix ``X`` (:func:`weighted_matrix`) and an item × item ``W``.

    ``X`` is kept as the three dense arrays of its CSR form, non-persistent buffers
    (``x_crow``, ``x_col``, ``x_val``: ``.to(device)`` moves them, ``state_dict`` leaves them out,
    copies copy them): the scores need the user's training row, so these models are not
    :attr:`~polyrec.models.base.Model.rebuildable`. Nothing to train: empty epochs, no loss.
    """

    trainable: ClassVar[bool] = False
    rebuildable: ClassVar[bool] = False

    x_crow: Tensor
    x_col: Tensor
    x_val: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        """Fit the item side from ``X`` (:meth:`fit`) and keep the rows scoring reads."""
        self.keep_user_rows(self.fit(schema, self.training_matrix(schema, data)))

    def fit(self, schema: DataSchema, x: sp.csr_matrix) -> sp.csr_matrix:
        """Fit the item × item side from the training matrix ``x`` (users × items); return the
        users' rows that scoring multiplies by it (``x`` or a column subset)."""
        raise NotImplementedError

    def training_matrix(self, schema: DataSchema, data: TrainData | None) -> sp.csr_matrix:
        """``X`` of ``data`` with the config's behavior weights (float64)."""
        assert data is not None  # not rebuildable: setup() always passes the data
        config = self.config
        assert isinstance(config, WeightedMatrixConfig)
        return weighted_matrix(data, resolve_behavior_weights(schema, config))

    def keep_csr(self, prefix: str, m: sp.csr_matrix) -> None:
        """Keep ``m`` as three non-persistent buffers ``{prefix}_crow``, ``{prefix}_col`` and
        ``{prefix}_val`` (int64, int64, float32; indices sorted)."""
        m = sp.csr_matrix(m)
        m.sort_indices()
        for part, arr, dtype in (
            ("crow", m.indptr, torch.int64),
            ("col", m.indices, torch.int64),
            ("val", m.data, torch.float32),
        ):
            t = torch.from_numpy(np.asarray(arr)).to(dtype)
            self.register_buffer(f"{prefix}_{part}", t, persistent=False)

    def keep_user_rows(self, x: sp.csr_matrix) -> None:
        """Keep ``x`` (users × columns) as the CSR buffers :meth:`user_rows` reads."""
        self.x_cols = int(x.shape[1])
        self.keep_csr("x", x)

    def user_rows(self, users: Tensor) -> Tensor:
        """The rows ``X[users]`` as a sparse CSR tensor ``[len(users), columns]`` (a user may
        repeat; a user with no interaction gives an empty row)."""
        return csr_rows(self.x_crow, self.x_col, self.x_val, users, self.x_cols)

    def score_rows(self, rows: Tensor) -> Tensor:
        """Scores ``[B, n_items]`` (a fresh tensor) of the rows ``rows`` of X (sparse CSR
        ``[B, columns]``): the item × item side applied to them."""
        raise NotImplementedError

    def x_columns(self, x: Tensor) -> Tensor:
        """The columns of X in the dense users × items ``x`` (default: every item)."""
        return x

    def scores(self, users: Tensor) -> Tensor:
        """``X[users] @ W`` ``[len(users), n_items]`` (float32, a fresh tensor)."""
        return self.score_rows(self.user_rows(users))

    def history_scores(self, histories: Tensor, lengths: Tensor) -> Tensor:
        """The scores of a user whose row of X is the history: each history item once, with
        the target behavior's weight 1 (a sequence log has the target behavior only)."""
        x = history_weights(histories.to(self.x_val.device), self.n_items, binary=True)
        return self.score_rows(self.x_columns(x).to_sparse_csr())
