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


__all__ = ["bpr", "full_softmax", "info_nce", "l2_reg", "sampled_softmax"]


def sampled_softmax(
    query: Tensor,
    item_weight: Tensor,
    target: Tensor,
    negatives: Tensor,
    log_q: Tensor | None = None,
    *,
    remove_accidental_hits: bool = True,
) -> Tensor:
    r"""Sampled softmax cross-entropy (Jean et al. 2015; TensorFlow's ``sampled_softmax_loss``).

    ``query[B, d]`` user vectors, ``item_weight[n, d]`` the output item embeddings, ``target[B]``
    the true next items and ``negatives[S]`` item ids drawn by the caller, shared by the batch
    (ComiRec draws ``S = 10 · B`` log-uniform negatives). With logits ``o = q · w``:

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_b -\ln \frac{\exp(o_{b,y_b} - \ln Q(y_b))}
            {\exp(o_{b,y_b} - \ln Q(y_b)) + \sum_{s} \exp(o_{b,s} - \ln Q(s))}

    ``log_q[n]`` is the log of the *expected count* of each item in the sample
    (``ln(S · P(i))`` for ``S`` draws with replacement); ``None`` skips the correction.
    ``remove_accidental_hits`` drops a sampled negative equal to the row's target (TF default).
    """
    if query.dim() != 2 or item_weight.dim() != 2:
        raise ValueError("sampled_softmax needs query [B, d] and item_weight [n, d]")
    pos = (query * item_weight[target]).sum(-1, keepdim=True)
    neg = query @ item_weight[negatives].T
    if log_q is not None:
        pos = pos - log_q[target].unsqueeze(1)
        neg = neg - log_q[negatives].unsqueeze(0)
    if remove_accidental_hits:
        hit = negatives.unsqueeze(0) == target.unsqueeze(1)
        neg = neg.masked_fill(hit, float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def full_softmax(query: Tensor, item_weight: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy of ``target[B]`` over every item: logits ``query[B, d] @ item_weight[n, d].T``."""
    return F.cross_entropy(query @ item_weight.T, target)


def info_nce_rows(
    anchor: Tensor, positive: Tensor, temperature: float, similarity: str = "cosine"
) -> Tensor:
    r"""Per-row InfoNCE with in-batch negatives (CML WSDM 2022 Eq. 3 before the sum over users).

    Returns a ``[B]`` tensor whose entry ``b`` is

    .. math::
        -\ln \frac{\exp(\varphi(a_b, p_b) / τ)}{\sum_{c=1}^{B} \exp(\varphi(a_b, p_c) / τ)}

    with φ the cosine similarity (``similarity="cosine"``) or the inner product (``"dot"``).
    For ``"cosine"`` its mean equals :func:`info_nce`. Models that weight each row (CML's
    per-user meta weights) need the rows, not their mean.
    """
    if anchor.shape != positive.shape or anchor.dim() != 2:
        raise ValueError(
            f"info_nce_rows needs two [B, d] tensors of equal shape, got {tuple(anchor.shape)} "
            f"and {tuple(positive.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if similarity == "cosine":
        anchor, positive = F.normalize(anchor, dim=1), F.normalize(positive, dim=1)
    elif similarity != "dot":
        raise ValueError(f"unknown similarity {similarity!r}; use 'cosine' or 'dot'")
    logits = anchor @ positive.T / temperature
    return torch.logsumexp(logits, dim=1) - logits.diagonal()


__all__.append("info_nce_rows")
