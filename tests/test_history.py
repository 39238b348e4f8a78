"""HISTORY on a hand-computed log: decay, behavior weights, conversion smoothing, fallback."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from polyrec.data.log import IdMap, InteractionLog
from polyrec.errors import ConfigError
from polyrec.models import Scorer, TrainData, build_model

VIEW, CART, BUY = 0, 1, 2

# (user, item, behavior, time); user 2 has no interaction, item 3 none either
ROWS = [
    (0, 0, VIEW, 0.0),
    (0, 0, VIEW, 10.0),
    (0, 1, VIEW, 5.0),
    (0, 1, CART, 10.0),
    (1, 0, VIEW, 1.0),
    (1, 0, BUY, 2.0),
    (1, 2, VIEW, 3.0),
    (1, 2, BUY, 4.0),
    (1, 1, VIEW, 4.0),
]
# distinct users per item: any behavior [2, 2, 1, 0], buy [1, 0, 1, 0]; prior = 2 / 5
PRIOR = 0.4
# popularity over every behavior [2, 2, 1, 0] / (max + 1); of buys [1, 0, 1, 0] / 2
POP = np.array([2, 2, 1, 0]) / 3
POP_BUY = np.array([0.5, 0.0, 0.5, 0.0])


def tiny_log(timestamps: bool = True) -> InteractionLog:
    u, i, b, t = (np.array(c) for c in zip(*ROWS, strict=True))
    return InteractionLog(
        user=u.astype(np.int64),
        item=i.astype(np.int64),
        behavior=b.astype(np.int8),
        behaviors=("view", "cart", "buy"),
        target="buy",
        user_map=IdMap.range(3),
        item_map=IdMap.range(4),
        timestamp=t.astype(np.float64) if timestamps else None,
        name="tiny",
    )


def scores(params: dict[str, Any], log: InteractionLog | None = None) -> np.ndarray:
    model = build_model("history", params, TrainData(log or tiny_log()))
    assert isinstance(model, Scorer)
    with torch.no_grad():
        return model.scores(torch.arange(3)).double().numpy()


def conversion(alpha: float) -> np.ndarray:
    buyers, users = np.array([1, 0, 1, 0.0]), np.array([2, 2, 1, 0.0])
    denom = users + alpha
    return np.divide(buyers + alpha * PRIOR, denom, out=np.zeros(4), where=denom > 0)


def expected(h: np.ndarray, c: np.ndarray, eps: float) -> np.ndarray:
    """The class doc's formula, row by row."""
    return np.where(h > 0, h * c + eps * POP, eps * (POP - 1.0))


def test_plain_counts_times_smoothed_conversion() -> None:
    s = scores({"alpha": 1.0, "popularity_weight": 0.01})
    h = np.array([[2, 2, 0, 0], [2, 1, 2, 0], [0, 0, 0, 0.0]])
    c = conversion(1.0)  # [1.4/3, 0.4/3, 0.7, 0.4]
    np.testing.assert_allclose(c, [1.4 / 3, 0.4 / 3, 0.7, 0.4])
    np.testing.assert_allclose(s, expected(h, c, 0.01), rtol=1e-6, atol=1e-7)


def test_smoothing_pulls_rare_items_to_the_prior() -> None:
    for alpha in (0.0, 10.0, 1e6):
        c = conversion(alpha)
        s = scores({"alpha": alpha, "popularity_weight": 0.0})
        np.testing.assert_allclose(s[1, :3], np.array([2, 1, 2]) * c[:3], rtol=1e-6)
    # α = 0: the raw rates (item 1 never bought: 0); α → ∞: every item at the prior
    np.testing.assert_allclose(conversion(0.0)[:3], [0.5, 0.0, 1.0])
    s = scores({"alpha": 1e9, "popularity_weight": 0.0})
    np.testing.assert_allclose(s[1, :3], np.array([2, 1, 2]) * PRIOR, rtol=1e-5)


def test_without_conversion_the_counts_alone() -> None:
    s = scores({"conversion": False, "popularity_weight": 0.0})
    np.testing.assert_allclose(s[0], [2, 2, 0, 0])
    np.testing.assert_allclose(s[1], [2, 1, 2, 0])


def test_behavior_weights() -> None:
    s = scores({"conversion": False, "popularity_weight": 0.0, "behavior_weights": {"cart": 3.0}})
    np.testing.assert_allclose(s[0], [2, 4, 0, 0])  # i1: one view (1) + one cart (3)
    s = scores({"conversion": False, "popularity_weight": 0.0, "behavior_weights": {"view": 0.0}})
    np.testing.assert_allclose(s[0], [0, 1, 0, 0])  # views ignored: i0 is no longer own
    np.testing.assert_allclose(s[1], [1, 0, 1, 0])


def test_recency_decay_from_the_users_latest_interaction() -> None:
    s = scores({"conversion": False, "popularity_weight": 0.0, "half_life": 10.0})
    # user 0, t_max = 10: i0 = 0.5^(10/10) + 0.5^0, i1 = 0.5^(5/10) + 1
    np.testing.assert_allclose(s[0, :2], [1.5, 1 + 0.5**0.5], rtol=1e-6)
    # user 1, t_max = 4: i0 = 0.5^0.3 + 0.5^0.2, i1 = 1, i2 = 0.5^0.1 + 1
    np.testing.assert_allclose(s[1, :3], [0.5**0.3 + 0.5**0.2, 1.0, 0.5**0.1 + 1.0], rtol=1e-6)
    # the more recent item wins once decay is on (they tie on plain counts)
    assert s[0, 1] > s[0, 0]


def test_no_timestamps_means_plain_counts() -> None:
    s = scores({"conversion": False, "popularity_weight": 0.0, "half_life": 10.0}, tiny_log(False))
    np.testing.assert_allclose(s[0], [2, 2, 0, 0])


def test_a_very_long_decay_keeps_own_items_above_the_rest() -> None:
    rows = [*ROWS, (0, 3, VIEW, 1e9)]  # user 0's other items are now ~1e8 half-lives old
    u, i, b, t = (np.array(c) for c in zip(*rows, strict=True))
    log = dataclasses.replace(
        tiny_log(),
        user=u.astype(np.int64),
        item=i.astype(np.int64),
        behavior=b.astype(np.int8),
        timestamp=t.astype(np.float64),
    )
    s = scores({"half_life": 10.0, "popularity_weight": 1.0}, log)
    own, other = s[0, [0, 1, 3]], s[0, 2]
    assert np.isfinite(s).all() and (own >= 0).all() and own.min() > other


def test_fallback_orders_a_user_without_history_by_popularity() -> None:
    s = scores({"popularity_weight": 0.01})
    np.testing.assert_allclose(s[2], 0.01 * (POP - 1.0), rtol=1e-6)
    assert s[2, 0] == s[2, 1] > s[2, 2] > s[2, 3]
    s = scores({"popularity_weight": 0.01, "popularity": "target"})
    np.testing.assert_allclose(s[2], 0.01 * (POP_BUY - 1.0), rtol=1e-6)
    assert s[2, 0] > s[2, 1] and s[2, 2] > s[2, 3]


def test_own_viewed_items_outrank_unseen_items() -> None:
    # α = 0: item 1 has conversion 0, and a huge ε: still above the unseen item 2, which is
    # bought (item 1 is not) and which the target-only popularity puts first
    s = scores({"alpha": 0.0, "popularity_weight": 100.0, "popularity": "target"})
    assert s[0, 1] == 0.0 and s[0, 2] == pytest.approx(-50.0)
    assert min(s[0, 0], s[0, 1]) > max(s[0, 2], s[0, 3])


def test_exclude_target() -> None:
    s = scores({"conversion": False, "popularity_weight": 0.01, "exclude_target": True})
    # user 1 bought items 0 and 2: they fall back to the popularity tier, item 1 stays own
    fallback = 0.01 * (POP - 1.0)
    np.testing.assert_allclose(s[1], [fallback[0], 1 + 0.01 * POP[1], *fallback[2:]], rtol=1e-6)
    np.testing.assert_allclose(s[0], [*(2 + 0.01 * POP[:2]), *fallback[2:]], rtol=1e-6)


def test_unknown_behavior_weight_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="clicks"):
        scores({"behavior_weights": {"clicks": 2.0}})
    with pytest.raises(ConfigError):
        scores({"behavior_weights": {"view": -1.0}})
