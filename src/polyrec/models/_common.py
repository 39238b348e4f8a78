"""Small helpers shared by the embedding models (not part of the public API)."""

from __future__ import annotations

import copy
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor, nn

from polyrec.models.base import TrainData

Behaviors = Literal["target", "all"]
Init = Literal["normal", "xavier"]
M = TypeVar("M", bound=nn.Module)


def train_behavior(data: TrainData, behaviors: Behaviors) -> str | None:
    """The behavior name whose pairs train a model: the log's target, or ``None`` (all merged)."""
    return data.log.target if behaviors == "target" else None


def init_embedding(weight: Tensor, init: Init, std: float) -> None:
    """In-place init: ``normal`` = N(0, std²); ``xavier`` = Xavier/Glorot uniform over the
    ``[n, d]`` table (the TF ``xavier_initializer`` of the official LightGCN/NGCF code)."""
    if init == "normal":
        nn.init.normal_(weight, mean=0.0, std=std)
    elif init == "xavier":
        nn.init.xavier_uniform_(weight)
    else:  # pragma: no cover - guarded by the pydantic Literal
        raise ValueError(f"unknown init {init!r}")


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
