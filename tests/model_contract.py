"""The contract every registered model passes (a mixin, in the style of ``implicit``'s tests).

A test module applies it by subclassing :class:`ModelContract` and providing a ``spec`` fixture
(a :class:`ModelSpec`: registry name + small settings). ``tests/test_contract.py`` does that
for every entry of ``REGISTRY``; a new model is covered as soon as it is registered (give it
small settings in ``SMALL_PARAMS`` there if its defaults are slow).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from contract_base import ContractBase, ModelSpec, build, fit
from polyrec.data.log import IdMap, InteractionLog
from polyrec.models import REGISTRY, Model, Scorer, TrainData

N_USERS, N_ITEMS, N_GROUPS = 60, 80, 4
LONELY_USER = N_USERS - 1  # no interaction at all
LONELY_ITEM = N_ITEMS - 1  # no interaction at all


def synthetic_log(seed: int = 0) -> InteractionLog:
    """60 users × 80 items, behaviors view/cart/buy (target buy), with learnable structure.

    Users and items fall into 4 groups; a user views 10 items of its own group and 2 at random,
    carts 5 of its in-group views and buys 3 of its carts. The last user and the last item have
    no interaction (zero-degree nodes).
    """
    rng = np.random.default_rng(seed)
    per_user = (N_USERS - 1) // N_GROUPS + 1
    per_item = N_ITEMS // N_GROUPS
    users: list[np.ndarray] = []
    items: list[np.ndarray] = []
    behs: list[np.ndarray] = []
    for u in range(N_USERS - 1):
        g = u // per_user
        pool = np.arange(g * per_item, min((g + 1) * per_item, N_ITEMS - 1))
        own = rng.choice(pool, size=10, replace=False)
        others = np.setdiff1d(np.arange(N_ITEMS - 1), pool)
        view = np.concatenate([own, rng.choice(others, size=2, replace=False)])
        cart = own[:5]
        buy = cart[:3]
        for code, its in enumerate((view, cart, buy)):
            users.append(np.full(len(its), u))
            items.append(its)
            behs.append(np.full(len(its), code))
    return InteractionLog(
        user=np.concatenate(users).astype(np.int64),
        item=np.concatenate(items).astype(np.int64),
        behavior=np.concatenate(behs).astype(np.int8),
        behaviors=("view", "cart", "buy"),
        target="buy",
        user_map=IdMap.range(N_USERS),
        item_map=IdMap.range(N_ITEMS),
        name="synthetic",
    )


def all_users() -> torch.Tensor:
    return torch.arange(N_USERS)


def scores_of(model: Model, users: torch.Tensor, prepare: bool = True) -> torch.Tensor:
    assert isinstance(model, Scorer)
    with torch.no_grad():
        if prepare:
            model.prepare_scoring()
        return model.scores(users)


class ModelContract(ContractBase):
    """Behaviour every registered scorer must show (and :class:`ContractBase`'s). Needs a
    ``spec`` fixture (:class:`ModelSpec`)."""

    def outputs(self, model: Model, data: TrainData) -> torch.Tensor:
        return scores_of(model, all_users())

    @pytest.fixture
    def data(self) -> TrainData:
        return TrainData(synthetic_log())

    @pytest.fixture
    def fitted(self, spec: ModelSpec, data: TrainData) -> Iterator[Model]:
        model = build(spec, data, seed=0)
        fit(model, spec, data, seed=0)
        yield model

    # ------------------------------------------------------------------ identity / config
    def test_registered_class_and_metadata(self, spec: ModelSpec, data: TrainData) -> None:
        model = build(spec, data)
        cls = REGISTRY[spec.name]
        assert type(model) is cls
        assert cls.name == spec.name
        assert cls.paper and cls.__doc__
        assert isinstance(model.config, cls.Config)

    # ------------------------------------------------------------------ training
    def test_training_reduces_loss(self, spec: ModelSpec, data: TrainData) -> None:
        model = build(spec, data)
        if not model.trainable:
            gen = torch.Generator().manual_seed(0)
            assert list(model.batches(data, spec.batch_size, gen)) == []
            with pytest.raises(RuntimeError):
                model.loss(None)
            return
        gen = torch.Generator().manual_seed(0)
        batch = next(iter(model.batches(data, spec.batch_size, gen)))
        terms = model.loss(batch)
        assert terms and all(t.dim() == 0 and torch.isfinite(t) for t in terms.values())
        step = model.train_step(batch, model.make_optimisers(spec.lr, 0.0, spec.optimizer))
        assert "loss" in step and set(terms) <= set(step)
        means = fit(build(spec, data), spec, data)
        assert all(np.isfinite(means))
        assert means[-1] < means[0], f"loss did not decrease: {means}"

    # ------------------------------------------------------------------ scoring
    def test_scores_shape_dtype_finite(self, fitted: Model) -> None:
        users = torch.tensor([0, 7, LONELY_USER, 7])
        s = scores_of(fitted, users)
        assert s.shape == (4, N_ITEMS)
        assert s.dtype == torch.float32
        assert torch.isfinite(s).all()
        assert not s.requires_grad
        torch.testing.assert_close(s[1], s[3])

    def test_scores_are_a_fresh_tensor(self, fitted: Model) -> None:
        users = torch.tensor([1, 2])
        s = scores_of(fitted, users)
        s[:, 0] = -torch.inf  # the evaluator masks seen items in place
        assert torch.isfinite(scores_of(fitted, users)).all()

    def test_batch_scores_equal_single_user_scores(self, fitted: Model) -> None:
        users = all_users()
        batch = scores_of(fitted, users)
        single = torch.cat([scores_of(fitted, users[k : k + 1], prepare=False) for k in users])
        torch.testing.assert_close(batch, single)

    def test_prepare_scoring_matches_unprepared(self, fitted: Model) -> None:
        fitted.invalidate()
        plain = scores_of(fitted, all_users(), prepare=False)
        prepared = scores_of(fitted, all_users(), prepare=True)
        torch.testing.assert_close(plain, prepared, rtol=0, atol=0)
        fitted.invalidate()
        torch.testing.assert_close(scores_of(fitted, all_users(), prepare=False), plain)

    def test_training_step_drops_scoring_cache(self, spec: ModelSpec, data: TrainData) -> None:
        model = build(spec, data)
        if not model.trainable:
            return
        before = scores_of(model, all_users(), prepare=True)
        gen = torch.Generator().manual_seed(0)
        opts = model.make_optimisers(spec.lr, 0.0, spec.optimizer)
        model.train_step(next(iter(model.batches(data, spec.batch_size, gen))), opts)
        after = scores_of(model, all_users(), prepare=False)
        assert not torch.equal(before, after)

    def test_user_item_embeddings_give_scores(self, fitted: Model) -> None:
        assert isinstance(fitted, Scorer)
        emb = fitted.user_item_embeddings()
        if emb is None:
            return
        u, i = emb
        assert u.shape[0] == N_USERS and i.shape[0] == N_ITEMS and u.shape[1] == i.shape[1]
        torch.testing.assert_close(u @ i.T, scores_of(fitted, all_users()))

    def test_to_cpu(self, fitted: Model) -> None:
        expected = scores_of(fitted, all_users())
        moved = fitted.to(torch.device("cpu"))
        assert moved.device.type == "cpu"
        torch.testing.assert_close(scores_of(moved, all_users(), prepare=False), expected)
