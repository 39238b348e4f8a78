"""MBA: the KL and noisy-channel terms, the pre-training → main schedule, frozen behavior models,
the inference score, errors, and a short run on the embedded data.

The registry contract (tests/test_contract.py) covers MBA with its defaults (pre-training); the
classes below run the same contract on the main phase, for both backbones.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch

import polyrec
from model_contract import ModelContract, ModelSpec, synthetic_log
from polyrec import losses
from polyrec.errors import ConfigError
from polyrec.eval.holdout import holdout_recall
from polyrec.models import TrainData, build_model
from polyrec.models.mba import MBA, MBABatch, PretrainBatch

SMALL = {"dim": 8, "h_dim": 8, "c1": 1.0, "c2": 1.0}


def make(params: dict[str, Any] | None = None, seed: int = 0) -> tuple[MBA, TrainData]:
    data = TrainData(synthetic_log())
    torch.manual_seed(seed)
    model = build_model("mba", {**SMALL, **(params or {})}, data)
    assert isinstance(model, MBA)
    return model, data


def first_batch(model: MBA, data: TrainData, batch_size: int = 64) -> Any:
    return next(iter(model.batches(data, batch_size, torch.Generator().manual_seed(0))))


def params_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- the contract, main phase
class TestMainPhaseContract(ModelContract):
    """The model contract with no pre-training: every step is a main-phase (MBA) step."""

    @pytest.fixture(params=["mf", "lightgcn"])
    def spec(self, request: pytest.FixtureRequest) -> ModelSpec:
        extra = {"n_layers": 2} if request.param == "lightgcn" else {}
        return ModelSpec("mba", {**SMALL, "pretrain_epochs": 0, "backbone": request.param, **extra})


# ---------------------------------------------------------------------- loss terms
def test_kl_bernoulli_hand_computed() -> None:
    p = torch.tensor([0.0, math.log(4.0)])  # p = 0.5, 0.8
    q = torch.tensor([math.log(3.0), 0.0])  # q = 0.75, 0.5
    # KL(0.5‖0.75) = 0.5 ln(0.5/0.75) + 0.5 ln(0.5/0.25) = 0.5 ln(4/3)
    # KL(0.8‖0.5)  = 0.8 ln 1.6 + 0.2 ln 0.4
    expected = torch.tensor([0.5 * math.log(4 / 3), 0.8 * math.log(1.6) + 0.2 * math.log(0.4)])
    torch.testing.assert_close(losses.kl_bernoulli(p, q, reduction="none"), expected)
    torch.testing.assert_close(losses.kl_bernoulli(p, q), expected.mean())
    torch.testing.assert_close(losses.kl_bernoulli(p, q, reduction="sum"), expected.sum())
    assert float(losses.kl_bernoulli(q, q)) == pytest.approx(0.0, abs=1e-7)
    big = losses.kl_bernoulli(torch.tensor([40.0]), torch.tensor([-40.0]))
    assert torch.isfinite(big) and float(big) == pytest.approx(40.0, rel=1e-3)
    with pytest.raises(ValueError, match="reduction"):
        losses.kl_bernoulli(p, q, reduction="max")


def test_channel_loglik_hand_computed() -> None:
    t = torch.tensor([0.0, 0.0])  # t = 0.5
    obs = torch.tensor([True, False])
    h = torch.tensor([math.log(3.0), math.log(3.0)])  # h = 0.75
    ln75, ln25 = math.log(0.75), math.log(0.25)
    # step 1 (h0 ≈ 0): r=1 → t ln h1 − C1 (1 − t); r=0 → t ln(1 − h1)   (Eq. 15–16)
    s1 = losses.bernoulli_channel_loglik(t, obs, h1_logits=h, c1=10.0, c2=99.0)
    torch.testing.assert_close(s1, torch.tensor([0.5 * ln75 - 5.0, 0.5 * ln25]))
    # step 2 (h1 ≈ 1): r=1 → (1 − t) ln h0; r=0 → −C2 t + (1 − t) ln(1 − h0)   (Eq. 17–18)
    s2 = losses.bernoulli_channel_loglik(t, obs, h0_logits=h, c1=99.0, c2=10.0)
    torch.testing.assert_close(s2, torch.tensor([0.5 * ln75, -5.0 + 0.5 * ln25]))
    # both h (Eq. 13–14): t ln P(r|1) + (1 − t) ln P(r|0); h0 = 0.25
    h0 = torch.tensor([-math.log(3.0), -math.log(3.0)])
    both = losses.bernoulli_channel_loglik(t, obs, h, h0)
    torch.testing.assert_close(
        both, torch.tensor([0.5 * ln75 + 0.5 * ln25, 0.5 * ln25 + 0.5 * ln75])
    )
    with pytest.raises(ValueError, match="h1_logits"):
        losses.bernoulli_channel_loglik(t, obs)


def test_kl_alignment_term_against_hand_computation() -> None:
    model, data = make({"pretrain_epochs": 0, "alpha": 3.0})
    batch = first_batch(model, data)
    assert isinstance(batch, MBABatch)
    out = model.mba_loss(batch, step=1)
    users = torch.cat([batch.user, batch.user])
    items = torch.cat([batch.pos, batch.neg])
    with torch.no_grad():

        def prob(m: Any) -> torch.Tensor:
            u, i = m.user_item_embeddings()
            return torch.sigmoid((u[users] * i[items]).sum(-1).double())

        t = prob(model.target)
        n = len(batch.user)
        for name, m in (("kl_f", model.pre_f), ("kl_g", model.pre_g)):
            p = prob(m)
            kl = p * torch.log(p / t) + (1 - p) * torch.log((1 - p) / (1 - t))
            expected = 3.0 * (kl[:n].mean() + kl[n:].mean())  # α·(mean over pos + mean over neg)
            assert float(out[name]) == pytest.approx(float(expected), rel=1e-4, abs=1e-7)
    assert set(out) == {"kl_f", "kl_g", "nll_f", "nll_g", "reg"}


def test_batches_hold_observed_positives_and_unobserved_negatives() -> None:
    model, data = make({"pretrain_epochs": 0})
    batch = first_batch(model, data, batch_size=256)
    f_set = data.pair_set("buy")
    g_set = model._data_g.pair_set(model._data_g.log.target)
    torch.testing.assert_close(f_set.contains_t(batch.user, batch.pos), batch.obs_f)
    torch.testing.assert_close(g_set.contains_t(batch.user, batch.pos), batch.obs_g)
    assert bool((batch.obs_f | batch.obs_g).all())  # situations (i) and (ii)
    assert not bool(f_set.contains_t(batch.user, batch.neg).any())  # situation (iii)
    assert not bool(g_set.contains_t(batch.user, batch.neg).any())
    # R_g holds the target's pairs too (aux_with_target), so every buy pair is also "viewed"
    assert bool(batch.obs_g[batch.obs_f].all())


# ---------------------------------------------------------------------- schedule
def test_behavior_models_stay_frozen_and_steps_alternate() -> None:
    model, data = make({"pretrain_epochs": 0})
    assert not model.pretraining
    assert not any(p.requires_grad for p in model.pre_f.parameters())
    assert not any(p.requires_grad for p in model.pre_g.parameters())
    opts = model.make_optimisers(0.01, 0.0, "adam")
    gen = torch.Generator().manual_seed(0)
    it = iter(model.batches(data, 64, gen))
    frozen = params_of(model.pre_f) | {f"g.{k}": v for k, v in params_of(model.pre_g).items()}
    for step in (1, 2, 1):
        before = {
            name: params_of(getattr(model, name))
            for name in ("target", "h1_f", "h1_g", "h0_f", "h0_g")
        }
        assert int(model.step_flag) == (step - 1)
        model.train_step(next(it), opts)
        after = {name: params_of(getattr(model, name)) for name in before}
        assert not same(before["target"], after["target"])  # θ moves every step
        moved, still = ("h1", "h0") if step == 1 else ("h0", "h1")
        for b in ("f", "g"):
            assert not same(before[f"{moved}_{b}"], after[f"{moved}_{b}"])
            assert same(before[f"{still}_{b}"], after[f"{still}_{b}"])
    now = params_of(model.pre_f) | {f"g.{k}": v for k, v in params_of(model.pre_g).items()}
    assert same(frozen, now)  # the pre-trained models never change in the main phase


def test_pretraining_steps_touch_only_the_behavior_models() -> None:
    model, data = make({"pretrain_epochs": 3})
    assert model.pretraining
    opts = model.make_optimisers(0.01, 0.0, "adam")
    batches = list(model.batches(data, 64, torch.Generator().manual_seed(0)))
    assert {b.which for b in batches} == {"f", "g"} and all(
        isinstance(b, PretrainBatch) for b in batches
    )
    target = params_of(model.target)
    pre_g = params_of(model.pre_g)
    stats = model.train_step(batches[0], opts)  # a P(R_f) batch
    assert set(stats) >= {"pre_bpr_f", "pre_reg_f", "loss"}
    assert same(target, params_of(model.target)) and same(pre_g, params_of(model.pre_g))


def test_pretraining_stops_each_model_on_its_own_criterion(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = make({"pretrain_epochs": 50, "pretrain_patience": 2})
    assert len(model._hold_keys) > 0
    opts = model.make_optimisers(0.01, 0.0, "adam")
    gen = torch.Generator().manual_seed(0)
    aux_values = iter([0.1, 0.3, 0.2, 0.2, 0.5, 0.5])
    monkeypatch.setattr(model, "aux_holdout_recall", lambda evaluate: next(aux_values))

    def epoch() -> None:
        model.on_epoch_start(0)
        for b in model.batches(data, 64, gen):
            model.train_step(b, opts)

    best_f: dict[str, torch.Tensor] = {}
    best_g: dict[str, torch.Tensor] = {}
    # validation of P(R_f): best at the 2nd evaluation; P(R_g)'s held-out recall: best at the 2nd
    for k, value in enumerate([0.1, 0.2, 0.15, 0.1]):
        epoch()
        if k == 1:
            best_f, best_g = params_of(model.pre_f), params_of(model.pre_g)
        assert model.on_validation(value) is True  # still pre-training: restart the patience
    # both exhausted their patience of 2 after the 4th evaluation: restored, frozen, main phase
    assert bool(model.pre_done.all()) and not model.pretraining
    assert same(best_f, params_of(model.pre_f)) and same(best_g, params_of(model.pre_g))
    assert not any(p.requires_grad for p in model.pre_g.parameters())
    assert isinstance(first_batch(model, data), MBABatch)
    assert model.on_validation(0.3) is False


def test_aux_model_can_outlast_the_target_model(monkeypatch: pytest.MonkeyPatch) -> None:
    model, data = make({"pretrain_epochs": 50, "pretrain_patience": 1})
    aux_values = iter([0.1, 0.2, 0.3, 0.3])
    monkeypatch.setattr(model, "aux_holdout_recall", lambda evaluate: next(aux_values))
    opts = model.make_optimisers(0.01, 0.0, "adam")
    gen = torch.Generator().manual_seed(0)
    model.on_epoch_start(0)
    model.on_validation(0.2)
    model.on_epoch_start(1)
    model.on_validation(0.1)  # P(R_f) done (patience 1), P(R_g) still improving
    assert model.pretraining and model.pre_done.tolist() == [1, 0]
    frozen_f = params_of(model.pre_f)
    model.on_epoch_start(2)
    whichs = set()
    for b in model.batches(data, 64, gen):
        whichs.add(b.which)
        model.train_step(b, opts)
    assert whichs == {"g"} and same(frozen_f, params_of(model.pre_f))
    model.on_validation(0.1)
    model.on_epoch_start(3)
    model.on_validation(0.1)  # P(R_g)'s recall stalls → done → main phase
    assert not model.pretraining


def test_without_the_trainer_hook_pretraining_lasts_pretrain_epochs() -> None:
    model, data = make({"pretrain_epochs": 2})
    opts = model.make_optimisers(0.01, 0.0, "adam")
    gen = torch.Generator().manual_seed(0)
    kinds = []
    for epoch in range(4):
        model.on_epoch_start(epoch)
        kinds.append(type(next(iter(model.batches(data, 64, gen)))).__name__)
        for b in model.batches(data, 64, gen):
            model.train_step(b, opts)
    assert kinds == ["PretrainBatch", "PretrainBatch", "MBABatch", "MBABatch"]


def test_aux_holdout_recall_is_a_recall() -> None:
    model, _ = make({"pretrain_epochs": 3})
    value = model.aux_holdout_recall(holdout_recall)
    assert 0.0 <= value <= 1.0
    # the model evaluates itself only through the evaluator the trainer hands it
    with pytest.raises(RuntimeError, match="evaluator"):
        model.aux_holdout_recall(None)
    seen: list[tuple[int, int, int]] = []

    def spy(m: object, held_out: np.ndarray, masked: np.ndarray, k: int) -> float:
        seen.append((len(held_out), len(masked), k))
        return 0.25

    assert model.aux_holdout_recall(spy) == 0.25
    assert seen == [(len(model._hold_keys), len(model._g_mask_keys), 20)]
    # held-out pairs are not P(R_g)'s pre-training pairs but stay in the main phase's R_g
    hold_u = torch.from_numpy(model._hold_keys // model.n_items)
    hold_i = torch.from_numpy(model._hold_keys % model.n_items)
    pre = model._data_g_pre.pair_set(model._data_g_pre.log.target)
    full = model._data_g.pair_set(model._data_g.log.target)
    assert not bool(pre.contains_t(hold_u, hold_i).any())
    assert bool(full.contains_t(hold_u, hold_i).all())


def test_trainer_patience_counts_main_phase_epochs_only(tmp_path, dataset_dir) -> None:
    result = polyrec.train(
        "mba",
        dataset_dir,
        protocol="random-ratio",
        overrides=[
            "train.batch_size=256",
            "train.epochs=5",
            "train.patience=1",
            "eval.ks=[10]",
            'eval.protocols=["full"]',
            "data.n_negatives=0",
            "params.dim=8",
            "params.h_dim=8",
            "params.pretrain_epochs=3",
            "params.pretrain_patience=50",
        ],
        out=tmp_path / "mba",
    )
    # patience 1 would stop at the 2nd epoch were pre-training epochs counted
    assert result["epochs_run"] >= 4


def test_sparse_gradients_give_the_dense_adam_step() -> None:
    runs = []
    for sparse in (True, False):
        model, data = make({"pretrain_epochs": 0}, seed=3)
        if not sparse:
            for emb in model._sparse_tables:
                emb.sparse = False
        opts = model.make_optimisers(0.01, 0.0, "adam")
        gen = torch.Generator().manual_seed(0)
        for _, b in zip(range(3), model.batches(data, 64, gen), strict=False):
            model.train_step(b, opts)
        runs.append(params_of(model))
    for k in runs[0]:
        torch.testing.assert_close(runs[0][k], runs[1][k], rtol=1e-6, atol=1e-7)


def test_deepcopy_keeps_the_sparse_tables_its_own() -> None:
    model, _ = make({"pretrain_epochs": 0})
    clone = copy.deepcopy(model)
    own = {id(m) for m in clone.modules()}
    assert len(clone._sparse_tables) == len(model._sparse_tables) == 14  # 7 MF × 2 tables
    assert all(id(e) in own and e.sparse for e in clone._sparse_tables)


def test_loaded_main_phase_state_freezes_the_behavior_models() -> None:
    trained, _ = make({"pretrain_epochs": 0})
    fresh, _ = make({"pretrain_epochs": 5}, seed=1)
    assert fresh.pretraining and all(p.requires_grad for p in fresh.pre_f.parameters())
    fresh.load_state_dict(trained.state_dict())
    assert not fresh.pretraining
    assert not any(p.requires_grad for p in fresh.pre_f.parameters())


def test_lightgcn_target_graph_option() -> None:
    plain, _ = make({"pretrain_epochs": 0, "backbone": "lightgcn", "n_layers": 1})
    union, _ = make(
        {"pretrain_epochs": 0, "backbone": "lightgcn", "n_layers": 1, "target_graph": "union"}
    )
    # t_θ on the target behavior's graph (the code's) vs on R_f ∪ R_g
    assert plain.target.adj._nnz() == plain.pre_f.adj._nnz()
    assert union.target.adj._nnz() > plain.target.adj._nnz()


# ---------------------------------------------------------------------- inference
@pytest.mark.parametrize("backbone", ["mf", "lightgcn"])
def test_beta_one_reproduces_the_target_model_scores(backbone: str) -> None:
    model, _ = make({"pretrain_epochs": 0, "beta": 1.0, "backbone": backbone, "n_layers": 2})
    users = torch.arange(10)
    with torch.no_grad():
        model.prepare_scoring()
        torch.testing.assert_close(model.scores(users), model.target.scores(users), rtol=0, atol=0)
        emb = model.user_item_embeddings()
        assert emb is not None
        torch.testing.assert_close(emb[0][users] @ emb[1].T, model.scores(users))
    mixed, _ = make({"pretrain_epochs": 0, "beta": 0.7, "backbone": backbone, "n_layers": 2})
    with torch.no_grad():
        expected = 0.7 * torch.sigmoid(mixed.target.scores(users)) + 0.3 * torch.sigmoid(
            mixed.pre_f.scores(users)
        )
        torch.testing.assert_close(mixed.scores(users), expected)  # Eq. 3
    assert mixed.user_item_embeddings() is None


def test_pretraining_scores_are_the_target_behavior_model() -> None:
    model, _ = make({"pretrain_epochs": 3})
    users = torch.arange(5)
    with torch.no_grad():
        torch.testing.assert_close(model.scores(users), model.pre_f.scores(users), rtol=0, atol=0)


# ---------------------------------------------------------------------- errors
def test_unknown_or_target_aux_behavior_is_a_config_error() -> None:
    data = TrainData(synthetic_log())
    with pytest.raises(ConfigError, match=r"aux_behavior='click'.*view, cart, buy"):
        build_model("mba", {"aux_behavior": "click"}, data)
    with pytest.raises(ConfigError, match="is the target behavior"):
        build_model("mba", {"aux_behavior": "buy"}, data)
    with pytest.raises(ConfigError, match="no_such_key"):
        build_model("mba", {"no_such_key": 1}, data)


# ---------------------------------------------------------------------- training run
def test_short_run_on_embedded_data_beats_pop_on_validation(tmp_path) -> None:
    common = [
        "data.n_negatives=0",
        'eval.protocols=["full"]',
        "eval.ks=[20]",
        'train.metric="recall@20"',
    ]
    pop = polyrec.train(
        "pop",
        "embedded:retailrocket",
        protocol="random-ratio",
        overrides=common,
        out=tmp_path / "pop",
    )
    mba = polyrec.train(
        "mba",
        "embedded:retailrocket",
        protocol="random-ratio",
        overrides=[
            *common,
            "train.epochs=5",
            "train.lr=0.01",
            "params.pretrain_epochs=2",
            "params.c1=1",
            "params.c2=1",
        ],
        out=tmp_path / "mba",
    )
    key = "recall@20"
    assert mba["valid"]["metrics"]["full"][key] > pop["valid"]["metrics"]["full"][key]


def test_h_models_use_their_own_init_std() -> None:
    """The code's h-models are its MF (std 0.01) even under a LightGCN backbone at std 0.1."""
    model, _ = make({"backbone": "lightgcn", "init": "normal", "init_std": 0.1})
    t_std = float(next(model.target.parameters()).detach().std())
    h_std = float(next(model.h1_f.parameters()).detach().std())
    assert 0.07 < t_std < 0.13 and 0.007 < h_std < 0.013
