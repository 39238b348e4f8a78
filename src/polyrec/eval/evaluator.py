"""Evaluate a trained model on a split's validation or test pairs: the one entry point.

:func:`evaluate` picks the protocol objects (:mod:`polyrec.eval.protocols`,
:mod:`polyrec.eval.retrieval`) for the model and the names asked for and runs them: a Scorer
under full ranking and/or sampled 1+N in one pass over the users (each batch scored once), an
InterestModel under multi-interest retrieval. Full-ranking and retrieval metrics are averaged
over users, sampled metrics over held-out pairs; list-level metrics (coverage, average
popularity, Gini index) are figures of all the users' lists together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from polyrec.data.splits import Split
from polyrec.errors import ConfigError
from polyrec.eval.protocols import (
    MASK_MODES,
    PARTS,
    FullRanking,
    SampledRanking,
    ScorerProtocol,
    check_choice,
    check_metrics,
    check_part,
    check_protocols,
    evaluate_scorer,
)
from polyrec.eval.ranking import Progress
from polyrec.eval.retrieval import Retrieval, retrieval_options
from polyrec.models.base import HistoryScoring, InterestModel, Model

#: what :func:`evaluate` asks a Scorer for by default
PROTOCOLS: tuple[str, ...] = ("full", "sampled")
#: every protocol name :func:`evaluate` understands
KNOWN_PROTOCOLS: tuple[str, ...] = ("full", "sampled", "retrieval")


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
    metrics: Sequence[str] = (),
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
        retrieval: options of the :class:`~polyrec.eval.retrieval.Retrieval` protocol for
            interest models (``ndcg``, ``exclude_history``, ``max_len``, ``search``).
        metrics: metrics to report besides the standard ones (``hr``, ``recall``, ``ndcg``,
            ``mrr`` at each k; retrieval: ``hr``, ``recall``, ``ndcg``), from
            :data:`~polyrec.eval.protocols.METRICS`: ``precision``, ``map`` (per user, averaged
            like the others; ``mrr`` for retrieval) and the list-level ``coverage``,
            ``avgpop``, ``gini`` (full ranking and retrieval only; sampled 1+N leaves them out
            with a note). Default none: the result is the same as before they existed.
            Definitions: :mod:`polyrec.eval.metrics`.

    Returns a JSON-serialisable dict::

        {"part", "dataset", "protocol" (split name), "seed", "split" (split.describe()),
         "ks", "mask", "metrics": {"full": {"hr@10": ..}, "sampled": {..}},
         "n_evaluated": {"full": users, "sampled": pairs}, "n_negatives": N or None,
         "notes": [..]}

    The model is put in eval mode (its previous mode is restored afterwards) and
    ``model.prepare_scoring()`` runs under ``torch.no_grad()``; scoring runs on ``model.device``.
    Only users with at least one held-out pair are evaluated. Ties count against the positive in
    both protocols (a constant scorer scores 0 at any k < number of candidates).

    An InterestModel is evaluated by the :class:`~polyrec.eval.retrieval.Retrieval` protocol
    (ComiRec retrieval; ``mask`` does not apply, history items are not excluded unless
    ``retrieval={"exclude_history": True}``): its figures are under ``metrics["retrieval"]``, and
    also under ``metrics["full"]`` when "full" was asked for (the result's ``retrieval``
    description then lists ``"aliases": ["full"]``; its ``label`` is ``"retrieval"``).

    Raises:
        ConfigError: an unknown part, protocol, k, mask, metric, retrieval option or a batch
            size < 1;
            asking a Scorer for "retrieval".
        NotImplementedError: a model that is neither a Scorer nor an InterestModel.
        FloatingPointError: the model returned NaN scores.
        ValueError: the model's item count or score shape does not match the split.
    """
    protos = check_protocols(protocols, KNOWN_PROTOCOLS)
    extra = check_metrics(metrics)
    check_part(part)
    check_choice("mask", mask, MASK_MODES)
    kind = getattr(model, "kind", "scorer")
    if kind == "interest" and isinstance(model, InterestModel):
        options = retrieval_options(retrieval or {})
        protocol = Retrieval(ks=ks, batch_size=batch_size, metrics=extra, **options)
        aliases = [p for p in protos if p == "full"]  # the trainer selects on "full" by default
        return protocol.evaluate(model, split, part, progress=progress, also_as=aliases)
    if "retrieval" in protos and isinstance(model, HistoryScoring):
        options = retrieval_options(retrieval or {})
        protocol = Retrieval(ks=ks, batch_size=batch_size, metrics=extra, **options)
        result = protocol.evaluate(model, split, part, progress=progress)
        others = [p for p in protos if p != "retrieval"]
        if others:  # the scorer protocols on the same users' training rows
            rest = evaluate(model, split, part, protocols=others, ks=ks, mask=mask,
                            batch_size=batch_size, progress=progress, metrics=metrics)  # fmt: skip
            for key in ("metrics", "n_evaluated"):
                result[key] = {**rest.get(key, {}), **result[key]}
            result["notes"] = [*result.get("notes", []), *rest.get("notes", [])]
        return result
    if "retrieval" in protos:
        raise ConfigError(
            f"protocol 'retrieval' is for multi-interest/sequential models; "
            f"{type(model).__name__} is a scorer: use 'full' or 'sampled'"
        )
    chosen: list[ScorerProtocol] = [
        FullRanking(ks=ks, mask=mask, batch_size=batch_size, metrics=extra)
        if name == "full"
        else SampledRanking(ks=ks, batch_size=batch_size, metrics=extra)
        for name in protos
    ]
    result = evaluate_scorer(model, split, part, chosen, mask=mask, progress=progress)
    return _note_unevaluated_users(result, split, part)


def _note_unevaluated_users(result: dict[str, Any], split: Split, part: str) -> dict[str, Any]:
    """Say in the result when validation covers fewer users than the test does (users whose
    only target interactions went to test have no validation pair), and how many."""
    if part != "valid":
        return result
    valid, test = np.unique(split.valid.user), np.unique(split.test.user)
    if 0 < len(valid) < len(test) and bool(np.isin(valid, test).all()):
        result["notes"] = [
            *result.get("notes", []),
            f"valid: {len(valid):,} of the {len(test):,} test users are evaluated; the other "
            f"{len(test) - len(valid):,} have no validation pair (too few target interactions to "
            "hold one out, or not in the data.valid_users sample)",
        ]
    return result


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


__all__ = ["KNOWN_PROTOCOLS", "PARTS", "PROTOCOLS", "evaluate", "metric_value"]
