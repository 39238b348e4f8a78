"""Evaluation protocols as objects: full ranking and sampled 1+N for scorers.

A protocol is a small object holding its options (validated once, when it is made), with a
``label`` (the key of its figures under ``result["metrics"]``) and one
``evaluate(model, split, part)`` method that returns the evaluator's result dict. The
multi-interest retrieval protocol, :class:`polyrec.eval.retrieval.Retrieval`, is the third.
All three rank through the same batched top-k core, :mod:`polyrec.eval.ranking`.

**Full ranking** (:class:`FullRanking`, ``"full"``). Every item is ranked; the items the user is
known to have (the mask, see :func:`mask_keys`) are set to ``-inf`` through their CSR indices
and ``torch.topk`` gives the top-K list, whose items are looked up among the held-out pairs.
The mask is the user's training items of the target behavior (``mask="target"``) or of every
behavior (``mask="all"``), at test time the validation pairs too, and for protocols whose
held-out users come with a ``history`` (user split) that history; the positives being evaluated
are always removed from it. Metrics are averaged over users.

**Sampled 1+N** (:class:`SampledRanking`, ``"sampled"``). Each held-out pair's positive is
ranked among its N negatives stored in the split (drawn once with the split's seed); metrics
are averaged over pairs. Skipped, with a note, when the split stores no negatives.

Both break ties against the positive (see :mod:`polyrec.eval.ranking`). Scorer protocols share
one pass over the users (:func:`evaluate_scorer`): each batch is scored once and handed to every
protocol, so asking for both costs one scoring pass.

**Metrics.** Every protocol reports its standard metrics (:data:`polyrec.eval.metrics.
DEFAULT_METRICS` at each k: ``hr``, ``recall``, ``ndcg``, ``mrr``; retrieval: ``hr``,
``recall``, ``ndcg``) and, when asked through ``metrics``, more (:data:`METRICS`): the per-user
``precision`` and ``map``, averaged like the others, and the list-level ``coverage``, ``avgpop``
and ``gini`` (:mod:`polyrec.eval.metrics`), computed from how often each item is listed in the
users' top-k lists (:class:`polyrec.eval.ranking.ItemCounts`). List-level metrics need
recommendation lists: full ranking and retrieval compute them; sampled 1+N does not (a positive
and its N sampled negatives are not a recommendation list) and says so in a note. Keys are
ordered by k, then the standard metrics, then the asked ones in :data:`METRICS` order. Item
popularity (``avgpop``) is the number of training interactions of the target behavior
(:func:`popularity`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from polyrec.data.sampling import pair_keys, sorted_unique
from polyrec.data.splits import Holdout, Split
from polyrec.errors import ConfigError
from polyrec.eval import metrics as M
from polyrec.eval.ranking import (
    ItemCounts,
    MetricSums,
    PairIndex,
    Progress,
    full_ranking,
    hit_matrix,
    masked_topk,
    masked_topk_values,
    sampled_ranks,
    scoring_mode,
    user_batches,
)
from polyrec.models.base import Model, Scorer

PARTS: tuple[str, ...] = ("valid", "test")
MASK_MODES: tuple[str, ...] = ("target", "all")
#: every metric name a protocol can be asked for; the standard ones are always reported
METRICS: tuple[str, ...] = (*M.DEFAULT_METRICS, *M.EXTRA_METRICS, *M.LIST_METRICS)

# one user batch's scores [B, n_items], its user ids (numpy) and the same ids on the device
# → per-row metric values
BatchStep = Callable[[Tensor, np.ndarray, Tensor], dict[str, Tensor]]


# --------------------------------------------------------------------------- argument checks
def check_part(part: str) -> str:
    if part not in PARTS:
        raise ConfigError(f"evaluation part must be 'valid' or 'test' (got {part!r})")
    return part


def check_ks(ks: Sequence[int]) -> list[int]:
    """Distinct cut-offs, ascending; each a positive integer."""
    try:
        kk = sorted({int(k) for k in ks})
    except (TypeError, ValueError):
        raise ConfigError(f"ks must be positive integers (got {ks!r})") from None
    if not kk or kk[0] < 1:
        raise ConfigError(f"ks must be positive integers (got {list(ks)!r})")
    return kk


def check_batch_size(batch_size: int) -> int:
    if int(batch_size) < 1:
        raise ConfigError(f"evaluation batch_size must be >= 1 (got {batch_size})")
    return int(batch_size)


def check_choice(what: str, value: Any, choices: Sequence[str]) -> Any:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {', '.join(choices)} (got {value!r})")
    return value


def check_protocols(protocols: Sequence[str] | str, known: Sequence[str]) -> list[str]:
    """Distinct protocol names in the order asked (one name may be given as a string)."""
    protos = list(dict.fromkeys((protocols,) if isinstance(protocols, str) else protocols))
    bad = [p for p in protos if p not in known]
    if bad or not protos:
        raise ConfigError(
            f"unknown evaluation protocol(s) {bad or protos}; choose from {', '.join(known)}"
        )
    return protos


def check_metrics(metrics: Sequence[str] | str) -> tuple[str, ...]:
    """Distinct metric names from :data:`METRICS` (one name may be given as a string)."""
    names = tuple(dict.fromkeys((metrics,) if isinstance(metrics, str) else metrics))
    bad = [m for m in names if m not in METRICS]
    if bad:
        raise ConfigError(f"unknown metric(s) {bad}; choose from {', '.join(METRICS)}")
    return names


def row_metrics(standard: Sequence[str], asked: Sequence[str]) -> list[str]:
    """The per-row metric names to compute: ``standard``, then the asked extra ones."""
    return [*standard, *(m for m in M.EXTRA_METRICS if m in asked and m not in standard)]


def list_metrics(asked: Sequence[str]) -> list[str]:
    """The asked list-level metric names, in report order."""
    return [m for m in M.LIST_METRICS if m in asked]


def by_cutoff(per_row: dict[str, float], lists: dict[str, float], ks: Sequence[int]) -> dict:
    """``per_row`` and ``lists`` figures in one dict ordered by k (``per_row`` as it is when
    there are no list figures)."""
    if not lists:
        return per_row
    both = per_row | lists
    return {key: v for k in ks for key, v in both.items() if key.rpartition("@")[2] == str(k)}


def check_items(model: Model, n_items: int, what: str) -> None:
    """The model must rank the split's items (``what`` names the model's side)."""
    if getattr(model, "n_items", n_items) != n_items:
        raise ValueError(f"{what} {model.n_items} items but the split's dataset has {n_items}")


# --------------------------------------------------------------------------- split helpers
def holdout(split: Split, part: str) -> Holdout:
    if part == "valid":
        return split.valid
    if part == "test":
        return split.test
    raise ValueError(f"part must be 'valid' or 'test' (got {part!r})")


def mask_keys(split: Split, part: str, mask: str = "target") -> np.ndarray:
    """Sorted keys of the (user, item) pairs hidden from the full ranking of ``part``.

    ``mask="target"``: the training pairs of the target behavior; ``"all"``: of every behavior.
    For ``part="test"`` the validation pairs are added; holdouts with a ``history`` (user split)
    add the history's pairs of the same behaviors. The held-out pairs of ``part`` itself are
    removed: a positive is never masked.
    """
    if mask not in MASK_MODES:
        raise ValueError(f"mask must be one of {', '.join(MASK_MODES)} (got {mask!r})")
    train = split.train
    n_items = train.n_items
    hold = holdout(split, part)
    behavior = train.target if mask == "target" else None
    parts = []
    rows = train.mask_behavior(behavior)
    parts.append(pair_keys(train.user[rows], train.item[rows], n_items))
    if part == "test":
        parts.append(pair_keys(split.valid.user, split.valid.item, n_items))
    if hold.history is not None:
        h = hold.history
        hrows = h.mask_behavior(h.target if mask == "target" else None)
        parts.append(pair_keys(h.user[hrows], h.item[hrows], n_items))
    keys = sorted_unique(np.concatenate(parts))
    positives = pair_keys(hold.user, hold.item, n_items)
    return np.setdiff1d(keys, positives, assume_unique=True)


def popularity(split: Split) -> np.ndarray:
    """Each item's number of training interactions of the target behavior (``int64
    [n_items]``; repeated interactions count each time): ``avgpop``'s popularity."""
    train = split.train
    items = train.item[train.mask_behavior(train.target)]
    return np.bincount(np.asarray(items, dtype=np.int64), minlength=train.n_items)


def jsonable(x: Any) -> Any:
    """Numpy scalars/arrays inside dicts and lists → plain Python (for JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def result_header(
    split: Split, part: str, ks: list[int], mask: str, n_negatives: int | None, notes: list[str]
) -> dict[str, Any]:
    """The common head of every evaluation result: what was evaluated under which protocol."""
    return {
        "part": part,
        "dataset": split.train.name,
        "protocol": split.name,
        "seed": split.seed,
        "split": jsonable(split.describe()),
        "ks": ks,
        "mask": mask,
        "metrics": {},
        "n_evaluated": {},
        "n_negatives": n_negatives,
        "notes": notes,
    }


# --------------------------------------------------------------------------- the protocols
class EvalProtocol(ABC):
    """One evaluation protocol: its options, its ``label`` and :meth:`evaluate`.

    ``ks`` (cut-offs), ``batch_size`` (users scored at once) and ``metrics`` (metrics reported
    besides the standard ones, from :data:`METRICS`) are checked here, when the protocol is made;
    a bad value is a :class:`ConfigError`.
    """

    label: ClassVar[str]
    #: what the figures under ``label`` are, in a few words
    description: ClassVar[str]

    def __init__(
        self, *, ks: Sequence[int] = (10, 20), batch_size: int = 1024, metrics: Sequence[str] = ()
    ) -> None:
        self.ks = check_ks(ks)
        self.batch_size = check_batch_size(batch_size)
        self.metrics = check_metrics(metrics)

    @abstractmethod
    def evaluate(
        self, model: Model, split: Split, part: str, *, progress: Progress | None = None
    ) -> dict[str, Any]:
        """Metrics of ``model`` on ``split``'s ``part`` pairs, in the evaluator's result format
        (figures under ``result["metrics"][self.label]``)."""

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({opts})"


class ScorerProtocol(EvalProtocol):
    """A protocol over a :class:`~polyrec.models.base.Scorer`'s score block ``[B, n_items]``."""

    #: whether :meth:`start`'s step writes into the score block (it then runs after the others)
    writes_scores: ClassVar[bool] = False

    def skip_note(self, hold: Holdout, part: str) -> str | None:
        """Why the protocol cannot run on this holdout (a note for the result), else None."""
        return None

    @abstractmethod
    def count(self, hold: Holdout, users: np.ndarray) -> int:
        """The number of rows the figures are averaged over (``users``: the evaluated users)."""

    @abstractmethod
    def start(self, split: Split, part: str, device: torch.device) -> BatchStep:
        """Build this evaluation's indices on ``device``; return the per-batch step."""

    def finish(self) -> dict[str, float]:
        """Figures of the pass :meth:`start` began that are not row averages (list-level)."""
        return {}

    def notes(self) -> list[str]:
        """Notes for the result about what this protocol did not compute."""
        return []

    def evaluate(
        self, model: Model, split: Split, part: str, *, progress: Progress | None = None
    ) -> dict[str, Any]:
        return evaluate_scorer(model, split, part, [self], progress=progress)


class FullRanking(ScorerProtocol):
    """Rank every item; the user's known items are masked (see the module docstring)."""

    label = "full"
    description = "full ranking of every item, known items masked"
    writes_scores = True

    def __init__(
        self,
        *,
        ks: Sequence[int] = (10, 20),
        mask: str = "target",
        batch_size: int = 1024,
        metrics: Sequence[str] = (),
    ) -> None:
        super().__init__(ks=ks, batch_size=batch_size, metrics=metrics)
        self.mask = check_choice("mask", mask, MASK_MODES)
        # the list-level metrics of the pass :meth:`start` began
        self._lists: list[str] = []
        self._counts: ItemCounts | None = None
        self._popularity: np.ndarray | None = None

    def count(self, hold: Holdout, users: np.ndarray) -> int:
        return len(users)

    def start(self, split: Split, part: str, device: torch.device) -> BatchStep:
        n_users, n_items = split.train.n_users, split.train.n_items
        hold = holdout(split, part)
        positives = PairIndex(pair_keys(hold.user, hold.item, n_items), n_users, n_items, device)
        masked = PairIndex(mask_keys(split, part, self.mask), n_users, n_items, device)
        ks, max_k = self.ks, self.ks[-1]
        names = row_metrics(M.DEFAULT_METRICS, self.metrics)
        self._lists = list_metrics(self.metrics)
        self._popularity = popularity(split) if "avgpop" in self._lists else None
        self._counts = counts = ItemCounts(ks, n_items, device) if self._lists else None

        def step(scores: Tensor, users: np.ndarray, users_t: Tensor) -> dict[str, Tensor]:
            # full_ranking, with the listed scores kept for the item counts
            values, top = masked_topk_values(writable(scores), users_t, masked, max_k, positives)
            if counts is not None:
                # masked items (-inf) fill a list only when a user has fewer unmasked items
                # than max_k: they are not recommendations
                counts.add(top.masked_fill(torch.isneginf(values), -1))
            hits = hit_matrix(top, users_t, positives, max_k)
            return M.from_hits(hits, positives.counts(users_t), ks, names)

        return step

    def finish(self) -> dict[str, float]:
        if self._counts is None:
            return {}
        pop = np.zeros(0, np.int64) if self._popularity is None else self._popularity
        return M.from_counts(self._counts.counts, pop, self._lists)


class SampledRanking(ScorerProtocol):
    """Rank each held-out item among its N negatives stored in the split."""

    label = "sampled"
    description = "rank among the split's stored 1+N candidates"

    def notes(self) -> list[str]:
        lists = list_metrics(self.metrics)
        if not lists:
            return []
        return [
            f"sampled: {', '.join(lists)} not computed (list-level metrics need recommendation "
            "lists; a positive and its sampled negatives are not one)"
        ]

    def skip_note(self, hold: Holdout, part: str) -> str | None:
        if hold.negatives is None:
            return (
                "sampled: skipped, the split stores no negatives for this part (made with "
                "n_negatives=0)"
            )
        if len(hold.negatives) != len(hold):
            raise ValueError(
                f"{part} holdout has {len(hold)} pairs but {len(hold.negatives)} rows of negatives"
            )
        return None

    def count(self, hold: Holdout, users: np.ndarray) -> int:
        return len(hold)

    def start(self, split: Split, part: str, device: torch.device) -> BatchStep:
        hold = holdout(split, part)
        negatives = hold.negatives
        assert negatives is not None
        order = np.argsort(hold.user, kind="stable")
        sorted_users = hold.user[order]
        ks = self.ks
        names = row_metrics(M.DEFAULT_METRICS, self.metrics)

        def step(scores: Tensor, users: np.ndarray, users_t: Tensor) -> dict[str, Tensor]:
            # the batch's pairs: a slice of the pairs sorted by user (users are ascending)
            lo = int(np.searchsorted(sorted_users, users[0], side="left"))
            hi = int(np.searchsorted(sorted_users, users[-1], side="right"))
            idx = order[lo:hi]
            rows = torch.from_numpy(np.searchsorted(users, hold.user[idx])).to(device)
            items = torch.from_numpy(hold.item[idx]).to(device)
            negs = torch.from_numpy(np.asarray(negatives[idx], np.int64)).to(device)
            return M.from_rank(sampled_ranks(scores, rows, items, negs), ks, names)

        return step


def evaluate_scorer(
    model: Model,
    split: Split,
    part: str,
    protocols: Sequence[ScorerProtocol],
    *,
    mask: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate a Scorer under several protocols in one pass over the users.

    The protocols must agree on ``ks`` and ``batch_size``. Each batch of users is scored once
    (``model.scores``) and handed to every protocol, those that write into the scores last.
    ``mask`` is the result's ``"mask"`` entry (default: the full-ranking protocol's mask, or
    ``"none"``). Only users with at least one held-out pair are evaluated.
    """
    part = check_part(part)
    if not protocols:
        raise ConfigError("no evaluation protocol given")
    ks, batch_size = protocols[0].ks, protocols[0].batch_size
    if any(p.ks != ks or p.batch_size != batch_size for p in protocols):
        raise ConfigError(
            f"protocols evaluated together need the same ks and batch_size: {list(protocols)}"
        )
    if mask is None:
        mask = next((p.mask for p in protocols if isinstance(p, FullRanking)), "none")
    kind = getattr(model, "kind", "scorer")
    if kind != "scorer" or not isinstance(model, Scorer):
        raise NotImplementedError(
            f"cannot evaluate {type(model).__name__} (kind {kind!r}): only Scorer models"
        )
    n_items = split.train.n_items
    check_items(model, n_items, "model scores")
    hold = holdout(split, part)
    notes: list[str] = []
    active: list[ScorerProtocol] = []
    for p in protocols:
        note = p.skip_note(hold, part)
        if note is None:
            active.append(p)
        else:
            notes.append(note)
    users = np.unique(hold.user)
    if len(users) == 0:
        notes.append(f"{part}: the split holds no {part} pairs; nothing evaluated")
        active = []
    n_neg = None if hold.negatives is None else int(hold.negatives.shape[1])
    result = result_header(split, part, list(ks), mask, n_neg, notes)
    if not active:
        return result

    device = model.device
    name = type(model).__name__
    sums = {p.label: MetricSums() for p in active}
    with scoring_mode(model):
        # protocols that only read the scores first, then those that write into them
        steps = [(p.label, p.start(split, part, device)) for p in active if not p.writes_scores]
        steps += [(p.label, p.start(split, part, device)) for p in active if p.writes_scores]
        for ub, ub_t in user_batches(users, batch_size, device, progress):
            scores = model.scores(ub_t)
            check_scores(scores, len(ub), n_items, name)
            for label, step in steps:
                sums[label].add(step(scores, ub, ub_t))
            del scores
    for p in active:
        count = p.count(hold, users)
        result["metrics"][p.label] = by_cutoff(sums[p.label].means(count), p.finish(), ks)
        result["n_evaluated"][p.label] = count
        notes.extend(p.notes())
    return result


def check_scores(scores: Tensor, rows: int, n_items: int, name: str) -> None:
    if scores.shape != (rows, n_items):
        raise ValueError(
            f"{name}.scores returned shape {tuple(scores.shape)}; expected ({rows}, {n_items})"
        )


def writable(scores: Tensor) -> Tensor:
    """``scores`` itself when the ranking may write into it, else a float copy.

    Views and tensors that require grad may alias a model's cache or parameters (the ranking
    masks in place); ``torch.nextafter`` needs float32/float64.
    """
    if scores.dtype not in (torch.float32, torch.float64):
        return scores.to(torch.float32)
    if scores._is_view() or scores.requires_grad:
        return scores.detach().clone()
    return scores


__all__ = [
    "MASK_MODES",
    "METRICS",
    "PARTS",
    "EvalProtocol",
    "FullRanking",
    "PairIndex",
    "SampledRanking",
    "ScorerProtocol",
    "by_cutoff",
    "check_batch_size",
    "check_choice",
    "check_ks",
    "check_metrics",
    "check_part",
    "check_protocols",
    "evaluate_scorer",
    "full_ranking",
    "holdout",
    "list_metrics",
    "mask_keys",
    "masked_topk",
    "pair_keys",
    "popularity",
    "result_header",
    "row_metrics",
    "sampled_ranks",
]
