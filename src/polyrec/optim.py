"""Lazy Adam: sparse embedding rows by :class:`torch.optim.SparseAdam`, the rest by Adam.

``train.optimizer = "lazy_adam"`` (models that declare ``Model.supports_lazy_adam``). The model
switches its embedding tables to sparse gradients (``nn.Embedding(sparse=True)``: a batch's
gradient holds the looked-up rows only) and :class:`LazyAdam` updates, at each step, only those
rows — their moments and their weights — so a step costs O(batch · d) instead of
O(table rows · d). Any dense parameter of the model gets a regular (fused where possible) Adam.

It is not Adam: Adam decays the moments of every row at every step (a row absent from the batch
has a zero gradient, so its first moment shrinks and it keeps moving by its momentum), lazy Adam
leaves absent rows untouched, and the bias correction counts the steps of the table, not of the
row (as :class:`torch.optim.SparseAdam` and TensorFlow's ``LazyAdamOptimizer`` do). Results
differ a little; the gain is a step independent of the table size, which matters for tables of
hundreds of thousands of rows (see ``benchmarks/results/scale-mf-sparse.md``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from polyrec.errors import ConfigError

LAZY_ADAM = "lazy_adam"


class LazyAdam(torch.optim.Optimizer):
    """One optimiser over a model's sparse-gradient tables and its dense parameters.

    ``sparse`` parameters are updated by a :class:`torch.optim.SparseAdam`, ``dense`` ones by a
    :class:`torch.optim.Adam` (fused when torch has a kernel for them); the two share this
    optimiser's ``param_groups`` (one group each: sparse first, then dense, each marked with
    ``"lazy": True/False``) and ``state``, so ``step``, ``zero_grad``, ``state_dict``,
    ``load_state_dict``, step hooks and learning-rate changes (``group["lr"]``) work as with
    any single optimiser. ``sparse_params`` lists the sparse-gradient parameters (the
    distributed gradient averaging keeps their gradients sparse).
    """

    def __init__(
        self,
        sparse: Iterable[Tensor],
        dense: Iterable[Tensor] = (),
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        sparse, dense = list(sparse), list(dense)
        if not sparse and not dense:
            raise ValueError("LazyAdam got no parameters")
        self._parts: list[tuple[torch.optim.Optimizer, int]] = []  # (optimiser, its groups)
        groups: list[dict[str, Any]] = []
        if sparse:
            part: torch.optim.Optimizer = torch.optim.SparseAdam(
                sparse, lr=lr, betas=betas, eps=eps
            )
            part.param_groups[0]["lazy"] = True
            self._parts.append((part, len(part.param_groups)))
            groups += part.param_groups
        if dense:
            try:
                part = torch.optim.Adam(dense, lr=lr, betas=betas, eps=eps, fused=True)
            except (RuntimeError, TypeError, ValueError):
                part = torch.optim.Adam(dense, lr=lr, betas=betas, eps=eps)
            part.param_groups[0]["lazy"] = False
            self._parts.append((part, len(part.param_groups)))
            groups += part.param_groups
        # the base class appends the very group dicts of the parts: one set of hyper-parameters
        super().__init__(groups, {})
        self.sparse_params: tuple[Tensor, ...] = tuple(sparse)
        self._link()

    def _link(self) -> None:
        """Make the parts use this optimiser's groups and state (after init and every load)."""
        at = 0
        for part, n in self._parts:
            part.param_groups = self.param_groups[at : at + n]
            part.state = self.state
            at += n

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for p in self.sparse_params:
            if p.grad is not None and not p.grad.is_sparse:
                raise RuntimeError(
                    "lazy_adam: an embedding table got a dense gradient; the model must look "
                    "its rows up with sparse gradients (nn.Embedding(sparse=True))"
                )
        for part, _ in self._parts:
            part.step()
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = [bool(g.get("lazy")) for g in state_dict.get("param_groups", [])]
        mine = [bool(g.get("lazy")) for g in self.param_groups]
        if saved != mine:
            raise ValueError(
                f"optimiser groups differ (saved lazy flags {saved}, this optimiser's {mine})"
            )
        super().load_state_dict(state_dict)
        self._link()


def check_lazy_adam(
    model_name: str, supported: bool, weight_decay: float, alternatives: Sequence[str] = ()
) -> None:
    """The :class:`~polyrec.errors.ConfigError` for ``train.optimizer = "lazy_adam"`` with a
    model that has no sparse-gradient tables, or with weight decay; nothing otherwise.

    ``alternatives``: the models that do support it, named in the message (the caller knows
    them; this module imports no model, so that ``models`` → ``optim`` stays one-way)."""
    if not supported:
        which = f" (supported: {', '.join(alternatives)})" if alternatives else ""
        raise ConfigError(
            f"train.optimizer='lazy_adam' needs a model whose parameters are embedding tables "
            f"looked up by index (sparse gradients); model {model_name!r} does not support it"
            f"{which}. Use train.optimizer='adam'."
        )
    if weight_decay:
        raise ConfigError(
            f"train.weight_decay={weight_decay} does not combine with train.optimizer="
            "'lazy_adam': decaying every row at every step is the dense update lazy Adam "
            "avoids (torch.optim.SparseAdam has no weight decay). Set train.weight_decay=0 and "
            "regularise through the model's L2 term on the batch rows (MF: params.reg)."
        )


def split_sparse(params: Sequence[Tensor], sparse: Sequence[Tensor]) -> list[Tensor]:
    """``params`` less the ``sparse`` ones (by identity)."""
    ids = {id(p) for p in sparse}
    return [p for p in params if id(p) not in ids]


__all__ = ["LAZY_ADAM", "LazyAdam", "check_lazy_adam", "split_sparse"]
