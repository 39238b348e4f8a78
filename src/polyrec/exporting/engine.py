"""Answering recommendation requests from an exported model (the core of ``polyrec serve``).

A request names a known user (``user``) or, for an interest model, gives a history of item ids
(``history``). The user is turned into ``K`` query vectors (``K = 1`` for an embedding model:
the user's final embedding; an interest model's ``interests(histories, lengths)``), each query
retrieves its top items by inner product from the item index, and the per-interest lists are
merged by score, an item found by several interests counting once with its best score
(:func:`polyrec.eval.retrieval.merge_topk`, ComiRec §3.4). Excluded items (the user's seen items
with ``exclude_seen``, a ``deny`` list) are removed before the top-k is cut; an ``allow`` list
restricts the candidates to its items (scored exactly).

**Fallback.** An unknown user (not in the export's user map), or a known user of an interest
model without any history item, gets the most popular items (``fallback="popularity"``).

**Search.** ``search="auto"`` uses the export's faiss index when faiss is installed, else exact
torch search (the same items up to the order of tied scores for a flat index); ``"torch"`` or
``"faiss"`` force one. With faiss, a row asks the index for ``k`` plus its number of excluded
items, so excluded items never leave it short.

Invalid requests raise :class:`RequestError` (a :class:`DataError`) whose message names the
field (``requests[3].history``) and the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from polyrec.data.sequences import SequenceSet
from polyrec.errors import ConfigError, DataError
from polyrec.eval.retrieval import interest_topk, merge_topk
from polyrec.exporting.bundle import Bundle
from polyrec.exporting.index import FAISS_HINT

Search = Literal["auto", "torch", "faiss"]
POPULARITY = "popularity"
_EMPTY = np.zeros(0, dtype=np.int64)


class RequestError(DataError):
    """An invalid request to an exported model; the message names the field and the problem."""


@dataclass
class Query:
    """One recommendation request: ``user`` or ``history`` (item ids), ``k`` and filters."""

    user: Any = None
    history: Sequence[Any] | None = None
    k: int = 20
    exclude_seen: bool = True
    allow: Sequence[Any] | None = None
    deny: Sequence[Any] | None = None


@dataclass
class Answer:
    """External item ids, best first, their scores, and the fallback used (or None)."""

    items: list[Any]
    scores: list[float]
    fallback: str | None = None


@dataclass
class _Row:
    k: int
    user: int  # dense user code, -1 when the row gives a history or the user is unknown
    history: np.ndarray | None  # dense item codes (history rows)
    fallback: bool
    exclude: np.ndarray
    allow: np.ndarray | None


class Recommender:
    """Top-k queries against a :class:`~polyrec.exporting.bundle.Bundle`.

    ``max_k`` bounds ``k`` per request (:class:`RequestError` above it). Not thread-safe when
    the bundle holds a network that keeps state (serve runs it on one event loop).
    """

    def __init__(self, bundle: Bundle, *, max_k: int = 1000, search: Search = "auto") -> None:
        if search not in ("auto", "torch", "faiss"):
            raise ConfigError(f"search must be 'auto', 'torch' or 'faiss' (got {search!r})")
        if max_k < 1:
            raise ConfigError(f"max_k must be >= 1 (got {max_k})")
        if search == "faiss" and bundle.index is None:
            raise ConfigError(
                "search='faiss' needs an export with a faiss index and the faiss extra: "
                f"{FAISS_HINT}"
            )
        self.bundle = bundle
        self.max_k = int(max_k)
        self.index = bundle.index if search != "torch" else None
        self.backend = "faiss" if self.index is not None else "torch"
        self._pop = bundle.popularity.reshape(-1, 1).contiguous()
        self._seen_indptr = bundle.seen.indptr.cpu().numpy()
        self._seen_items = bundle.seen.indices.cpu().numpy()
        self._no_history = bundle.histories.lengths == 0 if bundle.histories is not None else None
        # looked up once: Module.device walks the parameters on every call
        self._device = bundle.model.device if bundle.model is not None else torch.device("cpu")

    # ------------------------------------------------------------------ validation
    def _check_k(self, k: Any, at: str) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise RequestError(f"{at}k must be a positive integer (got {k!r})")
        if k > self.max_k:
            raise RequestError(f"{at}k={k} is above the maximum k={self.max_k} of this server")
        return int(k)

    def _item_codes(self, values: Sequence[Any], where: str) -> np.ndarray:
        values = list(values)
        if not values:
            return _EMPTY
        dense = self.bundle.item_map.to_dense(values, what="item", strict=False)
        if bool((dense < 0).any()):
            bad = [v for v, d in zip(values, dense, strict=True) if d < 0]
            shown = ", ".join(repr(v) for v in bad[:5]) + (", …" if len(bad) > 5 else "")
            if len(values) == 1:
                raise RequestError(f"{where}: item id {shown} is not in the exported catalogue")
            raise RequestError(
                f"{where}: {len(bad)} of {len(values)} item ids are not in the exported "
                f"catalogue: {shown}"
            )
        return dense

    def _seen(self, user: int) -> np.ndarray:
        return self._seen_items[self._seen_indptr[user] : self._seen_indptr[user + 1]]

    def _resolve(self, q: Query, at: str) -> _Row:
        b = self.bundle
        k = self._check_k(q.k, at)
        if (q.user is None) == (q.history is None):
            raise RequestError(f"{at}give exactly one of 'user' and 'history'")
        deny = self._item_codes(q.deny or (), f"{at}deny")
        allow = None if q.allow is None else np.unique(self._item_codes(q.allow, f"{at}allow"))
        if q.history is not None:
            if b.kind != "interest":
                raise RequestError(
                    f"{at}history: model {b.model_name!r} embeds users by id, not by their "
                    "history; send 'user'"
                )
            if len(q.history) == 0:
                raise RequestError(f"{at}history is empty; give at least one item id")
            hist = self._item_codes(q.history, f"{at}history")
            excl = np.concatenate([hist, deny]) if q.exclude_seen else deny
            return _Row(k, -1, hist[-b.max_len :], False, excl, allow)
        user = int(b.user_map.to_dense([q.user], what="user", strict=False)[0])
        if user < 0:
            return _Row(k, -1, None, True, deny, allow)
        excl = np.concatenate([self._seen(user), deny]) if q.exclude_seen else deny
        fallback = self._no_history is not None and bool(self._no_history[user])
        return _Row(k, user, None, fallback, excl, allow)

    # ------------------------------------------------------------------ vectors
    def _interest_vectors(self, histories: SequenceSet, rows: np.ndarray) -> Tensor:
        model = self.bundle.model
        assert model is not None
        hist, lengths = histories.padded(rows, self.bundle.max_len)
        with torch.inference_mode():
            vecs = model.interests(hist.to(self._device), lengths.to(self._device))
        return vecs.float().cpu()

    def _query_vectors(self, rows: list[_Row]) -> Tensor:
        """``[B, K, d]`` query vectors of resolved non-fallback rows."""
        b = self.bundle
        if b.kind == "embedding":
            assert b.user_emb is not None
            users = torch.tensor([r.user for r in rows], dtype=torch.long)
            return b.user_emb[users].unsqueeze(1)
        assert b.histories is not None
        seqs = [r.history if r.history is not None else b.histories.sequence(r.user) for r in rows]
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        indptr = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        joined = SequenceSet(indptr, np.concatenate(seqs).astype(np.int64), b.n_items)
        return self._interest_vectors(joined, np.arange(len(seqs)))

    # ------------------------------------------------------------------ search
    def _search(
        self, q: Tensor, table: Tensor, index: Any, n: int, rows: np.ndarray, cols: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Merged top-``n`` ``(items [B, n], scores [B, n])``; -1 / -inf pad short rows.

        ``(rows, cols)`` are the excluded (batch row, item) pairs.
        """
        n_items = table.shape[0]
        n = min(n, n_items)
        b, kq, d = q.shape
        if index is None:
            exclude = (torch.from_numpy(rows), torch.from_numpy(cols)) if len(rows) else None
            items_t, scores_t = interest_topk(q, table, n, exclude=exclude)
            if kq > 1:
                items_t, scores_t = merge_topk(items_t, scores_t, n)
            else:
                items_t, scores_t = items_t[:, 0], scores_t[:, 0]
            items, scores = items_t.numpy(), scores_t.numpy()
            items[np.isneginf(scores)] = -1
            return items, scores
        # faiss, in numpy (a single request is dominated by per-call overheads)
        m = min(n + (int(np.bincount(rows).max()) if len(rows) else 0), n_items)
        queries = np.ascontiguousarray(q.reshape(b * kq, d).numpy(), dtype=np.float32)
        scores, items = index.search(queries, m)
        bad = items < 0
        if len(rows):
            keys = np.unique(rows * n_items + cols)
            probe = np.repeat(np.arange(b), kq)[:, None] * n_items + np.maximum(items, 0)
            bad |= keys[np.minimum(np.searchsorted(keys, probe), len(keys) - 1)] == probe
        if kq == 1:
            # faiss lists are sorted by score: drop the excluded, keep the order, first n
            order = np.argsort(bad, axis=1, kind="stable")[:, :n]
            items = np.take_along_axis(items, order, 1)
            scores = np.take_along_axis(scores, order, 1)
            bad = np.take_along_axis(bad, order, 1)
            items[bad], scores[bad] = -1, -np.inf
            return items, scores
        scores[bad] = -np.inf
        merged = merge_topk(
            torch.from_numpy(items).view(b, kq, m), torch.from_numpy(scores).view(b, kq, m), n
        )
        return merged[0].numpy(), merged[1].numpy()

    def _answer_rows(
        self, q: Tensor, table: Tensor, index: Any, rows: list[_Row], fallback: str | None
    ) -> list[Answer]:
        out: list[Answer | None] = [None] * len(rows)
        plain = [j for j, r in enumerate(rows) if r.allow is None]
        if plain:
            n = max(rows[j].k for j in plain)
            if len(plain) == 1:
                r_idx = np.zeros(len(rows[plain[0]].exclude), dtype=np.int64)
                c_idx = rows[plain[0]].exclude
                qp = q if len(rows) == 1 else q[plain]
            else:
                lens = [len(rows[j].exclude) for j in plain]
                r_idx = np.repeat(np.arange(len(plain), dtype=np.int64), lens)
                c_idx = np.concatenate([rows[j].exclude for j in plain])
                qp = q[plain]
            items, scores = self._search(qp, table, index, n, r_idx, c_idx.astype(np.int64))
            for pos, j in enumerate(plain):
                out[j] = self._to_answer(items[pos], scores[pos], rows[j].k, fallback)
        for j, r in enumerate(rows):
            if r.allow is None:
                continue
            cand = np.setdiff1d(r.allow, r.exclude)  # every candidate scored exactly
            if len(cand) == 0:
                out[j] = Answer([], [], fallback)
                continue
            sub = table[torch.from_numpy(cand)]
            items, scores = self._search(q[j : j + 1], sub, None, r.k, _EMPTY, _EMPTY)
            items = np.where(items >= 0, cand[np.maximum(items, 0)], -1)
            out[j] = self._to_answer(items[0], scores[0], r.k, fallback)
        return [a for a in out if a is not None]

    def _to_answer(
        self, items: np.ndarray, scores: np.ndarray, k: int, fallback: str | None
    ) -> Answer:
        valid = items >= 0
        items, scores = items[valid][:k], scores[valid][:k]
        ids = self.bundle.item_map.to_external(items).tolist()
        return Answer(ids, scores.tolist(), fallback)

    # ------------------------------------------------------------------ public
    def recommend(self, queries: Sequence[Query], *, field: str = "") -> list[Answer]:
        """One :class:`Answer` per query. ``field`` prefixes error messages (``requests``)."""
        rows = [self._resolve(q, f"{field}[{j}]." if field else "") for j, q in enumerate(queries)]
        out: list[Answer | None] = [None] * len(rows)
        for is_fallback in (False, True):
            pick = [j for j, r in enumerate(rows) if r.fallback == is_fallback]
            if not pick:
                continue
            sub = [rows[j] for j in pick]
            if is_fallback:
                q = torch.ones(len(sub), 1, 1)
                answers = self._answer_rows(q, self._pop, None, sub, POPULARITY)
            else:
                q = self._query_vectors(sub)
                answers = self._answer_rows(q, self.bundle.item_emb, self.index, sub, None)
            for j, a in zip(pick, answers, strict=True):
                out[j] = a
        return [a for a in out if a is not None]

    def similar_items(
        self,
        item: Any,
        k: int = 20,
        *,
        allow: Sequence[Any] | None = None,
        deny: Sequence[Any] | None = None,
    ) -> Answer:
        """Items with the largest inner product with ``item``'s embedding (itself excluded)."""
        k = self._check_k(k, "")
        code = self._item_codes([item], "item")
        excl = np.concatenate([code, self._item_codes(deny or (), "deny")])
        allowed = None if allow is None else np.unique(self._item_codes(allow, "allow"))
        row = _Row(k, -1, None, False, excl, allowed)
        q = self.bundle.item_emb[torch.from_numpy(code)].unsqueeze(1)
        return self._answer_rows(q, self.bundle.item_emb, self.index, [row], None)[0]

    def topk_users(
        self, users: np.ndarray, k: int, *, exclude_seen: bool = True, batch_size: int = 1024
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Vectorised top-``k`` of known dense ``users``: ``items [U, k]`` (dense codes, -1
        pads), ``scores [U, k]`` and ``fallback [U]`` (popularity used)."""
        b = self.bundle
        users = np.asarray(users, dtype=np.int64)
        k = min(self._check_k(k, ""), b.n_items)
        items_out = np.full((len(users), k), -1, dtype=np.int64)
        scores_out = np.full((len(users), k), -np.inf, dtype=np.float32)
        fb_all = (
            self._no_history[users] if self._no_history is not None else np.zeros(len(users), bool)
        )
        for start in range(0, len(users), batch_size):
            ub = users[start : start + batch_size]
            fb = fb_all[start : start + batch_size]
            for is_fb in (False, True):
                sel = np.flatnonzero(fb == is_fb)
                if len(sel) == 0:
                    continue
                sub = ub[sel]
                if exclude_seen:
                    rows_t, cols_t = b.seen.flat_index(torch.from_numpy(sub))
                    rows, cols = rows_t.numpy(), cols_t.numpy()
                else:
                    rows, cols = _EMPTY, _EMPTY
                if is_fb:
                    q = torch.ones(len(sub), 1, 1)
                    top = self._search(q, self._pop, None, k, rows, cols)
                elif b.kind == "embedding":
                    assert b.user_emb is not None
                    q = b.user_emb[torch.from_numpy(sub)].unsqueeze(1)
                    top = self._search(q, b.item_emb, self.index, k, rows, cols)
                else:
                    assert b.histories is not None
                    q = self._interest_vectors(b.histories, sub)
                    top = self._search(q, b.item_emb, self.index, k, rows, cols)
                items_out[start + sel, : top[0].shape[1]] = top[0]
                scores_out[start + sel, : top[1].shape[1]] = top[1]
        return items_out, scores_out, fb_all


__all__ = ["POPULARITY", "Answer", "Query", "Recommender", "RequestError", "Search"]
