"""The closed-form baselines under the retrieval protocol (HistoryScoring: POP, own history,
ItemKNN, EASE score a held-out user from the history alone)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.splits import Holdout, Split
from polyrec.data.views import TrainData
from polyrec.eval.evaluator import evaluate
from polyrec.eval.retrieval import evaluate_retrieval, history_topk
from polyrec.models._common import history_weights
from polyrec.models.base import HistoryScoring, NotFittedError
from polyrec.models.ease import EASE, EASEConfig
from polyrec.models.history import History, HistoryConfig
from polyrec.models.itemknn import ItemKNN, ItemKNNConfig
from polyrec.models.pop import Pop, PopConfig

N_ITEMS = 5


def _log(user: list[int], item: list[int], n_users: int = 6) -> InteractionLog:
    return InteractionLog(
        user=np.array(user),
        item=np.array(item),
        behavior=np.zeros(len(user), dtype=np.int8),
        behaviors=("click",),
        target="click",
        user_map=IdMap.range(n_users),
        item_map=IdMap.range(N_ITEMS),
        name="hand",
    )


def hand_split() -> Split:
    # training users 0-2; popularity (distinct users): item 0: 3, item 1: 2, item 2: 1, 3/4: 0
    train = _log([0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 0, 2])
    # held-out users 3 (history 2 → 2) and 4 (history 3); targets: 3 → {1, 2}, 4 → {4}
    hist = _log([3, 3, 4], [2, 2, 3])
    valid = Holdout(np.array([3, 3, 4]), np.array([1, 2, 4]), None, hist)
    return Split("user-split", 0, train.fingerprint(), train, valid, valid)


def fitted(model: HistoryScoring) -> HistoryScoring:
    assert isinstance(model, History | Pop | EASE | ItemKNN)
    model.setup(TrainData(hand_split().train))
    return model


def test_history_weights_by_hand() -> None:
    # left-padded, +1-shifted: items 0, 1, 0 (latest last) and a padded row with item 4
    h = torch.tensor([[1, 2, 1], [0, 0, 5]])
    counts = history_weights(h, N_ITEMS)
    assert counts.tolist() == [[2, 1, 0, 0, 0], [0, 0, 0, 0, 1]]
    decayed = history_weights(h, N_ITEMS, half_life=1.0)
    # item 0: ages 2 and 0 → 0.25 + 1; item 1: age 1 → 0.5
    assert decayed[0].tolist() == pytest.approx([1.25, 0.5, 0, 0, 0])
    assert history_weights(h, N_ITEMS, binary=True)[0].tolist() == [1, 1, 0, 0, 0]


def test_pop_ignores_the_history() -> None:
    pop = fitted(Pop(PopConfig()))
    s = pop.history_scores(torch.tensor([[0, 3], [1, 2]]), torch.tensor([1, 2]))
    assert s.tolist() == [[3, 2, 1, 0, 0]] * 2


def test_history_repeat_scores_by_hand() -> None:
    cfg = HistoryConfig(position_half_life=1.0, conversion=False, popularity_weight=0.1)
    model = fitted(History(cfg))
    s = model.history_scores(torch.tensor([[1, 2, 1]]), torch.tensor([3]))[0]
    p = torch.tensor([3.0, 2.0, 1.0, 0.0, 0.0]) / 4.0  # popularity / (max + 1)
    own = torch.tensor([1.25, 0.5, 0, 0, 0]) + 0.1 * p
    expect = torch.where(torch.tensor([True, True, False, False, False]), own, 0.1 * (p - 1))
    torch.testing.assert_close(s, expect)
    assert s.argsort(descending=True)[:2].tolist() == [0, 1]  # own items first


@pytest.mark.parametrize(
    "model",
    [lambda: EASE(EASEConfig(l2=1.0)), lambda: ItemKNN(ItemKNNConfig(k=3))],
    ids=["ease", "itemknn"],
)
def test_matrix_scorers_score_a_history_like_the_users_row(model) -> None:
    m = fitted(model())
    # user 0's training row is items {0, 1}; the same items as a history (one repeated)
    from_row = m.scores(torch.tensor([0]))
    from_hist = m.history_scores(torch.tensor([[1, 2, 1]]), torch.tensor([3]))
    torch.testing.assert_close(from_hist, from_row)
    assert from_hist.abs().sum() > 0


def test_history_topk_pessimistic_ties_and_padding() -> None:
    scores = torch.tensor([[1.0, 1.0, 0.0]])
    # positive item 0 tied with item 1: it ranks below it
    top = history_topk(scores.clone(), 2, None, (torch.tensor([0]), torch.tensor([0])))
    assert top.tolist() == [[1, 0]]
    # excluding two of three items leaves one; the rest is padded with -1
    excl = (torch.tensor([0, 0]), torch.tensor([0, 1]))
    top = history_topk(scores.clone(), 3, excl, (torch.tensor([], dtype=torch.long),) * 2)
    assert top.tolist() == [[2, -1, -1]]
    with pytest.raises(FloatingPointError):
        history_topk(torch.tensor([[float("nan"), 1.0]]), 1, None, excl)


def test_retrieval_of_pop_and_history_by_hand() -> None:
    split = hand_split()
    pop = fitted(Pop(PopConfig()))
    m = evaluate_retrieval(pop, split, "valid", ks=(1, 2, 3))["metrics"]["retrieval"]
    # every list is 0, 1, 2: user 3 finds 1 (pos 2) and 2 (pos 3), user 4 finds nothing
    assert m["recall@1"] == pytest.approx(0.0)
    assert m["recall@2"] == pytest.approx(0.25)
    assert m["recall@3"] == pytest.approx(0.5)
    hist = fitted(History(HistoryConfig(conversion=False)))
    m = evaluate_retrieval(hist, split, "valid", ks=(1, 2))["metrics"]["retrieval"]
    # user 3: own item 2 first (a target), then 0; user 4: own item 3 first, then 0
    assert m["recall@1"] == pytest.approx(0.25)
    assert m["hr@1"] == pytest.approx(0.5)
    # excluding the history makes repeat consumption unreachable
    m = evaluate_retrieval(hist, split, "valid", ks=(1,), exclude_history=True)
    assert m["metrics"]["retrieval"]["recall@1"] == pytest.approx(0.0)


def test_evaluator_routes_history_scorers_to_retrieval() -> None:
    split = hand_split()
    pop = fitted(Pop(PopConfig()))
    res = evaluate(pop, split, "valid", protocols=["retrieval", "full"], ks=(2,))
    assert set(res["metrics"]) == {"retrieval", "full"}
    assert res["metrics"]["retrieval"]["recall@2"] == pytest.approx(0.25)


def test_history_scores_needs_setup() -> None:
    with pytest.raises(NotFittedError):
        Pop(PopConfig()).history_scores(torch.tensor([[1]]), torch.tensor([1]))
