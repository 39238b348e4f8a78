"""EASE^R: the closed-form item-item autoencoder of Steck (WWW 2019)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import Tensor

from polyrec.data.views import DataSchema
from polyrec.errors import ConfigError
from polyrec.models._common import MatrixScorer, WeightedMatrixConfig

# bytes per active item² at the peak of build(): the float64 Gram matrix inverted in place
# (8) and the float32 copy of B kept for scoring (4)
BYTES_PER_ITEM_PAIR = 12


class EASEConfig(WeightedMatrixConfig):
    """Settings of :class:`EASE`."""

    l2: float = Field(500.0, gt=0.0)
    """λ of the L2 penalty λ·‖B‖²_F (Eq. 1), added to the diagonal of XᵀX (Algorithm 1). The paper
    tunes it per data set; 500 is its ML-20M value, kept as the default here (on the embedded
    Retailrocket, target only: test full NDCG@10 0.0239 at 500, 0.0249 at 100). Denser X (auxiliary
    behavior weights) usually wants a larger λ."""
    max_memory_gb: float = Field(4.0, gt=0.0)
    """Memory budget (GB = 10⁹ bytes) of the dense item × item matrices build() holds at once:
    12 bytes per pair of active items (the float64 inverse and the float32 B). A larger catalogue
    is a ConfigError suggesting 'itemknn'. Not in the paper (it discusses the cubic cost of the
    inverse only)."""


class EASE(
    MatrixScorer,
    name="ease",
    paper="Steck, Embarrassingly Shallow Autoencoders for Sparse Data, WWW 2019",
    Config=EASEConfig,
):
    """EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

    An item × item weight matrix ``B`` with zero diagonal, fitted to reproduce X from itself
    (Eq. 1)::

        min_B ‖X − X B‖²_F + λ‖B‖²_F   s.t. diag(B) = 0

    in closed form (the solution of the Lagrangian, Eq. 8; the paper's Algorithm 1)::

        P = (XᵀX + λI)⁻¹,   B = I − P · diagMat(1 ⊘ diag(P))   (B_ij = −P_ij / P_jj, B_jj = 0)

    and the scores of user u are ``X_u B``. No training epochs: ``build`` computes B.

    Where the paper is silent (or has one behavior only):

    * X is the behavior-weighted matrix Σ_b w_b·R_b (:func:`~polyrec.data.views.weighted_matrix`;
      default: the target behavior alone, binary, as in the paper's implicit-feedback data).
    * Only the *active* items (a non-zero column of X) enter the inverse: for an item with an
      empty column, row and column of XᵀX + λI are λ·e_j, so its row and column of B are zero.
      This is exact and shrinks the dense matrices to the active items (the rest score 0).
    * P is computed in float64 by a Cholesky factorisation (torch; XᵀX + λI is symmetric positive
      definite; 2× faster than LU here); B is kept in float32 as a
      persistent buffer ``weight`` ``[n_active, n_active]`` with the item ids ``active``.
    * X itself (training data, needed for the user's row) is a non-persistent buffer, so the
      model is not rebuildable from its weights alone.
    * Above ``max_memory_gb`` (12 bytes per active item pair) ``build`` raises a ConfigError
      naming the size and suggesting ``itemknn`` (sparse, top-k) instead.
    """

    config: EASEConfig
    weight: Tensor
    active: Tensor

    def fit(self, schema: DataSchema, x: sp.csr_matrix) -> sp.csr_matrix:
        config = self.config
        active = np.flatnonzero(x.getnnz(axis=0))
        n = len(active)
        need_gb = BYTES_PER_ITEM_PAIR * n * n / 1e9
        if need_gb > config.max_memory_gb:
            raise ConfigError(
                f"ease: {n:,} items with training interactions (of {schema.n_items:,}) need "
                f"dense {n:,} × {n:,} matrices of about {need_gb:.1f} GB, over "
                f"max_memory_gb = {config.max_memory_gb:g}; raise params.max_memory_gb if the "
                "machine has the memory, give auxiliary behaviors weight 0, or use model "
                "'itemknn' (sparse top-k item neighbours)"
            )
        xa = x[:, active]
        gram = torch.from_numpy(np.asarray((xa.T @ xa).toarray(), dtype=np.float64))
        gram.diagonal().add_(config.l2)  # XᵀX + λI: symmetric positive definite for λ > 0
        # P = (XᵀX + λI)⁻¹ by Cholesky (no active item at all: an empty B)
        p = torch.cholesky_inverse(torch.linalg.cholesky(gram)) if n else gram
        p /= -p.diagonal().clone()  # B_ij = −P_ij / P_jj (column j divided by −P_jj)
        p.diagonal().zero_()  # diag(B) = 0
        self.register_buffer("weight", p.float())
        self.register_buffer("active", torch.from_numpy(active.astype(np.int64)))
        return xa

    def x_columns(self, x: Tensor) -> Tensor:
        return x[:, self.active]

    def score_rows(self, rows: Tensor) -> Tensor:
        """``rows @ B`` ``[B, n_items]`` (float32, a fresh tensor; items without training
        interactions score 0)."""
        active_scores = torch.sparse.mm(rows, self.weight)
        if len(self.active) == self.n_items:  # every item active: B's columns are the items
            return active_scores
        out = torch.zeros(rows.shape[0], self.n_items, device=self.weight.device)
        out[:, self.active] = active_scores
        return out


__all__ = ["EASE", "EASEConfig"]
