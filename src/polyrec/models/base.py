"""The model contracts (see DESIGN.md).

* :class:`Scorer` – graph and factorisation models: ``loss(batch) -> dict[str, Tensor]`` and
  ``scores(users) -> Tensor[len(users), n_items]``.
* :class:`InterestModel` – sequential / multi-interest models: ``loss(batch)``,
  ``interests(histories) -> Tensor[B, K, d]`` and ``item_embeddings() -> Tensor[n_items, d]``.

A model is built from its config (``Model(config)``), then set up for a training log
(:meth:`Model.setup` with a :class:`~polyrec.data.views.TrainData`) or restored for a dataset
shape (:meth:`Model.restore` with a :class:`~polyrec.data.views.DataSchema`); it never reads
files. Special schedules override :meth:`Model.train_step` only; the other trainer hooks
(:meth:`Model.n_batches`, :meth:`Model.on_epoch_start`, :meth:`Model.on_validation`) are
declared here with defaults.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict
from torch import Tensor, nn

from polyrec.data.views import DataSchema, TrainData
from polyrec.errors import ConfigError, NotFittedError
from polyrec.optim import LAZY_ADAM, LazyAdam, check_lazy_adam, split_sparse


class ModelConfig(BaseModel):
    """Base of every model's config: unknown keys are errors; defaults are the paper's.

    A field is documented by the docstring under it (its JSON-schema description, shown by
    ``polyrec models``), naming the paper section it comes from or saying the paper is silent::

        dim: int = Field(64, ge=1)
        \"\"\"Embedding size d (§4.1.3).\"\"\"
    """

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        # a docstring wrapped over several lines is one description: fold its white space
        folded = False
        for info in cls.model_fields.values():
            if info.description and " ".join(info.description.split()) != info.description:
                info.description = " ".join(info.description.split())
                folded = True
        if folded:
            cls.model_rebuild(force=True)


_OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "adagrad": torch.optim.Adagrad,
}


def make_optimizer(
    params: Any, name: str, lr: float, weight_decay: float = 0.0
) -> torch.optim.Optimizer:
    """An optimiser by name; the fused implementation where torch has one for these tensors.

    Fused Adam on CPU updates a 32k × 64 embedding table about 8× faster than the default
    single-tensor loop (measured here: 10 ms vs 84 ms per step); results agree to float
    rounding.
    """
    if name == LAZY_ADAM:
        raise ValueError(
            "optimizer 'lazy_adam' needs the model's sparse-gradient tables: build it with "
            "Model.make_optimisers (models with supports_lazy_adam)"
        )
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(_OPTIMIZERS)}")
    cls: Any = _OPTIMIZERS[name]
    try:
        return cls(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, TypeError, ValueError):
        # no fused kernel for these tensors or this device: the default implementation
        return cls(params, lr=lr, weight_decay=weight_decay)


class HoldoutEvaluator(Protocol):
    """What the trainer hands a model that evaluates itself during a training phase (MBA's
    pre-training): the mean Recall@``k`` of ``model`` by full ranking over the users of the
    ``held_out`` pairs, with the ``masked`` pairs removed from the ranking. Both are sorted
    ``user * n_items + item`` keys. Models never import ``polyrec.eval`` themselves."""

    def __call__(
        self, model: Scorer, held_out: np.ndarray, masked: np.ndarray, k: int
    ) -> float: ...


# the contract methods that need a set-up model (guarded in every subclass that defines them)
_NEEDS_SETUP = (
    "batches",
    "n_batches",
    "loss",
    "train_step",
    "make_optimisers",
    "scores",
    "history_scores",
    "user_item_embeddings",
    "interests",
    "interests_at",
    "item_embeddings",
    "prepare_scoring",
)


def _guarded(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def call(self: Model, *args: Any, **kwargs: Any) -> Any:
        if self.schema is None:
            raise NotFittedError(
                f"model {self.name!r} is not set up: call model.setup(train_data) (the trainer "
                f"does) or model.restore(schema) before {fn.__name__}()"
            )
        return fn(self, *args, **kwargs)

    call.__polyrec_guarded__ = True  # type: ignore[attr-defined]
    return call


class Model(nn.Module, ABC):
    """Common part of both contracts.

    A model is built from its config alone, ``Model(config)``; :meth:`setup` then creates its
    parameters for a training log (from the global torch RNG, so a seed makes them
    reproducible) and binds the views it trains on. :meth:`restore` builds the same network
    from a :class:`~polyrec.data.views.DataSchema` only, to load saved weights into (export and
    serving; models with :attr:`rebuildable`). Each model implements :meth:`build`.
    """

    name: ClassVar[str]
    paper: ClassVar[str]
    Config: ClassVar[type[ModelConfig]]
    kind: ClassVar[str] = "scorer"
    trainable: ClassVar[bool] = True
    # run settings (dotted keys) this kind of model needs unless the user sets them
    run_defaults: ClassVar[dict[str, Any]] = {}
    # train.optimizer = "lazy_adam" is allowed: the model implements sparse_gradients()
    supports_lazy_adam: ClassVar[bool] = False
    # build() works without training data (restore(schema) + weights gives the trained model)
    rebuildable: ClassVar[bool] = False

    def __init_subclass__(
        cls,
        *,
        name: str | None = None,
        paper: str | None = None,
        Config: type[ModelConfig] | None = None,
        **kwargs: Any,
    ) -> None:
        """A registered model names itself, its paper and its config class in its class
        statement: ``class MF(Scorer, name="mf", paper="Rendle et al., ...", Config=MFConfig)``."""
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.name = name
        if paper is not None:
            cls.paper = paper
        if Config is not None:
            cls.Config = Config
        for attr in _NEEDS_SETUP:  # own methods and those of mixins (not yet guarded)
            fn = getattr(cls, attr, None)
            if callable(fn) and not getattr(fn, "__polyrec_guarded__", False):
                setattr(cls, attr, _guarded(fn))

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = self.Config()
        if not isinstance(config, self.Config):
            raise TypeError(
                f"{type(self).__name__} takes a {self.Config.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.schema: DataSchema | None = None
        self.n_users = 0
        self.n_items = 0

    # ------------------------------------------------------------------ building
    def setup(self, data: TrainData) -> Self:
        """Create the parameters for ``data``'s users, items and behaviors and bind the training
        views (graphs, samplers). Calling it again starts afresh (new parameters)."""
        self._build(data.schema, data)
        return self

    def restore(self, schema: DataSchema) -> Self:
        """The network for a dataset of this shape, without its data, ready for
        ``load_state_dict`` (export / serving). Only :attr:`rebuildable` models."""
        if not self.rebuildable:
            raise ConfigError(
                f"model {self.name!r} cannot be rebuilt without its training data (its scores "
                "need the training graph); export its final embeddings instead"
            )
        self._build(schema, None)
        return self

    def _build(self, schema: DataSchema, data: TrainData | None) -> None:
        self._parameters.clear()
        self._buffers.clear()
        self._non_persistent_buffers_set.clear()
        self._modules.clear()
        self.schema = schema
        self.n_users, self.n_items = schema.n_users, schema.n_items
        self.build(schema, data)
        self.invalidate()

    @abstractmethod
    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        """Create the parameters and persistent buffers for ``schema``; with ``data``, also the
        views built from the training log. ``data`` is None only when a :attr:`rebuildable`
        model is restored for its weights."""

    @property
    def is_setup(self) -> bool:
        return self.schema is not None

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        if self.schema is None:
            raise NotFittedError(
                f"model {self.name!r} is not set up: call model.setup(train_data) or "
                "model.restore(schema) before loading weights"
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    # ------------------------------------------------------------------ training
    @abstractmethod
    def batches(
        self, data: TrainData, batch_size: int, generator: torch.Generator
    ) -> Iterator[Any]:
        """One epoch of training batches (on CPU; the trainer moves them to the device)."""

    def n_batches(self, data: TrainData, batch_size: int) -> int | None:
        """How many batches :meth:`batches` yields this epoch, for progress bars (None: unknown)."""
        return None

    @abstractmethod
    def loss(self, batch: Any) -> dict[str, Tensor]:
        """Named loss terms; the trainer sums them and logs each."""

    def make_optimisers(
        self, lr: float, weight_decay: float, optimizer: str
    ) -> list[torch.optim.Optimizer]:
        """Default: one optimiser over every parameter (override for meta/alternating schedules).

        ``"lazy_adam"`` (models with ``supports_lazy_adam``): :meth:`sparse_gradients` switches
        the embedding tables to sparse gradients and one :class:`~polyrec.optim.LazyAdam`
        updates them lazily (SparseAdam) and any other parameter with Adam.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        if optimizer == LAZY_ADAM:
            check_lazy_adam(self.name, self.supports_lazy_adam, weight_decay)
        else:
            self.sparse_gradients(False)
        if not params:
            return []
        if optimizer == LAZY_ADAM:
            sparse = [p for p in self.sparse_gradients(True) if p.requires_grad]
            return [LazyAdam(sparse, split_sparse(params, sparse), lr=lr)]
        return [make_optimizer(params, optimizer, lr, weight_decay)]

    def sparse_gradients(self, on: bool) -> list[Tensor]:
        """Switch the model's embedding tables to sparse gradients (``on``) or back to dense;
        returns the tables' parameters. Default: none (models with ``supports_lazy_adam``
        override it)."""
        return []

    def train_step(self, batch: Any, optimisers: list[torch.optim.Optimizer]) -> dict[str, float]:
        """One optimisation step (the template method special schedules override)."""
        return self.descend(batch, optimisers)

    def descend(
        self,
        batch: Any,
        optimisers: list[torch.optim.Optimizer],
        after_backward: Callable[[], None] | None = None,
    ) -> dict[str, float]:
        """Zero the gradients, back-propagate the summed :meth:`loss` terms, run
        ``after_backward`` (e.g. gradient surgery), step ``optimisers`` and drop the scoring
        cache; returns every term's value and their sum (``"loss"``). Schedules that override
        :meth:`train_step` call it with the optimisers of their current phase."""
        for opt in optimisers:
            opt.zero_grad(set_to_none=True)
        terms = self.loss(batch)
        total = torch.stack(list(terms.values())).sum()
        total.backward()
        if after_backward is not None:
            after_backward()
        for opt in optimisers:
            opt.step()
        self.invalidate()
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["loss"] = float(total.detach())
        return out

    def on_epoch_start(self, epoch: int) -> None:
        """Hook for per-epoch work (e.g. re-drawing augmented graphs). Default: nothing."""

    def on_validation(self, value: float, evaluate: HoldoutEvaluator | None = None) -> bool:
        """Trainer hook after each validation, with the selection metric's ``value`` and an
        evaluator for the model's own held-out pairs. Returns True to restart the trainer's
        patience (a model in a phase before the one being selected). Default: False."""
        return False

    # ------------------------------------------------------------------ scoring
    def prepare_scoring(self) -> None:
        """Cache whatever scoring needs (e.g. propagated embeddings); called under no_grad."""

    def invalidate(self) -> None:
        """Drop caches made by :meth:`prepare_scoring` (called after every training step)."""


for _attr in _NEEDS_SETUP:
    if _attr in Model.__dict__:
        setattr(Model, _attr, _guarded(Model.__dict__[_attr]))


class Scorer(Model):
    """Graph / factorisation models that score every item for a user."""

    kind: ClassVar[str] = "scorer"

    @abstractmethod
    def scores(self, users: Tensor) -> Tensor:
        """Scores ``[len(users), n_items]`` (higher is better).

        Callers (the evaluator) may write into the returned tensor to mask items, so return a
        fresh tensor, never a cached one.
        """

    def user_item_embeddings(self) -> tuple[Tensor, Tensor] | None:
        """Final user and item embeddings when ``scores`` is their inner product (for export)."""
        return None


class HistoryScoring(ABC):
    """Mixin of the scorers that can also score a user from a history alone (the ComiRec
    retrieval protocol's held-out users have no training row): the closed-form baselines
    (POP, own history, ItemKNN, EASE) in the sequential tables."""

    @abstractmethod
    def history_scores(self, histories: Tensor, lengths: Tensor) -> Tensor:
        """Scores ``[B, n_items]`` (a fresh tensor, higher is better) of users given only their
        histories: left-padded, +1-shifted item ids ``[B, T]`` (0 = padding, the latest item
        last) and their lengths ``[B]``, as :meth:`InterestModel.interests` gets them."""


class InterestModel(Model):
    """Sequential / multi-interest models (rebuildable: a trained network needs its weights
    only, the user's history comes with each request)."""

    kind: ClassVar[str] = "interest"
    rebuildable: ClassVar[bool] = True
    # the ComiRec protocol (KDD 2020 §4.1): 8:1:1 user split, retrieval evaluation at 20 / 50,
    # selection on validation Recall@50, batch 128; a score-all protocol cannot evaluate them
    run_defaults: ClassVar[dict[str, Any]] = {
        "data.protocol": "user-split",
        "data.n_negatives": 0,
        "train.batch_size": 128,
        "train.metric": "recall@50",
        "train.select_protocol": "retrieval",
        "eval.protocols": ["retrieval"],
        "eval.ks": [20, 50],
        "eval.batch_size": 256,
    }

    # time-aware models (TiSASRec) read the history's timestamps: ``interests_at`` gets them
    uses_times: ClassVar[bool] = False

    @abstractmethod
    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        """``[B, K, d]`` interest vectors from padded histories ``[B, T]``."""

    def interests_at(self, histories: Tensor, lengths: Tensor, times: Tensor | None) -> Tensor:
        """:meth:`interests` given also the histories' timestamps ``[B, T]`` (float64, None
        when unknown); only models with ``uses_times`` read them."""
        return self.interests(histories, lengths)

    @abstractmethod
    def item_embeddings(self) -> Tensor:
        """``[n_items, d]``."""
