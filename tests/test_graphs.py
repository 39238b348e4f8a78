"""Adjacency builders, normalisations and the symmetric sparse product."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from polyrec.data.graphs import (
    bipartite_adjacency,
    is_symmetric,
    normalize,
    normalized_bipartite_adjacency,
    to_torch_csr,
)
from polyrec.models.propagation import SymmetricPolynomial, SymmetricSpMM, propagate, spmm

# 3 users × 4 items; user 2 and item 3 have no interaction (zero degree)
R = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=np.float32))


def dense_reference(r: np.ndarray) -> np.ndarray:
    n_u, n_i = r.shape
    a = np.zeros((n_u + n_i, n_u + n_i))
    a[:n_u, n_u:] = r
    a[n_u:, :n_u] = r.T
    deg = a.sum(1)
    with np.errstate(divide="ignore"):
        d = np.where(deg > 0, deg**-0.5, 0.0)
    return d[:, None] * a * d[None, :]


def test_bipartite_adjacency_layout() -> None:
    a = bipartite_adjacency(R).toarray()
    assert a.shape == (7, 7)
    np.testing.assert_array_equal(a[:3, 3:], R.toarray())
    np.testing.assert_array_equal(a[3:, :3], R.toarray().T)
    assert not a[:3, :3].any() and not a[3:, 3:].any()


def test_normalized_bipartite_adjacency_matches_dense_formula() -> None:
    adj = normalized_bipartite_adjacency(R)
    assert adj.layout == torch.sparse_csr
    assert adj.dtype == torch.float32
    dense = adj.to_dense().numpy()
    assert np.isfinite(dense).all()
    np.testing.assert_allclose(dense, dense_reference(R.toarray()), rtol=1e-6)
    # hand check: user 0 (degree 2) – item 1 (degree 2): 1/√(2·2) = 0.5
    assert dense[0, 3 + 1] == pytest.approx(0.5)
    # user 0 – item 0 (degree 1): 1/√(2·1)
    assert dense[0, 3 + 0] == pytest.approx(1 / np.sqrt(2))
    assert not dense[2].any() and not dense[3 + 3].any()  # zero-degree rows stay zero
    np.testing.assert_array_equal(dense, dense.T)


def test_normalize_left_right_sym() -> None:
    m = sp.csr_matrix(np.array([[1.0, 3.0], [0.0, 0.0], [2.0, 0.0]]))
    left = normalize(m, "left").toarray()
    np.testing.assert_allclose(left, [[0.25, 0.75], [0, 0], [1, 0]])
    right = normalize(m, "right").toarray()
    np.testing.assert_allclose(right, [[1 / 3, 1], [0, 0], [2 / 3, 0]], rtol=1e-6)
    sym = normalize(m, "sym").toarray()
    # rows degrees (4, 0, 2), column degrees (3, 3): m_ij / √(d_i · c_j)
    np.testing.assert_allclose(
        sym, [[1 / np.sqrt(12), 3 / np.sqrt(12)], [0, 0], [2 / np.sqrt(6), 0]], rtol=1e-6
    )
    with pytest.raises(ValueError):
        normalize(m, "both")  # type: ignore[arg-type]


def test_is_symmetric() -> None:
    assert is_symmetric(bipartite_adjacency(R))
    assert not is_symmetric(normalize(bipartite_adjacency(R), "left"))
    assert not is_symmetric(R)


def test_to_torch_csr_index_dtypes() -> None:
    m = normalize(bipartite_adjacency(R))
    for idx in (torch.int32, torch.int64):
        t = to_torch_csr(m, index_dtype=idx)
        assert t.crow_indices().dtype == idx
        np.testing.assert_allclose(t.to_dense().numpy(), m.toarray())


def test_symmetric_spmm_gradcheck_float64() -> None:
    adj = normalized_bipartite_adjacency(R, dtype=torch.float64)
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: SymmetricSpMM.apply(adj, t), (x,))


def test_symmetric_spmm_matches_dense_autograd() -> None:
    adj = normalized_bipartite_adjacency(R, dtype=torch.float64)
    dense = adj.to_dense()
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, dtype=torch.float64)

    def two_layers(t: torch.Tensor, prod: object) -> torch.Tensor:
        h = prod(t)  # type: ignore[operator]
        return ((h + prod(h)) * w).sum()

    two_layers(x, lambda t: spmm(adj, t, symmetric=True)).backward()
    g_custom = x.grad.clone()
    x.grad = None
    two_layers(x, lambda t: dense @ t).backward()
    torch.testing.assert_close(g_custom, x.grad)


def test_spmm_fallback_for_asymmetric_matrix() -> None:
    left = to_torch_csr(normalize(bipartite_adjacency(R), "left"), dtype=torch.float64)
    x = torch.randn(7, 2, dtype=torch.float64, requires_grad=True)
    spmm(left, x).sum().backward()
    expected = left.to_dense().T @ torch.ones(7, 2, dtype=torch.float64)
    torch.testing.assert_close(x.grad, expected)
    assert torch.autograd.gradcheck(lambda t: spmm(left, t), (x,))


def test_spmm_without_grad_is_plain_product() -> None:
    adj = normalized_bipartite_adjacency(R)
    x = torch.randn(7, 2)
    torch.testing.assert_close(spmm(adj, x, symmetric=True), adj.to_dense() @ x)


def test_symmetric_polynomial_gradcheck_and_dense_reference() -> None:
    adj = normalized_bipartite_adjacency(R, dtype=torch.float64)
    dense = adj.to_dense()
    weights = (0.25, 0.25, 0.25, 0.25)  # LightGCN, K = 3
    x = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: SymmetricPolynomial.apply(adj, t, weights), (x,))
    expected = sum(w * torch.linalg.matrix_power(dense, k) @ x for k, w in enumerate(weights))
    torch.testing.assert_close(propagate(adj, x, weights, symmetric=True), expected)
    with torch.no_grad():
        torch.testing.assert_close(propagate(adj, x, weights), expected)


def test_propagate_modes_have_equal_gradients() -> None:
    adj = normalized_bipartite_adjacency(R, dtype=torch.float64)
    x = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 4, dtype=torch.float64)
    grads = []
    for symmetric in (True, False):
        x.grad = None
        (propagate(adj, x, [0.5, 0.3, 0.2], symmetric=symmetric) * w).sum().backward()
        grads.append(x.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])
    assert propagate(adj, x, [2.0]).equal(2.0 * x)
    with pytest.raises(ValueError):
        propagate(adj, x, [])
