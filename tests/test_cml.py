"""CML: per-row InfoNCE, the meta weight network, the meta step, ablation switches, training.

The model contract (tests/test_contract.py) covers CML through the registry.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import polyrec
from model_contract import synthetic_log
from polyrec import losses
from polyrec.data.views import BehaviorBatch
from polyrec.models import TrainData, build_model
from polyrec.models.cml import CML

FAST = ["train.batch_size=64", "eval.ks=[10]", "data.n_negatives=20"]


def make(params: dict[str, Any] | None = None, seed: int = 0) -> tuple[CML, TrainData]:
    data = TrainData(synthetic_log())
    torch.manual_seed(seed)
    model = build_model("cml", {"dim": 8, "n_layers": 2, **(params or {})}, data)
    assert isinstance(model, CML)
    return model, data


def first_batch(model: CML, data: TrainData, batch_size: int = 64) -> BehaviorBatch:
    return next(iter(model.batches(data, batch_size, torch.Generator().manual_seed(0))))


# ---------------------------------------------------------------------- InfoNCE (Eq. 3)
def test_info_nce_rows_hand_computed() -> None:
    anchor = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    positive = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # cosine, τ = 0.5: row 0 logits [2, 0]; row 1 logits [√2, √2] (normalised anchor)
    rows = losses.info_nce_rows(anchor, positive, 0.5)
    expected = torch.tensor([math.log(math.exp(2.0) + 1.0) - 2.0, math.log(2.0)])
    torch.testing.assert_close(rows, expected)
    # inner product, τ = 0.5: row 0 logits [2, 0]; row 1 logits [2, 2]
    dot = losses.info_nce_rows(anchor, positive, 0.5, similarity="dot")
    torch.testing.assert_close(dot, expected)
    # its mean is the batch InfoNCE
    torch.testing.assert_close(rows.mean(), losses.info_nce(anchor, positive, 0.5))


def test_info_nce_rows_rejects_bad_input() -> None:
    x = torch.ones(3, 2)
    with pytest.raises(ValueError, match="temperature"):
        losses.info_nce_rows(x, x, 0.0)
    with pytest.raises(ValueError, match="equal shape"):
        losses.info_nce_rows(x, torch.ones(2, 2), 1.0)
    with pytest.raises(ValueError, match="similarity"):
        losses.info_nce_rows(x, x, 1.0, similarity="l2")


# ---------------------------------------------------------------------- encoder / batches
def test_graph_buffers_are_not_saved_and_batches_are_consistent() -> None:
    model, data = make()
    assert not any(k.startswith("adj_") for k in model.state_dict())
    n_beh = len(model.behaviors)
    for s in (1, 3):
        model.config.pairs_per_user = s
        batch = first_batch(model, data)
        b = len(batch.user)
        assert batch.pos.shape == batch.neg.shape == (n_beh, b, s)
        assert batch.valid.shape == (n_beh, b)
        for k, beh in enumerate(model.behaviors):
            ok = batch.valid[k]
            pos_set, u = data.pair_set(beh), batch.user[ok][:, None].expand(-1, s)
            assert pos_set.contains_t(u, batch.pos[k][ok]).all()  # positives are real pairs
            uu = batch.user[:, None].expand(-1, s)
            assert not pos_set.contains_t(uu, batch.neg[k]).any()  # negatives are not
        # the target row's first positive is the batch's own target pair
        assert (
            data.pair_set(model.target)
            .contains_t(batch.user, batch.pos[model.target_index, :, 0])
            .all()
        )
    model.config.pairs_per_user = 1
    assert len(batch.meta_user) == model.config.meta_batch_size or len(batch.meta_user) > 0
    users, items, beh_users = model._encode(model._theta())
    assert users.shape == (model.n_users, 8) and items.shape == (model.n_items, 8)
    assert len(beh_users) == n_beh and all(b.shape == users.shape for b in beh_users)


# ---------------------------------------------------------------------- meta weight network
def test_weight_network_shapes_and_gradients_after_meta_step() -> None:
    model, data = make({"meta_dropout": 0.0})
    batch = first_batch(model, data)
    users, items, beh_users = model._encode(model._theta())
    terms = model._terms(users, items, beh_users, batch)
    names = {t.name for t in terms}
    assert names == {"bpr_view", "bpr_cart", "bpr_buy", "cl_view", "cl_cart"}
    weights = model._weights(terms, dropout=False)
    for t, w in zip(terms, weights, strict=True):
        assert w is not None and w.shape == t.rows.shape and torch.isfinite(w).all()
    n_unique = len(torch.unique(batch.user))
    assert all(len(t.rows) == n_unique for t in terms if t.family == "cl")

    opts = model.make_optimisers(0.01, 0.0, "adam")
    assert len(opts) == 2
    before = [p.detach().clone() for p in model._phi()]
    stats = model.train_step(batch, opts)
    assert {"loss", "meta_bpr", "reg", *names} <= set(stats)
    for net in (model.meta_cl, model.meta_bpr):
        grads = [p.grad for p in net.parameters()]
        assert all(g is not None for g in grads)
        assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)
    assert any(not torch.equal(b, p) for b, p in zip(before, model._phi(), strict=True))


def _meta_grads(order: str) -> list[torch.Tensor]:
    model, data = make({"meta_dropout": 0.0, "meta_order": order})
    opts = model.make_optimisers(0.01, 0.0, "sgd")
    model.train_step(first_batch(model, data), opts)
    return [p.grad.detach().clone() for p in model._phi() if p.grad is not None]


def test_first_order_meta_gradient_matches_second_order() -> None:
    exact = torch.cat([g.flatten() for g in _meta_grads("second")])
    approx = torch.cat([g.flatten() for g in _meta_grads("first")])
    assert float(exact.norm()) > 0
    assert float(F.cosine_similarity(exact, approx, dim=0)) > 0.99
    torch.testing.assert_close(approx.norm(), exact.norm(), rtol=0.05, atol=0.0)


# ---------------------------------------------------------------------- ablations (Table 3)
def test_without_contrastive_learning_drops_the_cl_terms() -> None:
    model, data = make({"contrastive": False})
    terms = model.loss(first_batch(model, data))
    assert set(terms) == {"bpr_view", "bpr_cart", "bpr_buy", "reg"}


def test_without_auxiliary_bpr_keeps_target_bpr_only() -> None:
    model, data = make({"aux_bpr": False})
    terms = model.loss(first_batch(model, data))
    assert set(terms) == {"bpr_buy", "cl_view", "cl_cart", "reg"}


def test_without_meta_network_uses_unit_weights_and_a_plain_step() -> None:
    model, data = make({"meta_network": False})
    batch = first_batch(model, data)
    opts = model.make_optimisers(0.01, 0.0, "adam")
    assert len(opts) == 1
    terms = model.loss(batch)
    # weight 1: bpr_buy is the plain BPR of the batch's target triples
    users, items, _ = model._encode(model._theta())
    eu = users[batch.user]
    k = model.target_index
    pos, neg = batch.pos[k][:, 0], batch.neg[k][:, 0]
    plain = losses.bpr((eu * items[pos]).sum(-1), (eu * items[neg]).sum(-1))
    torch.testing.assert_close(terms["bpr_buy"], plain)
    stats = model.train_step(batch, opts)
    assert "meta_bpr" not in stats


def test_without_meta_knowledge_trains_shared_gates() -> None:
    model, data = make({"meta_knowledge": False, "meta_dropout": 0.0})
    batch = first_batch(model, data)
    opts = model.make_optimisers(0.01, 0.0, "adam")
    assert model._phi() == [model.gates]
    terms = model.loss(batch)
    # gates start at 0: every weight is 2σ(0) = 1, shared by all users
    users, items, beh_users = model._encode(model._theta())
    for w in model._weights(model._terms(users, items, beh_users, batch), dropout=False):
        assert w is not None
        torch.testing.assert_close(w, torch.ones_like(w))
    assert set(terms) >= {"cl_view", "cl_cart"}
    model.train_step(batch, opts)
    assert model.gates.grad is not None and float(model.gates.grad.abs().sum()) > 0
    assert all(p.grad is None for p in model.meta_cl.parameters())


# ---------------------------------------------------------------------- training run
def test_short_training_run_beats_pop_on_validation(tmp_path, dataset_dir) -> None:
    pop = polyrec.train("pop", dataset_dir, overrides=FAST, out=tmp_path / "pop")
    cml = polyrec.train(
        "cml",
        dataset_dir,
        overrides=[
            *FAST,
            "train.epochs=8",
            "train.lr=0.05",
            "train.patience=8",
            "params.dim=16",
            "params.meta_batch_size=64",
            "params.pairs_per_user=4",
        ],
        out=tmp_path / "cml",
    )
    key = "ndcg@10"
    assert cml["valid"]["metrics"]["full"][key] > pop["valid"]["metrics"]["full"][key]
