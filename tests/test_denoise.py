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


def _kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def test_deca_loss_by_hand() -> None:
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    f, g, h = [1.2, -0.4], [0.3, 0.5], [-1.0, 0.7]
    obs = [1.0, 0.0]
    t = torch.tensor
    dp = losses.deca(t(f), t(g), t(h), t(obs), step="DP", alpha=0.3, c1=50.0, c2=7.0)
    dn = losses.deca(t(f), t(g), t(h), t(obs), step="DN", alpha=0.3, c1=50.0, c2=7.0)
    for k in range(2):
        fp, gp, hp = sig(f[k]), sig(g[k]), sig(h[k])
        agree = 0.3 * _kl(gp, fp) + 0.7 * _kl(fp, gp)
        # DP: h = P(y=1 | r=0), ln P(0 | 1) = -C1; DN: h = P(y=1 | r=1), ln P(1 | 0) = -C2
        if obs[k]:
            lik_dp = (1 - fp) * math.log(hp)
            lik_dn = fp * math.log(hp) - 7.0 * (1 - fp)
        else:
            lik_dp = -50.0 * fp + (1 - fp) * math.log(1 - hp)
            lik_dn = fp * math.log(1 - hp)
        assert float(dp[k]) == pytest.approx(agree - lik_dp, rel=1e-5)
        assert float(dn[k]) == pytest.approx(agree - lik_dn, rel=1e-5)
    with pytest.raises(ValueError, match="step"):
        losses.deca(t(f), t(g), t(h), t(obs), step="both")


@pytest.mark.parametrize("name", ["deca-mf", "deca-lightgcn"])
def test_deca_alternates_and_trains_the_step_models(name: str) -> None:
    from polyrec.models.deca import DeCA

    data = log()
    torch.manual_seed(0)
    model = build_model(name, {"dim": 4, "aux_dim": 3}, data)
    assert isinstance(model, DeCA)
    gen = torch.Generator().manual_seed(0)
    batch = next(iter(model.batches(data, 8, gen)))
    model.train()
    steps = []
    for _ in range(3):
        steps.append(model.current_step())
        model.zero_grad(set_to_none=True)
        terms = model.loss(batch)
        sum(terms.values()).backward()
        # the step's channel model has a gradient, the other one none
        trained, idle = (
            (model.deca_h1, model.deca_h2) if steps[-1] == "DP" else (model.deca_h2, model.deca_h1)
        )
        assert trained.user.weight.grad is not None and idle.user.weight.grad is None
        assert model.deca_g.item.weight.grad is not None
    assert steps == ["DP", "DN", "DP"]
    pos, neg, _ = model.pair_scores(batch)
    users, items = torch.cat([batch.user, batch.user]), torch.cat([batch.pos, batch.neg])
    per = losses.deca(
        torch.cat([pos, neg]), model.deca_g(users, items), model.deca_h2(users, items),
        torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]), step="DN",
    )  # fmt: skip
    torch.testing.assert_close(
        model.loss(batch)["deca"], per[: len(pos)].mean() + per[len(pos) :].mean()
    )
