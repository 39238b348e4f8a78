"""Re4 (WWW 2022): the three backward-flow losses by hand, the ablation switches, gradients into
the backbone, inference equal to the backbone's, and the interest-similarity diagnostic."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from interest_contract import sequence_log
from polyrec import losses
from polyrec.data.sequences import SequenceSet
from polyrec.eval.retrieval import interest_cosine
from polyrec.models import TrainData, build_model
from polyrec.models.comirec import Extraction
from polyrec.models.re4 import BackwardFlows, Re4SAConfig, Reconstructor

SMALL = {"dim": 16, "max_len": 8, "n_interests": 3, "batches_per_epoch": 4, "min_history": 2}


def test_re_contrast_by_hand() -> None:
    """z1 = (1,0), z2 = (0,1); history x1 = (1,0), x2 = (0,1); one sampled item (-1,0); γ = 1/2
    puts x1 in P_1 and x2 in P_2; τ = 1."""
    z = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    x = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    n = torch.tensor([[[-1.0, 0.0]]])
    att = torch.tensor([[[0.8, 0.2], [0.3, 0.7]]])
    valid = torch.tensor([[True, True]])
    e = math.e
    # z1: positive x1 (1); negatives x2 (0), z2 (0), sampled (-1)
    l1 = -math.log(e / (e + 1 + 1 + 1 / e))
    # z2: positive x2 (1); negatives x1 (0), z1 (0), sampled (0)
    l2 = -math.log(e / (e + 1 + 1 + 1))
    got = losses.re_contrast(z, x, n, att > 0.5, valid, temperature=1.0)
    assert float(got) == pytest.approx((l1 + l2) / 2, rel=1e-6)
    # temperature divides every similarity; vectors are normalised (scale-free)
    got2 = losses.re_contrast(3 * z, 5 * x, n, att > 0.5, valid, temperature=0.5)
    e2 = math.exp(2.0)
    l1b = -math.log(e2 / (e2 + 1 + 1 + 1 / e2))
    l2b = -math.log(e2 / (e2 + 3))
    assert float(got2) == pytest.approx((l1b + l2b) / 2, rel=1e-6)


def test_re_contrast_ignores_padding_and_counts_every_positive() -> None:
    z = torch.tensor([[[1.0, 0.0]]])
    # position 0 is padding (its vector must not matter), positions 1 and 2 are positives
    x = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]])
    n = torch.zeros(1, 0, 2)
    valid = torch.tensor([[False, True, True]])
    pos = torch.tensor([[[True, True, True]]])
    s1, s2 = 1.0, 1 / math.sqrt(2)
    # no negatives but each other... the negatives are the non-positive history items: none
    # here, no other interest, no sampled item → each positive's share is 1 → loss 0
    assert float(losses.re_contrast(z, x, n, pos, valid, 1.0)) == pytest.approx(0.0, abs=1e-6)
    pos2 = torch.tensor([[[False, True, False]]])  # x2 becomes a negative
    want = -math.log(math.exp(s1) / (math.exp(s1) + math.exp(s2)))
    assert float(losses.re_contrast(z, x, n, pos2, valid, 1.0)) == pytest.approx(want, rel=1e-6)


def test_re_attend_by_hand() -> None:
    """ã = z·x = (2, 0) over the two valid positions; position 0 is padding."""
    z = torch.tensor([[[1.0, 0.0]]])
    x = torch.tensor([[[9.0, 9.0], [2.0, 0.0], [0.0, 1.0]]])
    att = torch.tensor([[[0.0, 0.25, 0.75]]])
    valid = torch.tensor([[False, True, True]])
    p1 = math.exp(2) / (math.exp(2) + 1)
    want = -(p1 * math.log(0.25) + (1 - p1) * math.log(0.75))
    got = losses.re_attend(att, z, x, valid)
    assert float(got) == pytest.approx(want, rel=1e-6)
    # the attention equal to softmax(ã) minimises it: the loss is then the entropy
    best = torch.tensor([[[0.0, p1, 1 - p1]]])
    entropy = -(p1 * math.log(p1) + (1 - p1) * math.log(1 - p1))
    assert float(losses.re_attend(best, z, x, valid)) == pytest.approx(entropy, rel=1e-6)


def test_re_attend_detach_target_stops_gradient_into_similarity() -> None:
    z = torch.tensor([[[1.0, 0.5]]], requires_grad=True)
    x = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    att = torch.tensor([[[0.3, 0.7]]], requires_grad=True)
    valid = torch.ones(1, 2, dtype=torch.bool)
    losses.re_attend(att, z, x, valid, detach_target=True).backward()
    assert z.grad is None and att.grad is not None
    losses.re_attend(att, z, x, valid).backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_re_construct_by_hand() -> None:
    rebuilt = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])  # [B=1, K=1, T=2, d=2]
    x = torch.tensor([[[0.0, 1.0], [3.0, 4.0]]])
    both = torch.tensor([[[True, True]]])
    assert float(losses.re_construct(rebuilt, x, both)) == pytest.approx((1 + 25) / 2)
    first = torch.tensor([[[True, False]]])
    assert float(losses.re_construct(rebuilt, x, first)) == pytest.approx(1.0)
    none = torch.zeros(1, 1, 2, dtype=torch.bool)
    assert float(losses.re_construct(rebuilt, x, none)) == 0.0


def test_reconstructor_matches_eq_9_to_11() -> None:
    torch.manual_seed(0)
    dec = Reconstructor(dim=4, hidden=3, max_len=5)
    z = torch.randn(2, 2, 4)
    t = 4  # the latest 4 of 5 positions
    out = dec(z, t)
    assert out.shape == (2, 2, t, 4)
    b, k = 1, 1
    c = dec.upsample(z[b, k]).view(5, 3)  # Eq. 9: N_x units of size d_b
    for j in range(t):
        w = dec.queries[5 - t + j]
        scores = torch.stack([w @ torch.tanh(dec.w3(c[i])) for i in range(5)])
        beta = torch.softmax(scores, dim=0)  # Eq. 10 over the units
        want = sum(beta[i] * dec.w5(c[i]) for i in range(5))  # Eq. 11
        assert torch.allclose(out[b, k, j], want, atol=1e-5)


def test_positives_threshold_adaptive_and_fixed() -> None:
    pad = torch.tensor([[True, False, False, False], [False, False, False, False]])
    att = torch.tensor(
        [[[0.0, 0.5, 0.3, 0.2]], [[0.1, 0.2, 0.3, 0.4]]]
    )  # user 0: N_x = 3 → γ = 1/3; user 1: N_x = 4 → γ = 1/4
    ext = Extraction(torch.zeros(2, 1, 2), att, torch.zeros(2, 4, 2), pad)
    flows = BackwardFlows(Re4SAConfig(), dim=2, max_len=4)
    pos = flows.positives(ext)
    assert pos[0, 0].tolist() == [False, True, False, False]
    assert pos[1, 0].tolist() == [False, False, True, True]
    fixed = BackwardFlows(Re4SAConfig(gamma_c=0.15), dim=2, max_len=4).positives(ext)
    assert fixed[0, 0].tolist() == [False, True, True, True]
    assert fixed[1, 0].tolist() == [False, True, True, True]


def _batch(model: torch.nn.Module, data: TrainData) -> object:
    gen = torch.Generator().manual_seed(3)
    return next(iter(model.batches(data, 16, gen)))  # type: ignore[operator]


@pytest.mark.parametrize("name", ["re4-sa", "re4-dr"])
@pytest.mark.parametrize("off", ["re_contrast", "re_attend", "re_construct"])
def test_switching_a_flow_off_removes_exactly_its_term(name: str, off: str) -> None:
    data = TrainData(sequence_log(n_users=40))
    terms = {}
    for flag in (True, False):
        torch.manual_seed(0)
        model = build_model(name, {**SMALL, off: flag}, data)
        terms[flag] = {k: float(v.detach()) for k, v in model.loss(_batch(model, data)).items()}
    assert set(terms[True]) - set(terms[False]) == {off}
    assert terms[True][off] != 0.0
    for key, value in terms[False].items():
        assert terms[True][key] == pytest.approx(value, rel=1e-6)


@pytest.mark.parametrize("name", ["re4-sa", "re4-dr"])
def test_loss_weights_scale_their_terms(name: str) -> None:
    data = TrainData(sequence_log(n_users=40))
    out = {}
    for w in (1.0, 0.5):
        torch.manual_seed(0)
        params = {**SMALL, "lambda_cl": w, "lambda_att": w, "lambda_ct": w}
        model = build_model(name, params, data)
        out[w] = {k: float(v.detach()) for k, v in model.loss(_batch(model, data)).items()}
    for key in ("re_contrast", "re_attend", "re_construct"):
        assert out[0.5][key] == pytest.approx(0.5 * out[1.0][key], rel=1e-5)


@pytest.mark.parametrize(
    ("name", "backbone_params"), [("re4-sa", ("w1.weight", "w2.weight")), ("re4-dr", ("bilinear",))]
)
@pytest.mark.parametrize("flow", ["re_contrast", "re_attend", "re_construct"])
def test_gradients_reach_the_backbone_through_each_flow(
    name: str, backbone_params: tuple[str, ...], flow: str
) -> None:
    data = TrainData(sequence_log(n_users=40))
    torch.manual_seed(0)
    model = build_model(name, SMALL, data)
    term = model.loss(_batch(model, data))[flow]
    term.backward()
    grads = dict(model.named_parameters())
    for p in ("item_emb.weight", *backbone_params):
        g = grads[p].grad
        assert g is not None and float(g.abs().sum()) > 0, f"{flow}: no gradient into {p}"


@pytest.mark.parametrize(("name", "backbone"), [("re4-sa", "comirec-sa"), ("re4-dr", "comirec-dr")])
def test_inference_is_the_backbones(name: str, backbone: str) -> None:
    """Eq. 17: the backward flows are training-only; the same weights give the same interests."""
    data = TrainData(sequence_log(n_users=40))
    torch.manual_seed(0)
    re4 = build_model(name, SMALL, data)
    base = build_model(backbone, SMALL, data)
    missing = base.load_state_dict(
        {k: v for k, v in re4.state_dict().items() if not k.startswith("flows.")}, strict=True
    )
    assert not missing.missing_keys
    hist, lengths = SequenceSet.from_log(data.log).padded(np.arange(10), 8)
    re4.eval()
    base.eval()
    with torch.no_grad():
        assert torch.equal(re4.interests(hist, lengths), base.interests(hist, lengths))


def test_paper_defaults() -> None:
    cfg = Re4SAConfig()
    assert (cfg.n_interests, cfg.temperature, cfg.reconstruct_dim, cfg.dim) == (8, 0.02, 32, 64)
    assert cfg.gamma_c is None  # adaptive 1/N_x
    assert cfg.dim * cfg.att_factor == 256  # d_h = 256 (§4.1)


def test_interest_cosine_by_hand() -> None:
    v = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], [[1.0, 0.0], [3.0, 0.0], [-1.0, 0.0]]])
    got = interest_cosine(v)
    s = 1 / math.sqrt(2)
    assert got[0].item() == pytest.approx((0 + s + s) / 3, rel=1e-6)
    assert got[1].item() == pytest.approx((1 - 1 - 1) / 3, rel=1e-6)
    assert torch.isnan(interest_cosine(torch.ones(2, 1, 3))).all()
