"""The contract every registered InterestModel passes (the scorer contract's counterpart).

A test module subclasses :class:`InterestContract` and provides a ``spec`` fixture
(:class:`model_contract.ModelSpec`); ``tests/test_interest_contract.py`` does that for every
registry entry of kind ``"interest"``.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from contract_base import ContractBase, ModelSpec, build, fit
from polyrec.data.log import IdMap, InteractionLog
from polyrec.data.sequences import SequenceSet
from polyrec.models import REGISTRY, InterestModel, Model, TrainData

N_USERS, N_ITEMS, N_GROUPS, SEQ_LEN = 160, 100, 5, 16


def sequence_log(
    seed: int = 0, n_users: int = N_USERS, *, categories: bool = True
) -> InteractionLog:
    """Users with two interests each: a sequence alternates at random between two of five item
    groups (20 items each), timestamps increasing; one behavior ("click"). An item's group is
    its category (``categories=False``: a log without the category column)."""
    rng = np.random.default_rng(seed)
    per = N_ITEMS // N_GROUPS
    users, items = [], []
    for u in range(n_users):
        groups = rng.choice(N_GROUPS, size=2, replace=False)
        g = groups[rng.integers(0, 2, size=SEQ_LEN)]
        users.append(np.full(SEQ_LEN, u))
        items.append(g * per + rng.integers(0, per, size=SEQ_LEN))
    user = np.concatenate(users).astype(np.int64)
    item = np.concatenate(items).astype(np.int64)
    return InteractionLog(
        user=user,
        item=item,
        behavior=np.zeros(len(user), dtype=np.int8),
        behaviors=("click",),
        target="click",
        user_map=IdMap.range(n_users),
        item_map=IdMap.range(N_ITEMS),
        timestamp=np.tile(np.arange(SEQ_LEN, dtype=np.float64), n_users),
        category=item // per if categories else None,
        category_map=IdMap.range(N_GROUPS) if categories else None,
        name="sequences",
    )


def histories(
    data: TrainData, max_len: int, n: int = 12
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded histories, their lengths and their timestamps (for time-aware models)."""
    seqs = SequenceSet.from_log(data.log)
    users = np.arange(n)
    ends = 1 + (users % SEQ_LEN)  # lengths 1 .. 12: some shorter, some longer than max_len
    hist, lengths = seqs.padded(users, max_len, ends)
    return hist, lengths, seqs.padded_times(users, max_len, ends)


def interests_of(
    model: Model, hist: torch.Tensor, lengths: torch.Tensor, times: torch.Tensor
) -> torch.Tensor:
    assert isinstance(model, InterestModel)
    with torch.no_grad():
        return model.interests_at(hist, lengths, times)


class InterestContract(ContractBase):
    """Behaviour every registered InterestModel must show (and :class:`ContractBase`'s). Needs
    a ``spec`` fixture."""

    def outputs(self, model: Model, data: TrainData) -> torch.Tensor:
        return interests_of(model, *histories(data, self.max_len(model)))

    @pytest.fixture
    def data(self) -> TrainData:
        return TrainData(sequence_log())

    @pytest.fixture
    def fitted(self, spec: ModelSpec, data: TrainData) -> Iterator[Model]:
        model = build(spec, data, seed=0)
        fit(model, spec, data, seed=0)
        yield model

    def max_len(self, model: Model) -> int:
        return int(getattr(model.config, "max_len", 8))

    def test_registered_class_and_metadata(self, spec: ModelSpec, data: TrainData) -> None:
        cls = REGISTRY[spec.name]
        assert cls.name == spec.name
        assert cls.kind == "interest" and issubclass(cls, InterestModel)
        assert cls.paper
        assert isinstance(build(spec, data), cls)

    def test_training_reduces_loss(self, spec: ModelSpec, data: TrainData) -> None:
        model = build(spec, data)
        losses = fit(model, spec, data)
        assert all(np.isfinite(losses))
        assert losses[-1] < losses[0]

    def test_interest_and_item_shapes(self, fitted: Model) -> None:
        assert isinstance(fitted, InterestModel)
        hist, lengths, times = histories(TrainData(sequence_log()), self.max_len(fitted))
        v = interests_of(fitted, hist, lengths, times)
        assert v.dim() == 3 and v.shape[0] == len(hist)
        items = fitted.item_embeddings()
        assert items.shape == (N_ITEMS, v.shape[2])
        assert v.dtype == items.dtype == torch.float32
        assert torch.isfinite(v).all() and torch.isfinite(items).all()

    def test_batch_equals_single_rows(self, fitted: Model) -> None:
        hist, lengths, times = histories(TrainData(sequence_log()), self.max_len(fitted))
        batch = interests_of(fitted, hist, lengths, times)
        rows = [slice(b, b + 1) for b in range(len(hist))]
        single = torch.cat([interests_of(fitted, hist[r], lengths[r], times[r]) for r in rows])
        torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-5)

    def test_left_padding_does_not_matter(self, fitted: Model) -> None:
        """A row's interests do not depend on how many padding columns precede it."""
        t = self.max_len(fitted)
        hist, lengths, times = histories(TrainData(sequence_log()), t)
        short = 4
        rows = lengths <= short
        full = interests_of(fitted, hist[rows], lengths[rows], times[rows])
        cut = interests_of(fitted, hist[rows][:, -short:], lengths[rows], times[rows][:, -short:])
        torch.testing.assert_close(full, cut, rtol=1e-4, atol=1e-5)
