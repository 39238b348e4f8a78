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


def info_nce_candidates_rows(
    anchor: Tensor, candidates: Tensor, positive: Tensor, temperature: float
) -> Tensor:
    r"""Per-row InfoNCE of ``anchor[B, d]`` against a whole candidate table ``candidates[N, d]``
    (SGL SIGIR 2021 Eq. 10 as printed: every other node of the view is a negative).

    Row ``b``'s positive is ``candidates[positive[b]]``; with cosine similarity (both sides
    L2-normalised) and temperature τ the entry ``b`` of the returned ``[B]`` tensor is

    .. math::
        -\ln \frac{\exp(z^a_b \cdot z^c_{p_b} / τ)}{\sum_{n=1}^{N} \exp(z^a_b \cdot z^c_n / τ)}

    With ``candidates = positive_rows`` and ``positive = arange(B)`` this is
    :func:`info_nce_rows` (in-batch negatives).
    """
    if anchor.dim() != 2 or candidates.dim() != 2 or anchor.shape[1] != candidates.shape[1]:
        raise ValueError(
            f"info_nce_candidates_rows needs anchor [B, d] and candidates [N, d], got "
            f"{tuple(anchor.shape)} and {tuple(candidates.shape)}"
        )
    if positive.shape != (anchor.shape[0],):
        raise ValueError(
            f"positive must hold one index per anchor row, got {tuple(positive.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    za = F.normalize(anchor, dim=1)
    zc = F.normalize(candidates, dim=1)
    logits = za @ zc.T / temperature
    pos = logits.gather(1, positive.long().unsqueeze(1)).squeeze(1)
    return torch.logsumexp(logits, dim=1) - pos


__all__.append("info_nce_candidates_rows")


def kl_bernoulli(p_logits: Tensor, q_logits: Tensor, reduction: str = "mean") -> Tensor:
    r"""KL divergence between Bernoulli distributions given by logits (MBA SIGIR 2023 Eq. 5–6).

    With :math:`p = \sigma(a)` (``p_logits``) and :math:`q = \sigma(b)` (``q_logits``), per
    element:

    .. math::
        \mathrm{KL}[\mathrm{Bern}(p) \,\|\, \mathrm{Bern}(q)]
            = p \ln\frac{p}{q} + (1 - p) \ln\frac{1 - p}{1 - q}

    computed from ``ln σ(x)`` / ``ln σ(−x)`` (``logsigmoid``), exact and finite for any finite
    logits (no ``+ε`` inside the logarithms). ``reduction``: ``"mean"`` (default), ``"sum"`` or
    ``"none"`` (the element-wise tensor, broadcast shape of the inputs).
    """
    p = torch.sigmoid(p_logits)
    kl = p * (F.logsigmoid(p_logits) - F.logsigmoid(q_logits)) + (1.0 - p) * (
        F.logsigmoid(-p_logits) - F.logsigmoid(-q_logits)
    )
    if reduction == "mean":
        return kl.mean()
    if reduction == "sum":
        return kl.sum()
    if reduction == "none":
        return kl
    raise ValueError(f"unknown reduction {reduction!r}; use 'mean', 'sum' or 'none'")


def bernoulli_channel_loglik(
    t_logits: Tensor,
    observed: Tensor,
    h1_logits: Tensor | None = None,
    h0_logits: Tensor | None = None,
    *,
    c1: float = 1000.0,
    c2: float = 1000.0,
) -> Tensor:
    r"""Element-wise :math:`E_{r^t \sim \mathrm{Bern}(t)}[\ln P(r \mid r^t)]` of MBA's noisy
    channel (SIGIR 2023 Eq. 2, expanded in Eq. 13–14; the approximations of Eq. 15–18).

    ``t_logits``: the latent true preference :math:`t = \sigma(\cdot)` of each (user, item) pair;
    ``observed``: the observed behavior :math:`r \in \{0, 1\}` (bool or 0/1);
    ``h1_logits``: :math:`h_1 = P(r = 1 \mid r^t = 1)`; ``h0_logits``: :math:`h_0 = P(r = 1 \mid
    r^t = 0)`. Then

    .. math::
        E = t \ln P(r \mid r^t = 1) + (1 - t) \ln P(r \mid r^t = 0)

    with :math:`\ln P(1 \mid 1) = \ln h_1`, :math:`\ln P(0 \mid 1) = \ln(1 - h_1)`,
    :math:`\ln P(1 \mid 0) = \ln h_0`, :math:`\ln P(0 \mid 0) = \ln(1 - h_0)` (Eq. 13–14 when
    both h are given). A missing h takes the approximation of one alternating step (§3.3.2):

    * ``h0_logits=None`` — first step, :math:`h_0 \approx 0`: :math:`\ln h_0` is replaced by
      :math:`-C_1` and :math:`\ln(1 - h_0)` by 0, giving :math:`L_{CP}/L_{PP}` for ``r = 1``
      (:math:`t \ln h_1 - C_1 (1 - t)`) and :math:`L_{CN}/L_{PN}` for ``r = 0``
      (:math:`t \ln(1 - h_1)`) of Eq. 15–16;
    * ``h1_logits=None`` — second step, :math:`h_1 \approx 1`: :math:`\ln h_1 \to 0` and
      :math:`\ln(1 - h_1) \to -C_2`, giving :math:`L'_{CP}/L'_{PP} = (1 - t)\ln h_0` and
      :math:`L'_{CN}/L'_{PN} = -C_2 t + (1 - t)\ln(1 - h_0)` of Eq. 17–18. The paper prints
      ``+C_2 t``; since :math:`C_2` replaces :math:`-\ln(1 - h_1)` the sign is minus (as in the
      authors' code).

    Returns the element-wise log-likelihood (to be maximised; the loss is its negative).
    """
    if h1_logits is None and h0_logits is None:
        raise ValueError("bernoulli_channel_loglik needs h1_logits, h0_logits or both")
    t = torch.sigmoid(t_logits)
    obs = observed.bool()
    if h1_logits is None:  # h1 ≈ 1: ln P(1|1) = 0, ln P(0|1) = −C2
        given_true = torch.where(obs, torch.zeros_like(t), torch.full_like(t, -c2))
    else:
        given_true = torch.where(obs, F.logsigmoid(h1_logits), F.logsigmoid(-h1_logits))
    if h0_logits is None:  # h0 ≈ 0: ln P(1|0) = −C1, ln P(0|0) = 0
        given_false = torch.where(obs, torch.full_like(t, -c1), torch.zeros_like(t))
    else:
        given_false = torch.where(obs, F.logsigmoid(h0_logits), F.logsigmoid(-h0_logits))
    return t * given_true + (1.0 - t) * given_false


__all__ += ["bernoulli_channel_loglik", "kl_bernoulli"]


def re_contrast(
    interests: Tensor,
    items: Tensor,
    sampled: Tensor,
    positive: Tensor,
    valid: Tensor,
    temperature: float,
) -> Tensor:
    r"""Re4's Re-contrast InfoNCE (Re4 WWW 2022 §2.2.1, Eq. 3–6), mean over the positives.

    ``interests[B, K, d]`` the anchors z_k; ``items[B, T, d]`` the history's item embeddings;
    ``sampled[B, S, d]`` items drawn beyond the history; ``positive[B, K, T]`` the mask of
    P_k (Eq. 3: attention above γ_c); ``valid[B, T]`` False at padding. Negatives of interest k
    (Eq. 5): the history items outside P_k (Ñ_k, Eq. 4), the user's other interests, and the
    sampled items. Every vector is L2-normalised; for each positive x⁺ of z_k the term is

    .. math::
        -\ln \frac{\exp(\bar z_k \cdot \bar x^+ / τ)}
                  {\exp(\bar z_k \cdot \bar x^+ / τ) + \sum_{x^-} \exp(\bar z_k \cdot \bar x^- / τ)}

    Eq. 6 sums the terms; this returns their mean over all (user, interest, positive) triples so
    that the weight λ_CL does not depend on the batch size or the history length. 0 when there is
    no positive.
    """
    if interests.dim() != 3 or items.dim() != 3 or sampled.dim() != 3:
        raise ValueError(
            f"re_contrast needs interests [B, K, d], items [B, T, d] and sampled [B, S, d], got "
            f"{tuple(interests.shape)}, {tuple(items.shape)}, {tuple(sampled.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    k = interests.shape[1]
    z = F.normalize(interests, dim=-1)
    s_items = torch.einsum("bkd,btd->bkt", z, F.normalize(items, dim=-1)) / temperature
    s_inter = torch.einsum("bkd,bld->bkl", z, z) / temperature
    s_smp = torch.einsum("bkd,bsd->bks", z, F.normalize(sampled, dim=-1)) / temperature
    ok = valid.unsqueeze(1)  # [B, 1, T]
    pos = positive & ok
    eye = torch.eye(k, dtype=torch.bool, device=interests.device)
    neg = torch.cat(
        [
            s_items.masked_fill(pos | ~ok, float("-inf")),
            s_inter.masked_fill(eye, float("-inf")),
            s_smp,
        ],
        dim=2,
    )
    neg_lse = torch.logsumexp(neg, dim=2, keepdim=True)  # [B, K, 1]
    per = torch.logaddexp(s_items, neg_lse) - s_items  # −log of each positive's share
    n = pos.sum()
    return (per * pos).sum() / n.clamp_min(1)


def re_attend(
    attention: Tensor, interests: Tensor, items: Tensor, valid: Tensor, detach_target: bool = False
) -> Tensor:
    r"""Re4's Re-attend loss (Re4 WWW 2022 §2.2.2, Eq. 7–8), mean over (user, interest).

    ``attention[B, K, T]`` the forward flow's weights a_{k,i} (a distribution over the valid
    history positions); ``ã_{k,i} = z_k · x_i`` (Eq. 7, dot product, the recommendation
    criterion). Eq. 8's cross-entropy is read as the forward attention predicting the
    distribution the criterion gives over the same history items:
    ``−Σ_i softmax_i(ã_k)_i · ln a_{k,i}``. The paper puts no stop-gradient, so both sides
    learn; ``detach_target`` stops the gradient into ``softmax(ã)`` (pure supervision of the
    attention).
    """
    ok = valid.unsqueeze(1)
    sim = torch.einsum("bkd,btd->bkt", interests, items).masked_fill(~ok, float("-inf"))
    target = torch.softmax(sim, dim=2)
    if detach_target:
        target = target.detach()
    log_a = torch.log(attention.clamp_min(1e-12)).masked_fill(~ok, 0.0)
    return -(target * log_a).sum(dim=2).mean()


def re_construct(reconstructed: Tensor, items: Tensor, positive: Tensor) -> Tensor:
    r"""Re4's Re-construct error (Re4 WWW 2022 §2.2.3, Eq. 12), mean over the positives.

    ``reconstructed[B, K, T, d]`` the decoder's x̂_{k,j}; ``items[B, T, d]`` the history items
    x_j; ``positive[B, K, T]`` the mask 1(x_j ∈ P_k). Each positive contributes
    ‖x̂_{k,j} − x_j‖²; Eq. 12 sums them, this returns their mean (0 without positives).
    """
    err = (reconstructed - items.unsqueeze(1)).pow(2).sum(-1)  # [B, K, T]
    return (err * positive).sum() / positive.sum().clamp_min(1)


__all__ += ["re_attend", "re_construct", "re_contrast"]
