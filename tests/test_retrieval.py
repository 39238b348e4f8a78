"""Multi-interest retrieval evaluation (polyrec.eval.retrieval)."""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import pytest
import torch
from torch import Tensor

from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.splits import Holdout, Split
from polyrec.data.views import DataSchema, TrainData
from polyrec.eval.evaluator import evaluate
from polyrec.eval.retrieval import (
    _faiss,
    evaluate_retrieval,
    faiss_topk,
    interest_topk,
    merge_topk,
    retrieve,
)
from polyrec.models.base import InterestModel, ModelConfig
from stubs import NothingToTrain


def test_merge_hand_made_example() -> None:
    # two interests, top-3 each; item 4 is found by both (best score 0.9 counts once)
    items = torch.tensor([[[4, 1, 7], [2, 4, 9]]])
    scores = torch.tensor([[[0.9, 0.5, 0.1], [0.8, 0.6, 0.3]]])
    top_i, top_s = merge_topk(items, scores, 3)
    assert top_i.tolist() == [[4, 2, 1]]
    assert top_s[0].tolist() == pytest.approx([0.9, 0.8, 0.5])
    top_i, _ = merge_topk(items, scores, 6)
    assert top_i.tolist() == [[4, 2, 1, 9, 7, -1]]  # 5 distinct items, padded with -1


def test_merge_equals_topk_of_best_interest_score() -> None:
    g = torch.Generator().manual_seed(0)
    interests = torch.randn(7, 4, 8, generator=g)
    emb = torch.randn(300, 8, generator=g)
    top = retrieve(interests, emb, 20, search="torch")
    best = torch.einsum("bkd,nd->bkn", interests, emb).max(dim=1).values
    assert top.tolist() == torch.topk(best, 20, dim=1).indices.tolist()


def test_chunked_search_is_exact() -> None:
    g = torch.Generator().manual_seed(1)
    interests = torch.randn(5, 3, 8, generator=g)
    emb = torch.randn(250, 8, generator=g)
    i1, s1 = interest_topk(interests, emb, 30, chunk=40)
    i2, s2 = interest_topk(interests, emb, 30, chunk=10_000)
    assert i1.tolist() == i2.tolist()
    torch.testing.assert_close(s1, s2)
    # exclusion: an excluded (row, item) pair never comes back, for any interest
    drop = [(0, int(i2[0, 0, 0])), (0, int(i2[0, 1, 0])), (3, int(i2[3, 2, 0]))]
    rows = torch.tensor([r for r, _ in drop])
    cols = torch.tensor([c for _, c in drop])
    i3, _ = interest_topk(interests, emb, 30, exclude=(rows, cols), chunk=40)
    for r, c in drop:
        assert c not in i3[r].flatten().tolist()
    assert i3[1].tolist() == i2[1].tolist()


def test_single_interest_and_few_items() -> None:
    interests = torch.tensor([[[1.0, 0.0]]])
    emb = torch.tensor([[0.1, 0.0], [0.5, 0.0], [0.3, 0.0]])
    assert retrieve(interests, emb, 2).tolist() == [[1, 2]]
    assert retrieve(interests, emb, 5).tolist() == [[1, 2, 0, -1, -1]]


@pytest.mark.skipif(_faiss() is None, reason="faiss is not installed (optional extra)")
def test_faiss_and_torch_search_agree() -> None:
    g = torch.Generator().manual_seed(2)
    interests = torch.randn(6, 4, 16, generator=g)
    emb = torch.randn(500, 16, generator=g)
    fi, _ = faiss_topk(interests, emb, 50)
    ti, _ = interest_topk(interests, emb, 50)
    assert fi.tolist() == ti.tolist()
    assert (
        retrieve(interests, emb, 50, search="faiss").tolist()
        == retrieve(interests, emb, 50, search="torch").tolist()
    )


# ---------------------------------------------------------------------- metrics by hand
N_ITEMS = 6


class Fixed(NothingToTrain, InterestModel):
    """Interests depend only on the history's last item: item e_j at one-hot axis j."""

    name: ClassVar[str] = "fixed"
    paper: ClassVar[str] = ""
    Config: ClassVar[type[ModelConfig]] = ModelConfig

    def __init__(self, data: TrainData) -> None:
        super().__init__(ModelConfig())
        self.setup(data)

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        # item scores of user-vector axis a: item j gets table[a, j]
        self.table = torch.tensor(
            [
                [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # interest A: 0 > 1 > 2 > 3 > 4 > 5
                [1.0, 2.0, 3.0, 4.0, 5.0, 5.5],  # interest B: 5 > 4 > 3 > 2 > 1 > 0
            ]
        )

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        # user with last history item 1 (shifted: 2) gets interest A only; others A and B/2
        last = histories[:, -1]
        a = torch.tensor([1.0, 0.0]).expand(len(last), 2)
        b = torch.where((last == 2).unsqueeze(1), a, torch.tensor([0.0, 1.0]))
        return torch.stack([a, b], dim=1)

    def item_embeddings(self) -> Tensor:
        return self.table.T.contiguous()


def hand_split() -> Split:
    log = InteractionLog(
        user=np.array([0, 0, 1, 2]),
        item=np.array([0, 1, 2, 3]),
        behavior=np.zeros(4, dtype=np.int8),
        behaviors=("click",),
        target="click",
        user_map=IdMap.range(5),
        item_map=IdMap.range(N_ITEMS),
        name="hand",
    )
    hist = InteractionLog(
        user=np.array([3, 4]),
        item=np.array([1, 3]),
        behavior=np.zeros(2, dtype=np.int8),
        behaviors=("click",),
        target="click",
        user_map=IdMap.range(5),
        item_map=IdMap.range(N_ITEMS),
        name="hand",
    )
    # user 3 (history: item 1 → interest A twice): list 0, 1, 2, 3, 4, 5; targets 1 and 4
    # user 4 (history: item 3 → A and B): merged list 0 (6), 5 (5.5), 1 (5), 4 (5), ...
    #   ties 1/4 at 5.0 — targets 5 and 2
    valid = Holdout(np.array([3, 3, 4, 4]), np.array([1, 4, 5, 2]), None, hist)
    return Split("user-split", 0, log.fingerprint(), log, valid, valid)


def test_metrics_by_hand() -> None:
    split = hand_split()
    model = Fixed(TrainData(split.train))
    res = evaluate_retrieval(model, split, "valid", ks=(1, 2, 3), ndcg="both")
    m = res["metrics"]["retrieval"]
    d = [1 / math.log2(p + 2) for p in range(3)]
    # user 3: list [0, 1, 2]: hits at position 1 → recall@1 0, @2 1/2, @3 1/2
    # user 4: list [0, 5, {1 or 4}]: hit at position 1 → recall@2 1/2, @3 1/2
    assert m["recall@1"] == pytest.approx(0.0)
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["hr@2"] == pytest.approx(1.0)
    assert m["recall@3"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx(d[1] / (d[0] + d[1]))
    assert m["ndcg_comirec@2"] == pytest.approx(d[1] / d[0])
    assert res["n_evaluated"]["retrieval"] == 2
    assert any("ComiRec's NDCG" in n for n in res["notes"])
    assert res["retrieval"]["history"] == "holdout history"


def test_exclude_history() -> None:
    split = hand_split()
    model = Fixed(TrainData(split.train))
    # user 3's history item 1 and user 4's history item 3 are removed from their lists:
    # user 3: [0, 2, ...] (target 1 now unreachable), user 4: [0, 5, ...] (hits 5 at position 1)
    res = evaluate_retrieval(model, split, "valid", ks=(1, 2), exclude_history=True)
    assert res["mask"] == "history"
    assert res["metrics"]["retrieval"]["recall@1"] == 0.0
    assert res["metrics"]["retrieval"]["recall@2"] == pytest.approx((0.0 + 0.5) / 2)


def test_evaluator_dispatches_interest_models() -> None:
    split = hand_split()
    model = Fixed(TrainData(split.train))
    res = evaluate(model, split, "valid", protocols=("full",), ks=(2,))
    assert res["metrics"]["retrieval"]["recall@2"] == pytest.approx(0.5)
    assert res["metrics"]["full"] == res["metrics"]["retrieval"]


def test_evaluator_passes_retrieval_options() -> None:
    split = hand_split()
    model = Fixed(TrainData(split.train))
    opts = {"ndcg": "both", "exclude_history": True, "search": "torch"}
    res = evaluate(model, split, "valid", protocols=("retrieval",), ks=(2,), retrieval=opts)
    assert set(res["metrics"]) == {"retrieval"}
    assert "ndcg_comirec@2" in res["metrics"]["retrieval"]
    assert res["mask"] == "history"


def test_scorer_refuses_retrieval_protocol() -> None:
    # MF scores known users only (no history scoring): retrieval is refused
    from polyrec.errors import ConfigError
    from polyrec.models.mf import MF

    split = hand_split()
    mf = MF(MF.Config()).setup(TrainData(split.train))
    with pytest.raises(ConfigError, match="retrieval"):
        evaluate(mf, split, "valid", protocols=("retrieval",), ks=(2,))
    with pytest.raises(ConfigError, match="retrieval"):
        evaluate_retrieval(mf, split, "valid", ks=(2,))  # type: ignore[arg-type]


def test_run_config_retrieval_options() -> None:
    from polyrec.config import load_config

    cfg = load_config(
        overrides=["eval.ndcg=both", "train.select_protocol=retrieval", "eval.max_len=20"]
    )
    assert cfg.eval.retrieval_options() == {
        "ndcg": "both",
        "exclude_history": False,
        "search": "auto",
        "max_len": 20,
    }
    assert cfg.train.select_protocol == "retrieval"
