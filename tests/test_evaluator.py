"""The evaluator and its protocols on hand-made data with fixed-score models."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor

from polyrec.data.log import InteractionLog
from polyrec.data.splits import Split, leave_one_out, random_ratio, user_split
from polyrec.data.views import DataSchema, TrainData
from polyrec.eval import evaluate, metric_value
from polyrec.eval.protocols import PairIndex, mask_keys, masked_topk, pair_keys
from polyrec.models.base import InterestModel, ModelConfig, Scorer
from stubs import NothingToTrain

L3 = 1 / math.log2(3)  # NDCG of a single positive at position 1
L5 = 1 / math.log2(5)  # position 3
L7 = 1 / math.log2(7)  # position 5


class FixedScorer(NothingToTrain, Scorer):
    """Scores from a fixed ``[n_users, n_items]`` matrix."""

    name = "fixed"
    paper = ""
    Config = ModelConfig

    def __init__(self, scores: Any, data: TrainData) -> None:
        super().__init__(ModelConfig())
        self._scores = torch.as_tensor(np.asarray(scores), dtype=torch.float32)
        self.prepared = 0
        self.setup(data)

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        self.register_buffer("table", self._scores.clone())

    def prepare_scoring(self) -> None:
        assert not torch.is_grad_enabled()
        assert not self.training
        self.prepared += 1

    def scores(self, users: Tensor) -> Tensor:
        return self.table[users]


class ConstantScorer(FixedScorer):
    """Every item gets the same score; returns an expanded *view* of one stored row."""

    def __init__(self, data: TrainData) -> None:
        super().__init__(np.zeros((1, data.n_items)), data)

    def scores(self, users: Tensor) -> Tensor:
        return self.table.expand(len(users), self.n_items)


# --------------------------------------------------------------------------- the tiny dataset
# (user, item, behavior, time); target = buy. leave_one_out gives:
#   user 0: train buy {0}, views {3, 2}; valid 1; test 2 (also viewed in train!)
#   user 1: train buy {4, 5}, views {8, 9}; valid 6; test 7
#   user 2: train buy {10}, view {0}; no valid (one buy left); test 11
#   user 3: train buy {3}, view {1}; not evaluated (a single buy)
ROWS = [
    (0, 0, "buy", 1), (0, 1, "buy", 2), (0, 2, "buy", 3), (0, 3, "view", 0), (0, 2, "view", 0.5),
    (1, 4, "buy", 1), (1, 5, "buy", 2), (1, 6, "buy", 3), (1, 7, "buy", 4),
    (1, 8, "view", 0), (1, 9, "view", 0),
    (2, 10, "buy", 1), (2, 11, "buy", 2), (2, 0, "view", 0),
    (3, 3, "buy", 1), (3, 1, "view", 0),
]  # fmt: skip

# scores[user][item]
SCORES = np.array(
    [
        [12, 10, 9, 11, 8, 7, 6, 5, 4, 3, 2, 1],  # user 0
        [1, 2, 3, 4, 12, 11, 5, 10, 9, 8, 7, 6],  # user 1
        [12, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 10],  # user 2
        [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],  # user 3
    ],
    dtype=np.float32,
)
KS = (1, 3, 6)


def tiny_log() -> InteractionLog:
    u, i, b, t = zip(*ROWS, strict=True)
    frame = {"user": list(u), "item": list(i), "behavior": list(b), "ts": list(t)}
    return InteractionLog.from_frame(frame, timestamp="ts", target="buy", name="tiny")


@pytest.fixture
def tiny() -> Split:
    split = leave_one_out(tiny_log(), n_negatives=5, seed=3)
    assert split.valid.user.tolist() == [0, 1] and split.valid.item.tolist() == [1, 6]
    assert split.test.user.tolist() == [0, 1, 2] and split.test.item.tolist() == [2, 7, 11]
    return split


def fixed(split: Split, scores: Any = SCORES) -> FixedScorer:
    return FixedScorer(scores, TrainData(split.train))


def full(split: Split, model: Scorer, part: str, mask: str = "target", **kw: Any) -> dict:
    res = evaluate(model, split, part, protocols=("full",), ks=KS, mask=mask, **kw)
    return res["metrics"]["full"]


def check(got: dict, expected: dict) -> None:
    for key, val in expected.items():
        assert got[key] == pytest.approx(val, abs=1e-9), key


# --------------------------------------------------------------------------- full ranking by hand
def test_full_valid_target_mask(tiny: Split) -> None:
    # user 0: mask {0}; order 3(11) 1(10) 2(9) … → positive 1 at position 1
    # user 1: mask {4, 5}; order 7(10) 8 9 10 11 6(5) → positive 6 at position 5
    #         (the *test* item 7 is not masked at validation time)
    got = full(tiny, fixed(tiny), "valid")
    check(got, {
        "hr@1": 0, "hr@3": (1 + 0) / 2, "hr@6": 1,
        "recall@3": 0.5, "recall@6": 1,
        "ndcg@1": 0, "ndcg@3": (L3 + 0) / 2, "ndcg@6": (L3 + L7) / 2,
        "mrr@3": (1 / 2 + 0) / 2, "mrr@6": (1 / 2 + 1 / 6) / 2,
    })  # fmt: skip


def test_full_valid_all_mask(tiny: Split) -> None:
    # user 0: mask {0, 3, 2} (views too) → positive 1 first
    # user 1: mask {4, 5, 8, 9} → order 7 10 11 6 → position 3
    got = full(tiny, fixed(tiny), "valid", mask="all")
    check(got, {
        "hr@1": 0.5, "hr@3": 0.5, "hr@6": 1,
        "ndcg@6": (1 + L5) / 2, "mrr@6": (1 + 1 / 4) / 2,
    })  # fmt: skip


def test_full_test_masks_validation_items(tiny: Split) -> None:
    # user 0: mask {0} + valid {1} → order 3(11) 2(9) → test item 2 at position 1
    #         (without masking item 1 (10) it would be at position 2)
    # user 1: mask {4, 5} + valid {6} → 7 first; user 2: mask {10} → order 0(12) 11 → position 1
    got = full(tiny, fixed(tiny), "test")
    check(got, {
        "hr@1": 1 / 3, "hr@3": 1,
        "ndcg@3": (L3 + 1 + L3) / 3, "mrr@3": (0.5 + 1 + 0.5) / 3,
    })  # fmt: skip
    keys = mask_keys(tiny, "test", "target")
    n = tiny.train.n_items
    assert 0 * n + 1 in keys and 1 * n + 6 in keys  # validation pairs
    assert 0 * n + 1 not in mask_keys(tiny, "valid", "target")


def test_positives_never_masked_with_mask_all(tiny: Split) -> None:
    # user 0's test item 2 is also a training *view*: mask="all" must still rank it.
    # user 0: mask {0, 3, 1}, 2 kept → first; user 1: 7 first; user 2: mask {10, 0} → 11 first
    n = tiny.train.n_items
    keys = mask_keys(tiny, "test", "all")
    assert 0 * n + 2 not in keys and 0 * n + 3 in keys
    got = full(tiny, fixed(tiny), "test", mask="all")
    check(got, {"hr@1": 1, "ndcg@1": 1, "mrr@6": 1, "recall@1": 1})


def test_masked_items_never_in_topk(tiny: Split) -> None:
    # a scorer that prefers exactly the masked items
    for part, mode in (("valid", "target"), ("valid", "all"), ("test", "target"), ("test", "all")):
        keys = mask_keys(tiny, part, mode)
        n_users, n_items = tiny.train.n_users, tiny.train.n_items
        scores = np.zeros((n_users, n_items), np.float32)
        scores.reshape(-1)[keys] = 100.0
        users = torch.arange(n_users)
        masked = PairIndex(keys, n_users, n_items)
        top = masked_topk(torch.as_tensor(scores).clone(), users, masked, 6)
        top_keys = (users[:, None] * n_items + top).reshape(-1).numpy()
        assert not np.isin(top_keys, keys).any()
        # through evaluate: the high scores of masked items change nothing, so the metrics
        # equal those of an all-zero scorer
        got = full(tiny, fixed(tiny, scores), part, mode)
        assert got == full(tiny, fixed(tiny, np.zeros_like(scores)), part, mode)


# --------------------------------------------------------------------------- larger random data
def random_log(n_users: int = 40, n_items: int = 150, seed: int = 0) -> InteractionLog:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for beh, n in (("view", 12), ("buy", 5)):
            items = rng.choice(n_items, size=n, replace=False)
            rows += [(u, int(i), beh, float(rng.random())) for i in items]
    rows += [(i % n_users, i, "view", 0.0) for i in range(n_items)]  # every item appears
    u, i, b, t = zip(*rows, strict=True)
    frame = {"user": list(u), "item": list(i), "behavior": list(b), "ts": list(t)}
    return InteractionLog.from_frame(frame, timestamp="ts", target="buy", name="random")


@pytest.fixture(scope="module")
def loo() -> Split:
    return leave_one_out(random_log(), n_negatives=99, seed=1)


@pytest.fixture(scope="module")
def ratio() -> Split:
    return random_ratio(random_log(seed=5), ratio=0.6, valid_ratio=0.2, n_negatives=20, seed=2)


def test_constant_scorer_pessimistic(loo: Split) -> None:
    model = ConstantScorer(TrainData(loo.train))
    res = evaluate(model, loo, "test", ks=(10, 100))
    # sampled 1+99: every negative ties with the positive → rank 99 for every pair
    s = res["metrics"]["sampled"]
    assert s["hr@10"] == 0 and s["ndcg@10"] == 0 and s["mrr@10"] == 0
    assert s["hr@100"] == 1  # rank 99 is the 100th place
    assert s["ndcg@100"] == pytest.approx(1 / math.log2(101))
    assert s["mrr@100"] == pytest.approx(1 / 100)
    # full ranking: ties are broken against the positive too
    f = res["metrics"]["full"]
    assert f["hr@10"] == 0 and f["hr@100"] == 0
    # the model's stored row was not written through the expanded view
    assert bool((model.table == 0).all())


def test_oracle_scorer_is_perfect(loo: Split) -> None:
    for part in ("valid", "test"):
        h = loo.valid if part == "valid" else loo.test
        scores = np.zeros((loo.train.n_users, loo.train.n_items), np.float32)
        scores[h.user, h.item] = 1.0
        res = evaluate(fixed(loo, scores), loo, part, ks=(1, 10))
        for proto in ("full", "sampled"):
            for m in ("hr@1", "ndcg@1", "hr@10", "ndcg@10", "recall@10", "mrr@10"):
                assert metric_value(res, m, proto) == 1.0, (part, proto, m)


def test_batch_size_does_not_change_results(ratio: Split) -> None:
    rng = np.random.default_rng(7)
    scores = rng.standard_normal((ratio.train.n_users, ratio.train.n_items)).astype(np.float32)
    for part in ("valid", "test"):
        a = evaluate(fixed(ratio, scores), ratio, part, batch_size=1, mask="all")
        b = evaluate(fixed(ratio, scores), ratio, part, batch_size=1000, mask="all")
        c = evaluate(fixed(ratio, scores), ratio, part, batch_size=7, mask="all")
        for proto in ("full", "sampled"):
            for key, val in a["metrics"][proto].items():
                assert b["metrics"][proto][key] == pytest.approx(val, rel=1e-12)
                assert c["metrics"][proto][key] == pytest.approx(val, rel=1e-12)
        assert a["n_evaluated"] == b["n_evaluated"]


def reference(split: Split, scores: np.ndarray, part: str, mask: str, ks: tuple[int, ...]) -> dict:
    """Slow per-user reference of the full-ranking protocol (no ties in ``scores``)."""
    train = split.train
    hold = split.valid if part == "valid" else split.test
    rows = train.behavior == train.target_code if mask == "target" else np.ones(len(train), bool)
    out: dict[str, list[float]] = {}
    for u in np.unique(hold.user):
        pos = set(hold.item[hold.user == u].tolist())
        seen = set(train.item[rows & (train.user == u)].tolist())
        if part == "test":
            seen |= set(split.valid.item[split.valid.user == u].tolist())
        seen -= pos
        ranked = [i for i in np.argsort(-scores[u], kind="stable") if i not in seen]
        for k in ks:
            hit = [p < len(ranked) and ranked[p] in pos for p in range(k)]
            dcg = sum(1 / math.log2(p + 2) for p in range(k) if hit[p])
            idcg = sum(1 / math.log2(p + 2) for p in range(min(len(pos), k)))
            first = next((p for p in range(k) if hit[p]), None)
            vals = {
                "hr": float(any(hit)),
                "recall": sum(hit) / len(pos),
                "ndcg": dcg / idcg,
                "mrr": 0.0 if first is None else 1 / (first + 1),
            }
            for m, v in vals.items():
                out.setdefault(f"{m}@{k}", []).append(v)
    return {k: float(np.mean(v)) for k, v in out.items()}


@pytest.mark.parametrize("part", ["valid", "test"])
@pytest.mark.parametrize("mask", ["target", "all"])
def test_full_ranking_matches_reference_with_many_positives(
    ratio: Split, part: str, mask: str
) -> None:
    hold = ratio.valid if part == "valid" else ratio.test
    assert np.bincount(hold.user).max() > 1  # several positives per user
    rng = np.random.default_rng(11)
    scores = rng.standard_normal((ratio.train.n_users, ratio.train.n_items)).astype(np.float32)
    res = evaluate(fixed(ratio, scores), ratio, part, protocols=("full",), ks=(5, 10), mask=mask)
    check(res["metrics"]["full"], reference(ratio, scores, part, mask, (5, 10)))


def test_sampled_matches_reference(loo: Split) -> None:
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((loo.train.n_users, loo.train.n_items)).astype(np.float32)
    res = evaluate(fixed(loo, scores), loo, "test", protocols=("sampled",), ks=(10,))
    h = loo.test
    assert h.negatives is not None
    pos = scores[h.user, h.item]
    neg = scores[h.user[:, None], h.negatives]
    rank = (neg >= pos[:, None]).sum(1)
    check(res["metrics"]["sampled"], {
        "hr@10": float(np.mean(rank < 10)),
        "ndcg@10": float(np.mean(np.where(rank < 10, 1 / np.log2(rank + 2), 0))),
        "mrr@10": float(np.mean(np.where(rank < 10, 1 / (rank + 1), 0))),
    })  # fmt: skip
    assert res["n_evaluated"] == {"sampled": len(h)}


# --------------------------------------------------------------------------- result format
def test_result_format(tiny: Split) -> None:
    model = fixed(tiny)
    model.train()
    calls: list[tuple[int, int]] = []
    res = evaluate(model, tiny, "test", batch_size=2, progress=lambda d, t: calls.append((d, t)))
    assert model.training  # previous mode restored
    assert model.prepared == 1
    assert calls == [(2, 3), (3, 3)]
    json.dumps(res, allow_nan=False)
    assert res["part"] == "test" and res["dataset"] == "tiny"
    assert res["protocol"] == "leave-one-out" and res["seed"] == 3
    assert res["split"] == tiny.describe()
    assert res["ks"] == [10, 20] and res["mask"] == "target"
    assert set(res["metrics"]) == {"full", "sampled"}
    assert list(res["metrics"]["full"]) == [
        "hr@10",
        "recall@10",
        "ndcg@10",
        "mrr@10",
        "hr@20",
        "recall@20",
        "ndcg@20",
        "mrr@20",
    ]
    assert res["n_evaluated"] == {"full": 3, "sampled": 3}
    assert res["n_negatives"] == 5
    assert metric_value(res, "hr@10", protocol="sampled") == res["metrics"]["sampled"]["hr@10"]
    with pytest.raises(KeyError, match="hr@5"):
        metric_value(res, "hr@5")


def test_sampled_skipped_without_negatives() -> None:
    split = leave_one_out(tiny_log(), n_negatives=0)
    res = evaluate(fixed(split), split, "valid")
    assert set(res["metrics"]) == {"full"}
    assert res["n_negatives"] is None
    assert any("sampled" in note for note in res["notes"])
    with pytest.raises(KeyError, match="no 'sampled' metrics"):
        metric_value(res, "hr@10", protocol="sampled")


def test_bad_arguments(tiny: Split) -> None:
    from polyrec.errors import ConfigError

    model = fixed(tiny)
    with pytest.raises(ConfigError):
        evaluate(model, tiny, "train")
    with pytest.raises(ConfigError):
        evaluate(model, tiny, "test", protocols=("auc",))
    with pytest.raises(ConfigError):
        evaluate(model, tiny, "test", ks=(0,))
    with pytest.raises(ConfigError):
        evaluate(model, tiny, "test", mask="none")


def test_interest_models_dispatch_to_retrieval(tiny: Split) -> None:
    class Interests(NothingToTrain, InterestModel):
        name = "interests"
        paper = ""
        Config = ModelConfig

        def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
            return torch.zeros(len(histories), 1, 4)

        def item_embeddings(self) -> Tensor:
            return torch.zeros(self.n_items, 4)

    res = evaluate(Interests(ModelConfig()).setup(TrainData(tiny.train)), tiny, "test", ks=(2,))
    assert set(res["metrics"]) == {"retrieval", "full"}  # "full" asked for by default
    assert res["metrics"]["retrieval"] == res["metrics"]["full"]
    assert "recall@2" in res["metrics"]["retrieval"]


def test_nan_scores_raise(tiny: Split) -> None:
    scores = SCORES.copy()
    scores[1, 3] = np.nan
    with pytest.raises(FloatingPointError, match="NaN"):
        evaluate(fixed(tiny, scores), tiny, "test")


def test_pair_index_flat_index() -> None:
    keys = pair_keys(np.array([0, 0, 2, 2, 2]), np.array([3, 1, 0, 4, 1]), 5)
    idx = PairIndex(keys, 3, 5)
    rows, items = idx.flat_index(torch.tensor([2, 1, 0]))
    assert rows.tolist() == [0, 0, 0, 2, 2]
    assert items.tolist() == [0, 1, 4, 1, 3]
    assert idx.counts(torch.tensor([0, 1, 2])).tolist() == [2, 0, 3]
    got = idx.contains(torch.tensor([0, 2]), torch.tensor([[1, 2], [4, 3]]))
    assert got.tolist() == [[True, False], [True, False]]


def test_empty_validation_part() -> None:
    split = random_ratio(random_log(seed=9), valid_ratio=0.0, n_negatives=10)
    assert len(split.valid) == 0
    res = evaluate(
        fixed(split, np.zeros((split.train.n_users, split.train.n_items))), split, "valid"
    )
    assert res["metrics"] == {} and res["n_evaluated"] == {}
    assert any("no valid pairs" in note for note in res["notes"])
    json.dumps(res, allow_nan=False)


def test_user_split_masks_history() -> None:
    split = user_split(random_log(seed=4), n_negatives=0)
    h = split.test
    assert h.history is not None
    n_items = split.train.n_items
    keys = mask_keys(split, "test", "target")
    hist = pair_keys(h.history.user, h.history.item, n_items)
    assert np.isin(hist, keys).all()
    assert not np.isin(pair_keys(h.user, h.item, n_items), keys).any()
    # history items scored highest change nothing
    scores = np.zeros((split.train.n_users, n_items), np.float32)
    scores.reshape(-1)[hist] = 5.0
    a = evaluate(fixed(split, scores), split, "test", protocols=("full",))
    b = evaluate(fixed(split, np.zeros_like(scores)), split, "test", protocols=("full",))
    assert a["metrics"] == b["metrics"]
