"""Re4's training loss against a frozen transcription of its original implementation.

The reference below is the straightforward version of Eq. 3-12 and 16 that produced the committed
results in ``benchmarks/results/re4*.md`` (dense decoder over every (interest, position) pair,
boolean-mask selections, one projection per use). The model's faster implementation must give
the same loss terms and the same gradients, term by term, up to float rounding (checked in
float64, so that any change of the mathematics shows)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor

from interest_contract import sequence_log
from polyrec import losses
from polyrec.data.sequences import SeqBatch
from polyrec.models import TrainData, build_model
from polyrec.models.comirec import Extraction
from polyrec.models.re4 import Reconstructor

TINY = {"dim": 16, "max_len": 8, "n_interests": 3, "batches_per_epoch": 4, "min_history": 2}
WIDE = {"dim": 24, "max_len": 12, "n_interests": 4, "batches_per_epoch": 4, "min_history": 2}


# ----------------------------------------------------------------------- frozen reference
def _ref_positives(ext: Extraction, gamma_c: float | None) -> Tensor:
    valid = ~ext.pad
    if gamma_c is None:
        n = valid.sum(dim=1).clamp_min(1).to(ext.attention.dtype)
        threshold = (1.0 / n).view(-1, 1, 1)
    else:
        threshold = torch.full_like(ext.attention[:, :1, :1], gamma_c)
    return (ext.attention > threshold) & valid.unsqueeze(1)


def _ref_re_contrast(
    interests: Tensor,
    items: Tensor,
    sampled: Tensor,
    positive: Tensor,
    valid: Tensor,
    temperature: float,
) -> Tensor:
    t, k = items.shape[1], interests.shape[1]
    cands = torch.cat([items, interests, sampled], dim=1)
    norms = torch.linalg.vector_norm(cands, dim=-1).clamp_min(1e-12)
    scale = norms[:, t : t + k].unsqueeze(2) * norms.unsqueeze(1) * temperature
    sim = torch.bmm(interests, cands.transpose(1, 2)) / scale
    pos = positive & valid.unsqueeze(1)
    not_neg = torch.cat(
        [
            pos | ~valid.unsqueeze(1),
            torch.eye(k, dtype=torch.bool).expand(len(sim), k, k),
            torch.zeros_like(sim[:, :, t + k :], dtype=torch.bool),
        ],
        dim=2,
    )
    neg_lse = torch.logsumexp(sim.masked_fill(not_neg, float("-inf")), dim=2, keepdim=True)
    s_items = sim[:, :, :t]
    per = torch.logaddexp(s_items, neg_lse) - s_items
    return per[pos].sum() / pos.sum().clamp_min(1)


def _ref_re_attend(
    attention: Tensor, interests: Tensor, items: Tensor, valid: Tensor, detach_target: bool
) -> Tensor:
    ok = valid.unsqueeze(1)
    sim = torch.einsum("bkd,btd->bkt", interests, items).masked_fill(~ok, float("-inf"))
    target = torch.softmax(sim, dim=2)
    if detach_target:
        target = target.detach()
    log_a = torch.log(attention.clamp_min(1e-12)).masked_fill(~ok, 0.0)
    return -(target * log_a).sum(dim=2).mean()


def _ref_decoder(decoder: Any, interests: Tensor, t: int) -> Tensor:
    """Eq. 9-11 for every (interest, position): ``x̂ [B, K, T, d]``."""
    b, k, _ = interests.shape
    n, hidden = decoder.max_len, decoder.hidden
    c = decoder.upsample(interests).view(b, k, n, hidden)  # Eq. 9
    scores = torch.tanh(decoder.w3(c)) @ decoder.queries[n - t :].T
    beta = torch.softmax(scores, dim=2)  # Eq. 10
    return decoder.w5(beta.transpose(2, 3) @ c)  # Eq. 11


def _ref_re_construct(reconstructed: Tensor, items: Tensor, positive: Tensor) -> Tensor:
    reconstructed = reconstructed[positive]
    target = items.unsqueeze(1).expand(-1, positive.shape[1], -1, -1)[positive]
    return (reconstructed - target).pow(2).sum(-1).sum() / positive.sum().clamp_min(1)


def _ref_sampled(items: Tensor, batch: SeqBatch, n: int) -> Tensor:
    b = len(batch.target)
    if batch.negatives is not None and batch.negatives.numel() >= b * n:
        ids = batch.negatives[: b * (batch.negatives.numel() // b)].view(b, -1)[:, :n]
    else:
        ids = torch.randint(0, items.shape[0], (b, n), device=items.device)
    return items[ids]


def reference_loss(model: Any, batch: SeqBatch) -> dict[str, Tensor]:
    cfg = model.flows.config
    ext = model.extract(batch.history, batch.lengths)
    sampled = _ref_sampled(model.item_embeddings(), batch, cfg.contrast_negatives)
    out = dict(model.recommendation_loss(ext.interests, batch))
    valid = ~ext.pad
    positive = _ref_positives(ext, cfg.gamma_c)
    if cfg.re_contrast:
        out["re_contrast"] = cfg.lambda_cl * _ref_re_contrast(
            ext.interests, ext.items, sampled, positive, valid, cfg.temperature
        )
    if cfg.re_attend:
        out["re_attend"] = cfg.lambda_att * _ref_re_attend(
            ext.attention, ext.interests, ext.items, valid, cfg.attend_detach_target
        )
    if cfg.re_construct:
        target = ext.items.detach() if cfg.construct_detach_items else ext.items
        rebuilt = _ref_decoder(model.flows.decoder, ext.interests, ext.items.shape[1])
        out["re_construct"] = cfg.lambda_ct * _ref_re_construct(rebuilt, target, positive)
    return out


# ----------------------------------------------------------------------- comparison
def _terms_and_grads(
    model: torch.nn.Module, terms: dict[str, Tensor]
) -> dict[str, tuple[float, list[Tensor | None]]]:
    params = list(model.parameters())
    out = {}
    for name, term in terms.items():
        if not term.requires_grad:  # e.g. Re-attend on DR with its target detached
            out[name] = (float(term), [None] * len(params))
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        out[name] = (float(term.detach()), [None if g is None else g.detach() for g in grads])
    return out


VARIANTS = {
    "defaults": {},
    "fixed-gamma-detached": {
        "gamma_c": 0.2,
        "attend_detach_target": True,
        "construct_detach_items": True,
        "temperature": 0.5,
    },
    "full-softmax-uniform-negatives": {"loss": "full", "contrast_negatives": 5},
    "more-negatives-than-drawn": {"contrast_negatives": 25, "negatives_per_row": 3},
    "no-contrast": {"re_contrast": False},
    "only-construct": {"re_contrast": False, "re_attend": False},
    "only-contrast": {"re_attend": False, "re_construct": False},
    "only-attend": {"re_contrast": False, "re_construct": False},
    "no-sampled-negatives": {"contrast_negatives": 0},
    "one-interest": {"n_interests": 1},
    "no-positives": {"gamma_c": 0.99},
}


@pytest.mark.parametrize("name", ["re4-sa", "re4-dr"])
@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", [TINY, WIDE], ids=["tiny", "wide"])
def test_loss_and_gradients_equal_the_reference(
    name: str, variant: str, shape: dict[str, Any]
) -> None:
    data = TrainData(sequence_log(n_users=60))
    torch.manual_seed(0)
    model = build_model(name, {**shape, **VARIANTS[variant]}, data).double()
    # random (not freshly initialised) weights everywhere, so that no term is degenerate
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    gen = torch.Generator().manual_seed(7)
    batches = model.batches(data, 24, gen)  # type: ignore[operator]
    for width in (None, 5):
        batch = next(batches)
        if width is not None:  # histories narrower than max_len: the latest positions' queries
            batch = SeqBatch(
                batch.history[:, -width:],
                batch.lengths.clamp(max=width),
                batch.target,
                batch.negatives,
                batch.user,
                batch.tries,
            )
        torch.manual_seed(11)
        got = _terms_and_grads(model, model.loss(batch))
        torch.manual_seed(11)
        want = _terms_and_grads(model, reference_loss(model, batch))
        assert set(got) == set(want)
        for term, (value, grads) in want.items():
            assert got[term][0] == pytest.approx(value, rel=1e-10, abs=1e-12), term
            for (pname, p), g, w in zip(model.named_parameters(), got[term][1], grads, strict=True):
                if g is None and w is None:
                    continue
                # no gradient reads as zeros (a parameter the term does not reach, or one whose
                # gradient vanishes mathematically and is rounding noise on one side)
                g = torch.zeros_like(p) if g is None else g
                w = torch.zeros_like(p) if w is None else w
                torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12, msg=f"{term}: {pname}")


def test_reconstructor_gradients_at_selected_pairs() -> None:
    """The decoder's hand-written backward against finite differences (float64), on a selection
    with rows of different sizes, an empty row and histories narrower than max_len."""
    torch.manual_seed(0)
    dec = Reconstructor(dim=5, hidden=3, max_len=6).double()
    z = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, 0, [1, 3]] = True
    mask[0, 2, 0] = True
    mask[1, 1, [0, 1, 2, 3]] = True
    where = mask.nonzero(as_tuple=True)
    params = [z, *dec.parameters()]

    def run(*inputs: Tensor) -> Tensor:
        return torch.func.functional_call(
            dec,
            dict(zip([n for n, _ in dec.named_parameters()], inputs[1:], strict=True)),
            (inputs[0], 4, where),
        )

    assert torch.autograd.gradcheck(run, tuple(params))
    # the selected outputs are the dense decoder's at those pairs
    torch.testing.assert_close(dec(z, 4, where), dec(z, 4)[where])


def test_row_norms_gradient() -> None:
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    x[1, 2] = 0.0  # a zero vector (padding): gradient 0, as vector_norm's
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    w = torch.randn(3, 4, dtype=torch.float64)
    (losses.row_norms(a) * w).sum().backward()
    (torch.linalg.vector_norm(b, dim=-1) * w).sum().backward()
    assert a.grad is not None and b.grad is not None
    torch.testing.assert_close(a.grad, b.grad)
    assert not a.grad[1, 2].any()
