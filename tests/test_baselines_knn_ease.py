"""EASE and ItemKNN on a tiny hand-made log: scores against independent numpy / hand values."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import TrainData, weighted_matrix
from polyrec.errors import ConfigError
from polyrec.models import build_model
from polyrec.models.ease import EASE
from polyrec.models.itemknn import ItemKNN, knn_similarity

# 4 users × 5 items; target "buy". User 3 bought nothing; item 4 was only viewed.
BUY = np.array(
    [
        [1, 1, 0, 0, 0],
        [1, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 0, 0, 0],
    ],
    dtype=np.float64,
)
VIEW = np.array(
    [
        [1, 1, 0, 0, 1],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 1, 1],
    ],
    dtype=np.float64,
)
USERS = torch.arange(4)


def tiny_log() -> InteractionLog:
    users, items, behs = [], [], []
    for code, mat in enumerate((VIEW, BUY)):
        u, i = np.nonzero(mat)
        users.append(u)
        items.append(i)
        behs.append(np.full(len(u), code))
    return InteractionLog(
        user=np.concatenate(users).astype(np.int64),
        item=np.concatenate(items).astype(np.int64),
        behavior=np.concatenate(behs).astype(np.int8),
        behaviors=("view", "buy"),
        target="buy",
        user_map=IdMap.range(4),
        item_map=IdMap.range(5),
        name="tiny",
    )


@pytest.fixture
def data() -> TrainData:
    return TrainData(tiny_log())


def scores(model: object, users: torch.Tensor = USERS) -> np.ndarray:
    assert isinstance(model, EASE | ItemKNN)
    with torch.no_grad():
        return model.scores(users).numpy()


def ease_reference(x: np.ndarray, lam: float) -> np.ndarray:
    """B of Steck's Algorithm 1 over every item (inactive ones included), in numpy."""
    g = x.T @ x + lam * np.eye(x.shape[1])
    p = np.linalg.inv(g)
    b = np.eye(x.shape[1]) - p / np.diag(p)  # column j divided by P_jj
    np.fill_diagonal(b, 0.0)
    return b


def cosine_reference(x: np.ndarray, alpha: float = 0.5, shrink: float = 0.0) -> np.ndarray:
    """Dense S_ij = x_i·x_j / ((‖x_j‖²)^α (‖x_i‖²)^(1−α) + shrink), zero diagonal."""
    sq = (x * x).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (x.T @ x) / (sq[None, :] ** alpha * sq[:, None] ** (1 - alpha) + shrink)
    s = np.nan_to_num(s)
    np.fill_diagonal(s, 0.0)
    return s


# ------------------------------------------------------------------------- the matrix X
def test_weighted_matrix_sums_behavior_weights(data: TrainData) -> None:
    x = weighted_matrix(data, {"buy": 1.0, "view": 0.25}).toarray()
    np.testing.assert_array_equal(x, BUY + 0.25 * VIEW)
    assert x[0, 0] == 1.25  # viewed and bought: the sum of both weights
    np.testing.assert_array_equal(weighted_matrix(data, {"buy": 1.0}).toarray(), BUY)
    with pytest.raises(ValueError, match="unknown behavior"):
        weighted_matrix(data, {"click": 1.0})


def test_unknown_behavior_weight_is_config_error(data: TrainData) -> None:
    for name in ("ease", "itemknn"):
        with pytest.raises(ConfigError, match="click"):
            build_model(name, {"behavior_weights": {"click": 1.0}}, data)


# ------------------------------------------------------------------------- EASE
def test_ease_matches_algorithm_1(data: TrainData) -> None:
    model = build_model("ease", {"l2": 1.0}, data)
    b = ease_reference(BUY, 1.0)
    np.testing.assert_allclose(scores(model), BUY @ b, rtol=1e-5, atol=1e-6)
    # B over the 4 active items (item 4 has no purchase: its row and column of B are zero)
    assert model.active.tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(model.weight.numpy(), b[:4, :4], rtol=1e-5, atol=1e-7)
    assert np.all(b[4] == 0) and np.all(b[:, 4] == 0)
    assert np.all(np.diag(model.weight.numpy()) == 0)
    assert model.state_dict().keys() == {"weight", "active"}


def test_ease_by_hand_two_items() -> None:
    """Two items bought together by one user, λ = 1: G + λI = [[2, 1], [1, 2]], P = ⅓[[2, −1],
    [−1, 2]], B_01 = −P_01/P_11 = ½, so the user scores ½ for each item."""
    log = InteractionLog(
        user=np.array([0, 0], dtype=np.int64),
        item=np.array([0, 1], dtype=np.int64),
        behavior=np.array([0, 0], dtype=np.int8),
        behaviors=("buy",),
        target="buy",
        user_map=IdMap.range(1),
        item_map=IdMap.range(2),
        name="pair",
    )
    model = build_model("ease", {"l2": 1.0}, TrainData(log))
    np.testing.assert_allclose(model.weight.numpy(), [[0.0, 0.5], [0.5, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(scores(model, torch.tensor([0])), [[0.5, 0.5]], rtol=1e-6)


def test_ease_behavior_weights(data: TrainData) -> None:
    target_only = scores(build_model("ease", {"l2": 1.0}, data))
    x = BUY + 0.5 * VIEW
    for params in ({"other_weight": 0.5}, {"behavior_weights": {"view": 0.5}}):
        model = build_model("ease", {"l2": 1.0, **params}, data)
        np.testing.assert_allclose(scores(model), x @ ease_reference(x, 1.0), rtol=1e-5, atol=1e-6)
        assert model.active.tolist() == [0, 1, 2, 3, 4]  # item 4 is viewed: active now
    assert not np.allclose(scores(model), target_only)
    # the target weight can be set too (here: views only)
    model = build_model("ease", {"l2": 1.0, "behavior_weights": {"buy": 0.0, "view": 1.0}}, data)
    np.testing.assert_allclose(scores(model), VIEW @ ease_reference(VIEW, 1.0), atol=1e-6)


def test_ease_user_without_interactions_scores_zero(data: TrainData) -> None:
    s = scores(build_model("ease", {}, data))
    assert np.isfinite(s).all()
    np.testing.assert_array_equal(s[3], 0.0)  # user 3 bought nothing


def test_ease_memory_limit_is_config_error(data: TrainData) -> None:
    # 4 active items: 12 · 4² = 192 bytes
    with pytest.raises(ConfigError, match=r"4 items .*itemknn"):
        build_model("ease", {"max_memory_gb": 1.9e-7}, data)
    build_model("ease", {"max_memory_gb": 1.93e-7}, data)  # fits


def test_ease_retailrocket_sized_catalogue_is_refused() -> None:
    """30k active items (the embedded Retailrocket with every behavior) exceed the default 4 GB
    before any dense matrix is made."""
    n_users, n_items = 3, 30_000
    log = InteractionLog(
        user=np.arange(n_items, dtype=np.int64) % n_users,
        item=np.arange(n_items, dtype=np.int64),
        behavior=np.zeros(n_items, dtype=np.int8),
        behaviors=("buy",),
        target="buy",
        user_map=IdMap.range(n_users),
        item_map=IdMap.range(n_items),
        name="wide",
    )
    with pytest.raises(ConfigError, match=r"30,000 × 30,000 .*10\.8 GB.*'itemknn'"):
        build_model("ease", {}, TrainData(log))


# ------------------------------------------------------------------------- ItemKNN
def test_itemknn_cosine_by_hand(data: TrainData) -> None:
    model = build_model("itemknn", {}, data)
    s = scores(model)
    # cos(i0, i2) = |{u1}| / (√2·√2) = ½; cos(i1, i2) = |{u2}| / 2 = ½; cos(i1, i3) = 1/√2
    # user 0 (bought i0, i1): i2 scores ½ + ½, i3 scores 0 + 1/√2, item 4 (never bought) 0
    np.testing.assert_allclose(s[0, 2], 1.0, rtol=1e-6)
    np.testing.assert_allclose(s[0, 3], 1 / np.sqrt(2), rtol=1e-6)
    assert s[0, 4] == 0.0
    np.testing.assert_allclose(s, BUY @ cosine_reference(BUY), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(s[3], 0.0)  # no purchase: zeros


def test_itemknn_top_k_pruning(data: TrainData) -> None:
    sim = knn_similarity(weighted_matrix(data, {"buy": 1.0}), k=1).toarray()
    # every target item (column) keeps its one most similar neighbour (row)
    assert (np.count_nonzero(sim, axis=0) <= 1).all()
    # item 2: neighbours i0 (½), i1 (½), i3 (1/√2) → i3; item 0: i1 (½), i2 (½) tie → i1
    assert np.flatnonzero(sim[:, 2]).tolist() == [3]
    assert np.flatnonzero(sim[:, 0]).tolist() == [1]
    np.testing.assert_allclose(sim[3, 2], 1 / np.sqrt(2))
    full = cosine_reference(BUY)
    for j in range(5):
        nz = np.flatnonzero(sim[:, j])
        if len(nz):
            assert sim[nz[0], j] == pytest.approx(full[:, j].max())
    model = build_model("itemknn", {"k": 1}, data)
    np.testing.assert_allclose(scores(model), BUY @ sim, rtol=1e-6)


def test_itemknn_top_k_pruning_keeps_the_k_largest() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((40, 30)) < 0.3).astype(np.float64)
    full = cosine_reference(x)
    for k in (1, 3, 7, 100):
        got = knn_similarity(sp.csr_matrix(x), k=k, block=4).toarray()
        for j in range(30):
            kept = np.flatnonzero(got[:, j])
            assert len(kept) == min(k, np.count_nonzero(full[:, j]))
            np.testing.assert_allclose(got[kept, j], full[kept, j])
            if len(kept) < np.count_nonzero(full[:, j]):  # nothing dropped beats a kept one
                dropped = np.setdiff1d(np.flatnonzero(full[:, j]), kept)
                assert full[dropped, j].max() <= full[kept, j].min()


def test_itemknn_asymmetric_cosine_and_shrink(data: TrainData) -> None:
    x = BUY + 0.5 * VIEW
    model = build_model("itemknn", {"alpha": 0.2, "shrink": 2.0, "other_weight": 0.5}, data)
    expected = x @ cosine_reference(x, alpha=0.2, shrink=2.0)
    np.testing.assert_allclose(scores(model), expected, rtol=1e-5, atol=1e-7)
    assert not np.allclose(expected, x @ cosine_reference(x))


def test_itemknn_behavior_weights(data: TrainData) -> None:
    target_only = scores(build_model("itemknn", {}, data))
    weighted = scores(build_model("itemknn", {"behavior_weights": {"view": 1.0}}, data))
    x = BUY + VIEW
    np.testing.assert_allclose(weighted, x @ cosine_reference(x), rtol=1e-6, atol=1e-7)
    assert target_only[3].sum() == 0 and weighted[3].sum() > 0  # user 3's views now count


def test_itemknn_keeps_no_weights(data: TrainData) -> None:
    model = build_model("itemknn", {}, data)
    assert model.state_dict() == {}
    assert not model.rebuildable and not model.trainable
