"""Per-row ranking metrics: pure functions of hit matrices or ranks.

Two inputs are understood:

* a **top-K hit matrix** ``hits[B, K]`` (bool): ``hits[b, p]`` is true when the item the model put
  at position ``p`` (0-based, best first) for row ``b`` is relevant, and ``n_pos[B]``: the number
  of relevant items of row ``b`` (all of them, also those ranked below K);
* a **rank** ``rank[B]``: the 0-based position of a row's single relevant item (the sampled 1+N
  protocol: ``rank`` = number of negatives ranked above the positive).

Every function returns one value per row as a float64 tensor on the input's device (numpy input is
accepted and converted with :func:`torch.as_tensor`); average over rows to get the reported figure.
With positions ``p = 0 .. k-1`` and ``rel_p = hits[b, p]``:

==============  ============================================================================
HR@k            ``1 if any(rel_p for p < k) else 0``
Recall@k        ``sum_{p<k} rel_p / n_pos``  (denominator ``n_pos``, *not* ``min(n_pos, k)``;
                a row with more than k positives cannot reach 1; rows with ``n_pos = 0`` get 0)
NDCG@k          ``DCG@k / IDCG@k`` with ``DCG@k = sum_{p<k} rel_p / log2(p + 2)`` and
                ``IDCG@k = sum_{p < min(n_pos, k)} 1 / log2(p + 2)`` (the standard definition)
NDCG@k ComiRec  same DCG, but ``IDCG`` sums over ``p < r`` where ``r = sum_{p<k} rel_p`` is the
                number of positives *recalled* in the top k (ComiRec's evaluation code; it
                rewards a row that recalls one positive at position 0 with 1.0 however many
                positives it has; 0 when nothing is recalled)
MRR@k           ``1 / (p* + 1)`` with ``p*`` the first position ``< k`` holding a positive, else 0
Precision@k     ``sum_{p<k} rel_p / k`` (denominator k even when the list is shorter than k)
MAP@k           mean over rows of ``AP@k = sum_{p<k} rel_p * Precision@(p+1) / min(k, n_pos)``
                (RecBole's MAP: the precision at each hit position, summed, over
                ``min(k, n_pos)``; rows with ``n_pos = 0`` get 0)
==============  ============================================================================

**List-level metrics** (not an average of per-row values) are functions of how often each item
appears in the first k positions of all evaluated users' lists, ``c_i`` (``n`` = the number of
items of the catalogue, ``c_i = 0`` for items never listed; the counts come from
:class:`polyrec.eval.ranking.ItemCounts`):

==============  ============================================================================
Coverage@k      ``#{i : c_i > 0} / n``: the share of the catalogue that some user is shown
                (RecBole's ItemCoverage)
AvgPop@k        ``sum_i c_i * pop_i / sum_i c_i``: the mean popularity of a recommended item,
                ``pop_i`` the item's number of training interactions (of the target
                behavior); with full lists of k items this is RecBole's AveragePopularity,
                the per-user mean ``sum_{p<k} pop / k`` averaged over users
Gini@k          ``sum_{j=1..n} (2j - n - 1) c_(j) / (n * sum_i c_i)`` with ``c_(1) <= .. <=
                c_(n)`` the counts in ascending order, zeros included (RecBole's GiniIndex):
                0 when every item is listed equally often, ``1 - 1/n`` when one item takes
                every slot; 0 when nothing is listed
==============  ============================================================================

RecBole divides Coverage and Gini by its item count, which includes its padding item; here ``n``
is the number of real items, so RecBole's figures on the same lists are ``n / (n + 1)`` of
Coverage (Gini differs likewise, slightly).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray

#: The metrics :func:`from_hits` and :func:`from_rank` compute by default, in report order.
DEFAULT_METRICS: tuple[str, ...] = ("hr", "recall", "ndcg", "mrr")
#: Per-row metrics beyond the default ones (asked for by name), in report order.
EXTRA_METRICS: tuple[str, ...] = ("precision", "map")
#: Every metric name understood by :func:`from_hits`.
HIT_METRICS: tuple[str, ...] = ("hr", "recall", "ndcg", "ndcg_comirec", "mrr", *EXTRA_METRICS)
#: Every metric name understood by :func:`from_rank`.
RANK_METRICS: tuple[str, ...] = (*DEFAULT_METRICS, *EXTRA_METRICS)
#: Metrics of the recommended lists as a whole (:func:`from_counts`), in report order.
LIST_METRICS: tuple[str, ...] = ("coverage", "avgpop", "gini")


def _as_tensor(x: ArrayLike) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def _top(hits: ArrayLike, k: int) -> Tensor:
    h = _as_tensor(hits)
    if h.ndim != 2:
        raise ValueError(f"hits must be a [rows, K] matrix, got shape {tuple(h.shape)}")
    if k < 1:
        raise ValueError(f"k must be >= 1 (got {k})")
    if h.shape[1] < k:
        raise ValueError(f"hits has {h.shape[1]} positions but k = {k} needs at least k")
    return h[:, :k].bool()


def discounts(k: int, device: torch.device | str | None = None) -> Tensor:
    """``1 / log2(p + 2)`` for ``p = 0 .. k-1`` (float64): the DCG weight of each position."""
    return 1.0 / torch.log2(torch.arange(k, dtype=torch.float64, device=device) + 2.0)


def _ideal(count: Tensor, k: int) -> Tensor:
    """``sum_{p < count} 1/log2(p+2)`` per row (``count`` clipped to ``0..k``)."""
    cum = torch.cat(
        [
            torch.zeros(1, dtype=torch.float64, device=count.device),
            torch.cumsum(discounts(k, count.device), 0),
        ]
    )
    return cum[count.long().clamp(0, k)]


def hit_rate(hits: ArrayLike, k: int) -> Tensor:
    """HR@k: 1 when at least one of the first k positions is relevant, else 0."""
    return _top(hits, k).any(dim=1).double()


def recall(hits: ArrayLike, n_pos: ArrayLike, k: int) -> Tensor:
    """Recall@k = (relevant items among the first k) / n_pos; 0 for rows with n_pos = 0."""
    h = _top(hits, k)
    n = _as_tensor(n_pos).to(h.device).double()
    return h.sum(dim=1).double() / n.clamp(min=1.0)


def dcg(hits: ArrayLike, k: int) -> Tensor:
    """DCG@k = sum_{p<k} rel_p / log2(p + 2)."""
    h = _top(hits, k)
    return (h.double() * discounts(k, h.device)).sum(dim=1)


def ndcg(hits: ArrayLike, n_pos: ArrayLike, k: int) -> Tensor:
    """NDCG@k = DCG@k / IDCG@k, IDCG over the first min(n_pos, k) positions; 0 when n_pos = 0."""
    h = _top(hits, k)
    n = _as_tensor(n_pos).to(h.device)
    idcg = _ideal(n, k)
    return torch.where(idcg > 0, dcg(h, k) / idcg.clamp(min=1e-12), torch.zeros_like(idcg))


def ndcg_comirec(hits: ArrayLike, k: int) -> Tensor:
    """ComiRec's NDCG@k: IDCG over r = number of positives recalled in the top k (ComiRec quirk).

    ``DCG@k / sum_{p<r} 1/log2(p+2)``, 0 when ``r = 0``. Not the standard NDCG: reported only to
    compare with numbers from ComiRec-derived code.
    """
    h = _top(hits, k)
    idcg = _ideal(h.sum(dim=1), k)
    return torch.where(idcg > 0, dcg(h, k) / idcg.clamp(min=1e-12), torch.zeros_like(idcg))


def mrr(hits: ArrayLike, k: int) -> Tensor:
    """MRR@k = 1 / (p* + 1), p* the first position < k holding a positive; 0 without one."""
    h = _top(hits, k)
    pos = torch.arange(k, device=h.device).expand_as(h)
    first = torch.where(h, pos, torch.full_like(pos, k)).min(dim=1).values
    return torch.where(first < k, 1.0 / (first.double() + 1.0), torch.zeros_like(first.double()))


def precision(hits: ArrayLike, k: int) -> Tensor:
    """Precision@k = (relevant items among the first k) / k."""
    return _top(hits, k).sum(dim=1).double() / k


def average_precision(hits: ArrayLike, n_pos: ArrayLike, k: int) -> Tensor:
    """AP@k = sum_{p<k} rel_p * Precision@(p+1) / min(k, n_pos); 0 when n_pos = 0 (RecBole's
    MAP@k is its mean over rows)."""
    h = _top(hits, k)
    rel = h.double()
    at = torch.cumsum(rel, dim=1) / torch.arange(1, k + 1, dtype=torch.float64, device=h.device)
    n = _as_tensor(n_pos).to(h.device).double()
    return (at * rel).sum(dim=1) / n.clamp(min=1.0, max=float(k))


def coverage(counts: ArrayLike) -> float:
    """Coverage = share of the items listed at least once (``counts[n_items]``: list counts)."""
    c = _as_tensor(counts)
    return float((c > 0).sum()) / max(int(c.numel()), 1)


def average_popularity(counts: ArrayLike, popularity: ArrayLike) -> float:
    """AvgPop = sum_i counts_i * popularity_i / sum_i counts_i (0 when nothing is listed)."""
    c = _as_tensor(counts).long()
    total = int(c.sum())
    if total == 0:
        return 0.0
    pop = _as_tensor(popularity).to(c.device).long()
    return int((c * pop).sum()) / total


def gini_index(counts: ArrayLike) -> float:
    """Gini = sum_j (2j - n - 1) c_(j) / (n sum c), counts ascending, j = 1..n (RecBole's)."""
    c = _as_tensor(counts).long().flatten()
    n, total = int(c.numel()), int(c.sum())
    if n == 0 or total == 0:
        return 0.0
    j = torch.arange(1, n + 1, dtype=torch.long, device=c.device)
    # integer arithmetic: exact, the same on every device
    return int(((2 * j - n - 1) * torch.sort(c).values).sum()) / (n * total)


def _check_names(names: Iterable[str], allowed: Sequence[str]) -> list[str]:
    out = list(names)
    bad = [n for n in out if n not in allowed]
    if bad:
        raise ValueError(f"unknown metric(s) {bad}; choose from {', '.join(allowed)}")
    return out


def from_hits(
    hits: ArrayLike,
    n_pos: ArrayLike,
    ks: Iterable[int],
    names: Iterable[str] = DEFAULT_METRICS,
) -> dict[str, Tensor]:
    """Per-row ``{"<name>@<k>": Tensor[B]}`` for every metric name and every k (top-K protocol).

    ``names`` are taken from :data:`HIT_METRICS`; ``hits`` needs at least ``max(ks)`` columns.
    """
    metric_names = _check_names(names, HIT_METRICS)
    out: dict[str, Tensor] = {}
    for k in ks:
        for nm in metric_names:
            if nm == "hr":
                v = hit_rate(hits, k)
            elif nm == "recall":
                v = recall(hits, n_pos, k)
            elif nm == "ndcg":
                v = ndcg(hits, n_pos, k)
            elif nm == "ndcg_comirec":
                v = ndcg_comirec(hits, k)
            elif nm == "precision":
                v = precision(hits, k)
            elif nm == "map":
                v = average_precision(hits, n_pos, k)
            else:
                v = mrr(hits, k)
            out[f"{nm}@{k}"] = v
    return out


def from_rank(
    rank: ArrayLike, ks: Iterable[int], names: Iterable[str] = DEFAULT_METRICS
) -> dict[str, Tensor]:
    """Per-row metrics for one relevant item per row at 0-based position ``rank`` (sampled 1+N).

    With ``r = rank`` and ``hit = r < k``: ``hr@k = recall@k = hit`` (one positive),
    ``ndcg@k = hit / log2(r + 2)`` (IDCG = 1), ``mrr@k = hit / (r + 1)``, and when asked
    ``precision@k = hit / k``, ``map@k = hit / (r + 1)`` (one positive: AP = MRR).
    """
    metric_names = _check_names(names, RANK_METRICS)
    r = _as_tensor(rank).double()
    if r.ndim != 1:
        raise ValueError(f"rank must be one-dimensional, got shape {tuple(r.shape)}")
    zero = torch.zeros_like(r)
    out: dict[str, Tensor] = {}
    for k in ks:
        if k < 1:
            raise ValueError(f"k must be >= 1 (got {k})")
        hit = r < k
        for nm in metric_names:
            if nm in ("hr", "recall"):
                v = hit.double()
            elif nm == "ndcg":
                v = torch.where(hit, 1.0 / torch.log2(r + 2.0), zero)
            elif nm == "precision":
                v = hit.double() / k
            else:  # mrr, map
                v = torch.where(hit, 1.0 / (r + 1.0), zero)
            out[f"{nm}@{k}"] = v
    return out


def from_counts(
    counts: dict[int, Tensor], popularity: ArrayLike, names: Iterable[str] = LIST_METRICS
) -> dict[str, float]:
    """List-level ``{"<name>@<k>": value}`` for every name and every k of ``counts`` (item
    counts of the first k positions of every list, ``{k: Tensor[n_items]}``); ``popularity``
    (``[n_items]``) is needed for ``avgpop``. Names from :data:`LIST_METRICS`."""
    metric_names = _check_names(names, LIST_METRICS)
    out: dict[str, float] = {}
    for k, c in counts.items():
        for nm in metric_names:
            if nm == "coverage":
                out[f"{nm}@{k}"] = coverage(c)
            elif nm == "avgpop":
                out[f"{nm}@{k}"] = average_popularity(c, popularity)
            else:
                out[f"{nm}@{k}"] = gini_index(c)
    return out


__all__ = [
    "DEFAULT_METRICS",
    "EXTRA_METRICS",
    "HIT_METRICS",
    "LIST_METRICS",
    "RANK_METRICS",
    "average_popularity",
    "average_precision",
    "coverage",
    "dcg",
    "discounts",
    "from_counts",
    "from_hits",
    "from_rank",
    "gini_index",
    "hit_rate",
    "mrr",
    "ndcg",
    "ndcg_comirec",
    "precision",
    "recall",
]
