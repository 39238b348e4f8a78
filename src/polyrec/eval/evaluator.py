"""Batched evaluation of a trained model on a split's validation or test pairs.

One pass over the users with held-out pairs, ``batch_size`` users at a time: the model scores the
batch on its own device once, the sampled 1+N protocol gathers its candidates' scores from that
block, then the full-ranking protocol masks and ranks it (see :mod:`polyrec.eval.protocols`).
Full-ranking metrics are averaged over users, sampled metrics over held-out pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from polyrec.data.splits import Split
from polyrec.errors import ConfigError
from polyrec.eval import metrics as M
from polyrec.eval.protocols import (
    MASK_MODES,
    PairIndex,
    full_ranking,
    holdout,
    mask_keys,
    pair_keys,
    result_header,
    sampled_ranks,
)
from polyrec.models.base import InterestModel, Model, Scorer

PROTOCOLS: tuple[str, ...] = ("full", "sampled")
PARTS: tuple[str, ...] = ("valid", "test")

Progress = Callable[[int, int], None]


def _check_args(
    part: str, protocols: Sequence[str], ks: Sequence[int], mask: str, batch_size: int
) -> tuple[list[str], list[int]]:
    if part not in PARTS:
        raise ConfigError(f"evaluation part must be 'valid' or 'test' (got {part!r})")
    if isinstance(protocols, str):
        protocols = (protocols,)
    protos = list(dict.fromkeys(protocols))
    bad = [p for p in protos if p not in PROTOCOLS]
    if bad or not protos:
        raise ConfigError(
            f"unknown evaluation protocol(s) {bad or protos}; choose from {', '.join(PROTOCOLS)}"
        )
    try:
        kk = sorted({int(k) for k in ks})
    except (TypeError, ValueError):
        raise ConfigError(f"ks must be positive integers (got {ks!r})") from None
    if not kk or kk[0] < 1:
        raise ConfigError(f"ks must be positive integers (got {list(ks)!r})")
    if mask not in MASK_MODES:
        raise ConfigError(f"mask must be one of {', '.join(MASK_MODES)} (got {mask!r})")
    if int(batch_size) < 1:
        raise ConfigError(f"evaluation batch_size must be >= 1 (got {batch_size})")
    return protos, kk


def evaluate(
    model: Model,
    split: Split,
    part: str,
    *,
    protocols: Sequence[str] = PROTOCOLS,
    ks: Sequence[int] = (10, 20),
    mask: str = "target",
    batch_size: int = 1024,
    progress: Progress | None = None,
    retrieval: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``split``'s ``part`` ("valid" or "test") pairs.

    Args:
        protocols: any of ``"full"`` (rank every item, known items masked) and ``"sampled"``
            (rank each held-out item among its stored N negatives; skipped with a note when the
            split stores none).
        ks: cut-offs; metrics ``hr``, ``recall``, ``ndcg``, ``mrr`` at each.
        mask: full-ranking mask, ``"target"`` (training items of the target behavior) or
            ``"all"`` (training items of every behavior); at test time the validation pairs are
            masked too; the evaluated positives never are.
        batch_size: users scored at once (one ``[batch_size, n_items]`` block in memory).
        progress: called as ``progress(done_users, total_users)`` after each batch.
        retrieval: options for interest models (``ndcg``, ``exclude_history``, ``search``; see
            :func:`polyrec.eval.retrieval.evaluate_retrieval`).

    Returns a JSON-serialisable dict::

        {"part", "dataset", "protocol" (split name), "seed", "split" (split.describe()),
         "ks", "mask", "metrics": {"full": {"hr@10": ..}, "sampled": {..}},
         "n_evaluated": {"full": users, "sampled": pairs}, "n_negatives": N or None,
         "notes": [..]}

    The model is put in eval mode (its previous mode is restored afterwards) and
    ``model.prepare_scoring()`` runs under ``torch.no_grad()``; scoring runs on ``model.device``.
    Only users with at least one held-out pair are evaluated. Ties count against the positive in
    both protocols (a constant scorer scores 0 at any k < number of candidates).

    Raises:
        ConfigError: an unknown part, protocol, k, mask or a batch size < 1.
        NotImplementedError: a model that is neither a Scorer nor an InterestModel.

    An InterestModel is evaluated by :func:`polyrec.eval.retrieval.evaluate_retrieval` (ComiRec
    retrieval; ``mask`` does not apply, history items are not excluded): its figures are under
    ``metrics["retrieval"]``, and also under ``metrics["full"]`` when "full" was asked for.
    Asking a Scorer for "retrieval" is a :class:`ConfigError`.
        FloatingPointError: the model returned NaN scores.
        ValueError: the model's item count or score shape does not match the split.
    """
    kind = getattr(model, "kind", "scorer")
    if kind == "interest" and isinstance(model, InterestModel):
        # retrieval evaluation (polyrec.eval.retrieval): metrics under "retrieval"; a caller
        # asking for "full" (the trainer's default) gets the same figures under "full" too
        from polyrec.eval.retrieval import evaluate_retrieval

        wanted = (protocols,) if isinstance(protocols, str) else tuple(protocols)
        return evaluate_retrieval(
            model,
            split,
            part,
            ks=ks,
            batch_size=batch_size,
            progress=progress,
            also_as=[p for p in wanted if p == "full"],
            **dict(retrieval or {}),
        )
    wanted_protos = (protocols,) if isinstance(protocols, str) else tuple(protocols)
    if "retrieval" in wanted_protos:
        raise ConfigError(
            f"protocol 'retrieval' is for multi-interest/sequential models; "
            f"{type(model).__name__} is a scorer: use 'full' or 'sampled'"
        )
    protos, kk = _check_args(part, protocols, ks, mask, batch_size)
    if kind != "scorer" or not isinstance(model, Scorer):
        raise NotImplementedError(
            f"cannot evaluate {type(model).__name__} (kind {kind!r}): only Scorer models"
        )

    train = split.train
    n_users, n_items = train.n_users, train.n_items
    if getattr(model, "n_items", n_items) != n_items:
        raise ValueError(
            f"model scores {model.n_items} items but the split's dataset has {n_items}"
        )
    hold = holdout(split, part)
    notes: list[str] = []
    n_neg: int | None = None if hold.negatives is None else int(hold.negatives.shape[1])
    if "sampled" in protos and hold.negatives is None:
        protos.remove("sampled")
        notes.append(
            "sampled: skipped, the split stores no negatives for this part (made with "
            "n_negatives=0)"
        )
    if hold.negatives is not None and len(hold.negatives) != len(hold):
        raise ValueError(
            f"{part} holdout has {len(hold)} pairs but {len(hold.negatives)} rows of negatives"
        )

    users_np = np.unique(hold.user)
    if len(users_np) == 0:
        notes.append(f"{part}: the split holds no {part} pairs; nothing evaluated")
        protos = []

    result = result_header(split, part, kk, mask, n_neg, notes)
    if not protos:
        return result

    do_full = "full" in protos
    do_sampled = "sampled" in protos
    device = model.device
    max_k = kk[-1]

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.prepare_scoring()
            positives = masked = None
            if do_full:
                positives = PairIndex(
                    pair_keys(hold.user, hold.item, n_items), n_users, n_items, device
                )
                masked = PairIndex(mask_keys(split, part, mask), n_users, n_items, device)
            if do_sampled:
                order = np.argsort(hold.user, kind="stable")
                sorted_users = hold.user[order]
            sums: dict[str, dict[str, Tensor]] = {p: {} for p in protos}
            total = len(users_np)
            for start in range(0, total, batch_size):
                ub = users_np[start : start + batch_size]
                ub_t = torch.from_numpy(ub).to(device)
                scores = model.scores(ub_t)
                _check_scores(scores, len(ub), n_items, type(model).__name__)
                if do_sampled:
                    lo = int(np.searchsorted(sorted_users, ub[0], side="left"))
                    hi = int(np.searchsorted(sorted_users, ub[-1], side="right"))
                    idx = order[lo:hi]
                    rows = torch.from_numpy(np.searchsorted(ub, hold.user[idx])).to(device)
                    items = torch.from_numpy(hold.item[idx]).to(device)
                    assert hold.negatives is not None
                    negs = torch.from_numpy(np.asarray(hold.negatives[idx], np.int64)).to(device)
                    rank = sampled_ranks(scores, rows, items, negs)
                    _accumulate(sums["sampled"], M.from_rank(rank, kk))
                if do_full:
                    assert positives is not None and masked is not None
                    scores = _writable(scores)
                    _, hits, n_pos = full_ranking(scores, ub_t, masked, positives, max_k)
                    _accumulate(sums["full"], M.from_hits(hits, n_pos, kk))
                del scores
                if progress is not None:
                    progress(min(start + batch_size, total), total)
    finally:
        model.train(was_training)

    counts = {"full": len(users_np), "sampled": len(hold)}
    for p in protos:
        result["metrics"][p] = {k: float(v) / counts[p] for k, v in sums[p].items()}
        result["n_evaluated"][p] = counts[p]
    return result


def _check_scores(scores: Tensor, rows: int, n_items: int, name: str) -> None:
    if scores.shape != (rows, n_items):
        raise ValueError(
            f"{name}.scores returned shape {tuple(scores.shape)}; expected ({rows}, {n_items})"
        )


def _writable(scores: Tensor) -> Tensor:
    """``scores`` itself when the ranking may write into it, else a float copy.

    Views and tensors that require grad may alias a model's cache or parameters (the ranking
    masks in place); ``torch.nextafter`` needs float32/float64.
    """
    if scores.dtype not in (torch.float32, torch.float64):
        return scores.to(torch.float32)
    if scores._is_view() or scores.requires_grad:
        return scores.detach().clone()
    return scores


def _accumulate(acc: dict[str, Tensor], values: dict[str, Tensor]) -> None:
    for k, v in values.items():
        s = v.sum()
        acc[k] = acc[k] + s if k in acc else s


def metric_value(result: dict[str, Any], name: str = "ndcg@10", protocol: str = "full") -> float:
    """One figure of an :func:`evaluate` result, e.g. ``metric_value(r, "ndcg@10", "sampled")``."""
    per = result.get("metrics", {}).get(protocol)
    if per is None:
        have = ", ".join(result.get("metrics", {})) or "none"
        raise KeyError(
            f"the result has no {protocol!r} metrics (protocols evaluated: {have}); "
            f"notes: {'; '.join(result.get('notes', [])) or '-'}"
        )
    if name not in per:
        raise KeyError(f"no metric {name!r} under {protocol!r}; have {', '.join(per)}")
    return float(per[name])


__all__ = ["PARTS", "PROTOCOLS", "evaluate", "metric_value"]
