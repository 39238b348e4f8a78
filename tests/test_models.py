"""Per-model behaviour beyond the shared contract (``test_contract.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_contract import LONELY_ITEM, N_ITEMS, synthetic_log
from polyrec.data.log import IdMap, InteractionLog
from polyrec.errors import ConfigError
from polyrec.models import (
    MF,
    REGISTRY,
    LightGCN,
    Pop,
    TrainData,
    build_model,
    get_model_class,
    list_models,
)


@pytest.fixture
def data() -> TrainData:
    return TrainData(synthetic_log())


def epoch_pairs(model_name: str, behaviors: str, data: TrainData) -> int:
    model = build_model(model_name, {"dim": 8, "behaviors": behaviors}, data)
    gen = torch.Generator().manual_seed(0)
    return sum(len(b.user) for b in model.batches(data, 50, gen))


# ---------------------------------------------------------------------- registry
def test_registry_names_aliases_and_listing() -> None:
    assert set(REGISTRY) >= {"pop", "mf", "lightgcn"}
    assert all(name == name.lower() for name in REGISTRY)
    assert get_model_class("bpr") is MF and get_model_class("MF-BPR") is MF
    assert get_model_class("LightGCN") is LightGCN
    listed = list_models()
    assert [d["name"] for d in listed] == list(REGISTRY)
    for d in listed:
        assert set(d) == {"name", "paper", "kind", "description"}
        assert d["description"] and "\n" not in d["description"]


def test_unknown_model_is_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'nope'; available: pop, mf, lightgcn"):
        get_model_class("nope")


def test_bad_value_is_one_line_config_error(data: TrainData) -> None:
    with pytest.raises(ConfigError) as err:
        build_model("lightgcn", {"dim": "wide"}, data)
    msg = str(err.value)
    assert msg.startswith("model.dim: Input should be a valid integer")
    assert "\n" not in msg
    with pytest.raises(ConfigError, match=r"model.behaviors: Input should be 'target' or 'all'"):
        build_model("mf", {"behaviors": "some"}, data)
    with pytest.raises(ConfigError, match=r"model.dimm: unknown key for model 'mf'"):
        build_model("mf", {"dimm": 3}, data)


# ---------------------------------------------------------------------- POP
def test_pop_counts_distinct_users(data: TrainData) -> None:
    log = data.log
    model = build_model("pop", {}, data)
    assert isinstance(model, Pop)
    buy = log.behavior == log.target_code
    expected = np.zeros(N_ITEMS)
    for item in range(N_ITEMS):
        expected[item] = len(set(log.user[buy & (log.item == item)].tolist()))
    np.testing.assert_array_equal(model.popularity.numpy(), expected)
    scores = model.scores(torch.tensor([0, 3]))
    order = torch.argsort(scores[0], descending=True, stable=True)
    expected_order = np.argsort(-expected, kind="stable")
    np.testing.assert_array_equal(order.numpy(), expected_order)
    assert scores[0, LONELY_ITEM] == 0
    assert "popularity" in model.state_dict()


def test_pop_all_behaviors_counts_any_interaction(data: TrainData) -> None:
    target = build_model("pop", {}, data)
    merged = build_model("pop", {"behaviors": "all"}, data)
    assert isinstance(target, Pop) and isinstance(merged, Pop)
    assert torch.all(merged.popularity >= target.popularity)
    assert merged.popularity.sum() > target.popularity.sum()
    assert merged.popularity.sum() == data.csr(None).nnz


def test_pop_counts_a_repeated_pair_once() -> None:
    log = InteractionLog(
        user=np.array([0, 0, 1]),
        item=np.array([1, 1, 1]),
        behavior=np.zeros(3, dtype=np.int8),
        behaviors=("buy",),
        target="buy",
        user_map=IdMap.range(2),
        item_map=IdMap.range(2),
        timestamp=np.array([1.0, 2.0, 3.0]),
    )
    model = build_model("pop", {}, TrainData(log))
    assert isinstance(model, Pop)
    assert model.popularity.tolist() == [0.0, 2.0]


# ---------------------------------------------------------------------- MF / LightGCN
@pytest.mark.parametrize("name", ["mf", "lightgcn"])
def test_all_behaviors_train_on_more_pairs(name: str, data: TrainData) -> None:
    n_target = epoch_pairs(name, "target", data)
    n_all = epoch_pairs(name, "all", data)
    assert n_target == data.csr("buy").nnz
    assert n_all == data.csr(None).nnz
    assert n_all > n_target


def test_lightgcn_graph_follows_behaviors(data: TrainData) -> None:
    target = build_model("lightgcn", {"dim": 8}, data)
    merged = build_model("lightgcn", {"dim": 8, "behaviors": "all"}, data)
    assert isinstance(target, LightGCN) and isinstance(merged, LightGCN)
    assert target.adj._nnz() == 2 * data.csr("buy").nnz
    assert merged.adj._nnz() == 2 * data.csr(None).nnz


def test_mf_init_std() -> None:
    data = TrainData(synthetic_log())
    torch.manual_seed(0)
    model = build_model("mf", {"dim": 64}, data)
    assert isinstance(model, MF)
    assert model.user_emb.weight.std().item() == pytest.approx(0.1, rel=0.1)


def tiny_log() -> InteractionLog:
    # 3 users × 4 items; user 2 and item 3 without interactions
    return InteractionLog(
        user=np.array([0, 0, 1, 1]),
        item=np.array([0, 1, 1, 2]),
        behavior=np.zeros(4, dtype=np.int8),
        behaviors=("buy",),
        target="buy",
        user_map=IdMap.range(3),
        item_map=IdMap.range(4),
    )


def test_lightgcn_propagation_matches_dense_reference() -> None:
    data = TrainData(tiny_log())
    torch.manual_seed(0)
    model = build_model("lightgcn", {"dim": 5, "n_layers": 3}, data)
    assert isinstance(model, LightGCN)
    r = data.csr("buy").toarray().astype(np.float64)
    a = np.zeros((7, 7))
    a[:3, 3:], a[3:, :3] = r, r.T
    deg = a.sum(1)
    d = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1)), 0.0)
    a_hat = d[:, None] * a * d[None, :]  # D^-1/2 A D^-1/2 (Eq. 7)
    e0 = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach().double().numpy()
    layers = [e0]
    for _ in range(3):
        layers.append(a_hat @ layers[-1])  # E^(k+1) = Â E^(k)
    final = sum(layers) / 4  # α_k = 1/(K+1)
    users, items = model.propagate()
    np.testing.assert_allclose(users.detach().numpy(), final[:3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(items.detach().numpy(), final[3:], rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        s = model.scores(torch.arange(3))
    np.testing.assert_allclose(s.numpy(), final[:3] @ final[3:].T, rtol=1e-5, atol=1e-6)


def test_lightgcn_propagation_modes_agree(data: TrainData) -> None:
    model = build_model("lightgcn", {"dim": 8}, data)
    assert isinstance(model, LightGCN)
    batch = next(iter(model.batches(data, 32, torch.Generator().manual_seed(0))))
    results = []
    for mode in ("fused", "layerwise", "autograd"):
        model.propagation = mode  # type: ignore[assignment]
        model.zero_grad()
        terms = model.loss(batch)
        sum(terms.values()).backward()  # type: ignore[union-attr]
        grads = (model.user_emb.weight.grad.clone(), model.item_emb.weight.grad.clone())  # type: ignore[union-attr]
        results.append((terms["bpr"].detach(), *grads))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            torch.testing.assert_close(a, b)


def test_lightgcn_state_holds_only_embeddings(data: TrainData) -> None:
    model = build_model("lightgcn", {"dim": 8}, data)
    assert set(model.state_dict()) == {"user_emb.weight", "item_emb.weight"}
    assert isinstance(model, LightGCN)
    assert model.adj.layout == torch.sparse_csr
    assert model._ddp_params_and_buffers_to_ignore == ["adj"]
    double = model.double()
    assert double.adj.dtype == torch.float64
    with torch.no_grad():
        assert double.scores(torch.tensor([0])).dtype == torch.float64


def test_lightgcn_zero_layers_is_mf(data: TrainData) -> None:
    torch.manual_seed(0)
    lg = build_model("lightgcn", {"dim": 8, "n_layers": 0}, data)
    mf = build_model("mf", {"dim": 8}, data)
    mf.load_state_dict(lg.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(lg.scores(torch.arange(5)), mf.scores(torch.arange(5)))  # type: ignore[operator]


def test_lightgcn_scores_without_cache_after_load(data: TrainData) -> None:
    a = build_model("lightgcn", {"dim": 8}, data)
    torch.manual_seed(1)
    b = build_model("lightgcn", {"dim": 8}, data)
    assert isinstance(a, LightGCN) and isinstance(b, LightGCN)
    with torch.no_grad():
        a.prepare_scoring()
        a.load_state_dict(b.state_dict())
        torch.testing.assert_close(a.scores(torch.arange(4)), b.scores(torch.arange(4)))


def test_lightgcn_with_empty_target_graph_is_finite() -> None:
    # every row is a view: the target graph has no edge at all (every degree is zero)
    log = InteractionLog(
        user=np.array([0, 1]),
        item=np.array([1, 2]),
        behavior=np.zeros(2, dtype=np.int8),
        behaviors=("view", "buy"),
        target="buy",
        user_map=IdMap.range(2),
        item_map=IdMap.range(3),
    )
    data = TrainData(log)
    model = build_model("lightgcn", {"dim": 4}, data)
    assert isinstance(model, LightGCN)
    assert model.adj._nnz() == 0
    assert list(model.batches(data, 8, torch.Generator().manual_seed(0))) == []
    with torch.no_grad():
        users, items = model.propagate()
    assert torch.isfinite(users).all() and torch.isfinite(items).all()
    # only layer 0 survives: E = E⁽⁰⁾ / (K + 1)
    torch.testing.assert_close(users, model.user_emb.weight.detach() / 4)
