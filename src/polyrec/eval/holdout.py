"""The evaluator handed to models that evaluate themselves during a training phase.

:func:`holdout_recall` implements :class:`polyrec.models.base.HoldoutEvaluator`: the trainer
passes it to ``Model.on_validation`` (MBA early-stops its auxiliary pre-training model on held-out
auxiliary pairs with it), so that no model imports ``polyrec.eval``.
"""

from __future__ import annotations

import numpy as np
import torch

from polyrec.eval.metrics import recall
from polyrec.eval.ranking import PairIndex, full_ranking
from polyrec.models.base import Scorer


@torch.no_grad()
def holdout_recall(
    model: Scorer, held_out: np.ndarray, masked: np.ndarray, k: int, batch_users: int = 1024
) -> float:
    """Mean Recall@``k`` of ``model`` by full ranking over the users of the ``held_out`` pairs,
    with the ``masked`` pairs removed from the ranking (both: sorted ``user * n_items + item``
    keys). The caller prepares the model for scoring."""
    if len(held_out) == 0:
        return float("nan")
    device = model.device
    n_users, n_items = model.n_users, model.n_items
    positives = PairIndex(held_out, n_users, n_items, device)
    mask = PairIndex(masked, n_users, n_items, device)
    users = torch.from_numpy(np.unique(held_out // n_items)).to(device)
    total = 0.0
    for start in range(0, len(users), batch_users):
        u = users[start : start + batch_users]
        _, hits, n_pos = full_ranking(model.scores(u), u, mask, positives, k)
        total += float(recall(hits, n_pos, k).sum())
    return total / len(users)


__all__ = ["holdout_recall"]
