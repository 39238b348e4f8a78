"""POP: recommend the most popular items to everyone."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from polyrec.data.views import DataSchema, TrainData
from polyrec.models._common import Behaviors, ClosedForm, train_behavior
from polyrec.models.base import HistoryScoring, ModelConfig, Scorer


class PopConfig(ModelConfig):
    """Settings of :class:`Pop`."""

    behaviors: Behaviors = "target"
    """Which interactions count: 'target' (the target behavior only) or 'all' (every behavior merged).
    Re4 (WWW 2022) §4.1 'Baselines': POP always recommends the most popular items; popularity there
    is counted over the training interactions."""


class Pop(
    ClosedForm,
    HistoryScoring,
    Scorer,
    name="pop",
    paper="Most-popular baseline (as in Re4, WWW 2022, §4.1 Baselines)",
    Config=PopConfig,
):
    """Most-popular baseline (the POP row of Re4, WWW 2022, §4.1; ComiRec, KDD 2020).

    The score of item ``i`` for every user is its popularity: the number of distinct users with
    at least one training interaction with ``i`` (in the target behavior, or in any behavior
    with ``behaviors="all"``). Nothing is learned; the user index is ignored, so any user index
    (also one unseen in training) gets the same ranking.
    """

    rebuildable: ClassVar[bool] = True

    config: PopConfig
    popularity: Tensor

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        if data is None:  # restored: the counts come with the weights
            self.register_buffer("popularity", torch.zeros(self.n_items))
            return
        m = data.csr(train_behavior(schema, config.behaviors))
        counts = np.asarray((m > 0).sum(axis=0)).ravel().astype(np.float32)
        self.register_buffer("popularity", torch.from_numpy(counts))

    def scores(self, users: Tensor) -> Tensor:
        """``[len(users), n_items]``: every row is the popularity vector (a fresh tensor)."""
        return self.popularity.unsqueeze(0).repeat(len(users), 1)

    def history_scores(self, histories: Tensor, lengths: Tensor) -> Tensor:
        """The popularity vector for every history (the history is not read)."""
        return self.popularity.unsqueeze(0).repeat(len(histories), 1)


__all__ = ["Pop", "PopConfig"]
