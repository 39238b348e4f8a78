"""HISTORY: rank the user's own past items by recency-weighted counts × item conversion rate."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import Tensor

from polyrec.data.graphs import to_torch_csr
from polyrec.data.views import DataSchema, TrainData
from polyrec.models._common import (
    Behaviors,
    ClosedForm,
    check_behaviors,
    conversion_rate,
    csr_rows,
    deepcopy_sharing_sparse,
    history_weights,
    train_behavior,
)
from polyrec.models.base import HistoryScoring, ModelConfig, Scorer

# the smallest positive float32 a history weight keeps (a long decay must not make it 0)
_TINY = float(np.finfo(np.float32).tiny)


class HistoryConfig(ModelConfig):
    """Settings of :class:`History` (no paper defines this rule: every default is a choice)."""

    behavior_weights: dict[str, Annotated[float, Field(ge=0.0)]] = Field(default_factory=dict)
    """Weight w_b of one interaction in behavior b, by behavior name; a behavior not named weighs
    1.0 (the default: every behavior counts alike, the conversion rate then says how likely the
    item is bought). A weight of 0 ignores that behavior's rows; a name the data does not have is
    an error at set-up."""
    half_life: float | None = Field(None, gt=0.0)
    """Recency half-life, in the log's timestamp units (unix seconds for the embedded data: 604800
    is a week): an interaction Δ = t_max_u − t before the user's latest training interaction
    counts 0.5^(Δ / half_life). None (default: timestamp units differ between datasets) or a log
    without timestamps: plain counts."""
    position_half_life: float | None = Field(None, gt=0.0)
    """Recency half-life in positions, for a user given as a sequence (the retrieval protocol's
    held-out users, :meth:`History.history_scores`): an occurrence k items before the latest
    counts 0.5^(k / position_half_life). None (default): plain counts."""
    conversion: bool = True
    """Multiply the user's history weight by the item's smoothed conversion rate (the share of
    the item's users who did the target behavior). False: history weight alone."""
    alpha: float = Field(10.0, ge=0.0)
    """Smoothing α of the conversion rate (buyers_i + α·prior) / (users_i + α), prior the global
    rate Σ buyers / Σ users: an item seen by few users gets a rate near the prior. 10 is a
    choice (roughly: an item's own rate counts once ten users have seen it)."""
    exclude_target: bool = False
    """True: items the user already has in the target behavior get no history score (they rank
    with the unseen items, by popularity). False (default: repeat purchases count): they are
    scored like the others. The evaluator masks training target items under full ranking and
    samples negatives outside them, so the setting changes serving, not the metrics."""
    popularity_weight: float = Field(1e-4, ge=0.0)
    """ε of the fallback ε·p̃_i, p̃_i = popularity / (max popularity + 1) ∈ [0, 1): it orders the
    items without own history (every item of a user without history), and breaks ties among own
    items. Own-history items always rank above the others whatever ε (see the class doc)."""
    popularity: Behaviors = "all"
    """Which interactions the popularity counts (distinct users per item): 'all' (default, every
    behavior merged: on the embedded Retailrocket data POP with behaviors='all' beats the
    target-only count on validation, full and sampled) or 'target' (POP's default)."""


class History(
    ClosedForm,
    HistoryScoring,
    Scorer,
    name="history",
    paper="Own-history baseline (repeat consumption; no paper: see the class doc)",
    Config=HistoryConfig,
):
    """Own-history baseline: rank the items the user interacted with by how often and how
    recently, weighted by how often the item converts; popularity for the rest.

    No training: everything is counted from the training log in ``build``. For user u and item
    i::

        s_ui = h_ui · c_i + ε · p̃_i                  if h_ui > 0 (an own-history item)
        s_ui = ε · (p̃_i − 1)                         otherwise

    1. ``h_ui = Σ_b w_b Σ_{(u,i,b,t) ∈ train} 0.5^((t_max_u − t) / half_life)``: the user's
       own recency-weighted, behavior-weighted interaction count (``t_max_u`` the user's latest
       training timestamp; plain counts without a half-life or timestamps).
    2. ``c_i = (buyers_i + α·prior) / (users_i + α)``: the item's smoothed conversion rate,
       ``buyers_i`` / ``users_i`` the distinct users with a target / any interaction with i in
       train, ``prior = Σ_i buyers_i / Σ_i users_i`` (1 with ``conversion=False``).
    3. ``p̃_i = pop_i / (max_j pop_j + 1) ∈ [0, 1)``: popularity (distinct users) scaled below 1,
       weighted by ε = ``popularity_weight``.

    Own-history scores are ≥ 0 and the others < 0, so every item of the user's history ranks
    above every other item whatever the decay, and a user without history (or an unseen user
    index) gets the popularity ranking.

    Choices (where no paper defines it):

    * every behavior weighs 1 by default; the conversion rate, not the weight, says which
      behaviors lead to the target;
    * the conversion rate is per item, over distinct users (not per behavior);
    * the recency reference is the user's own latest training interaction, in any behavior;
    * the user × item matrix of h is training data (a non-persistent sparse CSR buffer), so the
      model cannot be rebuilt without its data; the persistent state is the per-item ``c`` and
      ``p̃``.
    """

    rebuildable: ClassVar[bool] = False

    config: HistoryConfig
    history: Tensor
    conversion: Tensor
    popularity: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        assert data is not None  # not rebuildable: setup() always passes the data
        config = self.config
        check_behaviors("behavior_weights", config.behavior_weights, schema)
        h = _history_matrix(data, schema, config)
        self.register_buffer("history", to_torch_csr(h), persistent=False)
        self._ddp_params_and_buffers_to_ignore = ["history"]
        self.register_buffer(
            "conversion", torch.from_numpy(_conversion(data, schema, config).astype(np.float32))
        )
        pop = np.asarray(
            (data.csr(train_behavior(schema, config.popularity)) > 0).sum(axis=0)
        ).ravel()
        scaled = pop / (float(pop.max(initial=0)) + 1.0)
        self.register_buffer("popularity", torch.from_numpy(scaled.astype(np.float32)))

    def __deepcopy__(self, memo: dict[int, Any]) -> History:
        return deepcopy_sharing_sparse(self, memo)

    def scores(self, users: Tensor) -> Tensor:
        """``[len(users), n_items]`` (a fresh tensor): the users' history rows × conversion plus
        the popularity fallback; finite for every user index below ``n_users``."""
        users = users.to(self.conversion.device)
        hist = self.history
        h = csr_rows(
            hist.crow_indices(), hist.col_indices(), hist.values(), users, self.n_items
        ).to_dense()
        return self._combine(h)

    def history_scores(self, histories: Tensor, lengths: Tensor) -> Tensor:
        """Repeat consumption on a sequence: ``h_ui`` is the user's count of item i in the
        history, each occurrence weighted 0.5^(k / position_half_life) when it lies k positions
        before the latest item; then the same conversion and popularity terms as
        :meth:`scores`."""
        h = history_weights(
            histories.to(self.conversion.device), self.n_items, self.config.position_half_life
        )
        return self._combine(h)

    def _combine(self, h: Tensor) -> Tensor:
        """``h · c + ε p̃`` on the own-history items (``h > 0``), ``ε (p̃ − 1)`` elsewhere."""
        eps = self.config.popularity_weight
        own = h * self.conversion + eps * self.popularity
        other = eps * (self.popularity - 1.0)
        return torch.where(h > 0, own, other.expand_as(h))


def _history_matrix(data: TrainData, schema: DataSchema, config: HistoryConfig) -> sp.csr_matrix:
    """users × items h_ui (term 1 of :class:`History`), float64 summed then float32, no zeros."""
    log = data.log
    w_b = np.array([config.behavior_weights.get(b, 1.0) for b in schema.behaviors])
    weight = w_b[log.behavior.astype(np.int64)]
    keep = weight > 0
    if config.half_life is not None and log.timestamp is not None and len(log):
        t_max = np.full(log.n_users, -np.inf)
        np.maximum.at(t_max, log.user, log.timestamp)
        decay = np.exp2(-(t_max[log.user] - log.timestamp) / config.half_life)
        # a long-decayed row still makes the item the user's own: never 0
        weight = np.maximum(weight * decay, _TINY)
    if config.exclude_target:
        keep &= ~data.pair_set(schema.target).contains(log.user, log.item)
    mat = sp.csr_matrix(
        (weight[keep], (log.user[keep], log.item[keep])),
        shape=(log.n_users, log.n_items),
    )
    mat.sum_duplicates()
    mat.sort_indices()
    out = mat.astype(np.float32)
    out.data = np.maximum(out.data, _TINY)  # float64 → float32 must not round a weight to 0
    return out


def _conversion(data: TrainData, schema: DataSchema, config: HistoryConfig) -> np.ndarray:
    """Per-item smoothed conversion rate c_i (term 2), or ones with ``conversion=False``."""
    if not config.conversion:
        return np.ones(schema.n_items)
    rate, _ = conversion_rate(
        data.csr(schema.target).sum(axis=0), data.csr(None).sum(axis=0), config.alpha
    )
    return rate


__all__ = ["History", "HistoryConfig"]
