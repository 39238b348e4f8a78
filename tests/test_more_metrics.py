"""Precision, MAP, coverage, average popularity and Gini index: by hand, through evaluate(),
the config, the trainer and the CLI table (arithmetic in the comments)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import polyrec
from polyrec.config import load_config
from polyrec.data.splits import Split
from polyrec.data.views import TrainData
from polyrec.errors import ConfigError
from polyrec.eval import evaluate
from polyrec.eval import metrics as M
from polyrec.eval.protocols import popularity
from polyrec.eval.ranking import ItemCounts
from polyrec.training.trainer import parse_metric
from test_evaluator import KS, fixed, tiny  # noqa: F401  (tiny is a fixture)
from test_metrics import HITS, NPOS, F, T
from test_retrieval import Fixed, hand_split

# the hit matrix of tests/test_metrics.py (rows: positives at 1 and 3 of 3; none of 1; at 0
# of 1; all 5 of 10)


def approx(values: torch.Tensor, expected: list[float]) -> None:
    assert values.dtype == torch.float64
    assert values.tolist() == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- per-row metrics
def test_precision() -> None:
    # @5: 2 hits / 5, 0, 1 / 5, 5 / 5; @2: row 0 [F, T] → 1/2, row 2 [T, F] → 1/2, row 3 → 1
    approx(M.precision(HITS, 5), [0.4, 0, 0.2, 1])
    approx(M.precision(HITS, 2), [0.5, 0, 0.5, 1])


def test_average_precision_recbole_definition() -> None:
    # AP@k = sum over hit positions of precision@(p+1), / min(k, n_pos)
    # row 0 @5: hits at positions 1 (precision@2 = 1/2) and 3 (precision@4 = 2/4 = 1/2)
    #           → (1/2 + 1/2) / min(5, 3) = 1/3
    # row 2 @5: hit at 0, precision@1 = 1 → 1 / min(5, 1) = 1
    # row 3 @5: precision@r = 1 for r = 1..5 → 5 / min(5, 10) = 1
    approx(M.average_precision(HITS, NPOS, 5), [1 / 3, 0, 1, 1])
    # @2: row 0: 1/2 / min(2, 3) = 1/4; row 2: 1 / 1; row 3: (1 + 1) / min(2, 10) = 1
    approx(M.average_precision(HITS, NPOS, 2), [0.25, 0, 1, 1])
    # [T, F, T] with 2 positives: (precision@1 + precision@3) / 2 = (1 + 2/3) / 2 = 5/6
    approx(M.average_precision(torch.tensor([[T, F, T]]), torch.tensor([2]), 3), [5 / 6])
    # no positives → 0 (not NaN)
    approx(M.average_precision(torch.zeros(1, 3, dtype=torch.bool), torch.tensor([0]), 3), [0])


def test_from_hits_extra_names() -> None:
    out = M.from_hits(HITS, NPOS, (2, 5), names=(*M.DEFAULT_METRICS, "precision", "map"))
    assert list(out) == [
        *(f"{n}@2" for n in (*M.DEFAULT_METRICS, "precision", "map")),
        *(f"{n}@5" for n in (*M.DEFAULT_METRICS, "precision", "map")),
    ]
    approx(out["map@5"], [1 / 3, 0, 1, 1])
    approx(out["precision@2"], [0.5, 0, 0.5, 1])


def test_from_rank_precision_and_map() -> None:
    # one positive per row at rank r: precision@k = hit / k, map@k = hit / (r + 1) (= MRR)
    out = M.from_rank(np.array([0, 3, 9, 10]), (10,), names=("precision", "map", "mrr"))
    approx(out["precision@10"], [0.1, 0.1, 0.1, 0])
    approx(out["map@10"], [1, 1 / 4, 1 / 10, 0])
    assert out["map@10"].tolist() == out["mrr@10"].tolist()
    # the same as from_hits on the equivalent one-positive hit matrix
    rank = torch.tensor([0, 2, 4, 7])
    hits = torch.nn.functional.one_hot(rank, 8)[:, :5].bool()
    a = M.from_rank(rank, (3, 5), names=("precision", "map"))
    b = M.from_hits(hits, torch.ones(4, dtype=torch.long), (3, 5), names=("precision", "map"))
    for key in a:
        assert a[key].tolist() == pytest.approx(b[key].tolist(), abs=1e-12)


# --------------------------------------------------------------------------- list-level metrics
# 5 items; three users' top-2 lists: [0, 1], [0, 2], [0, 1]
#   counts@2 = [3, 2, 1, 0, 0] (sum 6); counts@1 = [3, 0, 0, 0, 0] (sum 3)
# popularity = [10, 4, 1, 0, 5]
LISTS = torch.tensor([[0, 1], [0, 2], [0, 1]])
POP = np.array([10, 4, 1, 0, 5])


def counts_of(lists: torch.Tensor, ks: list[int], n_items: int) -> dict[int, torch.Tensor]:
    c = ItemCounts(ks, n_items)
    c.add(lists)
    return c.counts


def test_item_counts_skip_empty_slots_and_sum_over_batches() -> None:
    c = ItemCounts([1, 2, 3], 5)
    c.add(torch.tensor([[0, 1, -1], [0, 2, 4]]))  # -1: an empty slot, not counted
    c.add(torch.tensor([[0, 1, 3]]))
    assert c.counts[1].tolist() == [3, 0, 0, 0, 0]
    assert c.counts[2].tolist() == [3, 2, 1, 0, 0]
    assert c.counts[3].tolist() == [3, 2, 1, 1, 1]  # 8 listed items, not 9


def test_coverage() -> None:
    counts = counts_of(LISTS, [1, 2], 5)
    # @2: items 0, 1, 2 listed → 3 / 5; @1: item 0 only → 1 / 5
    assert M.coverage(counts[2]) == pytest.approx(0.6)
    assert M.coverage(counts[1]) == pytest.approx(0.2)


def test_average_popularity() -> None:
    counts = counts_of(LISTS, [1, 2], 5)
    # @2: (3·10 + 2·4 + 1·1) / 6 = 39/6 = 6.5
    #     = RecBole's per-user mean averaged over users: ((10+4)/2 + (10+1)/2 + (10+4)/2) / 3
    assert M.average_popularity(counts[2], POP) == pytest.approx(6.5)
    per_user = ((10 + 4) / 2 + (10 + 1) / 2 + (10 + 4) / 2) / 3
    assert per_user == pytest.approx(6.5)
    # @1: item 0 only → 10
    assert M.average_popularity(counts[1], POP) == pytest.approx(10)
    assert M.average_popularity(torch.zeros(5, dtype=torch.long), POP) == 0.0


def test_gini_index_recbole_definition() -> None:
    counts = counts_of(LISTS, [1, 2], 5)
    # @2: counts ascending [0, 0, 1, 2, 3], j = 1..5, (2j - n - 1) = [-4, -2, 0, 2, 4]
    #     → (0 + 0 + 0 + 4 + 12) / (n · sum = 5 · 6) = 16/30
    #     RecBole: idx = arange(n - 3 + 1, n + 1) = [3, 4, 5] over the 3 listed items [1, 2, 3]:
    #     (2·idx - 6) = [0, 2, 4] → (0 + 4 + 12) / (users · k = 6) / n = 16/30
    assert M.gini_index(counts[2]) == pytest.approx(16 / 30)
    # @1: one item takes every slot: [0, 0, 0, 0, 3] → 4·3 / (5·3) = 0.8 = 1 - 1/n
    assert M.gini_index(counts[1]) == pytest.approx(0.8)
    # every item equally often → 0; nothing listed → 0
    assert M.gini_index(torch.ones(5, dtype=torch.long)) == 0.0
    assert M.gini_index(torch.zeros(5, dtype=torch.long)) == 0.0


def test_from_counts() -> None:
    out = M.from_counts(counts_of(LISTS, [1, 2], 5), POP)
    assert list(out) == ["coverage@1", "avgpop@1", "gini@1", "coverage@2", "avgpop@2", "gini@2"]
    assert out["gini@2"] == pytest.approx(16 / 30) and out["avgpop@2"] == pytest.approx(6.5)
    with pytest.raises(ValueError, match="unknown metric"):
        M.from_counts(counts_of(LISTS, [1], 5), POP, names=("ndcg",))


# --------------------------------------------------------------------------- through evaluate()
NEW = ("precision", "map", "coverage", "avgpop", "gini")


def test_evaluate_full_new_metrics_by_hand(tiny: Split) -> None:  # noqa: F811
    # tiny split (tests/test_evaluator.py), test part, target mask, 12 items:
    #   user 0: mask {0} + valid {1} → top-6 [3, 2, 4, 5, 6, 7], positive 2 at position 1
    #   user 1: mask {4, 5} + valid {6} → [7, 8, 9, 10, 11, 3], positive 7 at position 0
    #   user 2: mask {10} → [0, 11, 9, 8, 7, 6], positive 11 at position 1
    # training buys (popularity 1 each): items 0, 3, 4, 5, 10; every other item 0
    assert popularity(tiny).tolist() == [1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 0]
    res = evaluate(fixed(tiny), tiny, "test", protocols=("full",), ks=KS, metrics=NEW)
    got = res["metrics"]["full"]
    expected = {
        # one positive each: precision@k = hits / k, map@k = 1 / (position + 1) when listed
        "precision@1": (0 + 1 + 0) / 3, "precision@3": 1 / 3, "precision@6": 1 / 6,
        "map@1": (0 + 1 + 0) / 3, "map@3": (0.5 + 1 + 0.5) / 3, "map@6": (0.5 + 1 + 0.5) / 3,
        # @1: lists {3}, {7}, {0}: 3 of 12 items; popularity (1 + 0 + 1) / 3;
        #     Gini: counts ascending [0 × 9, 1, 1, 1], (2j - 13) for j = 10..12 = 7, 9, 11
        #     → 27 / (12 · 3) = 0.75
        "coverage@1": 3 / 12, "avgpop@1": 2 / 3, "gini@1": 27 / 36,
        # @3: [3, 2, 4], [7, 8, 9], [0, 11, 9]: item 9 twice, 8 distinct items (sum 9);
        #     popularity: items 3, 4, 0 → 3 / 9;
        #     Gini: [0 × 4, 1 × 7, 2]: j = 5..11 → -3 - 1 + 1 + 3 + 5 + 7 + 9 = 21, j = 12 → 11 · 2
        #     → 43 / (12 · 9)
        "coverage@3": 8 / 12, "avgpop@3": 3 / 9, "gini@3": 43 / 108,
        # @6: counts [1, 0, 1, 2, 1, 1, 2, 3, 2, 2, 1, 2] (sum 18), only item 1 never listed;
        #     popularity: 1·1 (0) + 2·1 (3) + 1 (4) + 1 (5) + 1 (10) = 6 → 6 / 18;
        #     Gini: [0, 1 × 5, 2 × 5, 3]: j = 2..6 → -9 - 7 - 5 - 3 - 1 = -25,
        #     j = 7..11 → 2 · (1 + 3 + 5 + 7 + 9) = 50, j = 12 → 11 · 3 = 33 → 58 / (12 · 18)
        "coverage@6": 11 / 12, "avgpop@6": 6 / 18, "gini@6": 58 / 216,
    }  # fmt: skip
    for key, val in expected.items():
        assert got[key] == pytest.approx(val, abs=1e-12), key
    # the standard figures are unchanged and come first at each k; keys are ordered by k
    plain = evaluate(fixed(tiny), tiny, "test", protocols=("full",), ks=KS)["metrics"]["full"]
    assert {k: got[k] for k in plain} == plain
    names = [*M.DEFAULT_METRICS, *NEW]
    assert list(got) == [f"{n}@{k}" for k in KS for n in names]


def test_evaluate_default_keys_unchanged(tiny: Split) -> None:  # noqa: F811
    res = evaluate(fixed(tiny), tiny, "valid", ks=KS)
    for proto in ("full", "sampled"):
        assert list(res["metrics"][proto]) == [f"{n}@{k}" for k in KS for n in M.DEFAULT_METRICS]
    # asking for a standard name changes nothing
    again = evaluate(fixed(tiny), tiny, "valid", ks=KS, metrics=("ndcg", "hr"))
    assert json.dumps(again) == json.dumps(res)


def test_sampled_gets_per_user_metrics_but_no_list_metrics(tiny: Split) -> None:  # noqa: F811
    res = evaluate(fixed(tiny), tiny, "test", ks=KS, metrics=NEW)
    s = res["metrics"]["sampled"]
    assert not any(k.startswith(("coverage", "avgpop", "gini")) for k in s)
    for k in KS:
        # one positive per pair: precision@k = hr@k / k, map@k = mrr@k
        assert s[f"precision@{k}"] == pytest.approx(s[f"hr@{k}"] / k, abs=1e-12)
        assert s[f"map@{k}"] == pytest.approx(s[f"mrr@{k}"], abs=1e-12)
    assert any(n.startswith("sampled: coverage, avgpop, gini not computed") for n in res["notes"])
    assert "coverage@1" in res["metrics"]["full"]


def test_masked_items_filling_a_list_are_not_counted(tiny: Split) -> None:  # noqa: F811
    # 12 items; at test time user 0 masks {0, 1}, user 1 {4, 5, 6}, user 2 {10}: their top-12
    # lists end with those masked items (-inf), which are not counted: 10 + 9 + 11 = 30 slots
    res = evaluate(fixed(tiny), tiny, "test", protocols=("full",), ks=(12,), metrics=("gini",))
    assert "gini@12" in res["metrics"]["full"]
    # every listed item is unmasked; with all 12 items the counts are per item the number of
    # users not masking it: item 0 → 2 (user 0 masks it), 1 → 2, 4, 5, 6 → 2, 10 → 2, else 3
    counts = np.array([2, 2, 3, 3, 2, 2, 2, 3, 3, 3, 2, 3])
    assert counts.sum() == 30
    c = np.sort(counts)
    j = np.arange(1, 13)
    assert res["metrics"]["full"]["gini@12"] == pytest.approx(
        ((2 * j - 13) * c).sum() / (12 * 30), abs=1e-12
    )


def test_evaluate_retrieval_new_metrics() -> None:
    # tests/test_retrieval.py's hand split: 6 items, training popularity [1, 1, 1, 1, 0, 0]
    #   user 3: list [0, 1, 2, 3, 4, 5], targets {1, 4}
    #   user 4: list [0, 5, {1, 4} (tied), ...], targets {5, 2}
    split = hand_split()
    model = Fixed(TrainData(split.train))
    res = evaluate(model, split, "valid", protocols=("retrieval",), ks=(1, 2, 8), metrics=NEW)
    m = res["metrics"]["retrieval"]
    # @2: user 3 [0, 1] hits 1 at position 1, user 4 [0, 5] hits 5 at position 1:
    #     precision 1/2 each; AP = precision@2 / min(2, 2) = 1/4 each
    assert m["precision@2"] == pytest.approx(0.5) and m["map@2"] == pytest.approx(0.25)
    # @1: both list item 0 → coverage 1/6, popularity 1, Gini [0 × 5, 2] → 5 · 2 / (6 · 2)
    assert m["coverage@1"] == pytest.approx(1 / 6)
    assert m["avgpop@1"] == pytest.approx(1.0)
    assert m["gini@1"] == pytest.approx(10 / 12)
    # @2: counts {0: 2, 1: 1, 5: 1}: coverage 3/6; popularity (2 + 1 + 0) / 4;
    #     Gini [0, 0, 0, 1, 1, 2]: j = 4, 5, 6 → 1 + 3 + 5 · 2 = 14 → 14 / (6 · 4)
    assert m["coverage@2"] == pytest.approx(0.5)
    assert m["avgpop@2"] == pytest.approx(0.75)
    assert m["gini@2"] == pytest.approx(14 / 24)
    # @8 > 6 items: the lists are padded with -1, not counted: every item twice
    assert m["coverage@8"] == 1.0 and m["gini@8"] == 0.0
    assert m["avgpop@8"] == pytest.approx(8 / 12)
    assert m["precision@8"] == pytest.approx(2 / 8)  # 2 hits each, denominator k
    # mrr only when asked (retrieval's standard set is hr, recall, ndcg)
    assert "mrr@2" not in m
    with_mrr = evaluate(model, split, "valid", protocols=("retrieval",), ks=(2,), metrics=["mrr"])
    assert with_mrr["metrics"]["retrieval"]["mrr@2"] == pytest.approx(0.5)


def test_unknown_metric_is_a_config_error(tiny: Split) -> None:  # noqa: F811
    with pytest.raises(ConfigError, match="unknown metric"):
        evaluate(fixed(tiny), tiny, "test", metrics=("auc",))


# --------------------------------------------------------------------------- config, trainer, CLI
def test_config_metrics_and_train_metric() -> None:
    assert load_config().eval.metrics == []
    cfg = load_config(overrides=['eval.metrics=["precision", "gini"]'])
    assert cfg.eval.metrics == ["precision", "gini"]
    with pytest.raises(ConfigError):
        load_config(overrides=['eval.metrics=["auc"]'])
    assert parse_metric("precision@10") == ("precision", 10)
    assert parse_metric("map@5") == ("map", 5)
    with pytest.raises(ConfigError, match="precision, map"):
        parse_metric("coverage@10")


def test_train_selects_on_map_and_reports_new_metrics(tmp_path, dataset_dir) -> None:
    fast = ["train.batch_size=256", "eval.ks=[10]", "data.n_negatives=20", "params.dim=16"]
    res = polyrec.train(
        "mf",
        dataset_dir,
        overrides=[*fast, "train.epochs=2", "train.metric=map@10", 'eval.metrics=["map", "gini"]'],
        out=tmp_path / "run",
    )
    assert "map@10" in res["history"][0]["valid"]
    assert res["best_valid"] == max(h["valid"]["map@10"] for h in res["history"])
    full, sampled = res["test"]["metrics"]["full"], res["test"]["metrics"]["sampled"]
    assert {"map@10", "gini@10"} <= set(full) and "precision@10" not in full
    assert "map@10" in sampled and "gini@10" not in sampled
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["metrics"]["full"]["gini@10"] == full["gini@10"]
    # the CLI table: new rows with their labels; "-" where sampled 1+N computes no figure
    from polyrec.cli import _metrics_table

    table = _metrics_table("t", res)
    rows = list(table.columns[0].cells)
    assert rows == ["HR@10", "Recall@10", "NDCG@10", "MRR@10", "MAP@10", "Gini@10"]
    sampled_test = next(c for c in table.columns if c.header == "test\n1+20")
    assert list(sampled_test.cells)[-1] == "-"
