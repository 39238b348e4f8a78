"""Protocol objects (full ranking, sampled 1+N, retrieval) and the top-k core they share."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor

from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.splits import Holdout, Split
from polyrec.data.views import DataSchema, TrainData
from polyrec.errors import ConfigError
from polyrec.eval import (
    EvalProtocol,
    FullRanking,
    Retrieval,
    SampledRanking,
    evaluate,
)
from polyrec.eval import metrics as M
from polyrec.eval import retrieval as R
from polyrec.eval.protocols import evaluate_scorer, mask_keys
from polyrec.eval.ranking import PairIndex, block_topk, hit_matrix, sampled_ranks
from polyrec.models.base import InterestModel, ModelConfig, Scorer
from stubs import NothingToTrain

L3, L4 = 1 / math.log2(3), 1 / math.log2(4)  # DCG weights of positions 1 and 2

# --------------------------------------------------------------------------- the 3-user example
# 6 items, one behavior. Training items (masked at validation): user 0 {0}, user 1 {1, 2},
# user 2 {3}. Validation positives: user 0 {1, 3}, user 1 {5}, user 2 {0}.
SCORES = torch.tensor(
    [
        [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # mask 0 → list 1 2 3: hits at 0 and 2
        [1.0, 9.0, 8.0, 2.0, 3.0, 7.0],  # mask 1, 2 → list 5 4 3: hit at 0
        [3.0, 3.0, 1.0, 0.0, 5.0, 2.0],  # mask 3 → 4, then 1 and the positive 0 tied at 3.0:
    ]  # the tie goes against the positive → list 4 1 0: hit at 2
)
TOP3 = [[1, 2, 3], [5, 4, 3], [4, 1, 0]]
HITS = [[True, False, True], [True, False, False], [False, False, True]]
BY_HAND = {  # ks (1, 3), averaged over the 3 users
    "hr@1": 2 / 3,
    "recall@1": (1 / 2 + 1 + 0) / 3,
    "ndcg@1": 2 / 3,
    "mrr@1": 2 / 3,
    "hr@3": 1.0,
    "recall@3": 1.0,
    "ndcg@3": ((1 + L4) / (1 + L3) + 1 + L4) / 3,
    "mrr@3": (1 + 1 + 1 / 3) / 3,
}
# stored negatives of the pairs (0, 1), (0, 3), (1, 5), (2, 0) → ranks 1, 0, 1, 1 (the last:
# negative 1 ties with the positive and counts above it)
NEGATIVES = np.array([[2, 0], [4, 5], [0, 1], [1, 3]])
RANKS = [1, 0, 1, 1]


def _log(users: list[int], items: list[int], n_items: int = 6) -> InteractionLog:
    n = len(users)
    return InteractionLog(
        user=np.array(users),
        item=np.array(items),
        behavior=np.zeros(n, dtype=np.int8),
        behaviors=("click",),
        target="click",
        user_map=IdMap.range(3),
        item_map=IdMap.range(n_items),
        timestamp=np.arange(n, dtype=np.float64),
        name="three",
    )


def three_users(negatives: np.ndarray | None = NEGATIVES) -> Split:
    train = _log([0, 1, 1, 2], [0, 1, 2, 3])
    valid = Holdout(np.array([0, 0, 1, 2]), np.array([1, 3, 5, 0]), negatives)
    test = Holdout(np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Split("hand", 0, train.fingerprint(), train, valid, test)


class Table(NothingToTrain, Scorer):
    """Scores from a fixed ``[n_users, n_items]`` table; counts its calls."""

    name: ClassVar[str] = "table"
    paper: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, data: TrainData, scores: Tensor = SCORES) -> None:
        super().__init__(ModelConfig())
        self._scores = scores
        self.calls = 0
        self.prepared = 0
        self.setup(data)

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        self.register_buffer("table", self._scores.clone())

    def prepare_scoring(self) -> None:
        self.prepared += 1

    def scores(self, users: Tensor) -> Tensor:
        self.calls += 1
        return self.table[users].clone()


class OneInterest(NothingToTrain, InterestModel):
    """K = 1: the interest of a user whose last history item is j is the score row ROWS[j] over
    one-hot item embeddings, so its item scores are exactly that row."""

    name: ClassVar[str] = "one-interest"
    paper: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, data: TrainData, scores: Tensor) -> None:
        super().__init__(ModelConfig())
        self.setup(data)
        # last training item of users 0, 1, 2 is 0, 2, 3
        self.rows = torch.zeros(6, 6)
        self.rows[[0, 2, 3]] = scores

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        last = histories[:, -1] - 1  # padded histories hold item + 1
        return self.rows[last].unsqueeze(1)

    def item_embeddings(self) -> Tensor:
        return torch.eye(6)


def check(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(expected) <= set(got)
    for key, val in expected.items():
        assert got[key] == pytest.approx(val, abs=1e-12), key


# --------------------------------------------------------------------------- labels
def test_each_protocol_has_its_label() -> None:
    assert (FullRanking.label, SampledRanking.label, Retrieval.label) == (
        "full",
        "sampled",
        "retrieval",
    )
    for cls in (FullRanking, SampledRanking, Retrieval):
        assert issubclass(cls, EvalProtocol) and cls.description
    split = three_users()
    scorer = Table(TrainData(split.train))
    for proto in (FullRanking(ks=(3,)), SampledRanking(ks=(3,))):
        res = proto.evaluate(scorer, split, "valid")
        assert list(res["metrics"]) == [proto.label] and list(res["n_evaluated"]) == [proto.label]
    model = OneInterest(TrainData(split.train), SCORES)
    res = Retrieval(ks=(3,)).evaluate(model, split, "valid")
    assert list(res["metrics"]) == ["retrieval"]
    assert res["retrieval"]["label"] == "retrieval" and res["retrieval"]["aliases"] == []
    # evaluate() keeps the "full" key callers (the trainer's selection) read, and says what it is
    res = evaluate(model, split, "valid", protocols=("full",), ks=(3,))
    assert list(res["metrics"]) == ["retrieval", "full"]
    assert res["metrics"]["full"] == res["metrics"]["retrieval"]
    assert res["retrieval"]["label"] == "retrieval" and res["retrieval"]["aliases"] == ["full"]
    assert any(n.startswith("full: an InterestModel") for n in res["notes"])


# --------------------------------------------------------------------------- the shared core
def test_full_ranking_and_core_agree_by_hand() -> None:
    split = three_users()
    users = torch.arange(3)
    masked = PairIndex(mask_keys(split, "valid"), 3, 6)
    positives = PairIndex.from_pairs(split.valid.user, split.valid.item, 3, 6)
    values, top = block_topk(
        SCORES.clone(), 3, exclude=masked.flat_index(users), demote=positives.flat_index(users)
    )
    assert top.tolist() == TOP3
    assert values[2, 2] < 3.0  # the positive was lowered below its tie
    hits = hit_matrix(top, users, positives, 4)  # a 4th column: padded, never a hit
    assert hits[:, :3].tolist() == HITS and not hits[:, 3].any()
    core = {
        k: float(v.mean()) for k, v in M.from_hits(hits, positives.counts(users), (1, 3)).items()
    }
    check(core, BY_HAND)
    got = FullRanking(ks=(1, 3)).evaluate(Table(TrainData(split.train)), split, "valid")
    assert got["metrics"]["full"] == core
    assert got["n_evaluated"] == {"full": 3}


def test_sampled_and_core_agree_by_hand() -> None:
    split = three_users()
    rows = torch.tensor([0, 0, 1, 2])
    items = torch.from_numpy(split.valid.item)
    ranks = sampled_ranks(SCORES, rows, items, torch.from_numpy(NEGATIVES))
    assert ranks.tolist() == RANKS
    core = {k: float(v.mean()) for k, v in M.from_rank(ranks, (1, 2)).items()}
    assert core["hr@1"] == 1 / 4 and core["hr@2"] == 1.0
    got = SampledRanking(ks=(1, 2), batch_size=2).evaluate(
        Table(TrainData(split.train)), split, "valid"
    )
    assert got["metrics"]["sampled"] == core
    assert got["n_evaluated"] == {"sampled": 4} and got["n_negatives"] == 2


def test_retrieval_shares_the_core() -> None:
    # without ties, a one-interest model whose item scores are a scorer's, with its history
    # (its training items) excluded, gets the full-ranking figures
    no_ties = SCORES.clone()
    no_ties[2, 1] = 4.0  # user 2's list stays 4 1 0
    split = three_users()
    data = TrainData(split.train)
    full = FullRanking(ks=(1, 3)).evaluate(Table(data, no_ties), split, "valid")["metrics"]["full"]
    proto = Retrieval(ks=(1, 3), exclude_history=True, search="torch")
    got = proto.evaluate(OneInterest(data, no_ties), split, "valid")["metrics"]["retrieval"]
    assert got == {k: v for k, v in full.items() if not k.startswith("mrr")}
    check(got, {k: v for k, v in BY_HAND.items() if not k.startswith("mrr")})
    # the chunked per-interest search is block_topk over running top-n lists
    users = torch.arange(3)
    masked = PairIndex(mask_keys(split, "valid"), 3, 6)
    exclude = masked.flat_index(users)
    for chunk in (1, 2, 4, 6):
        items, scores = R.interest_topk(
            no_ties.unsqueeze(1), torch.eye(6), 3, exclude=exclude, chunk=chunk
        )
        values, top = block_topk(no_ties.clone().unsqueeze(1), 3, exclude=exclude)
        assert items.tolist() == top.tolist() == [[row] for row in TOP3]
        assert torch.equal(scores, values)


def test_scorer_protocols_share_one_pass() -> None:
    split = three_users()
    model = Table(TrainData(split.train))
    both = evaluate_scorer(
        model,
        split,
        "valid",
        [FullRanking(ks=(1, 3), batch_size=2), SampledRanking(ks=(1, 3), batch_size=2)],
    )
    assert model.calls == 2 and model.prepared == 1  # 2 batches, each scored once
    assert list(both["metrics"]) == ["full", "sampled"]  # the order asked for
    assert (
        both["metrics"]["full"]
        == FullRanking(ks=(1, 3)).evaluate(model, split, "valid")["metrics"]["full"]
    )
    assert both["mask"] == "target"
    alone = SampledRanking(ks=(1, 3)).evaluate(model, split, "valid")
    assert alone["metrics"]["sampled"] == both["metrics"]["sampled"]
    assert alone["mask"] == "none"  # no full ranking, nothing masked
    assert bool((model.table == SCORES).all())  # the model's table was not written into


def test_sampled_skipped_with_a_note() -> None:
    split = three_users(negatives=None)
    res = SampledRanking(ks=(1,)).evaluate(Table(TrainData(split.train)), split, "valid")
    assert res["metrics"] == {} and any(n.startswith("sampled: skipped") for n in res["notes"])


# --------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FullRanking(ks=(0, 5)), "ks must be positive"),
        (lambda: FullRanking(ks=("ten",)), "ks must be positive"),
        (lambda: FullRanking(ks=()), "ks must be positive"),
        (lambda: FullRanking(mask="none"), "mask must be one of target, all"),
        (lambda: SampledRanking(batch_size=0), "batch_size must be >= 1"),
        (lambda: Retrieval(ndcg="dcg"), "ndcg must be one of standard, comirec, both"),
        (lambda: Retrieval(search="gpu"), "search must be one of auto, torch, faiss"),
    ],
)
def test_bad_options_are_config_errors(make: Any, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make()


def test_bad_evaluations_are_config_errors() -> None:
    split = three_users()
    data = TrainData(split.train)
    scorer, interest = Table(data), OneInterest(data, SCORES)
    with pytest.raises(ConfigError, match="part must be 'valid' or 'test'"):
        FullRanking().evaluate(scorer, split, "train")
    with pytest.raises(ConfigError, match="part must be 'valid' or 'test'"):
        Retrieval().evaluate(interest, split, "train")
    with pytest.raises(ConfigError, match="'retrieval' is for multi-interest"):
        Retrieval().evaluate(scorer, split, "valid")
    with pytest.raises(ConfigError, match="same ks and batch_size"):
        evaluate_scorer(scorer, split, "valid", [FullRanking(ks=(1,)), SampledRanking(ks=(2,))])
    with pytest.raises(ConfigError, match="no evaluation protocol"):
        evaluate_scorer(scorer, split, "valid", [])
    for model in (scorer, interest):  # the same checks whatever the model
        with pytest.raises(ConfigError, match="unknown evaluation protocol"):
            evaluate(model, split, "valid", protocols=("auc",))
        with pytest.raises(ConfigError, match="unknown evaluation protocol"):
            evaluate(model, split, "valid", protocols=())
        with pytest.raises(ConfigError, match="mask must be"):
            evaluate(model, split, "valid", mask="none")
        with pytest.raises(ConfigError, match="ks must be"):
            evaluate(model, split, "valid", ks=(-1,))
    with pytest.raises(ConfigError, match="unknown retrieval option"):
        evaluate(interest, split, "valid", retrieval={"topn": 5})
    with pytest.raises(ConfigError, match="scorer: use 'full' or 'sampled'"):
        evaluate(scorer, split, "valid", protocols=("full", "retrieval"))


def test_item_count_mismatch_is_reported() -> None:
    split = three_users()
    other = _log([0, 1], [0, 6], n_items=7)
    with pytest.raises(ValueError, match="7 items but the split's dataset has 6"):
        FullRanking().evaluate(Table(TrainData(other), torch.zeros(3, 7)), split, "valid")
