"""MBA: multi-behavior alignment for implicit-feedback denoising (Xin et al., SIGIR 2023)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from polyrec import losses
from polyrec.data.log import InteractionLog
from polyrec.data.sampling import PairSet, pair_keys, sample_negatives_t
from polyrec.data.views import BPRBatch, DataSchema, TrainData
from polyrec.errors import ConfigError, DataError
from polyrec.models._common import GraphScorer, Init
from polyrec.models.base import HoldoutEvaluator, ModelConfig, Scorer, make_optimizer
from polyrec.models.lightgcn import LightGCN, LightGCNConfig
from polyrec.models.mf import MF, MFConfig

PRETRAIN, MAIN = 0, 1
Backbone = Literal["mf", "lightgcn"]


class MBAConfig(ModelConfig):
    """Settings of :class:`MBA`; defaults are the paper's (§4.5) or, where it gives only a search
    grid, the authors' code defaults (LiuXiangYuan/MBA ``main.py``); see the class docstring."""

    backbone: Backbone = "mf"
    """Target model t_θ and the two behavior models (§3.3: 'the same model structures as our target
    recommender'): 'mf' (§4.5: MF is the default t_θ) or 'lightgcn' (§5.2 / Table 3, MBA on
    LightGCN)."""
    aux_behavior: str = "view"
    """The auxiliary behavior R_g, by name (§3.1: clicks/views; §4.2). Must be a behavior of the
    dataset other than the target."""
    aux_with_target: bool = True
    """R_g also holds every training pair of the target behavior (the authors' code merges the
    purchases into the click data, so §3.3.3's three situations cover every observed pair); False =
    the auxiliary behavior's own pairs only."""
    dim: int = Field(32, ge=1)
    """Embedding size of t_θ and the behavior models (§4.5: 32)."""
    n_layers: int = Field(3, ge=0)
    """LightGCN backbone: propagation layers (§4.5: fixed to 3 for graph models)."""
    init: Init = "normal"
    """Embedding init of every sub-model: 'normal' = N(0, init_std²) or 'xavier'."""
    init_std: float = Field(0.01, gt=0.0)
    """Std of the 'normal' init (authors' MF: 0.01; their LightGCN: 0.1 — set it in the LightGCN
    configs)."""
    alpha: float = Field(1.0, ge=0.0)
    """α, weight of the two KL alignment terms (Eq. 12; §4.5 grid {1, 10, 100, 1000}; code default 1).
    α = 0 is the MBA-KL ablation of Table 4."""
    c1: float = Field(1000.0, ge=0.0)
    """C_1, replaces −ln h_0 in the first alternating step (Eq. 15–16; §4.5 grid {1, 10, 100, 1000};
    code default 1000; the authors' best per dataset: Beibei 100, Taobao 1)."""
    c2: float = Field(1000.0, ge=0.0)
    """C_2, replaces −ln(1 − h_1) in the second alternating step (Eq. 17–18; §4.5 grid {1, 10, 100,
    1000}; code default 1000; the authors' best: Beibei 100, Taobao 1)."""
    beta: float = Field(0.8, ge=0.0, le=1.0)
    """β of the inference score β·P(R_t) + (1 − β)·P(R_f) (Eq. 3; §4.5 grid {0.7, 0.8, 1}; code default
    0.8). β = 1 scores with t_θ alone."""
    reg: float = Field(1e-4, ge=0.0)
    """λ of the L2 penalty λ·½Σ‖e‖²/B on t_θ's batch (ego) embeddings in the main phase (§4.5: 'L2
    normalization searched in {1e-6, …, 1}'; 1e-4 = the code's λ)."""
    pretrain_reg: float = Field(1e-4, ge=0.0)
    """λ of the behavior models' BPR pre-training (their own MF/LightGCN L2 term; the authors' README:
    1e-4 for MF, 1e-6 for LightGCN)."""
    target_graph: Literal["target", "union"] = "target"
    """LightGCN t_θ: the graph it propagates over (paper silent): 'target' = the target behavior's
    pairs (the code's norm_adj_buy) or 'union' = R_f ∪ R_g. MF: no effect."""
    h_model: Literal["mf", "backbone"] = "mf"
    """Structure of the four h-models of Eq. 2 (paper silent): 'mf' (the code's default h_model = MF,
    also under a LightGCN t_θ) or 'backbone' (same as t_θ)."""
    h_dim: int = Field(32, ge=1)
    """Embedding size of the h-models (code: emb_dim = 32)."""
    h_init_std: float = Field(0.01, gt=0.0)
    """Std of the MF h-models' 'normal' init (the code's h-models are always its MF, std 0.01, whatever
    the backbone's init)."""
    schedule: Literal["alternate", "joint"] = "alternate"
    """'alternate': the two alternating steps of §3.3.2 / Algorithm 1 (one per mini-batch, first step
    first); 'joint': Eq. 12–14 with all five models at once (the variant §3.3.2 reports as
    unsatisfactory)."""
    pretrain_epochs: int = Field(400, ge=0)
    """Most epochs of pre-training P(R_f) and P(R_g) (§3.3: pre-trained, then fixed; code: up to 400
    epochs). 0 = no pre-training (tests only)."""
    pretrain_patience: int = Field(20, ge=1)
    """Each behavior model stops pre-training after this many evaluations without a gain and keeps its
    best weights (the code's pretrain_early_stop_rounds = 20): P(R_f) on the validation split,
    P(R_g) on the aux_holdout slice."""
    aux_holdout: float = Field(0.05, ge=0.0, lt=1.0)
    """Share of the auxiliary-only pairs (in R_g, not in R_f) held out from P(R_g)'s pre-training to
    early-stop it on its own Recall@20, as the code early-stops its click model on held-out clicks;
    they stay in the main phase's R_g. 0 = P(R_g) stops with P(R_f)."""


@dataclass
class PretrainBatch:
    """BPR triples of one behavior model: ``which`` = "f" (target) or "g" (auxiliary)."""

    which: str
    bpr: BPRBatch

    def to(self, device: torch.device) -> PretrainBatch:
        return PretrainBatch(self.which, self.bpr.to(device))


@dataclass
class MBABatch:
    """Main-phase samples (Algorithm 1): observed pairs of R_f ∪ R_g and one negative each.

    ``obs_f``/``obs_g``: whether (user, pos) is observed in R_f / R_g — situation (i) both,
    (ii) g only; ``neg`` is unobserved in both (situation (iii)).
    """

    user: Tensor
    pos: Tensor
    neg: Tensor
    obs_f: Tensor
    obs_g: Tensor

    def to(self, device: torch.device) -> MBABatch:
        return MBABatch(*(t.to(device) for t in vars(self).values()))


class _Snapshot(nn.Module):
    """Buffers holding a copy of a model's parameters (the best pre-training epoch)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        for name, p in model.named_parameters():
            self.register_buffer(name.replace(".", "__"), p.detach().clone())

    def save(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                getattr(self, name.replace(".", "__")).copy_(p)

    def restore(self, model: nn.Module) -> None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(getattr(self, name.replace(".", "__")))


def _behavior_log(log: InteractionLog, names: tuple[str, ...]) -> InteractionLog:
    """The rows of behaviors ``names`` as a one-behavior log whose target is that behavior."""
    codes = [log.behavior_code(n) for n in names]
    sub = log.select(np.isin(log.behavior, codes))
    label = "+".join(names)
    return replace(
        sub, behavior=np.zeros(len(sub), dtype=np.int8), behaviors=(label,), target=label
    )


def _pair_logits(
    model: Scorer, users: Tensor, items: Tensor, *, fixed: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """``e_u · e_i`` of a backbone for each user of ``users`` [B] against its items in
    ``items`` [k·B] (row-major: the j-th block of B items belongs to users 0..B-1), and the
    gathered user [B, d] and item [k·B, d] embeddings. Each user row is gathered once; a
    LightGCN propagates once. ``fixed``: a frozen model (LightGCN: its cached propagation)."""
    if fixed:
        emb = model.user_item_embeddings()
        assert emb is not None
        eu, ei = F.embedding(users, emb[0]), F.embedding(items, emb[1])
    elif isinstance(model, MF):
        eu, ei = model.user_emb(users), model.item_emb(items)
    else:
        assert isinstance(model, GraphScorer)
        u_all, i_all = model.final_embeddings()
        eu, ei = F.embedding(users, u_all), F.embedding(items, i_all)
    logits = (ei.view(-1, len(users), ei.shape[-1]) * eu).sum(-1).reshape(-1)
    return logits, eu, ei


def _sides(x: Tensor, n: int) -> Tensor:
    """Mean over the ``n`` positives plus mean over the ``n`` negatives (authors' reduction)."""
    return x.view(2, n).mean(1).sum()


def _after_load(module: nn.Module, incompatible_keys: Any) -> None:
    """load_state_dict post-hook: the loaded phase decides which models are frozen."""
    if isinstance(module, MBA):
        module._apply_phase()


class MBA(
    Scorer,
    name="mba",
    paper=(
        "Xin et al., Improving Implicit Feedback-Based Recommendation through Multi-Behavior "
        "Alignment, SIGIR 2023"
    ),
    Config=MBAConfig,
):
    """MBA (Xin et al., "Improving Implicit Feedback-Based Recommendation through Multi-Behavior
    Alignment", SIGIR 2023).

    **Models (§3.1).** The latent true preference r^t_ui ~ Bernoulli(t_θ(u, i)) (Eq. 1), with
    t_θ = σ(e_u · e_i) of an MF (default) or LightGCN backbone (polyrec's :class:`MF` /
    :class:`LightGCN`, composed). Two behavior models of the same structure give P(R_f) (target
    behavior, e.g. buy) and P(R_g) (``aux_behavior``, e.g. view). Four h-models give the noisy
    channel of Eq. 2 per behavior b ∈ {f, g}: h1_b = P(r^b = 1 | r^t = 1) and
    h0_b = P(r^b = 1 | r^t = 0).

    **Schedule (§3.3).** Pre-training, then the main phase, all through :meth:`train_step`:

    1. *Pre-training.* Each epoch trains P(R_f) on R_f and P(R_g) on R_g with BPR (their own
       MF/LightGCN losses; negatives outside the behavior's pairs). Each model stops on its own
       criterion, as the authors' code early-stops each one on held-out data, and keeps the
       weights of its best evaluation: P(R_f) on the validation split (the model scores with
       P(R_f) while pre-training, and the trainer passes the selection metric to the
       ``on_validation`` hook), P(R_g) on its Recall@20 over ``aux_holdout`` of the
       auxiliary-only pairs, held out from its pre-training only. After ``pretrain_patience``
       evaluations without a gain a model is restored to its best epoch and frozen
       (``requires_grad=False``, never stepped again); when both are (or after
       ``pretrain_epochs`` epochs) the main phase starts. While pre-training the hook restarts
       the trainer's patience, so early stopping counts main-phase epochs only; the trainer's
       best-epoch choice still covers both phases (if no main-phase epoch beats the pre-trained
       P(R_f) on validation, P(R_f) is the result). Without the hook (a hand-written loop)
       pre-training lasts ``pretrain_epochs`` epochs.
    2. *Main phase* (Algorithm 1). Mini-batches of observed pairs of R_f ∪ R_g, each with one
       negative unobserved in both. Per pair, the loss is Eq. 12: α·KL[P(R_f)‖P(R_t)] +
       α·KL[P(R_g)‖P(R_t)] (Eq. 5–6, :func:`~polyrec.losses.kl_bernoulli`) minus the expected
       log-likelihood of the observation of each behavior (Eq. 13–14,
       :func:`~polyrec.losses.bernoulli_channel_loglik`). With ``schedule="alternate"``
       mini-batches alternate between the first step (h0 ≈ 0: L_CP, L_CN, L_PP, L_PN with C_1,
       Eq. 15–16; updates h1_f, h1_g and θ) and the second (h1 ≈ 1: L'_CP, L'_CN, L'_PP, L'_PN
       with C_2, Eq. 17–18; updates h0_f, h0_g and θ), starting with the first as Algorithm 1.
       Plus λ·L2 on t_θ's batch embeddings.

    **Inference (Eq. 3).** β·σ(s_t) + (1 − β)·σ(s_f); β = 1 returns t_θ's own scores (the same
    ranking as σ of them).

    **Choices where the paper is silent or ambiguous** (each configurable where it matters):

    * R_g includes the target's training pairs (``aux_with_target``, as the authors' code).
    * The main phase samples one shuffled pool of R_f ∪ R_g (Algorithm 1's "sample (u, i) from
      D"; the code makes one pass over buy pairs and one over view-only pairs) with one negative
      per positive from situation (iii), and reduces each term as mean over positives + mean
      over negatives (as the code).
    * The sign of C_2 in L'_CN/L'_PN is minus (the paper prints plus; C_2 replaces
      −ln(1 − h_1)); logarithms are exact (``logsigmoid``; the code adds 1e-5).
    * h-models are MF of size ``h_dim`` without L2 (the code's).
    * C_1 = C_2 = 1000, α = 1, β = 0.8 are the code's defaults (the paper gives only the grids;
      configs/ hold per-dataset values).
    * The main-phase L2 is on the batch embeddings (the code penalises the whole tables).
    * P(R_f)'s pre-training stops on polyrec's validation split and P(R_g)'s on a held-out slice
      of its own pairs (the code early-stops both on their test files).
    * A LightGCN t_θ propagates over the target behavior's graph (``target_graph``, as the
      code; "union" = R_f ∪ R_g).

    **Cost.** Everything is batched: per main-phase mini-batch t_θ, two h-models and the two
    frozen models score the 2·B pairs by gathered inner products; a LightGCN t_θ propagates once
    per batch, the frozen LightGCN behavior models once per epoch (cached). MF tables give
    row-sparse gradients that become the equal dense gradient before a dense (fused) Adam step,
    and a step runs only the optimisers its loss reaches (see :meth:`train_step`). Negatives are
    drawn vectorised for the whole batch. No users × items matrix is built except the
    evaluator's per-user-batch score block.
    """

    config: MBAConfig
    phase: Tensor
    pre_epochs: Tensor
    pre_best: Tensor
    pre_bad: Tensor
    pre_done: Tensor
    snapshot_ok: Tensor
    step_flag: Tensor

    def __init__(self, config: MBAConfig | None = None) -> None:
        super().__init__(config)
        self.register_load_state_dict_post_hook(_after_load)

    def build(self, schema: DataSchema, data: TrainData | None) -> None:
        config = self.config
        assert data is not None  # not rebuildable: setup() always passes the data
        log = data.log
        aux, target = config.aux_behavior, log.target
        if aux not in log.behaviors:
            raise ConfigError(
                f"params.aux_behavior={aux!r}: dataset {log.name!r} has no such behavior; its "
                f"behaviors are {', '.join(log.behaviors)} (target {target!r})"
            )
        if aux == target:
            others = [b for b in log.behaviors if b != target]
            raise ConfigError(
                f"params.aux_behavior={aux!r} is the target behavior; choose another one "
                f"({', '.join(others) or 'the dataset has no other behavior'})"
            )
        names = (aux, target) if config.aux_with_target else (aux,)
        g_log = _behavior_log(log, names)
        self._data_f = data
        self._data_g = TrainData(g_log)
        f_u, f_i = data.pairs(target)
        g_u, g_i = self._data_g.pairs(g_log.target)
        if len(g_u) == 0:
            raise DataError(
                f"dataset {log.name!r}: the auxiliary behavior {aux!r} has no training pairs"
            )
        # the main phase's pool: distinct pairs of R_f ∪ R_g with their observations
        keys_f = pair_keys(f_u, f_i, self.n_items)
        keys_g = pair_keys(g_u, g_i, self.n_items)
        pool = np.union1d(keys_f, keys_g)
        self._pool = (
            torch.from_numpy(pool // self.n_items),
            torch.from_numpy(pool % self.n_items),
            torch.from_numpy(np.isin(pool, keys_f)),
            torch.from_numpy(np.isin(pool, keys_g)),
        )
        self._pool_set = PairSet(pool // self.n_items, pool % self.n_items, self.n_items)
        # P(R_g)'s own early-stopping slice: auxiliary-only pairs it does not pre-train on
        aux_only = np.setdiff1d(keys_g, keys_f, assume_unique=True)
        n_hold = round(len(aux_only) * config.aux_holdout)
        hold = np.sort(aux_only[torch.randperm(len(aux_only))[:n_hold].numpy()])
        self._hold_keys = hold
        self._data_g_pre = self._data_g
        self._g_mask_keys = keys_g
        if n_hold:
            keep = ~np.isin(g_log.user * self.n_items + g_log.item, hold)
            self._data_g_pre = TrainData(g_log.select(keep))
            self._g_mask_keys = np.setdiff1d(keys_g, hold, assume_unique=True)

        def build(
            kind: str, d: TrainData, dim: int, reg: float, std: float = config.init_std
        ) -> Scorer:
            if kind == "mf":
                return MF(
                    MFConfig(dim=dim, reg=reg, init=config.init, init_std=std, behaviors="target")
                ).setup(d)
            return LightGCN(
                LightGCNConfig(
                    dim=dim,
                    n_layers=config.n_layers,
                    reg=reg,
                    init=config.init,
                    init_std=config.init_std,
                    behaviors="target",
                )
            ).setup(d)

        h_kind = "mf" if config.h_model == "mf" else config.backbone
        h_dim = config.h_dim if config.h_model == "mf" else config.dim
        self.pre_f = build(config.backbone, self._data_f, config.dim, config.pretrain_reg)
        self.pre_g = build(config.backbone, self._data_g_pre, config.dim, config.pretrain_reg)
        t_data = self._data_f
        if config.target_graph == "union":
            t_data = (
                self._data_g
                if config.aux_with_target
                else TrainData(_behavior_log(log, (aux, target)))
            )
        self.target = build(config.backbone, t_data, config.dim, config.reg)
        h_std = config.h_init_std if config.h_model == "mf" else config.init_std
        self.h1_f = build(h_kind, self._data_f, h_dim, 0.0, h_std)
        self.h0_f = build(h_kind, self._data_f, h_dim, 0.0, h_std)
        self.h1_g = build(h_kind, self._data_g, h_dim, 0.0, h_std)
        self.h0_g = build(h_kind, self._data_g, h_dim, 0.0, h_std)
        # MF tables give row-sparse gradients, made dense in train_step (exact dense Adam)
        self._sparse_tables: list[nn.Embedding] = []  # a plain list: deepcopy maps it too
        for mf in (m for m in self.modules() if isinstance(m, MF)):
            for emb in (mf.user_emb, mf.item_emb):
                emb.sparse = True
                self._sparse_tables.append(emb)
        self.best_f = _Snapshot(self.pre_f)
        self.best_g = _Snapshot(self.pre_g)
        start = PRETRAIN if config.pretrain_epochs > 0 else MAIN
        self.register_buffer("phase", torch.tensor(start, dtype=torch.int64))
        self.register_buffer("pre_epochs", torch.tensor(0, dtype=torch.int64))
        # per behavior model (index 0 = f, 1 = g): best value, evaluations without gain,
        # whether it has finished pre-training, whether its snapshot holds a best epoch
        self.register_buffer("pre_best", torch.full((2,), -torch.inf, dtype=torch.float64))
        self.register_buffer("pre_bad", torch.zeros(2, dtype=torch.int64))
        self.register_buffer("pre_done", torch.zeros(2, dtype=torch.int64))
        self.register_buffer("snapshot_ok", torch.zeros(2, dtype=torch.int64))
        self.register_buffer("step_flag", torch.tensor(0, dtype=torch.int64))
        # seconds spent per phase (batch building + steps), read by benchmarks
        self.timing: dict[str, float] = {"pretrain_f": 0.0, "pretrain_g": 0.0, "main": 0.0}
        self._apply_phase()

    # ------------------------------------------------------------------ phases
    @property
    def pretraining(self) -> bool:
        return int(self.phase) == PRETRAIN

    def _behavior_models(self) -> tuple[tuple[Scorer, _Snapshot], tuple[Scorer, _Snapshot]]:
        return (self.pre_f, self.best_f), (self.pre_g, self.best_g)

    def _apply_phase(self) -> None:
        """Freeze every behavior model that finished pre-training (all in the main phase)."""
        for k, (m, _) in enumerate(self._behavior_models()):
            frozen = not self.pretraining or bool(self.pre_done[k])
            for p in m.parameters():
                p.requires_grad_(not frozen)
            m.invalidate()
            if frozen:
                m.prepare_scoring()  # a frozen LightGCN propagates once

    def _finish(self, k: int) -> None:
        """Behavior model ``k`` (0 = f, 1 = g) ends pre-training with its best weights."""
        if bool(self.pre_done[k]):
            return
        model, snap = self._behavior_models()[k]
        if bool(self.snapshot_ok[k]):
            snap.restore(model)
        self.pre_done[k] = 1
        if bool(self.pre_done.all()):
            self.phase.fill_(MAIN)  # §3.3: pre-trained, then fixed
            self.step_flag.zero_()
        self._apply_phase()
        self.invalidate()

    def _track(self, k: int, value: float) -> None:
        """Early stopping of behavior model ``k`` on ``value`` (snapshot of its best epoch)."""
        model, snap = self._behavior_models()[k]
        if value > float(self.pre_best[k]):
            self.pre_best[k] = value
            self.pre_bad[k] = 0
            snap.save(model)
            self.snapshot_ok[k] = 1
        else:
            self.pre_bad[k] += 1

    def on_epoch_start(self, epoch: int) -> None:
        if self.pretraining:
            if int(self.pre_epochs) >= self.config.pretrain_epochs:
                self._finish(0)
                self._finish(1)
            else:
                self.pre_epochs += 1
        if not self.pretraining:
            self.pre_f.prepare_scoring()
            self.pre_g.prepare_scoring()

    def on_validation(self, value: float, evaluate: HoldoutEvaluator | None = None) -> bool:
        """Trainer hook, called with the validation metric after each evaluation.

        While pre-training: ``value`` (P(R_f) scores the validation split) early-stops P(R_f);
        P(R_g) is evaluated on its held-out auxiliary pairs (Recall@20) and early-stopped on that
        (or, with ``aux_holdout = 0``, kept at P(R_f)'s best epoch and stopped with it). Each
        stops after ``pretrain_patience`` evaluations without a gain, keeping its best weights;
        when both have stopped (or after ``pretrain_epochs`` epochs) the main phase begins.
        Returns True while pre-training, so the trainer's patience counts main-phase epochs only.
        """
        if not self.pretraining:
            return False
        cfg = self.config
        g_follows_f = len(self._hold_keys) == 0
        if not bool(self.pre_done[0]):
            self._track(0, value)
            if g_follows_f and not bool(self.pre_done[1]):
                self._track(1, value)
        if not g_follows_f and not bool(self.pre_done[1]):
            self._track(1, self.aux_holdout_recall(evaluate))
        for k in (0, 1):
            if int(self.pre_bad[k]) >= cfg.pretrain_patience or (
                g_follows_f and k == 1 and bool(self.pre_done[0])
            ):
                self._finish(k)
        if int(self.pre_epochs) >= cfg.pretrain_epochs:
            self._finish(0)
            self._finish(1)
        return True

    @torch.no_grad()
    def aux_holdout_recall(self, evaluate: HoldoutEvaluator | None, k: int = 20) -> float:
        """Recall@k of P(R_g) on its held-out auxiliary pairs (full ranking, its pre-training
        pairs masked), the criterion of its early stopping; ``evaluate`` is the trainer's
        :class:`~polyrec.models.base.HoldoutEvaluator`."""
        if len(self._hold_keys) == 0:
            return float("nan")
        if evaluate is None:
            raise RuntimeError(
                "MBA's pre-training early-stops P(R_g) on held-out auxiliary pairs: "
                "on_validation needs the trainer's evaluator (evaluate=...)"
            )
        model = self.pre_g
        was_training = model.training
        model.eval()
        model.prepare_scoring()
        value = evaluate(model, self._hold_keys, self._g_mask_keys, k)
        model.invalidate()
        model.train(was_training)
        return float(value)

    # ------------------------------------------------------------------ batches
    def n_batches(self, data: TrainData, batch_size: int) -> int:
        def n(d: TrainData) -> int:
            return -(-len(d.pairs(d.log.target)[0]) // batch_size)

        if self.pretraining:
            todo = [
                d for k, d in enumerate((self._data_f, self._data_g_pre)) if not self.pre_done[k]
            ]
            return sum(n(d) for d in todo)
        return -(-len(self._pool[0]) // batch_size)

    def batches(
        self, data: TrainData, batch_size: int, generator: torch.Generator
    ) -> Iterator[PretrainBatch | MBABatch]:
        if self.pretraining:
            return self._pretrain_batches(batch_size, generator)
        return self._main_batches(batch_size, generator)

    def _pretrain_batches(
        self, batch_size: int, generator: torch.Generator
    ) -> Iterator[PretrainBatch]:
        """One BPR epoch of P(R_f) on R_f, then one of P(R_g) on R_g (those still training)."""
        todo = (("f", self.pre_f, self._data_f), ("g", self.pre_g, self._data_g_pre))
        for k, (which, model, d) in enumerate(todo):
            if bool(self.pre_done[k]):
                continue
            key = f"pretrain_{which}"
            it = model.batches(d, batch_size, generator)
            while True:
                t0 = time.perf_counter()
                b = next(it, None)
                self.timing[key] += time.perf_counter() - t0
                if b is None:
                    break
                yield PretrainBatch(which, b)

    def _main_batches(self, batch_size: int, generator: torch.Generator) -> Iterator[MBABatch]:
        """Shuffled observed pairs of R_f ∪ R_g, one negative each from neither (§3.3.3)."""
        users, items, obs_f, obs_g = self._pool
        t0 = time.perf_counter()
        perm = torch.randperm(len(users), generator=generator)
        for start in range(0, len(users), batch_size):
            idx = perm[start : start + batch_size]
            u = users[idx]
            neg = sample_negatives_t(u, self.n_items, self._pool_set, generator)
            batch = MBABatch(u, items[idx], neg, obs_f[idx], obs_g[idx])
            self.timing["main"] += time.perf_counter() - t0
            yield batch
            t0 = time.perf_counter()

    # ------------------------------------------------------------------ losses
    def loss(self, batch: PretrainBatch | MBABatch) -> dict[str, Tensor]:
        if isinstance(batch, PretrainBatch):
            model = self.pre_f if batch.which == "f" else self.pre_g
            terms = model.loss(batch.bpr)  # BPR + L2 of the behavior model
            return {f"pre_{k}_{batch.which}": v for k, v in terms.items()}
        if self.config.schedule == "joint":
            return self.mba_loss(batch, step=0)
        return self.mba_loss(batch, step=1 + int(self.step_flag))

    def mba_loss(self, batch: MBABatch, step: int) -> dict[str, Tensor]:
        """Eq. 12 on a mini-batch: ``step`` 1 (Eq. 15–16), 2 (Eq. 17–18) or 0 (Eq. 13–14).

        Every term is evaluated on the B positives and the B negatives of the batch and
        reduced as mean over positives + mean over negatives.
        """
        cfg = self.config
        n = len(batch.user)
        users = batch.user
        items = torch.cat([batch.pos, batch.neg])  # [2B]: positives, then negatives
        none = torch.zeros_like(batch.obs_f)
        obs = {"f": torch.cat([batch.obs_f, none]), "g": torch.cat([batch.obs_g, none])}
        t, eu, ei = _pair_logits(self.target, users, items)  # t_θ(u, i) = σ(t) (Eq. 1)
        with torch.no_grad():  # the pre-trained, frozen P(R_f) and P(R_g) (§3.3)
            fixed = {
                "f": _pair_logits(self.pre_f, users, items, fixed=True)[0],
                "g": _pair_logits(self.pre_g, users, items, fixed=True)[0],
            }
        h1 = {"f": self.h1_f, "g": self.h1_g}
        h0 = {"f": self.h0_f, "g": self.h0_g}
        out: dict[str, Tensor] = {}
        for b in ("f", "g"):
            # α·KL[P(R_b) ‖ P(R_t)] (Eq. 5 / 6, weighted by α as in Eq. 12)
            kl = losses.kl_bernoulli(fixed[b], t, reduction="none")
            out[f"kl_{b}"] = cfg.alpha * _sides(kl, n)
        for b in ("f", "g"):
            # −E_{P(R_t)}[log P(R_b | R_t)] (Eq. 13 / 14; step approximations Eq. 15–18)
            l1 = _pair_logits(h1[b], users, items)[0] if step in (0, 1) else None
            l0 = _pair_logits(h0[b], users, items)[0] if step in (0, 2) else None
            ll = losses.bernoulli_channel_loglik(t, obs[b], l1, l0, c1=cfg.c1, c2=cfg.c2)
            out[f"nll_{b}"] = -_sides(ll, n)
        tgt = self.target
        if isinstance(tgt, LightGCN):  # L2 on the ego (layer-0) embeddings, as LightGCN's
            eu, ei = tgt.user_emb(users), tgt.item_emb(items)
        out["reg"] = cfg.reg * losses.l2_reg(eu, ei, batch_size=n)
        return out

    # ------------------------------------------------------------------ training schedule
    def make_optimisers(
        self, lr: float, weight_decay: float, optimizer: str
    ) -> list[torch.optim.Optimizer]:
        """One optimiser per role, in this order: P(R_f), P(R_g), t_θ, the first step's
        h-models (h1_f, h1_g), the second step's (h0_f, h0_g). Each step steps only the ones
        its loss reaches (the code's one Adam per model, stepped the same way); the list does
        not depend on the phase (checkpoints)."""
        groups = [
            self.pre_f.parameters(),
            self.pre_g.parameters(),
            self.target.parameters(),
            [*self.h1_f.parameters(), *self.h1_g.parameters()],
            [*self.h0_f.parameters(), *self.h0_g.parameters()],
        ]
        return [make_optimizer(list(g), optimizer, lr, weight_decay) for g in groups]

    def _roles(self, batch: PretrainBatch | MBABatch) -> tuple[int, ...]:
        """Indices (see :meth:`make_optimisers`) of the optimisers a batch's step updates."""
        if isinstance(batch, PretrainBatch):
            return (0,) if batch.which == "f" else (1,)
        if self.config.schedule == "joint":
            return (2, 3, 4)
        return (2, 3) if int(self.step_flag) == 0 else (2, 4)

    def train_step(
        self, batch: PretrainBatch | MBABatch, optimisers: list[torch.optim.Optimizer]
    ) -> dict[str, float]:
        """One step of the current phase; a main-phase step then flips Algorithm 1's flag.

        MF embedding tables produce sparse (row) gradients; before the optimiser step each is
        turned into the dense gradient a plain ``nn.Embedding`` would give (a zero table plus
        ``index_add_`` of the rows), so the optimiser (Adam) is exactly the dense one; this
        skips the sort-based dense embedding backward, about 4× slower here.
        """
        t0 = time.perf_counter()
        active = [optimisers[k] for k in self._roles(batch)]
        out = self.descend(batch, active, after_backward=self._densify_grads)
        if isinstance(batch, MBABatch):
            if self.config.schedule == "alternate":
                self.step_flag.fill_(1 - int(self.step_flag))  # Algorithm 1: flag = 1 − flag
            key = "main"
        else:
            key = f"pretrain_{batch.which}"
        self.timing[key] += time.perf_counter() - t0
        return out

    def _densify_grads(self) -> None:
        """Sparse embedding gradients → the equal dense gradients (zeros + ``index_add_``)."""
        for emb in self._sparse_tables:
            p = emb.weight
            g = p.grad
            if g is not None and g.is_sparse:
                p.grad = torch.zeros_like(p).index_add_(0, g._indices()[0], g._values())

    def invalidate(self) -> None:
        self.target.invalidate()
        if self.pretraining:
            for k, (m, _) in enumerate(self._behavior_models()):
                if not bool(self.pre_done[k]):
                    m.invalidate()

    # ------------------------------------------------------------------ scoring
    def prepare_scoring(self) -> None:
        self.pre_f.prepare_scoring()
        if not self.pretraining:
            self.target.prepare_scoring()

    def scores(self, users: Tensor) -> Tensor:
        """P(R_f) while pre-training; then β·σ(s_t) + (1 − β)·σ(s_f) (Eq. 3)."""
        if self.pretraining:
            return self.pre_f.scores(users)
        beta = self.config.beta
        if beta == 1.0:
            return self.target.scores(users)
        s = torch.sigmoid_(self.target.scores(users)).mul_(beta)
        return s.add_(torch.sigmoid_(self.pre_f.scores(users)), alpha=1.0 - beta)

    def user_item_embeddings(self) -> tuple[Tensor, Tensor] | None:
        if self.pretraining:
            return self.pre_f.user_item_embeddings()
        if self.config.beta == 1.0:
            return self.target.user_item_embeddings()
        return None


__all__ = ["MBA", "MBABatch", "MBAConfig", "PretrainBatch"]
