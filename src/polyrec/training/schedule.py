"""Learning-rate schedules the trainer applies per optimisation step (pure functions).

The schedule is a function of the global step only, so a resumed run continues it exactly
(the step count is part of the checkpoint state); nothing else needs saving.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def cyclic_factor(step: int, base: float, peak: float, up: int, down: int) -> float:
    """Triangular cyclical learning rate (Smith, WACV 2017; torch's ``CyclicLR`` "triangular"
    mode) at optimisation step ``step`` (0-based), as a factor of ``base``: the rate rises
    linearly from ``base`` to ``peak`` over ``up`` steps, falls back over ``down`` steps, and
    repeats."""
    if base <= 0 or peak < base or up < 1 or down < 1:
        raise ValueError(
            f"cyclic schedule needs 0 < base <= peak and up, down >= 1 (got {base}, {peak}, {up}, {down})"
        )
    t = step % (up + down)
    frac = t / up if t < up else 1.0 - (t - up) / down
    return (base + (peak - base) * frac) / base


def scale_lr(optimisers: Sequence[torch.optim.Optimizer], factor: float) -> None:
    """Set every parameter group's lr to ``factor`` × its initial lr (kept as ``initial_lr``)."""
    for opt in optimisers:
        for group in opt.param_groups:
            group.setdefault("initial_lr", group["lr"])
            group["lr"] = group["initial_lr"] * factor


__all__ = ["cyclic_factor", "scale_lr"]
