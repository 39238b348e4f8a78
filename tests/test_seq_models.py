"""The sequential / multi-interest models: shapes, routing, and a short run that beats POP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from interest_contract import N_ITEMS, sequence_log
from model_contract import ModelSpec, fit
from polyrec.data.sequences import SequenceSet
from polyrec.data.splits import Split, user_split
from polyrec.eval import metrics as M
from polyrec.eval.evaluator import evaluate
from polyrec.models import REGISTRY, InterestModel, TrainData, build_model
from polyrec.models.comirec import squash

SEQ_MODELS = sorted(n for n, cls in REGISTRY.items() if cls.kind == "interest")
MULTI = {
    "comirec-sa": 4,
    "comirec-dr": 4,
    "mind": 4,
    "re4-sa": 8,
    "re4-dr": 8,
    "remi": 4,
    "hpcl4sr": 4,
}
MAX_LEN = {
    "hpcl4sr": 30,
    "caser": 5,
    "hgn": 5,
    "bert4rec": 50,
    "tisasrec": 50,
    "magnn": 50,
}  # HPCL4SR §5.1, Caser/HGN L = 5; ComiRec §4.1.4
DIM = {
    "caser": 50,
    "hgn": 50,
    "tisasrec": 50,
    "magnn": 50,
}  # Caser §4.2, HGN §5.1.4, TiSASRec §5.1.4; the
# others ComiRec §4.1.4


@pytest.fixture(scope="module")
def split() -> Split:
    return user_split(sequence_log(seed=5, n_users=400), seed=0)


def test_all_sequential_models_are_registered() -> None:
    six = {"youtube-dnn", "gru4rec", "sasrec", "mind", "comirec-sa", "comirec-dr"}
    assert set(SEQ_MODELS) == six | {
        "re4-sa",
        "re4-dr",
        "remi",
        "hpcl4sr",
        "caser",
        "hgn",
        "bert4rec",
        "tisasrec",
        "magnn",
    }


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_default_shapes(name: str) -> None:
    """Paper defaults: d = 64 (50 for Caser and HGN), K = 4 for the multi-interest models, K = 1
    otherwise; history length 20 (30 for HPCL4SR, 5 for Caser and HGN)."""
    data = TrainData(sequence_log(n_users=20))
    torch.manual_seed(0)
    model = build_model(name, {}, data)
    assert isinstance(model, InterestModel)
    d = DIM.get(name, 64)
    assert model.config.dim == d  # type: ignore[attr-defined]
    assert model.config.max_len == MAX_LEN.get(name, 20)  # type: ignore[attr-defined]
    seqs = SequenceSet.from_log(data.log)
    hist, lengths = seqs.padded(np.arange(5), 20, np.arange(1, 6))
    times = seqs.padded_times(np.arange(5), 20, np.arange(1, 6))
    model.eval()
    with torch.no_grad():
        v = model.interests_at(hist, lengths, times)
    assert v.shape == (5, MULTI.get(name, 1), d)
    assert model.item_embeddings().shape == (N_ITEMS, d)


@pytest.mark.parametrize("name", ["comirec-dr", "mind", "remi", "hpcl4sr"])
def test_routing_gives_k_distinct_capsules(name: str) -> None:
    data = TrainData(sequence_log(n_users=40))
    torch.manual_seed(0)
    model = build_model(name, {"dim": 16, "batches_per_epoch": 5}, data)
    fit(model, ModelSpec(name, epochs=2, lr=0.01), data)
    hist, lengths = SequenceSet.from_log(data.log).padded(np.arange(20), 20)
    with torch.no_grad():
        v = model.interests(hist, lengths)
    assert v.shape[1] == 4
    for b in range(len(v)):
        # pairwise distances between the K capsules are clearly non-zero
        dist = torch.cdist(v[b], v[b])
        off = dist[~torch.eye(4, dtype=torch.bool)]
        assert float(off.min()) > 1e-3 * float(v[b].norm(dim=1).max())


def test_squash_norm() -> None:
    z = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    out = squash(z)
    assert float(out[0].norm()) == pytest.approx(25 / 26)
    assert out[1].tolist() == [0.0, 0.0]


def pop_recall(split: Split, k: int) -> float:
    """POP: the k most frequent training items for everyone (history items not excluded)."""
    counts = np.bincount(split.train.item, minlength=split.train.n_items)
    top = torch.from_numpy(np.argsort(-counts, kind="stable")[:k])
    users = split.valid.users
    hits = torch.stack(
        [
            torch.from_numpy(np.isin(top.numpy(), split.valid.item[split.valid.user == u]))
            for u in users
        ]
    )
    n_pos = torch.tensor([int((split.valid.user == u).sum()) for u in users])
    return float(M.recall(hits, n_pos, k).mean())


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_short_run_beats_pop(name: str, split: Split) -> None:
    data = TrainData(split.train)
    torch.manual_seed(0)
    params = {"dim": 32, "max_len": 10, "batches_per_epoch": 20, "min_history": 2}
    model = build_model(name, params, data)
    fit(model, ModelSpec(name, params, epochs=6, lr=0.02, batch_size=128), data)
    res = evaluate(model, split, "valid", ks=(20,))
    ours = res["metrics"]["retrieval"]["recall@20"]
    pop = pop_recall(split, 20)
    assert ours > pop + 0.05, f"{name}: recall@20 {ours:.3f} vs POP {pop:.3f}"


def test_sampled_softmax_by_hand() -> None:
    from polyrec import losses

    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, generator=g)
    w = torch.randn(5, 4, generator=g)
    target = torch.tensor([0, 2, 4])
    # every item sampled once, no correction: equals the full softmax, since the target's own
    # draw is an accidental hit and removed
    full = losses.full_softmax(q, w, target)
    sampled = losses.sampled_softmax(q, w, target, torch.arange(5))
    torch.testing.assert_close(sampled, full)
    # a uniform log_q shifts every logit equally: no change
    shifted = losses.sampled_softmax(q, w, target, torch.arange(5), torch.full((5,), -2.0))
    torch.testing.assert_close(shifted, full)
    # without removing accidental hits the target also counts as a negative
    kept = losses.sampled_softmax(q, w, target, torch.arange(5), remove_accidental_hits=False)
    assert float(kept) > float(full)


@pytest.mark.parametrize(
    "settings", [{"loss": "full"}, {"sampling": "all-cuts"}, {"unique_negatives": True}]
)
def test_full_softmax_and_all_cuts_train(settings: dict[str, object]) -> None:
    data = TrainData(sequence_log(n_users=60))
    torch.manual_seed(0)
    params = {"dim": 16, "max_len": 8, "batches_per_epoch": 10, **settings}
    model = build_model("comirec-sa", params, data)
    assert isinstance(model, InterestModel)
    n = model.n_batches(data, 64)  # type: ignore[attr-defined]
    batches = list(model.batches(data, 64, torch.Generator().manual_seed(0)))
    assert len(batches) == n
    if settings.get("sampling") == "all-cuts":
        assert sum(len(b.target) for b in batches) == 60 * 15
    if settings.get("loss") == "full":
        assert all(b.negatives is None for b in batches)
    if settings.get("unique_negatives"):
        assert all(b.tries is not None for b in batches)
        assert all(len(set(b.negatives.tolist())) == len(b.negatives) for b in batches)
    losses_ = fit(model, ModelSpec("comirec-sa", params, epochs=3, lr=0.02), data)
    assert losses_[-1] < losses_[0]


def test_fast_dropout_rate_scale_and_eval() -> None:
    from polyrec.models._layers import dropout

    torch.manual_seed(0)
    x = torch.ones(200_000)
    y = dropout(x, 0.3, training=True)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    assert torch.allclose(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert dropout(x, 0.3, training=False) is x
    assert torch.equal(dropout(x, 1.0, training=True), torch.zeros_like(x))


def test_causal_mask_by_hand() -> None:
    from polyrec.models._layers import causal_mask

    pad = torch.tensor([[True, False, False]])  # one left-padding position
    got = causal_mask(pad)[0, 0]
    want = torch.tensor(
        [
            [True, False, False],  # the padding query sees only itself
            [False, True, False],  # the first real item sees itself, not the padding
            [False, True, True],
        ]
    )
    assert torch.equal(got, want)


def test_sasrec_is_causal() -> None:
    """Changing the latest history item changes the output at the latest position only through
    that position: earlier positions' outputs do not move (no peeking at later items)."""
    from polyrec.models._layers import SelfAttentionBlock, causal_mask

    torch.manual_seed(0)
    block = SelfAttentionBlock(8, 2, 8, 0.0).eval()
    x = torch.randn(1, 5, 8)
    pad = torch.zeros(1, 5, dtype=torch.bool)
    a = block(x, causal_mask(pad))
    x2 = x.clone()
    x2[0, -1] += 1.0
    b = block(x2, causal_mask(pad))
    assert torch.allclose(a[0, :-1], b[0, :-1], atol=1e-6)
    assert not torch.allclose(a[0, -1], b[0, -1])


def test_mind_label_aware_attention_and_hard_limit() -> None:
    """p = 1 is softmax attention over the interests; hard_readout picks the nearest one."""
    data = TrainData(sequence_log(n_users=30))
    soft = build_model("mind", {"dim": 4, "max_len": 6, "attention_pow": 1.0}, data)
    hard = build_model("mind", {"dim": 4, "max_len": 6, "hard_readout": True}, data)
    interests = torch.tensor([[[1.0, 0, 0, 0], [0, 2.0, 0, 0]]])
    target = torch.tensor([[1.0, 1.0, 0, 0]])
    w = torch.softmax(torch.tensor([1.0, 2.0]), dim=0)
    want = w[0] * interests[0, 0] + w[1] * interests[0, 1]
    torch.testing.assert_close(soft.read_out(interests, target)[0], want)  # type: ignore[operator]
    torch.testing.assert_close(hard.read_out(interests, target)[0], interests[0, 1])  # type: ignore[operator]
