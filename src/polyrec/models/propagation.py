r"""Differentiable sparse propagation: the one place graph models multiply by a sparse matrix.

The adjacencies come from :mod:`polyrec.data.graphs` (built once per dataset, behavior or slot);
these operators multiply by them with custom backward passes that avoid autograd's transpose of
a CSR tensor, the bottleneck of LightGCN-style training on CPU.

* :class:`SymmetricSpMM` / :func:`spmm` — :math:`\hat A X` whose backward is :math:`\hat A G`
  (valid because :math:`\hat A^\top = \hat A`). The backward goes through the same Function,
  so the product is differentiable any number of times (CML's second-order meta step
  differentiates through a backward pass); a first-order backward costs the same product.
* :class:`SymmetricPolynomial` / :func:`propagate` — the whole multi-layer propagation
  :math:`Y = \sum_k w_k \hat A^k X` as one autograd node: a polynomial in a symmetric
  :math:`\hat A` is symmetric, so the backward is the same propagation of the gradient; no
  layer output is kept for backward and the products write into two reused buffers.
* :func:`propagate_layerwise` — the same sum with a different adjacency per layer (SGL).
* :class:`PairedSpMM` / :func:`spmm_pair` — :math:`M X` for a sparse ``M`` stored with its
  transpose (MBGCN, EGCM); :func:`co_interaction_spmm` — :math:`(A^\top A - \mathrm{diag})X`
  without materialising the item–item matrix.
* :func:`edge_dot` / :func:`edge_spmm` — per-edge scores ⟨x_r, y_c⟩ and a product with edge-valued
  weights on one symmetric CSR pattern (MuLe's attention), with no ``[E, d]`` gather.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from polyrec.data.graphs import with_values


class SymmetricSpMM(torch.autograd.Function):
    r"""``Â @ X`` for a **symmetric** sparse ``Â`` (no gradient for ``Â``).

    Backward: :math:`\partial L / \partial X = \hat A^\top G = \hat A G` — the same kind of
    product as the forward, with no transpose of the sparse matrix, computed by this Function
    again: under ``create_graph=True`` the backward is itself differentiable the same way, so
    the product is differentiable any number of times (CML's second-order meta step). The
    caller guarantees symmetry (see :func:`spmm`); for an asymmetric matrix the gradient would
    be wrong.
    """

    @staticmethod
    def forward(ctx: Any, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor | None]:
        if not ctx.needs_input_grad[1]:
            return None, None
        out: Tensor = SymmetricSpMM.apply(ctx.adj, grad.contiguous())
        return None, out


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


def segment_softmax(logits: Tensor, index: Tensor, n: int) -> Tensor:
    """Softmax of ``logits`` ``[E, h]`` over the entries that share ``index`` (the target node
    of each edge), per column; targets without edges get nothing."""
    h = logits.shape[1]
    idx = index.unsqueeze(1).expand(-1, h)
    top = logits.new_full((n, h), -math.inf).scatter_reduce(0, idx, logits.detach(), "amax")
    e = torch.exp(logits - top.index_select(0, index))
    total = logits.new_zeros(n, h).index_add_(0, index, e)
    return e / total.index_select(0, index)


__all__ = [
    "PairedSpMM",
    "SymmetricPolynomial",
    "SymmetricSpMM",
    "co_interaction_degree",
    "co_interaction_diagonal",
    "co_interaction_spmm",
    "propagate",
    "propagate_layerwise",
    "segment_softmax",
    "spmm",
    "spmm_pair",
]


# --------------------------------------------------------------------------- edge-valued products
# Attention over graph edges (MuLe's target-guided denoising attention) needs per-edge scores
# ⟨x[r], y[c]⟩ and a product with a matrix whose values are those edges' weights. Both run on
# one CSR pattern P whose entries are symmetric as a set (an undirected graph stored in both
# directions) and ``rev``, the position of each entry's transpose: no [E, d] gather is formed,
# forward or backward (a sampled dense-dense product and a sparse-dense product instead).


class EdgeDot(torch.autograd.Function):
    r""":math:`s_e = \langle x_{r_e}, y_{c_e}\rangle` for the entries e = (r_e, c_e) of ``P``.

    Backward: :math:`\partial x = S_{\partial s} y` and :math:`\partial y = S_{\partial s}^\top x`
    with :math:`S_v` = ``P`` holding values v; the transpose is ``P`` again with values
    :math:`v[\mathrm{rev}]` (P is symmetric as a set).
    """

    @staticmethod
    def forward(ctx: Any, pattern: Tensor, rev: Tensor, x: Tensor, y: Tensor) -> Tensor:
        ctx.save_for_backward(x, y)
        ctx.pattern, ctx.rev = pattern, rev
        return torch.sparse.sampled_addmm(pattern, x, y.T, beta=0.0).values()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor | None, Tensor | None]:
        x, y = ctx.saved_tensors
        gx = gy = None
        if ctx.needs_input_grad[2]:
            gx = torch.sparse.mm(with_values(ctx.pattern, grad.contiguous()), y)
        if ctx.needs_input_grad[3]:
            gy = torch.sparse.mm(with_values(ctx.pattern, grad[ctx.rev].contiguous()), x)
        return None, None, gx, gy


class EdgeSpMM(torch.autograd.Function):
    r""":math:`o_r = \sum_{e: r_e = r} v_e\, h_{c_e}`: ``P`` with values ``v`` times ``h``.

    Backward: :math:`\partial v_e = \langle \partial o_{r_e}, h_{c_e}\rangle` (a sampled
    product) and :math:`\partial h = P_{v[\mathrm{rev}]}\, \partial o` (the transpose).
    """

    @staticmethod
    def forward(ctx: Any, pattern: Tensor, rev: Tensor, values: Tensor, h: Tensor) -> Tensor:
        ctx.save_for_backward(values, h)
        ctx.pattern, ctx.rev = pattern, rev
        return torch.sparse.mm(with_values(pattern, values), h)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor | None, Tensor | None]:
        values, h = ctx.saved_tensors
        grad = grad.contiguous()
        gv = gh = None
        if ctx.needs_input_grad[2]:
            gv = torch.sparse.sampled_addmm(ctx.pattern, grad, h.T, beta=0.0).values()
        if ctx.needs_input_grad[3]:
            gh = torch.sparse.mm(with_values(ctx.pattern, values[ctx.rev].contiguous()), grad)
        return None, None, gv, gh


def edge_dot(pattern: Tensor, rev: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """``[nnz]``: ⟨x[r], y[c]⟩ for each entry (r, c) of the CSR ``pattern`` (differentiable in
    ``x`` and ``y``; ``rev``: each entry's transpose position, the pattern symmetric as a set)."""
    out: Tensor = EdgeDot.apply(pattern, rev, x, y)
    return out


def edge_spmm(pattern: Tensor, rev: Tensor, values: Tensor, h: Tensor) -> Tensor:
    """``P_values @ h`` for the CSR ``pattern`` given per-entry ``values`` (differentiable in
    ``values`` and ``h``; ``rev`` as for :func:`edge_dot`)."""
    out: Tensor = EdgeSpMM.apply(pattern, rev, values, h)
    return out
