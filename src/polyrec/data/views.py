"""What a model may know about its training data, and the batches drawn from it.

* :class:`DataSchema` — the shape of a dataset a model's parameters depend on (users, items,
  behaviors, target, categories): enough to rebuild a network for loading weights, with no
  interaction at all (export / serving).
* :class:`TrainData` — the training log (and time slots) with cached views (per-behavior CSR
  matrices, pair sets, samplers). Models read views through its methods and cache their own
  with :meth:`TrainData.cached`; they never write into it otherwise.
* Batches: :class:`BPRBatch` / :func:`bpr_batches` (uniform BPR triples),
  :class:`BehaviorBatch` / :func:`behavior_batches` (per-behavior positives and negatives for the
  batch's users plus a held-out meta batch: CML's sampler) and :func:`sequence_views` (training
  cuts and log-uniform negatives of the sequential models).
* :func:`weighted_matrix` — the behavior-weighted users × items matrix of the closed-form and
  neighbourhood baselines (EASE, ItemKNN).

Everything is vectorised: no Python loop runs over interactions.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from polyrec.data.log import InteractionLog
from polyrec.data.sampling import PairSet, sample_negatives_t
from polyrec.data.sequences import CutSampler, LogUniformSampler, SequenceSet, item_counts

T = TypeVar("T")


def category_count(log: InteractionLog) -> int:
    """How many category codes the log's ``category`` column can hold (0 without one)."""
    if log.category is None:
        return 0
    top = int(log.category.max()) + 1 if len(log.category) else 0
    return max(top, len(log.category_map) if log.category_map is not None else 0, 1)


@dataclass(frozen=True)
class DataSchema:
    """The shape of a dataset that a network's parameters depend on (no interactions).

    ``n_categories`` is 0 for a log without a category column.
    """

    n_users: int
    n_items: int
    behaviors: tuple[str, ...]
    target: str
    n_categories: int = 0

    @classmethod
    def of(cls, log: InteractionLog) -> DataSchema:
        return cls(
            n_users=log.n_users,
            n_items=log.n_items,
            behaviors=tuple(log.behaviors),
            target=log.target,
            n_categories=category_count(log),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "behaviors": list(self.behaviors),
            "target": self.target,
            "n_categories": self.n_categories,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSchema:
        """Inverse of :meth:`to_dict`; :class:`ValueError` on a malformed dict."""
        try:
            schema = cls(
                n_users=int(d["n_users"]),
                n_items=int(d["n_items"]),
                behaviors=tuple(str(b) for b in d["behaviors"]),
                target=str(d["target"]),
                n_categories=int(d.get("n_categories", 0)),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"not a data schema ({e!r})") from None
        if schema.n_users < 0 or schema.n_items < 0 or schema.target not in schema.behaviors:
            raise ValueError(f"not a valid data schema: {schema}")
        return schema


@dataclass
class TrainData:
    """The training log and its cached views.

    ``slot`` is the time slot of each training interaction (time-slots protocol), or None.
    """

    log: InteractionLog
    slot: np.ndarray | None = None
    # how the split removed its held-out pairs from this training log: "all" (from every
    # behavior: no held-out pair has an auxiliary training row), "target" (from the target
    # behavior only) or None (unknown / not a pair split)
    hide: str | None = None
    _cache: dict[Hashable, Any] = field(default_factory=dict, repr=False)

    @property
    def n_users(self) -> int:
        return self.log.n_users

    @property
    def n_items(self) -> int:
        return self.log.n_items

    @property
    def schema(self) -> DataSchema:
        return self.cached(("schema",), lambda: DataSchema.of(self.log))

    def cached(self, key: Hashable, make: Callable[[], T]) -> T:
        """The view stored under ``key``, made by ``make()`` the first time it is asked for.

        Views depend on the training log only, so models may share them (e.g. two models in one
        benchmark process); ``key`` must name everything the view depends on.
        """
        if key not in self._cache:
            self._cache[key] = make()
        value: T = self._cache[key]
        return value

    def csr(self, behavior: str | None = None) -> sp.csr_matrix:
        """Binary users × items CSR of one behavior (``None``/"all": every behavior merged)."""
        return self.cached(("csr", behavior or "all"), lambda: self.log.csr(behavior))

    def pairs(self, behavior: str | None) -> tuple[np.ndarray, np.ndarray]:
        """Distinct (user, item) pairs of one behavior (or all merged)."""
        m = self.csr(behavior).tocoo()
        return m.row.astype(np.int64), m.col.astype(np.int64)

    def pair_set(self, behavior: str | None) -> PairSet:
        def make() -> PairSet:
            u, i = self.pairs(behavior)
            return PairSet(u, i, self.n_items)

        return self.cached(("pairset", behavior or "all"), make)

    def pairs_t(self, behavior: str | None) -> tuple[Tensor, Tensor]:
        """:meth:`pairs` as int64 tensors (cached)."""

        def make() -> tuple[Tensor, Tensor]:
            u, i = self.pairs(behavior)
            return torch.from_numpy(u), torch.from_numpy(i)

        return self.cached(("pairs_t", behavior or "all"), make)

    def csr_t(self, behavior: str | None) -> tuple[Tensor, Tensor]:
        """``(indptr, indices)`` of :meth:`csr` as int64 tensors (cached)."""

        def make() -> tuple[Tensor, Tensor]:
            m = self.csr(behavior)
            return (
                torch.from_numpy(np.asarray(m.indptr, dtype=np.int64)),
                torch.from_numpy(np.asarray(m.indices, dtype=np.int64)),
            )

        return self.cached(("csr_t", behavior or "all"), make)


def weighted_matrix(data: TrainData, weights: Mapping[str, float]) -> sp.csr_matrix:
    """The users × items float64 CSR ``X = Σ_b w_b · R_b``: each behavior's binary matrix
    :meth:`TrainData.csr` times its weight, summed (a pair in several behaviors gets the sum of
    their weights).

    ``weights`` maps behavior names to weights ≥ 0; an unnamed behavior, or a zero weight, adds
    nothing. Stored zeros are removed and indices sorted. Pure: it reads the cached per-behavior
    views and returns a new matrix.
    """
    unknown = sorted(set(weights) - set(data.log.behaviors))
    if unknown:
        raise ValueError(f"unknown behavior(s) {unknown}; the log has {list(data.log.behaviors)}")
    x = sp.csr_matrix((data.n_users, data.n_items), dtype=np.float64)
    for behavior in data.log.behaviors:
        w = float(weights.get(behavior, 0.0))
        if w < 0:
            raise ValueError(f"behavior weight of {behavior!r} is {w}; weights must be ≥ 0")
        if w:
            x = x + w * data.csr(behavior).astype(np.float64)
    x = sp.csr_matrix(x)
    x.eliminate_zeros()
    x.sort_indices()
    return x


# ----------------------------------------------------------------------------------- BPR triples
@dataclass
class BPRBatch:
    """(user, positive item, negative item) triples."""

    user: Tensor
    pos: Tensor
    neg: Tensor

    def to(self, device: torch.device) -> BPRBatch:
        return BPRBatch(self.user.to(device), self.pos.to(device), self.neg.to(device))


@dataclass
class LabelledPairs:
    """A batch of (user, item) pairs with one 0/1 label per task: ``label`` is ``[N, K]``
    (pointwise multi-task models such as NMTR)."""

    user: Tensor
    item: Tensor
    label: Tensor

    def to(self, device: torch.device) -> LabelledPairs:
        return LabelledPairs(self.user.to(device), self.item.to(device), self.label.to(device))


def bpr_batches(
    data: TrainData,
    behavior: str | None,
    batch_size: int,
    generator: torch.Generator,
    negative_weights: torch.Tensor | None = None,
) -> Iterator[BPRBatch]:
    """One epoch of BPR triples over the distinct pairs of ``behavior`` (vectorised sampling).

    Negatives are drawn among the items the user has no pair with in ``behavior``: uniformly,
    or in proportion to ``negative_weights`` (WBPR's popularity).
    """
    users, items = data.pairs_t(behavior)
    exclude = data.pair_set(behavior)
    perm = torch.randperm(len(users), generator=generator)
    for start in range(0, len(users), batch_size):
        idx = perm[start : start + batch_size]
        u = users[idx]
        neg = sample_negatives_t(u, data.n_items, exclude, generator, weights=negative_weights)
        yield BPRBatch(u, items[idx], neg)


# ------------------------------------------------------------------- per-behavior + meta batches
@dataclass
class BehaviorBatch:
    """Target-behavior users with positives and negatives in every behavior, and a meta batch.

    ``pos``/``neg``/``valid`` are ``[n_behaviors, B, S]`` / ``[n_behaviors, B, S]`` /
    ``[n_behaviors, B]`` (``valid``: the user has a positive in that behavior); the target
    behavior's first positive is the batch's own pair. ``meta_*``: target triples outside the
    batch (CML's meta-learning batch).
    """

    user: Tensor
    pos: Tensor
    neg: Tensor
    valid: Tensor
    meta_user: Tensor
    meta_pos: Tensor
    meta_neg: Tensor

    def to(self, device: torch.device) -> BehaviorBatch:
        return BehaviorBatch(*(t.to(device) for t in vars(self).values()))


def behavior_batches(
    data: TrainData,
    behaviors: tuple[str, ...],
    target: str,
    batch_size: int,
    generator: torch.Generator,
    *,
    pairs_per_user: int,
    meta_batch_size: int,
) -> Iterator[BehaviorBatch]:
    """One epoch over the ``target`` pairs: for each batch's users, ``pairs_per_user`` positives
    (uniform over the user's items, 0 and ``valid = False`` without any) and negatives in every
    behavior, and a held-out meta batch of ``meta_batch_size`` target triples (vectorised)."""
    csrs = [data.csr_t(b) for b in behaviors]
    users, items = data.pairs_t(target)
    target_index = behaviors.index(target)
    n = len(users)
    perm = torch.randperm(n, generator=generator)
    excludes = [data.pair_set(b) for b in behaviors]
    s = pairs_per_user
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        u = users[idx]
        pos, neg, valid = [], [], []
        for k, (indptr, indices) in enumerate(csrs):
            lo = indptr[u][:, None]
            deg = indptr[u + 1][:, None] - lo
            off = (torch.rand(len(u), s, generator=generator) * deg).long()
            at = (lo + torch.minimum(off, (deg - 1).clamp(min=0))).clamp(
                max=max(len(indices) - 1, 0)
            )
            ok = deg[:, 0] > 0
            p = indices[at] if len(indices) else torch.zeros(len(u), s, dtype=torch.long)
            p = torch.where(ok[:, None], p, torch.zeros_like(p))
            if k == target_index:
                p[:, 0] = items[idx]
                ok = torch.ones(len(u), dtype=torch.bool)
            pos.append(p)
            valid.append(ok)
            neg.append(
                sample_negatives_t(u, data.n_items, excludes[k], generator, n=s).view(len(u), s)
            )
        # held-out meta batch: target triples outside this train batch (when there are any)
        rest = n - len(idx)
        m = min(meta_batch_size, max(rest, 1))
        if rest > 0:
            j = torch.randint(0, rest, (m,), generator=generator)
            j = torch.where(j < start, j, j + len(idx))
        else:
            j = torch.randint(0, n, (m,), generator=generator)
        mu = users[perm[j]]
        meta_neg = sample_negatives_t(mu, data.n_items, excludes[target_index], generator)
        yield BehaviorBatch(
            u, torch.stack(pos), torch.stack(neg), torch.stack(valid), mu, items[perm[j]], meta_neg
        )


# ------------------------------------------------------------------------------------ sequences
def sequence_views(
    data: TrainData, behavior: str | None, *, max_len: int, min_history: int
) -> tuple[CutSampler, LogUniformSampler]:
    """Training cuts of the users' chronological sequences of ``behavior`` (None: every
    behavior) and the log-uniform negative sampler over their item counts (cached)."""

    def make() -> tuple[CutSampler, LogUniformSampler]:
        seqs = SequenceSet.from_log(data.log, behavior)
        return (
            CutSampler(seqs, max_len=max_len, min_history=min_history),
            LogUniformSampler(item_counts(seqs)),
        )

    return data.cached(("seq-views", behavior or "all", max_len, min_history), make)


__all__ = [
    "BPRBatch",
    "BehaviorBatch",
    "DataSchema",
    "LabelledPairs",
    "TrainData",
    "behavior_batches",
    "bpr_batches",
    "category_count",
    "sequence_views",
    "weighted_matrix",
]
