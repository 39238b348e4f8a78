"""What every registered model shows, scorer or interest model (the base of both contracts).

``model_contract.ModelContract`` (scorers) and ``interest_contract.InterestContract`` (sequential
and multi-interest models) subclass :class:`ContractBase`; each provides a ``data`` fixture, a
``spec`` fixture (:class:`ModelSpec`) and :meth:`ContractBase.outputs` — what the model answers
with (scores of every user, or interests of a batch of histories), compared by the shared tests.
"""

from __future__ import annotations

import copy
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from polyrec.config import RunConfig, load_config, to_toml
from polyrec.data.views import TrainData
from polyrec.errors import ConfigError, NotFittedError
from polyrec.models import REGISTRY, Model, build_model, create_model


@dataclass(frozen=True)
class ModelSpec:
    """How to build and fit a small instance of one registered model."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    lr: float = 0.01
    weight_decay: float = 0.0
    optimizer: str = "adam"
    batch_size: int = 64
    epochs: int = 5


def build(spec: ModelSpec, data: TrainData, seed: int = 0) -> Model:
    torch.manual_seed(seed)
    return build_model(spec.name, spec.params, data)


def fit(model: Model, spec: ModelSpec, data: TrainData, seed: int = 0) -> list[float]:
    """Train ``spec.epochs`` epochs; returns the mean training loss of each epoch."""
    gen = torch.Generator().manual_seed(seed)
    opts = model.make_optimisers(spec.lr, spec.weight_decay, spec.optimizer)
    means = []
    model.train()
    for epoch in range(spec.epochs):
        model.on_epoch_start(epoch)
        losses = [
            model.train_step(b, opts)["loss"] for b in model.batches(data, spec.batch_size, gen)
        ]
        means.append(float(np.mean(losses)) if losses else float("nan"))
    model.eval()
    return means


def save(model: Model, path: Path) -> None:
    state = model.state_dict()
    assert all(t.layout == torch.strided for t in state.values()), "state must be dense"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))


class ContractBase:
    """The tests both contracts share. Needs ``spec`` and ``data`` fixtures."""

    def outputs(self, model: Model, data: TrainData) -> torch.Tensor:
        """What the model answers with, under no_grad (scores or interests)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ config
    def test_config_fields_are_documented(self, spec: ModelSpec) -> None:
        cfg = REGISTRY[spec.name].Config
        for key, f in cfg.model_fields.items():
            assert f.description, f"{spec.name}.{key} has no description (name the paper section)"
        cfg()  # every field has a default (the paper's)

    def test_unknown_config_key_is_config_error(self, spec: ModelSpec, data: TrainData) -> None:
        with pytest.raises(ConfigError, match="no_such_key"):
            build_model(spec.name, {**spec.params, "no_such_key": 1}, data)

    def test_config_round_trips_through_toml(self, spec: ModelSpec, tmp_path: Path) -> None:
        """config → TOML → config gives the same typed config (defaults and the spec's)."""
        for params in ({}, spec.params):
            cfg = RunConfig(model=spec.name, params=params)
            assert type(cfg.params) is REGISTRY[spec.name].Config
            path = tmp_path / "run.toml"
            path.write_text(to_toml(cfg))
            tomllib.loads(path.read_text())  # valid TOML
            again = load_config(path)
            assert again.params == cfg.params and again == cfg
            model = create_model(spec.name, again.params)
            assert model.config is again.params  # typed from the file to the constructor

    # ------------------------------------------------------------------ set-up
    def test_unfitted_model_fails_clearly(self, spec: ModelSpec, data: TrainData) -> None:
        model = create_model(spec.name, spec.params)
        assert not model.is_setup and not list(model.parameters())
        gen = torch.Generator().manual_seed(0)
        with pytest.raises(NotFittedError, match="setup"):
            list(model.batches(data, spec.batch_size, gen))
        with pytest.raises(NotFittedError, match="setup"):
            self.outputs(model, data)
        with pytest.raises(NotFittedError, match="setup"):
            model.load_state_dict({})

    def test_setup_twice_gives_the_same_model(self, spec: ModelSpec, data: TrainData) -> None:
        """``setup`` + fit on one object twice under one seed: the same model both times."""
        model = create_model(spec.name, spec.params)
        runs = []
        for _ in range(2):
            torch.manual_seed(5)
            model.setup(data)
            fit(model, ModelSpec(spec.name, spec.params, lr=spec.lr, epochs=1), data, seed=5)
            runs.append(self.outputs(model, data))
        torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)

    def test_restore_builds_without_data(
        self, spec: ModelSpec, data: TrainData, fitted: Model, tmp_path: Path
    ) -> None:
        """A rebuildable model comes back from config + schema + weights, with no data."""
        cls = REGISTRY[spec.name]
        fresh = create_model(spec.name, fitted.config)
        if not cls.rebuildable:
            with pytest.raises(ConfigError, match="cannot be rebuilt"):
                fresh.restore(data.schema)
            return
        path = tmp_path / "w.safetensors"
        save(fitted, path)
        fresh.restore(data.schema)
        fresh.load_state_dict(load_file(str(path)))
        fresh.eval()
        torch.testing.assert_close(
            self.outputs(fresh, data), self.outputs(fitted, data), rtol=0, atol=0
        )

    # ------------------------------------------------------------------ persistence
    def test_save_load_round_trip(
        self, spec: ModelSpec, data: TrainData, fitted: Model, tmp_path: Path
    ) -> None:
        path = tmp_path / "model.safetensors"
        save(fitted, path)
        fresh = build(spec, data, seed=123)
        fresh.prepare_scoring()  # a stale cache must not survive loading
        fresh.load_state_dict(load_file(str(path)))
        fresh.eval()
        torch.testing.assert_close(
            self.outputs(fresh, data), self.outputs(fitted, data), rtol=0, atol=0
        )

    def test_deepcopy(self, fitted: Model, data: TrainData) -> None:
        expected = self.outputs(fitted, data)
        clone = copy.deepcopy(fitted)
        torch.testing.assert_close(self.outputs(clone, data), expected, rtol=0, atol=0)

    def test_deterministic_under_seed(self, spec: ModelSpec, data: TrainData) -> None:
        runs = []
        for _ in range(2):
            fresh = TrainData(data.log, data.slot)
            model = build(spec, fresh, seed=7)
            fit(model, ModelSpec(spec.name, spec.params, lr=spec.lr, epochs=1), fresh, seed=7)
            runs.append(self.outputs(model, fresh))
        torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
