"""Small test doubles for the evaluator and export tests: models with nothing to train."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from polyrec.data.views import DataSchema, TrainData


class NothingToTrain:
    """Mixin: no parameters of its own, an empty epoch, no loss (scoring is the test's)."""

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        """Nothing to create (subclasses that hold a table register it here)."""

    def batches(self, data: TrainData, batch_size: int, g: torch.Generator) -> Iterator[Any]:
        return iter(())

    def loss(self, batch: Any) -> dict[str, Tensor]:
        return {}
