r"""Sparse adjacency builders, normalisations and a fast symmetric sparse × dense product.

Graph models build each normalised adjacency **once** (per dataset, behavior or time slot) and
keep it as a torch sparse CSR tensor; propagation is then ``spmm(adj, X)``.

* :func:`normalize` — scipy: ``"sym"`` :math:`D_r^{-1/2} M D_c^{-1/2}`, ``"left"``
  :math:`D_r^{-1} M`, ``"right"`` :math:`M D_c^{-1}` (row / column degrees; zero degree → 0).
* :func:`bipartite_adjacency` — :math:`A = \begin{pmatrix} 0 & R \\ R^\top & 0 \end{pmatrix}`.
* :func:`normalized_bipartite_adjacency` — :math:`\hat A = D^{-1/2} A D^{-1/2}` as torch CSR
  (LightGCN Eq. 7, NGCF, SGL, CML's encoders).
* :func:`to_torch_csr` — scipy → torch sparse CSR (int64 indices by default).
* :class:`SymmetricSpMM` / :func:`spmm` — :math:`\hat A X` whose backward is :math:`\hat A G`
  (valid because :math:`\hat A^\top = \hat A`): autograd through ``torch.sparse.mm`` computes
  :math:`\hat A^\top G`, which for CSR means a transpose per backward and is the bottleneck of
  LightGCN-style training on CPU.
* :class:`SymmetricPolynomial` / :func:`propagate` — the whole multi-layer propagation
  :math:`Y = \sum_k w_k \hat A^k X` as one autograd node: a polynomial in a symmetric
  :math:`\hat A` is symmetric, so the backward is the same propagation of the gradient; no
  layer output is kept for backward and the products write into two reused buffers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

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


class SymmetricSpMM(torch.autograd.Function):
    r"""``Â @ X`` for a **symmetric** sparse ``Â`` (no gradient for ``Â``).

    Backward: :math:`\partial L / \partial X = \hat A^\top G = \hat A G` — the same kind of
    product as the forward, with no transpose of the sparse matrix. The caller guarantees
    symmetry (see :func:`spmm`); for an asymmetric matrix the gradient would be wrong.
    """

    @staticmethod
    def forward(ctx: Any, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor | None]:
        if not ctx.needs_input_grad[1]:
            return None, None
        return None, torch.sparse.mm(ctx.adj, grad.contiguous())


def spmm(adj: Tensor, x: Tensor, *, symmetric: bool = False) -> Tensor:
    """``adj @ x`` for a sparse ``adj`` and dense 2-d ``x``.

    With ``symmetric=True`` (the caller vouches that ``adj`` is symmetric, e.g. it came from
    :func:`normalized_bipartite_adjacency`) and ``x`` requiring a gradient, the product goes
    through :class:`SymmetricSpMM`; otherwise through ``torch.sparse.mm`` (plain autograd).
    A gradient for ``adj`` itself (learnable edge weights) always uses ``torch.sparse.mm``.
    """
    if (
        symmetric
        and x.requires_grad
        and not adj.requires_grad
        and adj.layout in (torch.sparse_csr, torch.sparse_coo)
        and x.dim() == 2
    ):
        out: Tensor = SymmetricSpMM.apply(adj, x)
        return out
    return torch.sparse.mm(adj, x)


def _polynomial(adj: Tensor, x: Tensor, weights: Sequence[float]) -> Tensor:
    """``Σ_k weights[k] · adj^k @ x`` without autograd: 2 scratch buffers, in-place sums."""
    out = torch.mul(x, weights[0])
    if len(weights) == 1:
        return out
    bufs = [torch.empty_like(out) for _ in range(min(2, len(weights) - 1))]
    h = x
    for k, w in enumerate(weights[1:]):
        nxt = bufs[k % len(bufs)]
        torch.mm(adj, h, out=nxt)
        out.add_(nxt, alpha=w)
        h = nxt
    return out


class SymmetricPolynomial(torch.autograd.Function):
    r""":math:`Y = \sum_{k=0}^{K} w_k \hat A^k X` for a **symmetric** sparse ``Â``, one node.

    :math:`P = \sum_k w_k \hat A^k` is symmetric when ``Â`` is, so
    :math:`\partial L / \partial X = P^\top G = P G`: the backward runs the same propagation
    on the gradient, and nothing but ``Â`` is saved for it (no per-layer activations).
    """

    @staticmethod
    def forward(ctx: Any, adj: Tensor, x: Tensor, weights: tuple[float, ...]) -> Tensor:
        ctx.adj = adj
        ctx.weights = weights
        return _polynomial(adj, x, weights)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor | None, None]:
        if not ctx.needs_input_grad[1]:
            return None, None, None
        return None, _polynomial(ctx.adj, grad.contiguous(), ctx.weights), None


def propagate(
    adj: Tensor, x: Tensor, weights: Sequence[float], *, symmetric: bool = False
) -> Tensor:
    """``Σ_k weights[k] · adj^k @ x`` (e.g. LightGCN's layer mean: ``weights = [1/(K+1)] * (K+1)``).

    With ``symmetric=True`` (the caller vouches that ``adj`` is symmetric) the whole sum is one
    :class:`SymmetricPolynomial` node; otherwise each layer goes through ``torch.sparse.mm``
    with plain autograd. Without a gradient both use the buffer-reusing product.
    """
    w = tuple(float(v) for v in weights)
    if not w:
        raise ValueError("propagate needs at least one weight (the weight of layer 0)")
    if not (x.requires_grad and torch.is_grad_enabled()):
        return _polynomial(adj, x, w)
    if symmetric and not adj.requires_grad and x.dim() == 2:
        out: Tensor = SymmetricPolynomial.apply(adj, x, w)
        return out
    total = x * w[0]
    h = x
    for wk in w[1:]:
        h = torch.sparse.mm(adj, h)
        total = total + wk * h
    return total


__all__ = [
    "Normalization",
    "SymmetricPolynomial",
    "SymmetricSpMM",
    "bipartite_adjacency",
    "is_symmetric",
    "normalize",
    "normalized_bipartite_adjacency",
    "propagate",
    "spmm",
    "to_torch_csr",
]


# --------------------------------------------------------------------------- paired products
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


class PairedSpMM(torch.autograd.Function):
    r"""``M @ X`` for a sparse ``M`` given together with ``Mᵀ`` (no gradient for either).

    Backward: :math:`\partial L / \partial X = M^\top G`, computed with the stored ``Mᵀ`` (a
    plain product) instead of autograd's transpose of a CSR tensor on every backward.
    """

    @staticmethod
    def forward(ctx: Any, adj: Tensor, adj_t: Tensor, x: Tensor) -> Tensor:
        ctx.adj_t = adj_t
        return torch.sparse.mm(adj, x)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor | None]:
        if not ctx.needs_input_grad[2]:
            return None, None, None
        return None, None, torch.sparse.mm(ctx.adj_t, grad.contiguous())


def spmm_pair(adj: Tensor, adj_t: Tensor, x: Tensor) -> Tensor:
    """``adj @ x`` whose backward is ``adj_t @ grad`` (the caller vouches ``adj_t == adj.T``,
    e.g. both came from :func:`to_torch_csr_pair`). Without a gradient: ``torch.sparse.mm``."""
    if x.requires_grad and torch.is_grad_enabled() and x.dim() == 2:
        out: Tensor = PairedSpMM.apply(adj, adj_t, x)
        return out
    return torch.sparse.mm(adj, x)


def co_interaction_spmm(
    adj: Tensor,
    adj_t: Tensor,
    x: Tensor,
    self_weight: Tensor | None = None,
    *,
    outer: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    r""":math:`(A^\top A - \mathrm{diag}(s))\,X` computed as :math:`A^\top (A X) - s \odot X`.

    ``adj`` is a users × items matrix ``A`` and ``adj_t`` its transpose; :math:`A^\top A` is the
    item–item co-interaction graph (entry ``(i, j)``: the summed ``A_ui·A_uj`` over users, i.e.
    the number of users who interacted with both for a binary ``A``). It is never materialised
    (it can be far denser than ``A``): two sparse products of ``nnz(A)·d`` each. ``self_weight``
    (``s``, length n_items; typically :func:`co_interaction_diagonal`) removes the self-loops
    :math:`(A^\top A)_{ii}`. Differentiable in ``X`` through :class:`PairedSpMM`.

    ``outer``: a pair ``(B, Bᵀ)`` replacing ``(Aᵀ, A)`` in the outer product, e.g.
    ``(D⁻¹Aᵀ, A D⁻¹)`` for the row-normalised (mean) graph :math:`D^{-1} A^\top A`; then
    ``self_weight`` must carry the same scaling (:math:`D^{-1}` times the diagonal).
    """
    left, left_t = (adj_t, adj) if outer is None else outer
    out = spmm_pair(left, left_t, spmm_pair(adj, adj_t, x))
    if self_weight is not None:
        out = torch.addcmul(out, x, self_weight.unsqueeze(1), value=-1.0)
    return out


def co_interaction_degree(adj: Tensor, adj_t: Tensor, *, self_loops: bool) -> Tensor:
    r"""Row sums of :math:`A^\top A` (``self_loops=True``) or of :math:`A^\top A - \mathrm{diag}`
    (``False``), as :math:`A^\top (A \mathbf 1)` without a materialised item × item matrix.

    ``adj`` is ``A`` (users × items) and ``adj_t`` its transpose; returns a length-n_items vector.
    """
    ones = torch.ones(adj.shape[1], 1, dtype=adj.dtype, device=adj.device)
    deg = torch.sparse.mm(adj_t, torch.sparse.mm(adj, ones)).squeeze(1)
    if not self_loops:
        deg = deg - co_interaction_diagonal(adj_t)
    return deg


def co_interaction_diagonal(adj_t: Tensor) -> Tensor:
    r"""The diagonal of :math:`A^\top A`, :math:`\sum_u A_{ui}^2`, from ``adj_t`` = :math:`A^\top`
    (for a binary ``A``: each item's number of users)."""
    squared = with_values(adj_t, adj_t.values().pow(2))
    ones = torch.ones(adj_t.shape[1], 1, dtype=adj_t.dtype, device=adj_t.device)
    return torch.sparse.mm(squared, ones).squeeze(1)


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


def propagate_layerwise(
    adjs: Sequence[Tensor], x: Tensor, weights: Sequence[float], *, symmetric: bool = False
) -> Tensor:
    """``Σ_k weights[k] · X⁽ᵏ⁾`` with ``X⁽⁰⁾ = x`` and ``X⁽ᵏ⁾ = adjs[k-1] @ X⁽ᵏ⁻¹⁾``: like
    :func:`propagate`, but with a different adjacency per layer (SGL's random-walk views).

    ``len(weights)`` must be ``len(adjs) + 1``. ``symmetric=True`` (every ``adjs[k]`` symmetric)
    routes each product through :class:`SymmetricSpMM`.
    """
    if len(weights) != len(adjs) + 1:
        raise ValueError(f"propagate_layerwise needs {len(adjs) + 1} weights, got {len(weights)}")
    total = x * float(weights[0])
    h = x
    for adj, wk in zip(adjs, weights[1:], strict=True):
        h = spmm(adj, h, symmetric=symmetric)
        total = total + float(wk) * h
    return total


__all__ += [
    "PairedSpMM",
    "co_interaction_degree",
    "co_interaction_diagonal",
    "co_interaction_spmm",
    "normalized_bipartite_from_pairs",
    "propagate_layerwise",
    "spmm_pair",
    "to_torch_csr_pair",
    "with_values",
]
