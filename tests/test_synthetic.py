"""The synthetic multi-behavior log generator: fixed output for fixed arguments, chunked topic
draw identical to the one-block draw, sizes from ``n_views_for``."""

from __future__ import annotations

import numpy as np
import pytest

import polyrec.data.synthetic as synthetic
from polyrec.data.synthetic import n_views_for, synthetic_log


def test_default_output_is_unchanged() -> None:
    # fingerprints of the generator's output before the topic draw was chunked
    assert synthetic_log().fingerprint() == "eda9b08d04f9ed87"
    assert synthetic_log(50, 60, 900, n_topics=5, seed=3).fingerprint() == "af97e480437a7021"
    assert synthetic_log(1000, 500, 20000, n_topics=30, seed=7).fingerprint() == (
        "81af7a1e8a65e2f3"
    )


def test_chunked_topic_draw_is_identical(monkeypatch: pytest.MonkeyPatch) -> None:
    whole = synthetic_log(1000, 500, 20000, n_topics=30, seed=7)
    monkeypatch.setattr(synthetic, "_TOPIC_CHUNK", 7)
    chunked = synthetic_log(1000, 500, 20000, n_topics=30, seed=7)
    assert chunked.fingerprint() == whole.fingerprint()
    np.testing.assert_array_equal(chunked.category, whole.category)


def test_n_views_for_reaches_the_total() -> None:
    n = 200_000
    log = synthetic_log(2000, 1000, n_views_for(n), n_topics=20, seed=1)
    assert abs(len(log) - n) < 0.01 * n
    assert set(np.unique(log.behavior)) == {0, 1, 2}
    assert log.category is not None and log.timestamp is not None
    assert n_views_for(1) == 1
