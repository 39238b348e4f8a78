"""ItemKNN: item-based nearest neighbours over (asymmetric) cosine similarity."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field
from torch import Tensor

from polyrec.data.views import DataSchema
from polyrec.models._common import MatrixScorer, WeightedMatrixConfig, csr_tensor

# target items per block of the similarity computation (bounds the Gram block held at once)
BLOCK = 1024
# values of S that held on every multi-behavior dataset's validation without tuning there
# (``benchmarks/knn_defaults.py``: 90-98 % of the validation NDCG@10 of ItemKNN tuned per
# dataset, against 47-88 % for RecBole's defaults): MB-Hybrid's defaults, and ItemKNN's in
# the multi-behavior benchmarks on data without tuned values
MULTI_BEHAVIOR_KNN: dict[str, float] = {"k": 100, "shrink": 20.0, "alpha": 0.3, "other_weight": 0.2}


class ItemKNNConfig(WeightedMatrixConfig):
    """Settings of :class:`ItemKNN` (defaults: RecBole's ItemKNN, cosine, the target behavior
    only: the canonical baseline). On view/cart/buy logs ``MULTI_BEHAVIOR_KNN`` (k = 100,
    shrink = 20, α = 0.3, other_weight = 0.2) held better wherever nothing was tuned
    (``benchmarks/results/knn-defaults.md``); ``polyrec tune`` finds better still."""

    k: int = Field(100, ge=1)
    """Neighbours kept per item: the k most similar items of each target item (Sarwar et al.,
    WWW 2001, §3.3 'model size'; RecBole's ItemKNN default k = 100)."""
    shrink: float = Field(0.0, ge=0.0)
    """Shrink term h added to the similarity's denominator, x_i·x_j / (‖x_i‖…‖x_j‖… + h), which
    damps similarities supported by few users (RecBole's ItemKNN default 0: none)."""
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    """Asymmetric cosine exponent α (Aiolli, RecSys 2013, §4): the denominator is
    (‖x_j‖²)^α (‖x_i‖²)^(1−α) for target j and neighbour i; 0.5 is the plain cosine."""


def knn_similarity(
    x: sp.csr_matrix, k: int, shrink: float = 0.0, alpha: float = 0.5, block: int = BLOCK
) -> sp.csr_matrix:
    """The pruned items × items similarity ``S`` of the columns of ``x`` (users × items).

    ``S_ij = x_i·x_j / ((‖x_j‖²)^α (‖x_i‖²)^(1−α) + shrink)`` for neighbour ``i`` and target
    ``j`` (``x_i``: column i), with the diagonal dropped and, in each column ``j``, only the ``k``
    largest entries kept (ties: the lower item index). Computed in column blocks of ``block``
    target items with sparse products: no dense items × items matrix. float64 CSR, rows =
    neighbours, columns = targets, so that the scores are ``X @ S``.
    """
    xc = sp.csc_matrix(x, dtype=np.float64)
    xt = sp.csr_matrix(xc.T)
    n_items = xc.shape[1]
    sq = np.asarray(xc.multiply(xc).sum(axis=0)).ravel()  # ‖x_j‖²
    rows, cols, vals = [], [], []
    for start in range(0, n_items, block):
        g = sp.csc_matrix(xt @ xc[:, start : start + block])  # x_i · x_j for j in the block
        g.sort_indices()
        counts = np.diff(g.indptr)
        i = g.indices.astype(np.int64)
        j = np.repeat(np.arange(start, start + len(counts), dtype=np.int64), counts)
        sim = g.data / (sq[j] ** alpha * sq[i] ** (1.0 - alpha) + shrink)
        sim[i == j] = 0.0  # no self-similarity (dropped below)
        keep = np.repeat(counts <= k, counts)  # columns with at most k entries keep them all
        for c in np.flatnonzero(counts > k):  # the others: the k largest, ties by lower index
            a = g.indptr[c]
            keep[a + np.argsort(-sim[a : g.indptr[c + 1]], kind="stable")[:k]] = True
        keep &= sim > 0
        rows.append(i[keep])
        cols.append(j[keep])
        vals.append(sim[keep])
    s = sp.csr_matrix(
        (
            np.concatenate(vals or [np.zeros(0)]),
            (
                np.concatenate(rows or [np.zeros(0, np.int64)]),
                np.concatenate(cols or [np.zeros(0, np.int64)]),
            ),
        ),
        shape=(n_items, n_items),
    )
    s.sort_indices()
    return s


class ItemKNN(
    MatrixScorer,
    name="itemknn",
    paper="Sarwar et al., Item-Based Collaborative Filtering Recommendation Algorithms, WWW 2001",
    Config=ItemKNNConfig,
):
    """Item-based k-nearest-neighbour collaborative filtering (Sarwar et al., "Item-Based
    Collaborative Filtering Recommendation Algorithms", WWW 2001), in the implicit-feedback form
    of RecBole's ItemKNN and of the baselines of Ferrari Dacrema et al. (RecSys 2019).

    Item-item similarity of the item columns of X (cosine, §3.1.1; asymmetric cosine with α,
    Aiolli RecSys 2013; shrink h)::

        S_ij = x_i · x_j / ((‖x_j‖²)^α (‖x_i‖²)^(1−α) + h),   i ≠ j

    pruned to the k most similar neighbours i of each target item j (§3.3, the model size), and
    the score of item j for user u is the weighted sum over the user's items,
    ``ŷ_uj = Σ_i X_ui S_ij = (X S)_uj`` (§3.2.1 without the normalisation by Σ|S|, as RecBole).
    Nothing is trained: ``build`` computes S.

    Where the paper is silent:

    * X is the behavior-weighted matrix Σ_b w_b·R_b (:func:`~polyrec.data.views.weighted_matrix`;
      default: the target behavior alone), the similarity is over its real values.
    * S is computed with sparse products in blocks of 1024 target items (:func:`knn_similarity`),
      never as a dense items × items matrix; ties in the top-k go to the lower item index.
    * S and X are non-persistent buffers (training data): ``state_dict`` is empty and the model
      is not rebuildable from weights alone.
    * Scores of a user with no interaction are all 0.
    """

    config: ItemKNNConfig
    s_crow: Tensor
    s_col: Tensor
    s_val: Tensor

    def fit(self, schema: DataSchema, x: sp.csr_matrix) -> sp.csr_matrix:
        config = self.config
        self.keep_csr("s", knn_similarity(x, config.k, config.shrink, config.alpha))
        return x

    def similarity(self) -> Tensor:
        """S as a sparse CSR tensor ``[n_items, n_items]`` (rows: neighbours, columns: targets)."""
        return csr_tensor(self.s_crow, self.s_col, self.s_val, (self.n_items, self.n_items))

    def score_rows(self, rows: Tensor) -> Tensor:
        """``rows @ S`` ``[B, n_items]`` (float32, a fresh tensor)."""
        return (rows @ self.similarity()).to_dense()


__all__ = ["ItemKNN", "ItemKNNConfig", "knn_similarity"]
