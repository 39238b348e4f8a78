"""HPCL4SR (Zhu et al., "High-level preferences as positive examples in contrastive learning for
multi-interest sequential recommendation", World Wide Web journal 2024).

Three modules (§4, Fig. 2), equation numbers as in the paper:

* **High-level preferences (§4.1).** A global category graph counts consecutive categories in every
  training sequence (A₁); Eq. 1 normalises it, ``A₂(i, j) = a_ij / √((a_i + 1)(a_j + 1))``;
  Eq. 2 diffuses it over multiple hops, ``A = Σ_i θ_i A₂^i`` (Multi-hop Attention Diffusion,
  MAGNA); Eq. 3 runs residual GCN layers ``H⁽ˡ⁾ = W_l (A H⁽ˡ⁻¹⁾) + H⁽ˡ⁻¹⁾`` over the category
  embeddings; Eq. 4 averages the layers into Ĥ; Eq. 5 picks the rows of the history's categories
  (Hg, N × d); Eq. 6 maps them to K interests, ``Q_u = W Hg`` with W ∈ R^{K×N}.
* **Low-level preferences (§4.2).** Item plus position embeddings (Eq. 7), one dot-product
  self-attention over the history (Eq. 8) with a residual and a linear map (Eq. 9), then ComiRec-DR
  capsule routing into K interests P_u (Eq. 10, :func:`polyrec.models.comirec.capsules`). A linear
  classifier predicts each history item's category from its Eq. 9 feature (Eq. 11–12, weight λ₁).
* **Contrastive module (§4.3).** ``M_u = W [Q_u, P_u]`` (Eq. 13, per interest) are the interests
  the model retrieves with; P_u and M_u are two views, interest k of one the positive of interest k
  of the other, the row's other 2K − 2 interests its negatives, InfoNCE on cosines with an
  additive angular margin on the positive (Eq. 15–17, :func:`polyrec.losses.angular_margin_nce`,
  weight λ₂).

Training (§4.4): ``L = L_rec + λ₁ L_class + λ₂ L_mulCL`` (Eq. 20); L_rec is the sampled softmax of
the interest of M_u nearest the target (Eq. 18–19, the backbone's read-out). Inference: M_u.

Categories come from the data's ``category`` column (one code per interaction; see
:class:`polyrec.data.log.InteractionLog`). The model keeps a lookup from item to category (an
item's most frequent category in the training log), so that it derives the history's categories
from the item ids in training and at inference alike; an item absent from the training log has
no category (padding's zero row in Eq. 5, no label in Eq. 12). Data without categories is a
:class:`polyrec.errors.ConfigError` unless both category modules are switched off.

Choices where the paper is silent or ambiguous (each a config field unless noted):

* **Graph edges** (``category_graph``): "the number of interactions between c_i and c_j" is read as
  undirected, ``a_ij`` = transitions i → j plus j → i; ``"directed"`` keeps i → j only (then a_i
  is i's out-degree and a_j j's in-degree in Eq. 1). A repeat (the same category twice in a row)
  counts once on the diagonal (``category_self_loops``). The degree a_i of Eq. 1 is the row sum
  of A₁ (diagonal included).
* **Diffusion weights θ_i** (Eq. 2): MAGNA's geometric ``θ_i = α (1 − α)^i`` (``diffusion_alpha``),
  which satisfies Σθ = 1 and θ_i > θ_{i+1}. ``diffusion = "truncated"`` sums ``diffusion_hops``
  + 1 terms, θ renormalised to sum 1; ``"exact"`` is the infinite series in closed form,
  ``α (I − (1 − α) A₂)⁻¹`` (A₂'s spectral radius is below 1 by Eq. 1's +1).
* **GCN depth** L (Eq. 3–4): ``gcn_layers``, default 2. Eq. 4 prints ``Ĥ = −(1/L) Σ_{i=0}^{L}``; the
  sign and the 1/L against L + 1 terms are read as typos: Ĥ is the mean of the L + 1 layers (a
  sign or scale would be absorbed by Eq. 6's linear map anyway; no field).
* **Eq. 6's W** is a learned K × N matrix over the history positions, right-aligned to the latest
  position (as ComiRec-DR's per-position maps) so that padding never moves a row's interests; it
  has no field.
* **Eq. 8–9** as printed: no projections or scaling in the attention, which is bidirectional over
  the history (padding masked); W of Eq. 9 is a linear layer with bias. Eq. 10's capsule network is
  ComiRec-DR's (one bilinear map per position and interest, 3 iterations, the setting of REMI,
  which §5.1 follows).
* **Eq. 11's Z** ("the first layer information of the Capsule Network") is the capsules' input, the
  Eq. 9 features. **Eq. 12** is printed as a binary cross-entropy over softmax outputs and one-hot
  labels (``class_loss_form = "bce"``, default) while the text says cross-entropy (``"ce"``); its
  sum over positions is a mean over the labelled history positions here.
* **Eq. 15 vs 17**: Eq. 17's denominator drops the positive; Eq. 15's (positive with margin plus
  the 2K − 2 negatives) is used for every anchor. Eq. 17 sums over anchors; the loss here is their
  mean. Where θ + m would exceed π, ArcFace's fallback ``cos θ − m sin m`` applies.
* **The margin's unit**: the paper's m = 10 has no unit; it is degrees by default (10 radians would
  exceed π), ``margin_unit = "radians"`` reads ``margin`` as radians.
* **The two views**: §4.3 contrasts P_u with M_u (``contrast_views = "fused"``); the title's
  "high-level preferences as positives" can also be read as contrasting P_u with Q_u
  (``"high-level"``).
* **"w CR"** of Table 3 (MIRACLE's capsule regularisation, not specified in the paper) is the mean
  squared cosine between different interests of M_u (:func:`polyrec.losses.interest_orthogonality`),
  weighted by λ₂.

Ablations of Table 3 (:data:`ABLATIONS` holds them as config overrides): ``base`` (items only:
``high_level = false, class_loss = false, diversity = "none"``), ``base(w L_class)``
(``high_level = false, diversity = "none"``), ``w '+'`` (``fusion = "add"``), ``w '*'``
(``fusion = "mul"``), ``w CR`` (``diversity = "capsule-reg"``), ``w/o m`` (``margin = 0``).
"""

from __future__ import annotations

import math
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.log import InteractionLog
from polyrec.data.sequences import SeqBatch, SequenceSet
from polyrec.data.views import DataSchema, TrainData, category_count
from polyrec.errors import ConfigError
from polyrec.models._sequential import SequentialModel, key_padding, latest
from polyrec.models.comirec import ComiRecDRConfig, capsules

# ------------------------------------------------------------------ the category graph (§4.1)


def category_transitions(seqs: SequenceSet, n_categories: int) -> np.ndarray:
    """``[C, C]`` counts ``T[i, j]`` of consecutive categories ``(c_t, c_{t+1}) = (i, j)`` within
    every user's sequence (never across two users)."""
    if seqs.categories is None:
        raise ValueError("these sequences have no categories")
    cats = np.asarray(seqs.categories, np.int64)
    c = int(n_categories)
    if len(cats) < 2:
        return np.zeros((c, c), dtype=np.int64)
    ok = np.ones(len(cats) - 1, dtype=bool)
    starts = seqs.indptr[1:-1]  # first position of every user but the first
    starts = starts[(starts >= 1) & (starts <= len(cats) - 1)]
    ok[starts - 1] = False  # the pair (last of a user, first of the next)
    key = cats[:-1][ok] * c + cats[1:][ok]
    return np.bincount(key, minlength=c * c).reshape(c, c)


def category_adjacency(
    transitions: np.ndarray, *, directed: bool = False, self_loops: bool = True
) -> np.ndarray:
    """The count graph A₁ of §4.1: ``a_ij`` = transitions between categories i and j (both
    directions unless ``directed``); a repeat of one category counts once on the diagonal
    (``self_loops``) or not at all."""
    t = np.asarray(transitions, np.float64)
    a = t.copy() if directed else t + t.T - np.diag(np.diag(t))
    if not self_loops:
        np.fill_diagonal(a, 0.0)
    return a


def normalize_category_graph(a1: np.ndarray) -> np.ndarray:
    """Eq. 1: ``A₂(i, j) = a_ij / √((a_i + 1)(a_j + 1))`` with a_i the row sum (out-degree) of
    i and a_j the column sum (in-degree) of j; both are the degree for an undirected graph."""
    a1 = np.asarray(a1, np.float64)
    row = a1.sum(axis=1) + 1.0
    col = a1.sum(axis=0) + 1.0
    return a1 / np.sqrt(row[:, None] * col[None, :])


def attention_diffusion(a2: np.ndarray, alpha: float, hops: int | None) -> np.ndarray:
    """Eq. 2: ``A = Σ_i θ_i A₂^i`` with ``θ_i = α (1 − α)^i``; ``hops = None`` sums the infinite
    series in closed form ``α (I − (1 − α) A₂)⁻¹``, an integer the terms ``i = 0 .. hops`` with θ
    renormalised to sum 1."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    a2 = np.asarray(a2, np.float64)
    eye = np.eye(len(a2))
    if hops is None:
        return alpha * np.linalg.solve(eye - (1.0 - alpha) * a2, eye)
    theta = alpha * (1.0 - alpha) ** np.arange(hops + 1)
    theta = theta / theta.sum()
    out = theta[0] * eye
    power = eye
    for i in range(1, hops + 1):
        power = power @ a2
        out = out + theta[i] * power
    return out


def item_categories(log: InteractionLog) -> np.ndarray:
    """``[n_items]`` each item's most frequent category in the log (ties: the smallest code),
    ``-1`` for an item the log never shows."""
    out = np.full(log.n_items, -1, dtype=np.int64)
    if log.category is None or len(log.category) == 0:
        return out
    c = category_count(log)
    uniq, count = np.unique(log.item.astype(np.int64) * c + log.category, return_counts=True)
    items, cats = uniq // c, uniq % c
    order = np.lexsort((cats, -count, items))
    items, cats = items[order], cats[order]
    first = np.r_[True, items[1:] != items[:-1]]
    out[items[first]] = cats[first]
    return out


# ------------------------------------------------------------------ config


ABLATIONS: dict[str, dict[str, Any]] = {
    "base": {"high_level": False, "class_loss": False, "diversity": "none"},
    "base-class": {"high_level": False, "diversity": "none"},
    "fusion-add": {"fusion": "add"},
    "fusion-mul": {"fusion": "mul"},
    "capsule-reg": {"diversity": "capsule-reg"},
    "no-margin": {"margin": 0.0},
    "hpcl4sr": {},
}
"""Table 3's rows as config overrides: base, base(w L_class), HPCL4SR(w '+'), HPCL4SR(w '*'),
HPCL4SR(w CR), HPCL4SR(w/o m), HPCL4SR."""


class HPCL4SRConfig(ComiRecDRConfig):
    """Settings of :class:`HPCL4SR` (defaults: HPCL4SR §5.1; choices: see the module docstring)."""

    max_len: int = Field(30, ge=1)
    """Maximum history length N (§5.1: 30 on Amazon-Clothing and Tafeng, 20 on Tmall-Buy)."""
    n_interests: int = Field(4, ge=1)
    """Number of interests K (§5.1: K = 4)."""
    routing_iterations: int = Field(3, ge=1)
    """Capsule routing iterations of Eq. 10 (ComiRec-DR / REMI: 3)."""
    high_level: bool = True
    """Use the high-level (category graph) preferences Q_u (§4.1); False: M_u = P_u (Table 3 'base'
    rows)."""
    category_graph: Literal["undirected", "directed"] = "undirected"
    """Edges of the category graph A₁ (§4.1): consecutive categories counted both ways ('undirected')
    or from the earlier to the later one ('directed')."""
    category_self_loops: bool = True
    """Count a repeated category (c_t = c_{t+1}) on A₁'s diagonal (§4.1)."""
    diffusion: Literal["truncated", "exact"] = "truncated"
    """Eq. 2's sum: 'truncated' at diffusion_hops with θ renormalised, or 'exact' (the infinite series
    in closed form α(I − (1 − α)A₂)⁻¹)."""
    diffusion_alpha: float = Field(0.1, gt=0.0, le=1.0)
    """α of the diffusion weights θ_i = α(1 − α)^i (Eq. 2; MAGNA's geometric decay)."""
    diffusion_hops: int = Field(6, ge=0)
    """Largest power of A₂ in the truncated Eq. 2 (0: A = I, no diffusion)."""
    gcn_layers: int = Field(2, ge=0)
    """Residual GCN layers L of Eq. 3 (the paper gives no value)."""
    class_loss: bool = True
    """Use the category classification loss (Eq. 11-12; Table 3 ablations)."""
    class_loss_form: Literal["bce", "ce"] = "bce"
    """Eq. 12 as printed (binary cross-entropy of softmax outputs against one-hot labels, 'bce') or the
    text's cross-entropy ('ce')."""
    lambda_class: float = Field(0.1, ge=0.0)
    """Weight λ₁ of the classification loss (Eq. 20; §5.4: 0.1)."""
    fusion: Literal["mlp", "add", "mul"] = "mlp"
    """Fusion of Q_u and P_u: 'mlp' M_u = W[Q_u, P_u] (Eq. 13), 'add' Q_u + P_u, 'mul' Q_u ⊙ P_u (Table
    3: w '+', w '*')."""
    diversity: Literal["contrastive", "capsule-reg", "none"] = "contrastive"
    """Interest-diversity term: the angular-margin contrastive loss (Eq. 15-17), capsule orthogonality
    (Table 3 'w CR') or none."""
    contrast_views: Literal["fused", "high-level"] = "fused"
    """The view P_u is contrasted with: M_u ('fused', §4.3) or Q_u ('high-level')."""
    lambda_cl: float = Field(1.0, ge=0.0)
    """Weight λ₂ of the contrastive loss (Eq. 20; §5.4: 1)."""
    temperature: float = Field(0.05, gt=0.0)
    """Temperature τ of Eq. 15-17 (§5.4: 0.05)."""
    margin: float = Field(10.0, ge=0.0)
    """Additive angular margin m on the positive pair (Eq. 15; §5.4: 10, in margin_unit; 0 = Table 3
    'w/o m')."""
    margin_unit: Literal["degrees", "radians"] = "degrees"
    """Unit of margin (the paper gives none; 10 radians would exceed π)."""

    @model_validator(mode="after")
    def _consistent(self) -> HPCL4SRConfig:
        if self.diversity == "contrastive" and not self.high_level:
            raise ValueError(
                "diversity = 'contrastive' needs high_level = true (the second view); the "
                "'base' rows of Table 3 use diversity = 'none'"
            )
        if self.margin_radians >= math.pi:
            raise ValueError(f"margin {self.margin} {self.margin_unit} is not below π radians")
        return self

    @property
    def margin_radians(self) -> float:
        return math.radians(self.margin) if self.margin_unit == "degrees" else self.margin


# ------------------------------------------------------------------ model


class Views(NamedTuple):
    """What :meth:`HPCL4SR.encode` computes for a batch of histories."""

    interests: Tensor  # M_u [B, K, d] (Eq. 13): the interests the model retrieves with
    low: Tensor  # P_u [B, K, d] (Eq. 10)
    high: Tensor | None  # Q_u [B, K, d] (Eq. 6), None without the high-level module
    features: Tensor  # [B, T, d]: the history's Eq. 9 features (Z of Eq. 11)
    categories: Tensor  # [B, T]: +1-shifted category codes (0: padding or unknown item)


class HPCL4SR(
    SequentialModel, name="hpcl4sr", paper="Zhu et al., World Wide Web 2024", Config=HPCL4SRConfig
):
    """HPCL4SR: category-graph (high-level) and capsule (low-level) interests fused into K
    interests, trained with sampled softmax, category classification and an angular-margin
    contrastive loss between the low-level and the fused interests (WWW journal 2024, §4)."""

    config: HPCL4SRConfig

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        super().build(schema, data)
        config = self.config
        d, k, n = config.dim, config.n_interests, config.max_len
        needs_categories = config.high_level or config.class_loss
        if needs_categories and schema.n_categories == 0:
            name = data.log.name if data is not None else "of this export"
            raise ConfigError(
                f"model 'hpcl4sr' needs item categories, but dataset {name!r} has no "
                "'category' column: import the data with one (e.g. `polyrec data import ... "
                "--category-col COLUMN`), or set high_level = false and class_loss = false"
            )
        self.n_categories = schema.n_categories
        # item → +1-shifted category code (0: padding item or an item without category);
        # saved with the weights, so a restored network needs no log
        codes = np.zeros(self.n_items, dtype=np.int64) - 1
        if data is not None:
            codes = item_categories(data.log)
        self.item_category: Tensor
        self.register_buffer("item_category", torch.from_numpy(np.r_[0, codes + 1]))
        # low level (§4.2)
        self.pos_emb = nn.Embedding(n, d)  # E^pos of Eq. 7
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        self.context = nn.Linear(d, d)  # W of Eq. 9
        self.bilinear = nn.Parameter(torch.randn(n, k, d, d) / d**0.5)  # capsule maps (Eq. 10)
        self.classifier = nn.Linear(d, self.n_categories) if config.class_loss else None  # Eq. 11
        # high level (§4.1) and fusion (§4.3)
        self.diffusion: Tensor
        self.cat_emb: nn.Parameter | None = None
        self.gcn = nn.ModuleList()
        self.position_mix: nn.Parameter | None = None
        self.fuse: nn.Linear | None = None
        if config.high_level:
            # the diffused category graph of the training sequences (saved with the weights)
            graph = np.zeros((self.n_categories, self.n_categories), dtype=np.float32)
            if data is not None:
                graph = self.category_graph(self._views(data)[0].seqs, self.n_categories, config)
            self.register_buffer("diffusion", torch.from_numpy(graph.astype(np.float32)))
            self.cat_emb = nn.Parameter(torch.randn(self.n_categories, d) / d**0.5)  # H⁽⁰⁾
            self.gcn = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(config.gcn_layers))
            self.position_mix = nn.Parameter(torch.randn(k, n) / n**0.5)  # W of Eq. 6
            if config.fusion == "mlp":
                self.fuse = nn.Linear(2 * d, d)  # W of Eq. 13
        else:
            self.register_buffer("diffusion", torch.zeros(0, 0))

    @staticmethod
    def category_graph(seqs: SequenceSet, n_cat: int, config: HPCL4SRConfig) -> np.ndarray:
        """The diffused category graph A (Eq. 1-2) of the training sequences ``[C, C]``."""
        a1 = category_adjacency(
            category_transitions(seqs, n_cat),
            directed=config.category_graph == "directed",
            self_loops=config.category_self_loops,
        )
        hops = None if config.diffusion == "exact" else config.diffusion_hops
        return attention_diffusion(normalize_category_graph(a1), config.diffusion_alpha, hops)

    # ------------------------------------------------------------------ §4.1
    def category_table(self) -> Tensor:
        """Ĥ of Eq. 4 with a zero row 0 in front (padding / unknown category): ``[C + 1, d]``."""
        assert self.cat_emb is not None
        h: Tensor = self.cat_emb
        layers = [h]
        for w in self.gcn:
            h = w(self.diffusion @ h) + h  # Eq. 3
            layers.append(h)
        table = torch.stack(layers).mean(dim=0)  # Eq. 4 (the mean of the L + 1 layers)
        return torch.cat([table.new_zeros(1, table.shape[1]), table])

    def high_level(self, categories: Tensor) -> Tensor:
        """Q_u ``[B, K, d]`` from the history's +1-shifted categories ``[B, T]`` (Eq. 5-6)."""
        assert self.position_mix is not None
        t = categories.shape[1]
        hg = self.category_table()[categories]  # Eq. 5: [B, T, d], zero at padding
        return torch.einsum("kt,btd->bkd", self.position_mix[:, self.max_len - t :], hg)  # Eq. 6

    # ------------------------------------------------------------------ §4.2
    def low_level_features(self, histories: Tensor, pad: Tensor) -> Tensor:
        """The history's Eq. 9 features ``[B, T, d]``."""
        t = histories.shape[1]
        x = self.item_emb(histories) + self.pos_emb.weight[self.max_len - t :]  # Eq. 7
        # keys: the real items; a padding query also sees itself (finite, never read)
        eye = torch.eye(t, dtype=torch.bool, device=x.device)
        allowed = ~pad.unsqueeze(1) | eye  # [B, T, T]
        scores = torch.bmm(x, x.transpose(1, 2)).masked_fill(~allowed, float("-inf"))
        alpha = torch.softmax(scores, dim=2)  # Eq. 8
        return self.context(x + torch.bmm(alpha, x))  # Eq. 9

    # ------------------------------------------------------------------ §4.3
    def fuse_views(self, high: Tensor | None, low: Tensor) -> Tensor:
        """M_u from Q_u and P_u (Eq. 13, or Table 3's '+' / '*')."""
        if high is None:
            return low
        if self.fuse is not None:
            return self.fuse(torch.cat([high, low], dim=-1))  # Eq. 13
        return high + low if self.config.fusion == "add" else high * low

    def encode(self, histories: Tensor, lengths: Tensor) -> Views:
        """Every view of the histories (the forward pass of Fig. 2)."""
        histories, lengths = latest(histories, lengths, self.max_len)
        pad = key_padding(lengths, histories.shape[1])
        features = self.low_level_features(histories, pad)
        low = capsules(self.bilinear, features, pad, self.config.routing_iterations)[0]  # Eq. 10
        categories = self.item_category[histories]
        high = self.high_level(categories) if self.config.high_level else None
        return Views(self.fuse_views(high, low), low, high, features, categories)

    def interests(self, histories: Tensor, lengths: Tensor) -> Tensor:
        return self.encode(histories, lengths).interests

    def loss(self, batch: SeqBatch) -> dict[str, Tensor]:
        """Eq. 20: L_rec (Eq. 18-19) + λ₁ L_class (Eq. 12) + λ₂ L_mulCL (Eq. 17)."""
        cfg = self.config
        views = self.encode(batch.history, batch.lengths)
        out = self.recommendation_loss(views.interests, batch)
        if self.classifier is not None:
            logits = self.classifier(views.features)  # Eq. 11 (before the softmax)
            out["category"] = cfg.lambda_class * losses.category_classification(
                logits, views.categories - 1, cfg.class_loss_form
            )
        if cfg.diversity == "contrastive":
            other = views.interests if cfg.contrast_views == "fused" else views.high
            assert other is not None
            out["contrastive"] = cfg.lambda_cl * losses.angular_margin_nce(
                views.low, other, cfg.temperature, cfg.margin_radians
            )
        elif cfg.diversity == "capsule-reg":
            out["capsule_reg"] = cfg.lambda_cl * losses.interest_orthogonality(views.interests)
        return out


__all__ = [
    "ABLATIONS",
    "HPCL4SR",
    "HPCL4SRConfig",
    "Views",
    "attention_diffusion",
    "category_adjacency",
    "category_transitions",
    "item_categories",
    "normalize_category_graph",
]
