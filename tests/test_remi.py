"""REMI (RecSys 2023) on ComiRec-DR: interest-aware hard negatives and the routing regulariser by
hand, their limits (β = 0, λ = 0 give back ComiRec-DR), gradients, and inference equal to the
backbone's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interest_contract import sequence_log
from polyrec import losses
from polyrec.data.sequences import SequenceSet
from polyrec.models import TrainData, build_model
from polyrec.models.remi import REMIConfig

SMALL = {"dim": 16, "max_len": 8, "n_interests": 3, "batches_per_epoch": 4, "min_history": 2}


def test_hard_negative_softmax_by_hand() -> None:
    """Query (1, 0); target item 0 = (1, 0) (score 1), negatives 1 = (0, 1) (score 0) and
    2 = (2, 0) (score 2). β = 1: weights e^{s}/mean = (1, e²)·2/(1 + e²)."""
    q = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
    target, negs = torch.tensor([0]), torch.tensor([1, 2])
    e = math.e
    neg_mass = 2 * (1 * 1 + e**2 * e**2) / (1 + e**2)
    want = -math.log(e / (e + neg_mass))
    got = losses.hard_negative_softmax(q, w, target, negs, beta=1.0)
    assert float(got) == pytest.approx(want, rel=1e-6)
    # β = 0: the plain sampled softmax, -ln(e / (e + 1 + e²))
    plain = -math.log(e / (e + 1 + e**2))
    assert float(losses.hard_negative_softmax(q, w, target, negs, beta=0.0)) == pytest.approx(plain)
    # an accidental hit (the target drawn as a negative) is removed, from the weights' mean too
    with_hit = losses.hard_negative_softmax(q, w, target, torch.tensor([1, 0, 2]), beta=1.0)
    assert float(with_hit) == pytest.approx(want, rel=1e-6)
    # the log-Q correction moves the logits, not the hardness: log_q = (0, ln 2, 0)
    log_q = torch.tensor([0.0, math.log(2.0), 0.0])
    corrected = 2 * (1 * 0.5 + e**2 * e**2) / (1 + e**2)
    got_q = losses.hard_negative_softmax(q, w, target, negs, log_q, beta=1.0)
    assert float(got_q) == pytest.approx(-math.log(e / (e + corrected)), rel=1e-6)


def test_beta_zero_is_the_sampled_softmax_and_beta_makes_it_harder() -> None:
    g = torch.Generator().manual_seed(0)
    q, w = torch.randn(6, 8, generator=g), torch.randn(30, 8, generator=g)
    target = torch.randint(0, 30, (6,), generator=g)
    negs = torch.randint(0, 30, (40,), generator=g)
    log_q = torch.randn(30, generator=g)
    torch.testing.assert_close(
        losses.hard_negative_softmax(q, w, target, negs, log_q, beta=0.0),
        losses.sampled_softmax(q, w, target, negs, log_q),
    )
    # every item as a negative and no correction: the full softmax
    torch.testing.assert_close(
        losses.hard_negative_softmax(q, w, target, torch.arange(30), beta=0.0),
        losses.full_softmax(q, w, target),
    )
    # weights grow with the score, so the negatives' mass (and the loss) grows with β
    vals = [float(losses.hard_negative_softmax(q, w, target, negs, beta=b)) for b in (0, 1, 5)]
    assert vals == sorted(vals) and vals[0] < vals[-1]


def test_hard_negative_softmax_without_any_negative_is_finite() -> None:
    q = torch.tensor([[1.0, 0.0]], requires_grad=True)
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = losses.hard_negative_softmax(q, w, torch.tensor([0]), torch.tensor([0, 0]), beta=2.0)
    assert float(out.detach()) == 0.0  # only the target is left
    out.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()


def test_routing_variance_by_hand() -> None:
    """Row 0: interest 0 spreads evenly over the two valid items (variance 0), interest 1 sits on
    one of them: Σ(a − ā)² = 0.5, / scale 2 = 0.25, squared 0.0625. The padding column's weight
    (0.9) is ignored. Row 1: three valid items, interest 0 on one: Σ(a − 1/3)² = 2/3."""
    routing = torch.tensor(
        [
            [[0.5, 0.5, 0.9], [1.0, 0.0, 0.9]],
            [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]],
        ]
    )
    valid = torch.tensor([[True, True, False], [True, True, True]])
    row0 = 0.25**2
    row1 = (2 / 3 / 2) ** 2
    got = losses.routing_variance(routing, valid, scale=2.0, reduction="none")
    torch.testing.assert_close(got, torch.tensor([row0, row1]))
    assert float(losses.routing_variance(routing, valid, 2.0)) == pytest.approx(row0 + row1)
    mean = losses.routing_variance(routing, valid, 2.0, reduction="mean")
    assert float(mean) == pytest.approx((row0 + row1) / 2)
    with pytest.raises(ValueError, match="reduction"):
        losses.routing_variance(routing, valid, 2.0, reduction="max")


def _batch(model: torch.nn.Module, data: TrainData) -> object:
    return next(iter(model.batches(data, 16, torch.Generator().manual_seed(3))))  # type: ignore[operator]


def test_remi_without_its_additions_is_comirec_dr() -> None:
    """β = 0, λ = 0 and ComiRec's routing: the same loss and interests as ComiRec-DR."""
    data = TrainData(sequence_log(n_users=40))
    torch.manual_seed(0)
    remi = build_model(
        "remi", {**SMALL, "beta": 0.0, "lambda_rr": 0.0, "routing_gradient": False}, data
    )
    torch.manual_seed(0)
    base = build_model("comirec-dr", SMALL, data)
    assert not base.load_state_dict(remi.state_dict(), strict=True).missing_keys
    batch = _batch(remi, data)
    a, b = remi.loss(batch), base.loss(batch)
    assert set(a) == set(b) == {"sampled_softmax"}
    torch.testing.assert_close(a["sampled_softmax"], b["sampled_softmax"])
    hist, lengths = SequenceSet.from_log(data.log).padded(np.arange(10), 8)
    remi.eval()
    base.eval()
    with torch.no_grad():
        assert torch.equal(remi.interests(hist, lengths), base.interests(hist, lengths))


def test_inference_is_comirec_drs_with_the_defaults_too() -> None:
    """The routing gradient changes training only: the forward values are the backbone's."""
    data = TrainData(sequence_log(n_users=40))
    torch.manual_seed(0)
    remi = build_model("remi", SMALL, data)
    base = build_model("comirec-dr", SMALL, data)
    base.load_state_dict(remi.state_dict(), strict=True)
    hist, lengths = SequenceSet.from_log(data.log).padded(np.arange(10), 8)
    with torch.no_grad():
        torch.testing.assert_close(remi.interests(hist, lengths), base.interests(hist, lengths))


@pytest.mark.parametrize("routing_gradient", [True, False])
def test_routing_regulariser_reaches_the_routing_only_with_its_gradient(
    routing_gradient: bool,
) -> None:
    data = TrainData(sequence_log(n_users=40))
    torch.manual_seed(0)
    model = build_model("remi", {**SMALL, "routing_gradient": routing_gradient}, data)
    out = model.loss(_batch(model, data))
    assert set(out) == {"sampled_softmax", "routing_reg"}
    assert float(out["routing_reg"].detach()) > 0
    if not routing_gradient:  # ComiRec's routing: the coupling carries no gradient
        assert not out["routing_reg"].requires_grad
        return
    out["routing_reg"].backward()
    for name, p in model.named_parameters():
        if name in ("item_emb.weight", "bilinear"):
            assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_weights_and_switches() -> None:
    data = TrainData(sequence_log(n_users=40))
    out = {}
    for lam in (100.0, 50.0, 0.0):
        torch.manual_seed(0)
        model = build_model("remi", {**SMALL, "lambda_rr": lam}, data)
        out[lam] = {k: float(v.detach()) for k, v in model.loss(_batch(model, data)).items()}
    assert out[50.0]["routing_reg"] == pytest.approx(0.5 * out[100.0]["routing_reg"], rel=1e-5)
    assert "routing_reg" not in out[0.0]
    # the batch sum is 16 times the batch mean (batch of 16)
    torch.manual_seed(0)
    model = build_model("remi", {**SMALL, "rr_reduction": "mean"}, data)
    mean = float(model.loss(_batch(model, data))["routing_reg"].detach())
    assert out[100.0]["routing_reg"] == pytest.approx(16 * mean, rel=1e-5)


def test_full_softmax_option() -> None:
    data = TrainData(sequence_log(n_users=40))
    torch.manual_seed(0)
    model = build_model("remi", {**SMALL, "loss": "full", "beta": 0.0, "lambda_rr": 0.0}, data)
    torch.manual_seed(0)
    base = build_model("comirec-dr", {**SMALL, "loss": "full"}, data)
    base.load_state_dict(model.state_dict())
    batch = _batch(model, data)
    torch.testing.assert_close(model.loss(batch)["softmax"], base.loss(batch)["softmax"])


def test_defaults() -> None:
    cfg = REMIConfig()
    assert (cfg.beta, cfg.lambda_rr, cfg.rr_reduction) == (1.0, 100.0, "sum")
    assert (cfg.n_interests, cfg.dim, cfg.routing_iterations) == (4, 64, 3)
    assert cfg.routing_gradient
