"""MBA's denoising frameworks around a backbone: WBPR's popularity-weighted negatives and T-CE's
truncated cross-entropy, by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from polyrec import losses
from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.views import TrainData
from polyrec.models import build_model
from polyrec.models.lightgcn import LightGCN
from polyrec.models.mf import MF
from polyrec.models.tce import TCE
from polyrec.models.wbpr import WBPR


def log() -> TrainData:
    # buys: item 0 by users 0-3, item 1 by users 0-1, item 2 by user 2; items 3, 4 never bought
    rows = [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (1, 1), (2, 2), (3, 3)]
    u, i = (np.array(c) for c in zip(*rows, strict=True))
    b = np.array([1] * 7 + [0], dtype=np.int8)  # the last row is a view
    log = InteractionLog(
        user=u, item=i, behavior=b, behaviors=("view", "buy"), target="buy",
        user_map=IdMap.range(4), item_map=IdMap.range(5), name="tiny",
    )  # fmt: skip
    return TrainData(log)


def test_truncated_bce_by_hand() -> None:
    pos = torch.tensor([2.0, -1.0])
    neg = torch.tensor([0.0, 3.0])
    per = [math.log1p(math.exp(-2.0)), math.log1p(math.exp(1.0)), math.log(2.0),
           math.log1p(math.exp(3.0))]  # fmt: skip
    assert float(losses.truncated_bce(pos, neg, 0.0)) == pytest.approx(sum(per) / 4, rel=1e-6)
    # drop 1/4: the largest loss (the negative scored 3) goes
    kept = sorted(per)[:3]
    assert float(losses.truncated_bce(pos, neg, 0.25)) == pytest.approx(sum(kept) / 3, rel=1e-6)
    with pytest.raises(ValueError, match="drop_rate"):
        losses.truncated_bce(pos, neg, 1.0)


@pytest.mark.parametrize(("name", "backbone"), [("wbpr-mf", MF), ("wbpr-lightgcn", LightGCN)])
def test_wbpr_draws_negatives_by_purchase_count(name: str, backbone: type) -> None:
    data = log()
    model = build_model(name, {"dim": 4}, data)
    assert isinstance(model, WBPR) and isinstance(model, backbone)
    # purchase counts 4, 2, 1, 0, 0 (the view of item 3 is not a purchase)
    assert model.negative_weights.tolist() == [4.0, 2.0, 1.0, 0.0, 0.0]
    gen = torch.Generator().manual_seed(0)
    negs = torch.cat([b.neg for _ in range(200) for b in model.batches(data, 8, gen)])
    users = torch.cat([b.user for _ in range(1) for b in model.batches(data, 8, gen)])
    assert users.numel() == 7
    assert set(negs.tolist()) == {1, 2}  # never-bought items are never drawn; item 0 is bought
    # by every user
    flat = build_model(name, {"dim": 4, "popularity_exponent": 0.0}, data)
    assert flat.negative_weights.tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    # WBPR keeps the backbone's loss
    batch = next(iter(model.batches(data, 8, gen)))
    assert set(model.loss(batch)) == {"bpr", "reg"}


def test_wbpr_frequencies_follow_popularity() -> None:
    """User 3 (who bought item 0) draws items 1 and 2 (2 and 1 purchases) in a 2 : 1 ratio."""
    from polyrec.data.sampling import sample_negatives_t

    data = log()
    model = build_model("wbpr-mf", {"dim": 4}, data)
    gen = torch.Generator().manual_seed(0)
    users = torch.full((30000,), 3)
    neg = sample_negatives_t(users, 5, data.pair_set("buy"), gen, weights=model.negative_weights)
    freq = torch.bincount(neg, minlength=5).double() / len(neg)
    np.testing.assert_allclose(freq.numpy(), [0, 2 / 3, 1 / 3, 0, 0], atol=0.01)


@pytest.mark.parametrize("name", ["tce-mf", "tce-lightgcn"])
def test_tce_drop_rate_schedule_and_loss(name: str) -> None:
    data = log()
    model = build_model(name, {"dim": 4, "drop_rate": 0.2, "num_gradual": 4}, data)
    assert isinstance(model, TCE)
    gen = torch.Generator().manual_seed(0)
    batch = next(iter(model.batches(data, 8, gen)))
    model.train()
    rates = []
    for _ in range(6):
        rates.append(model.drop_rate())
        terms = model.loss(batch)
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.2])
    pos, neg, penalty = model.pair_scores(batch)
    want = losses.truncated_bce(pos, neg, model.drop_rate())
    torch.testing.assert_close(terms["tce"], want)
    torch.testing.assert_close(terms["reg"], model.config.reg * penalty)
    model.eval()
    model.loss(batch)
    assert int(model.tce_step) == 6  # evaluation does not advance the schedule
