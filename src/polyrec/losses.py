"""Loss functions as pure functions of tensors (no modules, no state).

Every function returns a scalar tensor (mean over the batch unless documented otherwise) so a
model's ``loss`` can return a dict of named terms that the trainer sums and logs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bpr(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    r"""Bayesian Personalised Ranking loss (Rendle et al., UAI 2009, Eq. 7 without the prior).

    .. math::
        \mathcal{L}_{BPR} = \frac{1}{B} \sum_{b=1}^{B} -\ln \sigma(\hat y_{u_b i_b} - \hat y_{u_b j_b})

    ``pos_scores`` and ``neg_scores`` are broadcast against each other (so ``[B]`` vs ``[B, N]``
    averages over every negative too). ``-ln σ(x)`` is computed as ``softplus(-x)``, which is
    stable for large ``|x|``.
    """
    return F.softplus(neg_scores - pos_scores).mean()


def l2_reg(*tensors: Tensor, batch_size: int) -> Tensor:
    r"""L2 penalty on the batch's ego (layer-0) embeddings, LightGCN-paper style (Eq. 15).

    .. math::
        \mathcal{R} = \frac{1}{2B} \sum_{t} \lVert t \rVert_2^2

    where ``t`` runs over the given tensors (typically the ego embeddings of the batch's users,
    positive and negative items) and ``B = batch_size``. Multiply by λ in the model.
    """
    if not tensors:
        raise ValueError("l2_reg needs at least one tensor")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    total = torch.stack([t.pow(2).sum() for t in tensors]).sum()
    return 0.5 * total / batch_size


def info_nce(anchor: Tensor, positive: Tensor, temperature: float) -> Tensor:
    r"""InfoNCE with in-batch negatives on cosine similarity (as in SGL, Wu et al. SIGIR 2021).

    Row ``b`` of ``anchor`` and row ``b`` of ``positive`` form a positive pair; the other rows of
    ``positive`` are its negatives. With :math:`z = x / \lVert x \rVert_2` and temperature τ:

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_{b=1}^{B}
            -\ln \frac{\exp(z^a_b \cdot z^p_b / τ)}{\sum_{c=1}^{B} \exp(z^a_b \cdot z^p_c / τ)}

    Computed as a cross-entropy over the ``[B, B]`` logits (log-sum-exp, numerically stable).
    """
    if anchor.shape != positive.shape or anchor.dim() != 2:
        raise ValueError(
            f"info_nce needs two [B, d] tensors of equal shape, got {tuple(anchor.shape)} and "
            f"{tuple(positive.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    za = F.normalize(anchor, dim=1)
    zp = F.normalize(positive, dim=1)
    logits = za @ zp.T / temperature
    labels = torch.arange(len(za), device=za.device)
    return F.cross_entropy(logits, labels)


__all__ = ["bpr", "info_nce", "l2_reg"]
