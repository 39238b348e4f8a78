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
==============  ============================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

ArrayLike = Tensor | np.ndarray

#: The metrics :func:`from_hits` and :func:`from_rank` compute by default, in report order.
DEFAULT_METRICS: tuple[str, ...] = ("hr", "recall", "ndcg", "mrr")
#: Every metric name understood by :func:`from_hits`.
HIT_METRICS: tuple[str, ...] = ("hr", "recall", "ndcg", "ndcg_comirec", "mrr")


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
            else:
                v = mrr(hits, k)
            out[f"{nm}@{k}"] = v
    return out


def from_rank(
    rank: ArrayLike, ks: Iterable[int], names: Iterable[str] = DEFAULT_METRICS
) -> dict[str, Tensor]:
    """Per-row metrics for one relevant item per row at 0-based position ``rank`` (sampled 1+N).

    With ``r = rank`` and ``hit = r < k``: ``hr@k = recall@k = hit`` (one positive),
    ``ndcg@k = hit / log2(r + 2)`` (IDCG = 1), ``mrr@k = hit / (r + 1)``.
    """
    metric_names = _check_names(names, DEFAULT_METRICS)
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
            else:
                v = torch.where(hit, 1.0 / (r + 1.0), zero)
            out[f"{nm}@{k}"] = v
    return out


__all__ = [
    "DEFAULT_METRICS",
    "HIT_METRICS",
    "dcg",
    "discounts",
    "from_hits",
    "from_rank",
    "hit_rate",
    "mrr",
    "ndcg",
    "ndcg_comirec",
    "recall",
]
