"""Retrieval evaluation of an :class:`~polyrec.models.base.InterestModel` (ComiRec protocol).

For each evaluated user the model turns the user's history into ``K`` interest vectors
(``interests(histories, lengths) -> [B, K, d]``). Each interest retrieves its top-``N`` items by
inner product with ``item_embeddings()``; the ``K`` lists are merged into one top-``N`` list by
score, an item found by several interests counting once with its best score (ComiRec,
Cen et al. KDD 2020 §3.4 / its evaluation code). ``N = max(ks)``; metrics at every ``k <= N``
read the first ``k`` of that list. (The merged list equals the top-``N`` of ``max_k`` interest
scores: any item in the latter is in its best interest's own top-``N``.)

**Histories.** User split (ComiRec): the held-out user's history is ``Holdout.history`` (first
80 % of the sequence); targets are the rest. Leave-one-out: the user's training sequence (plus,
at test time, the validation item), the held-out item the target. The last ``max_len`` items
are given to the model (``max_len`` from the model's config when it has one).

**Metrics** (:mod:`polyrec.eval.metrics`, averaged over evaluated users): ``recall``, ``ndcg``
(standard), ``hr`` at each k; ``ndcg="comirec"`` or ``"both"`` adds ``ndcg_comirec@k``
(ComiRec's variant, IDCG over the recalled positives) under its own name and a note; ``metrics``
adds the asked ones (``mrr``, ``precision``, ``map``; list-level ``coverage``, ``avgpop``,
``gini`` over the merged lists, see :mod:`polyrec.eval.protocols`). Targets are
the user's distinct held-out items. History items are **not** excluded from the ranking by
default (as ComiRec); ``exclude_history=True`` removes them (also a history item that is
a target again: repeat consumption is then unreachable).

**Search.** Exact inner-product search in torch (per-interest ``topk`` in item chunks); with
``search="faiss"`` (or ``"auto"`` when ``import faiss`` works) an exact ``IndexFlatIP`` gives
the same lists (up to the order of exactly tied scores).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from polyrec.data.sequences import SequenceSet
from polyrec.data.splits import Split
from polyrec.errors import ConfigError
from polyrec.eval import metrics as M
from polyrec.eval.protocols import (
    EvalProtocol,
    by_cutoff,
    check_choice,
    check_items,
    check_part,
    holdout,
    list_metrics,
    pair_keys,
    popularity,
    result_header,
    row_metrics,
)
from polyrec.eval.ranking import (
    ItemCounts,
    MetricSums,
    PairIndex,
    Progress,
    block_topk,
    hit_matrix,
    scoring_mode,
    user_batches,
)
from polyrec.models.base import HistoryScoring, InterestModel, Model

NdcgMode = Literal["standard", "comirec", "both"]
Search = Literal["auto", "torch", "faiss"]
NDCG_MODES: tuple[str, ...] = get_args(NdcgMode)
SEARCHES: tuple[str, ...] = get_args(Search)
PROTOCOL = "retrieval"


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def merge_topk(items: Tensor, scores: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Merge per-interest lists ``items/scores [B, K, N']`` into one top-``n`` list per row.

    Each item keeps its highest score over the interests (duplicates dropped); the result is
    sorted by score, best first: ``(items [B, n], scores [B, n])``. Rows with fewer than ``n``
    distinct items are padded with item ``-1`` and score ``-inf``.
    """
    b = items.shape[0]
    flat_i = items.reshape(b, -1)
    flat_s = scores.reshape(b, -1)
    # best score first, then a stable sort by item: the first of each item group is its best
    by_score = torch.argsort(flat_s, dim=1, descending=True, stable=True)
    si = torch.gather(flat_i, 1, by_score)
    ss = torch.gather(flat_s, 1, by_score)
    by_item = torch.argsort(si, dim=1, stable=True)
    gi = torch.gather(si, 1, by_item)
    dup_sorted = torch.zeros_like(gi, dtype=torch.bool)
    dup_sorted[:, 1:] = gi[:, 1:] == gi[:, :-1]
    dup = torch.zeros_like(dup_sorted).scatter_(1, by_item, dup_sorted)
    ss = ss.masked_fill(dup | (si < 0), float("-inf"))
    k = min(n, ss.shape[1])
    top_s, pos = torch.topk(ss, k, dim=1, sorted=True)
    top_i = torch.gather(si, 1, pos).masked_fill(torch.isinf(top_s) & (top_s < 0), -1)
    if k < n:
        top_i = torch.cat([top_i, top_i.new_full((b, n - k), -1)], dim=1)
        top_s = torch.cat([top_s, top_s.new_full((b, n - k), float("-inf"))], dim=1)
    return top_i, top_s


def interest_topk(
    interests: Tensor,
    item_emb: Tensor,
    n: int,
    *,
    exclude: tuple[Tensor, Tensor] | None = None,
    chunk: int = 65536,
) -> tuple[Tensor, Tensor]:
    """Exact per-interest top-``n`` by inner product: ``(items [B, K, n'], scores [B, K, n'])``.

    ``n' = min(n, n_items)``. ``exclude = (rows, items)`` lists (batch row, item) pairs scored
    ``-inf`` for every interest. Items are scanned ``chunk`` at a time: each chunk's scores,
    after the running top-``n``, go through the shared top-k core
    (:func:`polyrec.eval.ranking.block_topk`).
    """
    n_items = item_emb.shape[0]
    nn_ = min(n, n_items)
    best_s: Tensor | None = None
    best_i: Tensor | None = None
    for lo in range(0, n_items, chunk):
        emb = item_emb[lo : lo + chunk]
        s = torch.einsum("bkd,nd->bkn", interests, emb)
        ids = torch.arange(lo, lo + emb.shape[0], device=s.device).expand_as(s)
        if best_s is not None and best_i is not None:
            s = torch.cat([best_s, s], dim=2)
            ids = torch.cat([best_i, ids], dim=2)
        chunk_exclude = None
        if exclude is not None:
            rows, cols = exclude
            sel = (cols >= lo) & (cols < lo + emb.shape[0])
            # the chunk's columns follow the running top-n in ``s``
            shift = lo - (0 if best_s is None else best_s.shape[2])
            chunk_exclude = (rows[sel], cols[sel] - shift)
        best_s, pos = block_topk(s, nn_, exclude=chunk_exclude)
        best_i = torch.gather(ids, 2, pos)
    assert best_s is not None and best_i is not None
    return best_i, best_s


def faiss_topk(interests: Tensor, item_emb: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The same per-interest exact search with faiss ``IndexFlatIP`` (CPU, float32)."""
    faiss = _faiss()
    if faiss is None:
        raise ConfigError("search='faiss' needs the faiss extra: pip install 'polyrec[faiss]'")
    emb = item_emb.detach().float().cpu().contiguous().numpy()
    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)
    b, k, d = interests.shape
    q = interests.detach().float().cpu().reshape(b * k, d).contiguous().numpy()
    s, i = index.search(q, min(n, emb.shape[0]))
    dev = interests.device
    return (
        torch.from_numpy(i.astype(np.int64)).reshape(b, k, -1).to(dev),
        torch.from_numpy(s).reshape(b, k, -1).to(dev),
    )


def retrieve(
    interests: Tensor,
    item_emb: Tensor,
    n: int,
    *,
    exclude: tuple[Tensor, Tensor] | None = None,
    search: Search = "torch",
) -> Tensor:
    """Merged top-``n`` item ids ``[B, n]`` (``-1`` pads rows with fewer distinct items)."""
    use_faiss = search == "faiss" or (search == "auto" and _faiss() is not None)
    if use_faiss and exclude is None:
        items, scores = faiss_topk(interests, item_emb, n)
    else:
        items, scores = interest_topk(interests, item_emb, n, exclude=exclude)
    if items.shape[1] == 1:
        top_i, top_s = items[:, 0], scores[:, 0]
        top_i = top_i.masked_fill(torch.isinf(top_s) & (top_s < 0), -1)
        if top_i.shape[1] < n:
            top_i = torch.cat([top_i, top_i.new_full((len(top_i), n - top_i.shape[1]), -1)], 1)
        return top_i
    return merge_topk(items, scores, n)[0]


def interest_cosine(interests: Tensor) -> Tensor:
    """Mean pairwise cosine similarity between each user's K interests: ``[B, K, d]`` → ``[B]``
    (Re4 WWW 2022 §4.4's question — are the interests distinct? — in one number; NaN for K = 1)."""
    k = interests.shape[1]
    if k < 2:
        return torch.full(interests.shape[:1], float("nan"), device=interests.device)
    z = torch.nn.functional.normalize(interests.float(), dim=-1)
    gram = z @ z.transpose(1, 2)
    off = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=1)
    return off / (k * (k - 1))


def eval_histories(split: Split, part: str) -> tuple[SequenceSet, str]:
    """The sequences the held-out users of ``part`` give as input, and where they come from."""
    train = split.train
    hold = holdout(split, part)
    if hold.history is not None:
        return SequenceSet.from_log(hold.history, hold.history.target, n_users=train.n_users), (
            "holdout history"
        )
    seqs = SequenceSet.from_log(train, train.target)
    if part == "test" and len(split.valid):
        seqs = seqs.append(split.valid.user, split.valid.item)
        return seqs, "training sequence + validation item"
    return seqs, "training sequence"


class Retrieval(EvalProtocol):
    """Multi-interest retrieval (ComiRec protocol) of an InterestModel; see the module docstring.

    Options: ``ndcg`` (``"standard"``, ``"comirec"`` or ``"both"``), ``exclude_history``,
    ``max_len`` (history items given to the model; default: the model config's ``max_len``, else
    50), ``search`` (``"auto"``, ``"torch"`` or ``"faiss"``) and ``metrics`` (reported besides
    ``hr``, ``recall`` and the NDCG of ``ndcg``).
    """

    label = PROTOCOL
    description = "multi-interest retrieval: per-interest top-N merged by score (ComiRec)"

    def __init__(
        self,
        *,
        ks: Sequence[int] = (20, 50),
        batch_size: int = 256,
        ndcg: NdcgMode = "standard",
        exclude_history: bool = False,
        max_len: int | None = None,
        search: Search = "auto",
        metrics: Sequence[str] = (),
    ) -> None:
        super().__init__(ks=ks, batch_size=batch_size, metrics=metrics)
        self.ndcg = check_choice("ndcg", ndcg, NDCG_MODES)
        self.exclude_history = bool(exclude_history)
        self.max_len = max_len
        self.search = check_choice("search", search, SEARCHES)

    def metric_names(self) -> list[str]:
        names = ["hr", "recall"]
        if self.ndcg in ("standard", "both"):
            names.append("ndcg")
        if self.ndcg in ("comirec", "both"):
            names.append("ndcg_comirec")
        if "mrr" in self.metrics:
            names.append("mrr")
        return row_metrics(names, self.metrics)

    def evaluate(
        self,
        model: Model,
        split: Split,
        part: str,
        *,
        progress: Progress | None = None,
        also_as: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Retrieval metrics under ``metrics["retrieval"]``; the same dict also under each name
        in ``also_as`` (for callers that asked for another protocol name; a note says so and the
        result's ``retrieval`` description lists them as ``aliases``)."""
        part = check_part(part)
        if not isinstance(model, InterestModel | HistoryScoring):
            raise ConfigError(
                f"protocol 'retrieval' is for multi-interest/sequential models and the "
                f"baselines that score a history; {type(model).__name__} is a scorer of known "
                "users: use 'full' or 'sampled'"
            )
        train = split.train
        n_users, n_items = train.n_users, train.n_items
        check_items(model, n_items, "model has")
        max_len = self.max_len
        if max_len is None:
            max_len = int(getattr(getattr(model, "config", None), "max_len", 50))
        hold = holdout(split, part)
        seqs, source = eval_histories(split, part)
        users = np.unique(hold.user)
        users = users[seqs.lengths[users] > 0]
        notes: list[str] = []
        skipped = int(len(np.unique(hold.user)) - len(users))
        if skipped:
            notes.append(f"{part}: {skipped} users without any history item were not evaluated")
        names = self.metric_names()
        if "ndcg_comirec" in names:
            notes.append(
                "ndcg_comirec@k is ComiRec's NDCG variant (IDCG over the positives recalled in "
                "the top k), not the standard NDCG"
            )
        aliases = [a for a in dict.fromkeys(also_as) if a != self.label]
        mask = "history" if self.exclude_history else "none"
        result = result_header(split, part, list(self.ks), mask, None, notes)
        result |= {
            "retrieval": {
                "history": source,
                "max_len": max_len,
                "exclude_history": self.exclude_history,
                "ndcg": self.ndcg,
                "merge": "per-interest top-N merged by score",
                "label": self.label,
                "aliases": aliases,
            },
        }
        if len(users) == 0:
            notes.append(f"{part}: no users to evaluate")
            return result
        device = model.device
        ks, max_k = self.ks, self.ks[-1]
        positives = PairIndex(pair_keys(hold.user, hold.item, n_items), n_users, n_items, device)
        hist_index = None
        if self.exclude_history:
            hu = np.repeat(np.arange(seqs.n_users), seqs.lengths)
            hist_index = PairIndex(pair_keys(hu, seqs.items, n_items), n_users, n_items, device)
        sums = MetricSums()
        lists = list_metrics(self.metrics)
        counts = ItemCounts(ks, n_items, device) if lists else None
        cos_sum: Tensor | None = None
        with scoring_mode(model):
            if not isinstance(model, InterestModel):
                for ub, ub_t in user_batches(users, self.batch_size, device, progress):
                    hist, lengths = seqs.padded(ub, max_len)
                    scores = model.history_scores(hist.to(device), lengths.to(device))
                    exclude = None if hist_index is None else hist_index.flat_index(ub_t)
                    top = history_topk(scores, max_k, exclude, positives.flat_index(ub_t))
                    hits = hit_matrix(top, ub_t, positives, max_k)
                    sums.add(M.from_hits(hits, positives.counts(ub_t), ks, names))
                    if counts is not None:
                        counts.add(top)
                return self._finish(result, split, sums, counts, lists, users, aliases, notes)
            item_emb = model.item_embeddings()
            for ub, ub_t in user_batches(users, self.batch_size, device, progress):
                hist, lengths = seqs.padded(ub, max_len)
                times = seqs.padded_times(ub, max_len).to(device) if model.uses_times else None
                vecs = model.interests_at(hist.to(device), lengths.to(device), times)
                check_interests(vecs, len(ub), type(model).__name__)
                cos = interest_cosine(vecs).sum()
                cos_sum = cos if cos_sum is None else cos_sum + cos
                exclude = None if hist_index is None else hist_index.flat_index(ub_t)
                top = retrieve(vecs, item_emb, max_k, exclude=exclude, search=self.search)
                hits = hit_matrix(top, ub_t, positives, max_k)
                sums.add(M.from_hits(hits, positives.counts(ub_t), ks, names))
                if counts is not None:
                    counts.add(top)  # -1 pads a list with fewer distinct items: not counted
        if cos_sum is not None and not bool(torch.isnan(cos_sum)):
            result["retrieval"]["interest_cosine"] = float(cos_sum) / len(users)
        return self._finish(result, split, sums, counts, lists, users, aliases, notes)

    def _finish(
        self,
        result: dict[str, Any],
        split: Split,
        sums: MetricSums,
        counts: ItemCounts | None,
        lists: list[str],
        users: np.ndarray,
        aliases: list[str],
        notes: list[str],
    ) -> dict[str, Any]:
        """The per-user means (and list-level metrics) into ``result``."""
        ks = self.ks
        per = sums.means(len(users))
        if counts is not None:
            pop = popularity(split) if "avgpop" in lists else np.zeros(0, np.int64)
            per = by_cutoff(per, M.from_counts(counts.counts, pop, lists), ks)
        for key in (self.label, *aliases):
            result["metrics"][key] = per
            result["n_evaluated"][key] = len(users)
        for alias in aliases:
            notes.append(
                f"{alias}: an InterestModel ranks all items by multi-interest retrieval; these "
                "are the retrieval figures"
            )
        return result


RETRIEVAL_OPTIONS: tuple[str, ...] = ("ndcg", "exclude_history", "max_len", "search")


def retrieval_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as keyword arguments of :class:`Retrieval` (besides ``ks``/``batch_size``);
    an unknown name is a :class:`ConfigError`."""
    unknown = [k for k in options if k not in RETRIEVAL_OPTIONS]
    if unknown:
        raise ConfigError(
            f"unknown retrieval option(s) {unknown}; choose from {', '.join(RETRIEVAL_OPTIONS)}"
        )
    return dict(options)


def history_topk(
    scores: Tensor,
    n: int,
    exclude: tuple[Tensor, Tensor] | None,
    positives: tuple[Tensor, Tensor],
) -> Tensor:
    """Top-``n`` item ids ``[B, n]`` of a history scorer's ``scores [B, n_items]`` (modified in
    place): ``exclude`` pairs out, the held-out ``positives`` lowered to the next float below
    (pessimistic ties: closed-form scores tie often, e.g. items without any history weight).
    ``-1`` pads rows with fewer than ``n`` rankable items."""
    if bool(torch.isnan(scores).any()):
        raise FloatingPointError("the model's history scores contain NaN")
    top_s, top_i = block_topk(scores, n, exclude=exclude, demote=positives)
    top_i = top_i.masked_fill(torch.isinf(top_s) & (top_s < 0), -1)
    if top_i.shape[1] < n:
        top_i = torch.cat([top_i, top_i.new_full((len(top_i), n - top_i.shape[1]), -1)], 1)
    return top_i


def check_interests(vecs: Tensor, rows: int, name: str) -> None:
    if vecs.dim() != 3 or vecs.shape[0] != rows:
        raise ValueError(
            f"{name}.interests returned shape {tuple(vecs.shape)}; expected ({rows}, K, d)"
        )
    if bool(torch.isnan(vecs).any()):
        raise FloatingPointError("the model's interest vectors contain NaN")


def evaluate_retrieval(
    model: InterestModel,
    split: Split,
    part: str,
    *,
    ks: Sequence[int] = (20, 50),
    ndcg: NdcgMode = "standard",
    exclude_history: bool = False,
    max_len: int | None = None,
    batch_size: int = 256,
    search: Search = "auto",
    progress: Progress | None = None,
    also_as: Sequence[str] = (),
    metrics: Sequence[str] = (),
) -> dict[str, Any]:
    """Retrieval metrics of ``model`` on ``split``'s ``part`` users: :class:`Retrieval` with
    these options (see :meth:`Retrieval.evaluate`)."""
    protocol = Retrieval(
        ks=ks,
        batch_size=batch_size,
        ndcg=ndcg,
        exclude_history=exclude_history,
        max_len=max_len,
        search=search,
        metrics=metrics,
    )
    return protocol.evaluate(model, split, part, progress=progress, also_as=also_as)


__all__ = [
    "PROTOCOL",
    "RETRIEVAL_OPTIONS",
    "Retrieval",
    "eval_histories",
    "evaluate_retrieval",
    "faiss_topk",
    "history_topk",
    "interest_cosine",
    "interest_topk",
    "merge_topk",
    "retrieval_options",
    "retrieve",
]
