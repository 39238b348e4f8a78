"""Loss functions as pure functions of tensors (no modules, no state).

Every function returns a scalar tensor (mean over the batch unless documented otherwise) so a
model's ``loss`` can return a dict of named terms that the trainer sums and logs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")


def _check_views(
    fn: str, a: Tensor, b: Tensor, layout: str, temperature: float, noun: str = "tensors"
) -> None:
    """ValueError unless ``a`` and ``b`` have one shape of ``layout`` (``"[B, d]"``: 2-d) and
    ``temperature`` is positive; ``fn`` names the loss in the message."""
    if a.shape != b.shape or a.dim() != layout.count(",") + 1:
        raise ValueError(
            f"{fn} needs two {layout} {noun} of equal shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    _check_temperature(temperature)


def _cosine_logits(a: Tensor, b: Tensor, temperature: float) -> Tensor:
    """``[len(a), len(b)]`` cosine similarities of the rows of ``a`` and ``b``, over τ."""
    return F.normalize(a, dim=1) @ F.normalize(b, dim=1).T / temperature


def _reduce(values: Tensor, reduction: str, choices: tuple[str, str, str]) -> Tensor:
    """``values``' ``"mean"``, ``"sum"`` or themselves (``"none"``); ``choices`` is the order in
    which the error for another ``reduction`` lists them."""
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    a, b, c = choices
    raise ValueError(f"unknown reduction {reduction!r}; use {a!r}, {b!r} or {c!r}")


def bpr(pos_scores: Tensor, neg_scores: Tensor) -> Tensor:
    r"""Bayesian Personalised Ranking loss (Rendle et al., UAI 2009, Eq. 7 without the prior).

    .. math::
        \mathcal{L}_{BPR} = \frac{1}{B} \sum_{b=1}^{B} -\ln \sigma(\hat y_{u_b i_b} - \hat y_{u_b j_b})

    ``pos_scores`` and ``neg_scores`` are broadcast against each other (so ``[B]`` vs ``[B, N]``
    averages over every negative too). ``-ln σ(x)`` is computed as ``softplus(-x)``, which is
    stable for large ``|x|``.
    """
    return F.softplus(neg_scores - pos_scores).mean()


def max_margin(
    pos_scores: Tensor, neg_scores: Tensor, margin: float, ignore: Tensor | None = None
) -> Tensor:
    r"""Max-margin ranking loss (PinSage, Ying et al. KDD 2018, Eq. 1), averaged.

    .. math::
        \mathcal{L} = \operatorname{mean}_{b, n} \max(0,\; \hat y_{u_b n} - \hat y_{u_b i_b} + \Delta)

    ``pos_scores`` ``[B]`` and ``neg_scores`` ``[B]`` or ``[B, N]`` (each row's negatives);
    ``margin`` is Δ; ``ignore`` (bool, shaped like ``neg_scores``) leaves entries out of the
    mean (a shared negative that is the row's own positive).
    """
    if neg_scores.dim() == 2:
        pos_scores = pos_scores.unsqueeze(1)
    hinge = F.relu(neg_scores - pos_scores + margin)
    if ignore is None:
        return hinge.mean()
    keep = ~ignore
    return (hinge * keep).sum() / keep.sum().clamp(min=1)


def multitask_log_loss(logits: Tensor, labels: Tensor, weights: Tensor) -> Tensor:
    r"""Weighted sum over tasks of the mean binary log loss (NMTR, Gao et al. ICDE 2019: one
    pointwise loss per behavior, summed with weights λ_k).

    .. math::
        \mathcal{L} = \sum_k \lambda_k \frac{1}{N} \sum_n
            -[y_{nk} \ln \sigma(s_{nk}) + (1 - y_{nk}) \ln(1 - \sigma(s_{nk}))]

    ``logits`` and ``labels`` are ``[N, K]`` (labels 0/1 as floats), ``weights`` ``[K]``; the
    log loss is taken on the logits (stable for large ``|s|``).
    """
    per_task = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(0)
    return (weights * per_task).sum()


def truncated_bce(pos_scores: Tensor, neg_scores: Tensor, drop_rate: float) -> Tensor:
    r"""Truncated cross-entropy (T-CE; Wang et al., "Denoising Implicit Feedback for
    Recommendation", WSDM 2021, §3.2 Eq. 3): the binary cross-entropy of every (u, i) positive
    (label 1) and (u, j) negative (label 0) of the batch, of which the ``drop_rate`` share with
    the largest loss is dropped before the mean (large-loss pairs are likely noisy)."""
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    logits = torch.cat([pos_scores.reshape(-1), neg_scores.reshape(-1)])
    labels = torch.cat([torch.ones(pos_scores.numel()), torch.zeros(neg_scores.numel())])
    per = F.binary_cross_entropy_with_logits(logits, labels.to(logits), reduction="none")
    keep = max(1, round((1.0 - drop_rate) * per.numel()))
    return torch.topk(per, keep, largest=False, sorted=False).values.mean()


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
    _check_views("info_nce", anchor, positive, "[B, d]", temperature)
    logits = _cosine_logits(anchor, positive, temperature)
    labels = torch.arange(len(logits), device=logits.device)
    return F.cross_entropy(logits, labels)


def multi_positive_nce(
    anchor: Tensor, other: Tensor, positives: Tensor, temperature: float
) -> Tensor:
    r"""InfoNCE with several positives per row (HeCo, KDD 2021, Eq. 9-10): row i of ``anchor``
    against every row of ``other``, the rows j with ``positives[i, j]`` in the numerator:

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_i -\ln \frac{\sum_{j \in P_i} \exp(\cos(a_i, o_j) / τ)}
            {\sum_k \exp(\cos(a_i, o_k) / τ)}

    ``positives`` is a bool ``[B, B]`` with at least one True per row (log-sum-exp, stable)."""
    _check_views("multi_positive_nce", anchor, other, "[B, d]", temperature)
    if positives.shape != (len(anchor), len(other)) or not bool(positives.any(1).all()):
        raise ValueError("multi_positive_nce needs a [B, B] bool mask with a positive per row")
    logits = _cosine_logits(anchor, other, temperature)
    pos = torch.logsumexp(logits.masked_fill(~positives, float("-inf")), dim=1)
    return (torch.logsumexp(logits, dim=1) - pos).mean()


__all__ = [
    "bpr",
    "full_softmax",
    "info_nce",
    "l2_reg",
    "max_margin",
    "multi_positive_nce",
    "multitask_log_loss",
    "sampled_softmax",
]


def sampled_softmax(
    query: Tensor,
    item_weight: Tensor,
    target: Tensor,
    negatives: Tensor,
    log_q: Tensor | None = None,
    *,
    remove_accidental_hits: bool = True,
    negative_weight: Tensor | None = None,
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
    ``negative_weight[S, d]``: the rows ``item_weight[negatives]`` when the caller has gathered
    them already (same value; one gather, so one sparse gradient into the table).
    """
    if query.dim() != 2 or item_weight.dim() != 2:
        raise ValueError("sampled_softmax needs query [B, d] and item_weight [n, d]")
    if negative_weight is None:
        negative_weight = item_weight[negatives]
    elif negative_weight.shape != (len(negatives), item_weight.shape[1]):
        raise ValueError(
            f"sampled_softmax: negative_weight {tuple(negative_weight.shape)} for "
            f"{len(negatives)} negatives of size {item_weight.shape[1]}"
        )
    pos = (query * item_weight[target]).sum(-1, keepdim=True)
    neg = query @ negative_weight.T
    if log_q is not None:
        pos = pos - log_q[target].unsqueeze(1)
        neg = neg - log_q[negatives].unsqueeze(0)
    if remove_accidental_hits:
        hit = negatives.unsqueeze(0) == target.unsqueeze(1)
        neg = neg.masked_fill(hit, float("-inf"))
    logits = torch.cat([pos, neg], dim=1)
    return -torch.log_softmax(logits, dim=1)[:, 0].mean()


def softmax_over_candidates(
    pos_logits: Tensor, neg_logits: Tensor, accidental: Tensor | None = None
) -> Tensor:
    r"""Cross-entropy of each row's positive among its sampled candidates, from logits a model
    computed itself (scores that are not one inner product: several terms, biases).

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_b -\ln \frac{\exp(o^+_b)}{\exp(o^+_b) + \sum_s
            \exp(o^-_{b,s})}

    ``pos_logits[B]``, ``neg_logits[B, S]``; ``accidental[B, S]`` (bool) marks sampled negatives
    equal to the row's positive, left out of the denominator.
    """
    if neg_logits.dim() != 2 or pos_logits.shape != neg_logits.shape[:1]:
        raise ValueError("softmax_over_candidates needs pos_logits [B] and neg_logits [B, S]")
    if accidental is not None:
        neg_logits = neg_logits.masked_fill(accidental, float("-inf"))
    logits = torch.cat([pos_logits.unsqueeze(1), neg_logits], dim=1)
    return (torch.logsumexp(logits, dim=1) - pos_logits).mean()


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
    _check_views("info_nce_rows", anchor, positive, "[B, d]", temperature)
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
    _check_temperature(temperature)
    logits = _cosine_logits(anchor, candidates, temperature)
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
    return _reduce(kl, reduction, ("mean", "sum", "none"))


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


def deca(
    f_logits: Tensor,
    g_logits: Tensor,
    h_logits: Tensor,
    observed: Tensor,
    *,
    step: str,
    alpha: float = 0.5,
    c1: float = 1000.0,
    c2: float = 10.0,
) -> Tensor:
    r"""Element-wise DeCA loss (Wang et al., "Learning Robust Recommenders through Cross-Model
    Agreement", WWW 2022): the agreement of the target model :math:`f` with a second model
    :math:`g` on the latent true preference, minus the likelihood of the observation under a
    noisy channel.

    .. math::
        \ell = \alpha\,\mathrm{KL}(g \,\|\, f) + (1 - \alpha)\,\mathrm{KL}(f \,\|\, g)
               - E_{r \sim \mathrm{Bern}(f)}[\ln P(\tilde y \mid r)]

    ``step`` picks the channel of one alternating step, as in the authors' code (the same
    channel as MBA's :func:`bernoulli_channel_loglik`):

    * ``"DP"`` (denoise positives): ``h`` = :math:`P(\tilde y = 1 \mid r = 0)`, and
      :math:`P(\tilde y = 1 \mid r = 1) \approx 1` (:math:`\ln P(0 \mid 1) \to -C_1`);
    * ``"DN"`` (denoise negatives): ``h`` = :math:`P(\tilde y = 1 \mid r = 1)`, and
      :math:`P(\tilde y = 1 \mid r = 0) \approx 0` (:math:`\ln P(1 \mid 0) \to -C_2`).

    All arguments are logits of the same shape; ``observed`` the 0/1 labels. Returns the
    element-wise loss (to be minimised).
    """
    if step not in ("DP", "DN"):
        raise ValueError(f"step must be 'DP' or 'DN', got {step!r}")
    agree = alpha * kl_bernoulli(g_logits, f_logits, "none") + (1.0 - alpha) * kl_bernoulli(
        f_logits, g_logits, "none"
    )
    if step == "DP":
        lik = bernoulli_channel_loglik(f_logits, observed, None, h_logits, c2=c1)
    else:
        lik = bernoulli_channel_loglik(f_logits, observed, h_logits, None, c1=c2)
    return agree - lik


__all__ += ["bernoulli_channel_loglik", "deca", "kl_bernoulli"]


class _RowNorms(torch.autograd.Function):
    """``‖x‖`` over the last dimension with a one-pass backward ``x · g / ‖x‖`` (0 at ‖x‖ = 0):
    the same gradient as :func:`torch.linalg.vector_norm`, whose backward makes three passes over
    ``x`` (the scalar factor is formed on the small ``[..]`` tensor first here)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
        norms = torch.linalg.vector_norm(x, dim=-1)
        ctx.save_for_backward(x, norms)
        return norms

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> Tensor:
        x, norms = ctx.saved_tensors  # type: ignore[attr-defined]
        return x * (grad / norms).masked_fill_(norms == 0, 0.0).unsqueeze(-1)


def row_norms(x: Tensor) -> Tensor:
    """L2 norms of the vectors along ``x``'s last dimension (``vector_norm(x, dim=-1)``, with a
    cheaper backward)."""
    return _RowNorms.apply(x)


def interest_dots(interests: Tensor, candidates: Tensor) -> Tensor:
    """``z_k · c_j`` for ``interests[B, K, d]`` and ``candidates[B, C, d]``: ``[B, K, C]``.
    Computed as ``(c zᵀ)ᵀ``, so that the gradient into the (larger) candidates comes out in their
    own layout instead of transposed."""
    return torch.bmm(candidates, interests.transpose(1, 2)).transpose(1, 2)


def re_contrast(
    interests: Tensor,
    items: Tensor,
    sampled: Tensor,
    positive: Tensor,
    valid: Tensor,
    temperature: float,
    *,
    dots: Tensor | None = None,
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
    no positive. ``dots``: :func:`interest_dots` of the interests with the candidates
    ``[items, interests, sampled]`` (concatenated in that order) when the caller has them already
    (Re4 shares them with Re-attend).
    """
    if interests.dim() != 3 or items.dim() != 3 or sampled.dim() != 3:
        raise ValueError(
            f"re_contrast needs interests [B, K, d], items [B, T, d] and sampled [B, S, d], got "
            f"{tuple(interests.shape)}, {tuple(items.shape)}, {tuple(sampled.shape)}"
        )
    _check_temperature(temperature)
    t, k = items.shape[1], interests.shape[1]
    if dots is None:
        dots = interest_dots(interests, torch.cat([items, interests, sampled], dim=1))
    # cosine similarity as dot / (‖z‖ ‖c‖): the norms divide the small [B, K, T+K+S] result
    # instead of normalising every input vector (same value, a fraction of the work)
    norms = torch.cat([row_norms(items), row_norms(interests), row_norms(sampled)], dim=1)
    norms = norms.clamp_min(1e-12)  # [B, T+K+S]
    scale = norms[:, t : t + k].unsqueeze(2) * norms.unsqueeze(1) * temperature
    sim = dots / scale  # [B, K, T+K+S]
    pos = positive & valid.unsqueeze(1)  # [B, K, T]
    # negatives: valid history items outside P_k, the other interests, every sampled item
    not_neg = torch.cat(
        [
            pos | ~valid.unsqueeze(1),
            torch.eye(k, dtype=torch.bool, device=sim.device).expand(len(sim), k, k),
            torch.zeros_like(sim[:, :, t + k :], dtype=torch.bool),
        ],
        dim=2,
    )
    neg_lse = torch.logsumexp(sim.masked_fill(not_neg, float("-inf")), dim=2, keepdim=True)
    s_items = sim[:, :, :t]
    per = torch.logaddexp(s_items, neg_lse) - s_items  # −log of each positive's share
    return per.masked_fill(~pos, 0.0).sum() / pos.sum().clamp_min(1)


def re_attend(
    attention: Tensor,
    interests: Tensor,
    items: Tensor,
    valid: Tensor,
    detach_target: bool = False,
    *,
    scores: Tensor | None = None,
) -> Tensor:
    r"""Re4's Re-attend loss (Re4 WWW 2022 §2.2.2, Eq. 7–8), mean over (user, interest).

    ``attention[B, K, T]`` the forward flow's weights a_{k,i} (a distribution over the valid
    history positions); ``ã_{k,i} = z_k · x_i`` (Eq. 7, dot product, the recommendation
    criterion). Eq. 8's cross-entropy is read as the forward attention predicting the
    distribution the criterion gives over the same history items:
    ``−Σ_i softmax_i(ã_k)_i · ln a_{k,i}``. The paper puts no stop-gradient, so both sides
    learn; ``detach_target`` stops the gradient into ``softmax(ã)`` (pure supervision of the
    attention). ``scores``: ã ``[B, K, T]`` when the caller has it already.
    """
    ok = valid.unsqueeze(1)
    if scores is None:
        scores = interest_dots(interests, items)
    target = torch.softmax(scores.masked_fill(~ok, float("-inf")), dim=2)
    if detach_target:
        target = target.detach()
    log_a = torch.log(attention.clamp_min(1e-12)).masked_fill(~ok, 0.0)
    return -(target * log_a).sum(dim=2).mean()


def re_construct(
    reconstructed: Tensor, items: Tensor, positive: Tensor | tuple[Tensor, ...]
) -> Tensor:
    r"""Re4's Re-construct error (Re4 WWW 2022 §2.2.3, Eq. 12), mean over the positives.

    ``items[B, T, d]`` the history items x_j; ``positive`` the pairs 1(x_j ∈ P_k), either as a
    ``[B, K, T]`` mask or as its ``(b, k, j)`` index vectors (``mask.nonzero(as_tuple=True)``);
    ``reconstructed`` the decoder's x̂_{k,j}, either for every (k, j) as ``[B, K, T, d]`` or for
    the positives only, in ``positive``'s row-major order, as ``[n_positive, d]``. Each positive
    contributes ‖x̂_{k,j} − x_j‖²; Eq. 12 sums them, this returns their mean (0 without
    positives).
    """
    where = positive.nonzero(as_tuple=True) if isinstance(positive, Tensor) else positive
    if reconstructed.dim() == 4:
        reconstructed = reconstructed[where]
    target = items[where[0], where[2]]  # x_j of each positive (b, k, j)
    if reconstructed.shape != target.shape:
        raise ValueError(
            f"re_construct: {tuple(reconstructed.shape)} reconstructions for "
            f"{len(target)} positives of size {items.shape[-1]}"
        )
    return (reconstructed - target).pow(2).sum(-1).sum() / max(len(target), 1)


__all__ += ["interest_dots", "re_attend", "re_construct", "re_contrast", "row_norms"]


def _add_angular_margin(cos: Tensor, margin: float) -> Tensor:
    r""":math:`\cos(θ + m)` from :math:`\cos θ` (ArcFace, Deng et al. CVPR 2019), computed as
    :math:`\cos θ \cos m - \sin θ \sin m`. Where :math:`θ + m > π` the cosine would grow again with
    θ; there ArcFace's fallback :math:`\cos θ - m \sin m` keeps the logit decreasing in θ.
    ``margin = 0`` returns ``cos`` unchanged."""
    cos = cos.clamp(-1.0, 1.0)
    sin = torch.sqrt((1.0 - cos * cos).clamp_min(1e-12))
    shifted = cos * math.cos(margin) - sin * math.sin(margin)
    return torch.where(cos > math.cos(math.pi - margin), shifted, cos - margin * math.sin(margin))


def angular_margin_nce(
    view_a: Tensor, view_b: Tensor, temperature: float, margin: float = 0.0
) -> Tensor:
    r"""Multi-interest InfoNCE with an additive angular margin (HPCL4SR, WWW journal 2024,
    §4.3 Eq. 15–17; the margin is ArcFace's).

    ``view_a[B, K, d]`` and ``view_b[B, K, d]`` are two views of each row's K interests; interest
    k of one view and interest k of the other form the positive pair. Every one of the 2K vectors
    of a row is an anchor i; its positive i* is its partner in the other view and its negatives
    are the row's other 2K − 2 vectors (both views, itself excluded). With
    :math:`θ_{i,j} = \arccos(\bar e_i \cdot \bar e_j)` (Eq. 16, unit vectors) and margin m in
    radians:

    .. math::
        \mathcal{L} = \frac{1}{2KB} \sum_{b} \sum_{i}
            -\ln \frac{e^{\cos(θ_{i,i^*} + m)/τ}}
                      {e^{\cos(θ_{i,i^*} + m)/τ} + \sum_{j \ne i, i^*} e^{\cos θ_{i,j}/τ}}

    (Eq. 15 for each anchor; Eq. 17 sums them, this returns their mean). With ``margin = 0`` it
    is plain InfoNCE on cosine similarity (Eq. 14). Where θ + m would pass π the ArcFace fallback
    :math:`\cos θ - m \sin m` is used (see :func:`_add_angular_margin`).
    """
    _check_views("angular_margin_nce", view_a, view_b, "[B, K, d]", temperature, noun="views")
    if not 0.0 <= margin < math.pi:
        raise ValueError(f"margin must be in [0, π) radians, got {margin}")
    b, k, _ = view_a.shape
    z = F.normalize(torch.cat([view_a, view_b], dim=1), dim=-1)  # [B, 2K, d]
    cos = torch.bmm(z, z.transpose(1, 2))  # [B, 2K, 2K]
    idx = torch.arange(2 * k, device=z.device)
    partner = (idx + k) % (2 * k)
    positive = _add_angular_margin(cos[:, idx, partner], margin)  # [B, 2K]
    logits = cos.masked_fill(torch.eye(2 * k, dtype=torch.bool, device=z.device), float("-inf"))
    where = partner.view(1, -1, 1).expand(b, -1, 1)
    logits = logits.scatter(2, where, positive.unsqueeze(-1)) / temperature
    return F.cross_entropy(logits.reshape(b * 2 * k, 2 * k), partner.repeat(b))


def interest_orthogonality(interests: Tensor) -> Tensor:
    r"""Capsule orthogonality penalty: the mean squared cosine between two different interests
    of a row, :math:`\frac{1}{B K (K-1)} \sum_b \sum_{k \ne l} \cos^2(v_{b,k}, v_{b,l})` for
    ``interests[B, K, d]`` (0 for K = 1). HPCL4SR's ablation "w CR" (Table 3) replaces the
    contrastive module with the capsule regularisation of MIRACLE, which the paper describes as
    forcing the interest capsules to be orthogonal; this is that constraint as a penalty."""
    if interests.dim() != 3:
        raise ValueError(f"interest_orthogonality needs [B, K, d], got {tuple(interests.shape)}")
    k = interests.shape[1]
    if k < 2:
        return interests.sum() * 0.0
    z = F.normalize(interests, dim=-1)
    cos2 = torch.bmm(z, z.transpose(1, 2)).pow(2)
    off = ~torch.eye(k, dtype=torch.bool, device=z.device)
    return cos2[:, off].mean()


def category_classification(logits: Tensor, labels: Tensor, form: str = "bce") -> Tensor:
    r"""Category classification of item features (HPCL4SR §4.2, Eq. 11–12), mean over the
    labelled positions.

    ``logits[..., C]`` the classifier's outputs :math:`WZ + b`; ``labels[...]`` the category codes
    (``-1``: no label, e.g. padding). With :math:`\hat z = \mathrm{softmax}(WZ + b)` (Eq. 11) and
    one-hot labels :math:`c_n`:

    * ``"bce"`` (Eq. 12 as printed):
      :math:`-\sum_c \left(c_{n,c} \ln \hat z_{n,c} + (1 - c_{n,c}) \ln(1 - \hat z_{n,c})\right)`;
    * ``"ce"`` (the text's "cross entropy"): :math:`-\ln \hat z_{n, c_n}`.

    Eq. 12 sums over the positions; this returns the mean (0 without a label).
    """
    if form not in ("bce", "ce"):
        raise ValueError(f"unknown form {form!r}; use 'bce' or 'ce'")
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"category_classification: logits {tuple(logits.shape)} do not match labels "
            f"{tuple(labels.shape)}"
        )
    labelled = labels >= 0
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    log_p = torch.log_softmax(logits[labelled], dim=-1)  # [n, C]
    y = labels[labelled].unsqueeze(1)
    pos = log_p.gather(1, y).squeeze(1)
    if form == "ce":
        return -pos.mean()
    log_not = torch.log(-torch.expm1(log_p.clamp(max=-1e-6)))  # ln(1 − ẑ), finite
    neg = log_not.sum(1) - log_not.gather(1, y).squeeze(1)
    return -(pos + neg).mean()


__all__ += ["angular_margin_nce", "category_classification", "interest_orthogonality"]


def hard_negative_softmax(
    query: Tensor,
    item_weight: Tensor,
    target: Tensor,
    negatives: Tensor,
    log_q: Tensor | None = None,
    beta: float = 1.0,
    *,
    remove_accidental_hits: bool = True,
) -> Tensor:
    r"""Sampled softmax with interest-aware hard negatives (REMI, Xie et al. RecSys 2023: IHN).

    As :func:`sampled_softmax` (``query[B, d]`` the interest nearest the target, ``negatives[S]``
    shared by the batch, ``log_q`` the log expected counts of the sample), but each negative's
    term is reweighted by its hardness under the query, a Monte-Carlo estimate of the negatives'
    mass under the ideal distribution :math:`q_β(j) ∝ e^{β s_j}` with :math:`s_j = q \cdot w_j`:

    .. math::
        \mathcal{L} = \frac{1}{B} \sum_b -\ln \frac{e^{o_{b,y}}}
            {e^{o_{b,y}} + \sum_s ω_{b,s} e^{o_{b,s}}}, \qquad
        ω_{b,s} = \frac{e^{β s_{b,s}}}{\frac{1}{S_b} \sum_{s'} e^{β s_{b,s'}}}

    where :math:`o = s - \ln Q` are the corrected logits (``log_q=None``: o = s) and the weights
    have mean 1 over the row's :math:`S_b` negatives (accidental hits removed). ``beta = 0`` is
    exactly :func:`sampled_softmax`. The weights carry gradient (no stop-gradient, as in REMI's
    code).
    """
    if query.dim() != 2 or item_weight.dim() != 2:
        raise ValueError("hard_negative_softmax needs query [B, d] and item_weight [n, d]")
    s_pos = (query * item_weight[target]).sum(-1)
    s_neg = query @ item_weight[negatives].T  # [B, S]
    o_pos, o_neg = s_pos, s_neg
    if log_q is not None:
        o_pos = s_pos - log_q[target]
        o_neg = s_neg - log_q[negatives].unsqueeze(0)
    keep = torch.ones_like(s_neg, dtype=torch.bool)
    if remove_accidental_hits:
        keep = negatives.unsqueeze(0) != target.unsqueeze(1)
    has_neg = keep.any(dim=1)
    # a row without any negative computes on its hits (finite) and is then given none
    live = keep | ~has_neg.unsqueeze(1)
    o_neg = o_neg.masked_fill(~live, float("-inf"))
    if beta == 0.0:
        log_neg = torch.logsumexp(o_neg, dim=1)
    else:
        hard = (beta * s_neg).masked_fill(~live, float("-inf"))
        count = live.sum(dim=1).to(s_neg.dtype)
        log_neg = torch.logsumexp(o_neg + hard, dim=1) - torch.logsumexp(hard, dim=1) + count.log()
    log_neg = log_neg.masked_fill(~has_neg, float("-inf"))
    return (torch.logaddexp(o_pos, log_neg) - o_pos).mean()


def routing_variance(
    routing: Tensor, valid: Tensor, scale: float = 1.0, reduction: str = "sum"
) -> Tensor:
    r"""REMI's routing regularisation (Xie et al. RecSys 2023: RR), :math:`\lVert
    \mathrm{diag}(C) \rVert_F^2` with C the covariance of each row's routing matrix.

    ``routing[B, K, T]`` the item-to-interest routing weights (each interest's weights over the
    history), ``valid[B, T]`` False at padding. Per row, with :math:`\bar a_k` the mean of
    interest k's weights over the valid positions:

    .. math::
        C_{kk} = \frac{1}{\text{scale}} \sum_{i \text{ valid}} (a_{k,i} - \bar a_k)^2, \qquad
        R = \sum_k C_{kk}^2

    (REMI's code divides by the embedding size d: ``scale = d``). ``reduction``: ``"sum"`` over
    the rows (REMI's code), ``"mean"`` or ``"none"`` (``[B]``). A uniform routing gives 0; a
    routing collapsed onto single items is penalised.
    """
    if routing.dim() != 3 or valid.shape != (routing.shape[0], routing.shape[2]):
        raise ValueError(
            f"routing_variance needs routing [B, K, T] and valid [B, T], got "
            f"{tuple(routing.shape)} and {tuple(valid.shape)}"
        )
    keep = valid.unsqueeze(1).to(routing.dtype)  # [B, 1, T]
    n = keep.sum(dim=2, keepdim=True).clamp_min(1.0)
    mean = (routing * keep).sum(dim=2, keepdim=True) / n
    var = ((routing - mean) * keep).pow(2).sum(dim=2) / scale  # diag(C): [B, K]
    per_row = var.pow(2).sum(dim=1)
    return _reduce(per_row, reduction, ("sum", "mean", "none"))


__all__ += ["hard_negative_softmax", "routing_variance"]
