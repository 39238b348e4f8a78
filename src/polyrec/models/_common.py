"""Small helpers shared by the embedding models (not part of the public API)."""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, Literal, TypeVar

import torch
from pydantic import Field
from torch import Tensor, nn

from polyrec.data.views import BPRBatch, DataSchema, TrainData, bpr_batches
from polyrec.models.base import Scorer

Behaviors = Literal["target", "all"]
Init = Literal["normal", "xavier"]
M = TypeVar("M", bound=nn.Module)


# Config fields several models declare; each model gives its own default and the description
# that names its paper's section.
def dim_field(default: int, description: str) -> Any:
    """An embedding size d (≥ 1)."""
    return Field(default, ge=1, description=description)


def reg_field(default: float, description: str) -> Any:
    """The weight λ (≥ 0) of an L2 penalty."""
    return Field(default, ge=0.0, description=description)


def init_std_field(
    default: float = 0.1, description: str = "Standard deviation of the 'normal' init."
) -> Any:
    """σ (> 0) of the ``normal`` embedding init (:func:`init_embedding`)."""
    return Field(default, gt=0.0, description=description)


def behaviors_field(description: str) -> Any:
    """Which behaviors train a single-behavior model (:data:`Behaviors`; default the target)."""
    return Field("target", description=description)


def train_behavior(schema: DataSchema, behaviors: Behaviors) -> str | None:
    """The behavior name whose pairs train a model: the log's target, or ``None`` (all merged)."""
    return schema.target if behaviors == "target" else None


def init_embedding(weight: Tensor, init: Init, std: float) -> None:
    """In-place init: ``normal`` = N(0, std²); ``xavier`` = Xavier/Glorot uniform over the
    ``[n, d]`` table (the TF ``xavier_initializer`` of the official LightGCN/NGCF code)."""
    if init == "normal":
        nn.init.normal_(weight, mean=0.0, std=std)
    elif init == "xavier":
        nn.init.xavier_uniform_(weight)
    else:  # pragma: no cover - guarded by the pydantic Literal
        raise ValueError(f"unknown init {init!r}")


def embedding_tables(schema: DataSchema, config: Any) -> tuple[nn.Embedding, nn.Embedding]:
    """User and item tables ``[n, config.dim]``, created then initialised
    (:func:`init_embedding` with ``config.init`` / ``config.init_std``) in that order (the order
    the global RNG is drawn in)."""
    users, items = (
        nn.Embedding(schema.n_users, config.dim),
        nn.Embedding(schema.n_items, config.dim),
    )
    init_embedding(users.weight, config.init, config.init_std)
    init_embedding(items.weight, config.init, config.init_std)
    return users, items


def deepcopy_sharing_sparse(module: M, memo: dict[int, Any]) -> M:
    """``copy.deepcopy`` of a module whose sparse buffers are shared, not copied.

    Sparse tensors cannot be deep-copied (no storage); graph buffers are never modified in
    place, so copies may share them. Use as ``def __deepcopy__(self, memo): return
    deepcopy_sharing_sparse(self, memo)``.
    """
    for buf in module.buffers():
        if buf.layout != torch.strided:
            memo[id(buf)] = buf
    new = module.__class__.__new__(module.__class__)
    memo[id(module)] = new
    new.__setstate__(copy.deepcopy(module.__dict__, memo))
    return new


def _drop_cache(module: nn.Module, incompatible_keys: Any) -> None:
    """load_state_dict post-hook: loaded weights make cached propagations stale."""
    if isinstance(module, GraphScorer):
        module.invalidate()


class GraphScorer(Scorer):
    """A scorer whose scores are ``e_u · e_i`` of embeddings propagated over a graph.

    Subclasses implement :meth:`final_embeddings` (differentiable, used by their losses). This
    class caches the propagation for scoring (:meth:`prepare_scoring`), drops the cache after
    every training step, ``load_state_dict`` and ``.to()``, and lets copies share the sparse
    graph buffers (sparse tensors cannot be deep-copied).
    """

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self._final: tuple[Tensor, Tensor] | None = None
        self.register_load_state_dict_post_hook(_drop_cache)

    @abstractmethod
    def final_embeddings(self) -> tuple[Tensor, Tensor]:
        """Final user ``[n_users, d]`` and item ``[n_items, d]`` embeddings."""

    def prepare_scoring(self) -> None:
        with torch.no_grad():
            users, items = self.final_embeddings()
        self._final = (users.detach(), items.detach())

    def invalidate(self) -> None:
        self._final = None

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        # .to(device) / .float(): a cached propagation would be on the old device/dtype
        self.invalidate()
        return super()._apply(fn, recurse)

    def __deepcopy__(self, memo: dict[int, Any]) -> GraphScorer:
        return deepcopy_sharing_sparse(self, memo)

    def user_item_embeddings(self) -> tuple[Tensor, Tensor]:
        if self._final is not None:
            return self._final
        with torch.no_grad():
            users, items = self.final_embeddings()
        return users.detach(), items.detach()

    def scores(self, users: Tensor) -> Tensor:
        """``E_u[users] @ E_iᵀ``; a cheap matmul after :meth:`prepare_scoring`."""
        u_all, i_all = self.user_item_embeddings()
        return u_all[users.to(u_all.device)] @ i_all.T


class BPRScorer(Scorer):
    """A scorer trained on BPR triples (u, i, j) of :attr:`train_behavior` (set by ``build``;
    ``None``: every behavior merged), drawn by :func:`~polyrec.data.views.bpr_batches`."""

    train_behavior: str | None

    def batches(
        self, data: TrainData, batch_size: int, generator: torch.Generator
    ) -> Iterator[BPRBatch]:
        return bpr_batches(data, self.train_behavior, batch_size, generator)
