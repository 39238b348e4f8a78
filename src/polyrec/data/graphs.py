r"""Sparse adjacency builders and normalisations (data side: no autograd here).

Graph models build each normalised adjacency **once** (per dataset, behavior or time slot) and
keep it as a torch sparse CSR tensor; the differentiable products over it live in
:mod:`polyrec.models.propagation`.

* :func:`normalize` — scipy: ``"sym"`` :math:`D_r^{-1/2} M D_c^{-1/2}`, ``"left"``
  :math:`D_r^{-1} M`, ``"right"`` :math:`M D_c^{-1}` (row / column degrees; zero degree → 0).
* :func:`bipartite_adjacency` — :math:`A = \begin{pmatrix} 0 & R \\ R^\top & 0 \end{pmatrix}`.
* :func:`normalized_bipartite_adjacency` — :math:`\hat A = D^{-1/2} A D^{-1/2}` as torch CSR
  (LightGCN Eq. 7, NGCF, SGL, CML's encoders).
* :func:`to_torch_csr` — scipy → torch sparse CSR (int64 indices by default).
* :func:`to_torch_csr_pair` / :func:`with_values` — a matrix kept with its transpose (for
  :func:`polyrec.models.propagation.spmm_pair`) and new values on a fixed pattern.
* :func:`normalized_bipartite_from_pairs` — :math:`\hat A` from an edge list, in torch.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

Normalization = Literal["sym", "left", "right"]
_INT32_MAX = int(np.iinfo(np.int32).max)


# --------------------------------------------------------------------------- scipy side
def _inv_power(deg: np.ndarray, power: float) -> np.ndarray:
    """``deg ** power`` with zero (or negative) degrees mapped to 0 instead of inf/NaN."""
    out = np.zeros(deg.shape, dtype=np.float64)
    nz = deg > 0
    out[nz] = np.power(deg[nz].astype(np.float64), power)
    return out


def normalize(mat: sp.spmatrix | sp.sparray, how: Normalization = "sym") -> sp.csr_matrix:
    r"""Degree-normalise a (possibly rectangular) sparse matrix ``M``.

    With row degrees :math:`D_r = \mathrm{diag}(M \mathbf 1)` and column degrees
    :math:`D_c = \mathrm{diag}(M^\top \mathbf 1)`:

    * ``"sym"``:   :math:`D_r^{-1/2} M D_c^{-1/2}` (for a symmetric square ``M`` this is the
      usual :math:`D^{-1/2} A D^{-1/2}` and the result stays symmetric);
    * ``"left"``:  :math:`D_r^{-1} M` (rows sum to 1: mean over neighbours);
    * ``"right"``: :math:`M D_c^{-1}` (columns sum to 1).

    Rows / columns with zero degree stay zero (no NaN or inf). Returns float32 CSR with sorted
    indices.
    """
    m = sp.csr_matrix(mat, dtype=np.float64)
    if how == "sym":
        r = _inv_power(np.asarray(m.sum(axis=1)).ravel(), -0.5)
        c = _inv_power(np.asarray(m.sum(axis=0)).ravel(), -0.5)
        out = sp.diags(r) @ m @ sp.diags(c)
    elif how == "left":
        out = sp.diags(_inv_power(np.asarray(m.sum(axis=1)).ravel(), -1.0)) @ m
    elif how == "right":
        out = m @ sp.diags(_inv_power(np.asarray(m.sum(axis=0)).ravel(), -1.0))
    else:
        raise ValueError(f"unknown normalisation {how!r}; use 'sym', 'left' or 'right'")
    res = sp.csr_matrix(out, dtype=np.float32)
    res.eliminate_zeros()
    res.sort_indices()
    return res


def bipartite_adjacency(r: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    r"""The ``(n_users + n_items)²`` adjacency :math:`\begin{pmatrix} 0 & R \\ R^\top & 0
    \end{pmatrix}` of a users × items matrix ``R`` (values kept; users first, then items)."""
    rc = sp.csr_matrix(r, dtype=np.float32)
    a = sp.bmat([[None, rc], [rc.T, None]], format="csr", dtype=np.float32)
    a.sort_indices()
    return a


def is_symmetric(mat: sp.spmatrix | sp.sparray, tol: float = 1e-6) -> bool:
    """Whether a square sparse matrix equals its transpose (up to ``tol``)."""
    m = sp.csr_matrix(mat)
    if m.shape[0] != m.shape[1]:
        return False
    diff = abs(m - m.T)
    return bool(diff.nnz == 0 or diff.max() <= tol)


# --------------------------------------------------------------------------- torch side
def to_torch_csr(
    mat: sp.spmatrix | sp.sparray,
    dtype: torch.dtype = torch.float32,
    index_dtype: torch.dtype = torch.int64,
) -> Tensor:
    """A scipy matrix as a torch sparse CSR tensor (duplicates summed, indices sorted).

    ``index_dtype=torch.int32`` halves the index memory when shape and nnz fit; on this CPU
    the product ran equally fast with either.
    """
    m = sp.csr_matrix(mat)
    m.sum_duplicates()
    m.sort_indices()
    if index_dtype == torch.int32 and max(m.nnz, m.shape[0] + 1, m.shape[1]) > _INT32_MAX:
        raise ValueError(f"a {m.shape} matrix with {m.nnz} non-zeros needs int64 indices")
    crow = torch.from_numpy(np.asarray(m.indptr)).to(index_dtype)
    col = torch.from_numpy(np.asarray(m.indices)).to(index_dtype)
    val = torch.from_numpy(np.asarray(m.data)).to(dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow, col, val, size=m.shape, dtype=dtype, check_invariants=True
        )


def normalized_bipartite_adjacency(
    r: sp.spmatrix | sp.sparray, dtype: torch.dtype = torch.float32
) -> Tensor:
    r""":math:`\hat A = D^{-1/2} A D^{-1/2}`, :math:`A = \begin{pmatrix} 0 & R \\ R^\top & 0
    \end{pmatrix}`, as a torch sparse CSR tensor of size ``(n_users + n_items)²``.

    Users come first (rows ``0..n_users-1``), items after. Nodes with no edge get an all-zero
    row and column. The result is symmetric, so it may be used with :class:`SymmetricSpMM`.
    """
    return to_torch_csr(normalize(bipartite_adjacency(r), "sym"), dtype=dtype)


# --------------------------------------------------------------------------- paired matrices
# (MBGCN, SGL) a sparse matrix kept together with its transpose, so that autograd never
# transposes a CSR tensor; bipartite graphs built from edge lists in torch (augmented views).
def _csr_quiet(
    crow: Tensor, col: Tensor, val: Tensor, size: tuple[int, int], *, check: bool = True
) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            crow, col, val, size=size, dtype=val.dtype, check_invariants=check
        )


def to_torch_csr_pair(
    mat: sp.spmatrix | sp.sparray, dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(M, Mᵀ, perm)``: a scipy matrix and its transpose as torch sparse CSR tensors, and the
    int64 permutation with ``Mᵀ.values() == M.values()[perm]``.

    ``perm`` lets a caller give both matrices new values consistently (e.g. a dropout mask over
    the edges of ``M``: :func:`with_values`), vectorised, without re-sorting anything. Built with
    one ``np.lexsort`` over the non-zeros (by column, then row).
    """
    m = sp.csr_matrix(mat)
    m.sum_duplicates()
    m.sort_indices()
    n_rows, n_cols = m.shape
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(m.indptr))
    cols = np.asarray(m.indices, dtype=np.int64)
    perm = np.lexsort((rows, cols))  # transposed CSR order: by column, ties by row
    t_indptr = np.zeros(n_cols + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=n_cols), out=t_indptr[1:])
    val = torch.from_numpy(np.asarray(m.data)).to(dtype)
    perm_t = torch.from_numpy(perm)
    fwd = _csr_quiet(
        torch.from_numpy(np.asarray(m.indptr, dtype=np.int64)),
        torch.from_numpy(cols),
        val,
        (n_rows, n_cols),
    )
    bwd = _csr_quiet(
        torch.from_numpy(t_indptr), torch.from_numpy(rows[perm]), val[perm_t], (n_cols, n_rows)
    )
    return fwd, bwd, perm_t


def edge_pattern(r: sp.spmatrix | sp.sparray) -> tuple[Tensor, Tensor, Tensor]:
    """``(P, rows, rev)``: the bipartite graph of the users × items matrix ``r`` (users first)
    as a CSR tensor of unit values — every edge stored in both directions —, the row of each
    entry, and the position of each entry's transpose (the pattern
    :func:`polyrec.models.propagation.edge_dot` and
    :func:`~polyrec.models.propagation.edge_spmm` work on)."""
    a = bipartite_adjacency(r)
    a.data[:] = 1.0
    p = to_torch_csr(a)
    n = int(p.shape[0])
    rows = torch.repeat_interleave(torch.arange(n), p.crow_indices().diff())
    cols = p.col_indices()
    keys = rows * n + cols  # sorted: CSR order is by row, then column
    return p, rows, torch.searchsorted(keys, cols * n + rows)


def with_values(adj: Tensor, values: Tensor) -> Tensor:
    """A sparse CSR tensor with ``adj``'s sparsity pattern and new ``values`` (same order as
    ``adj.values()``); indices are shared, not copied."""
    if values.shape != adj.values().shape:
        raise ValueError(
            f"with_values needs {tuple(adj.values().shape)} values, got {tuple(values.shape)}"
        )
    size = (int(adj.shape[0]), int(adj.shape[1]))
    # the indices are adj's own (already valid): skip the O(nnz) invariant check
    return _csr_quiet(adj.crow_indices(), adj.col_indices(), values, size, check=False)


def normalized_bipartite_from_pairs(
    users: Tensor, items: Tensor, n_users: int, n_items: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    r""":math:`\hat A = D^{-1/2} A D^{-1/2}` of the bipartite graph whose edges are the
    **distinct** pairs ``(users[k], items[k])``, built in torch on the pairs' device.

    Same layout and values as :func:`normalized_bipartite_adjacency` of the binary matrix of
    those pairs (users first, then items; zero-degree nodes get empty rows), but vectorised over
    an edge list: degrees by ``bincount``, values :math:`1/\sqrt{d_u d_i}`, one COO coalesce →
    CSR. Meant for graphs rebuilt often (SGL's augmented views from a mask over the edges).
    """
    if users.shape != items.shape or users.dim() != 1:
        raise ValueError(
            "normalized_bipartite_from_pairs needs two 1-d index tensors of equal length"
        )
    users = users.long()
    items = items.long()
    du = torch.bincount(users, minlength=n_users).to(dtype)
    di = torch.bincount(items, minlength=n_items).to(dtype)
    w = (du[users] * di[items]).rsqrt()
    n = n_users + n_items
    shifted = items + n_users
    index = torch.stack([torch.cat([users, shifted]), torch.cat([shifted, users])])
    coo = torch.sparse_coo_tensor(
        index,
        torch.cat([w, w]),
        (n, n),
        check_invariants=False,  # in range by construction
    ).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()


__all__ = [
    "Normalization",
    "bipartite_adjacency",
    "is_symmetric",
    "normalize",
    "normalized_bipartite_adjacency",
    "normalized_bipartite_from_pairs",
    "to_torch_csr",
    "to_torch_csr_pair",
    "with_values",
]
