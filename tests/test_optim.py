"""Lazy Adam (``train.optimizer = "lazy_adam"``): sparse embedding gradients, only the batch's
rows updated, config validation, checkpoints and exact resume, accuracy on the embedded data."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import polyrec
from polyrec.config import load_config
from polyrec.data.synthetic import synthetic_log
from polyrec.data.views import BPRBatch
from polyrec.errors import ConfigError
from polyrec.models import TrainData, build_model
from polyrec.models.base import make_optimizer
from polyrec.optim import LazyAdam
from test_trainer import FAST, Killer


@pytest.fixture(scope="module")
def data() -> TrainData:
    return TrainData(synthetic_log(n_users=120, n_items=150, n_views=2500, seed=1))


def _mf(data: TrainData, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mf", {"dim": 8}, data)


def _batch(data: TrainData, model: nn.Module, size: int = 16) -> BPRBatch:
    return next(iter(model.batches(data, size, torch.Generator().manual_seed(0))))


# ------------------------------------------------------------------------ the optimiser
def test_one_step_changes_only_the_batch_rows(data: TrainData) -> None:
    model = _mf(data)
    (opt,) = model.make_optimisers(0.01, 0.0, "lazy_adam")
    assert isinstance(opt, LazyAdam)
    assert model.user_emb.sparse and model.item_emb.sparse
    batch = _batch(data, model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train_step(batch, [opt])
    assert model.user_emb.weight.grad.is_sparse
    users = set(batch.user.tolist())
    items = set(batch.pos.tolist()) | set(batch.neg.tolist())
    for name, table, rows in (
        ("user_emb.weight", model.user_emb.weight, users),
        ("item_emb.weight", model.item_emb.weight, items),
    ):
        changed = (table != before[name]).any(1).nonzero().flatten().tolist()
        assert set(changed) == rows, name  # every batch row moved (Adam's first step: ±lr)
        moments = opt.state[table]["exp_avg"].abs().sum(1).nonzero().flatten().tolist()
        assert set(moments) == rows, name
    # the dense optimiser, for contrast, moves every row with a nonzero moment on step 2
    dense = _mf(data)
    (adam,) = dense.make_optimisers(0.01, 0.0, "adam")
    assert not dense.user_emb.sparse
    dense.train_step(batch, [adam])
    snap = dense.user_emb.weight.detach().clone()
    other = _batch(data, dense, size=4)
    dense.train_step(other, [adam])
    moved = (dense.user_emb.weight != snap).any(1).nonzero().flatten().tolist()
    assert set(moved) > set(other.user.tolist())  # momentum moves rows absent from the batch


def test_switching_back_to_adam_restores_dense_gradients(data: TrainData) -> None:
    model = _mf(data)
    model.make_optimisers(0.01, 0.0, "lazy_adam")
    model.make_optimisers(0.01, 0.0, "adam")
    assert not model.user_emb.sparse and not model.item_emb.sparse


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rows = nn.Embedding(10, 3, sparse=True)
        self.dense = nn.Linear(3, 1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.dense(self.rows(idx)).square().sum()


def test_lazy_adam_is_sparse_adam_plus_adam_and_survives_a_state_round_trip() -> None:
    torch.manual_seed(0)
    a = _Mixed()
    b = _Mixed()
    b.load_state_dict(a.state_dict())
    lazy = LazyAdam([a.rows.weight], [a.dense.weight, a.dense.bias], lr=0.05)
    ref = [
        torch.optim.SparseAdam([b.rows.weight], lr=0.05),
        torch.optim.Adam(b.dense.parameters(), lr=0.05),
    ]
    batches = [torch.tensor([0, 1, 1]), torch.tensor([4, 5]), torch.tensor([1, 9])]
    for k, idx in enumerate(batches):
        if k == 1:  # a learning-rate change reaches both parts (the trainer's cyclic schedule)
            for group in lazy.param_groups:
                group["lr"] = 0.02
            for opt in ref:
                opt.param_groups[0]["lr"] = 0.02
        lazy.zero_grad()
        for opt in ref:
            opt.zero_grad()
        a(idx).backward()
        b(idx).backward()
        lazy.step()
        for opt in ref:
            opt.step()
        for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
            torch.testing.assert_close(p, q, msg=n)
    # state_dict → a fresh optimiser → the same next step
    c = _Mixed()
    c.load_state_dict(a.state_dict())
    again = LazyAdam([c.rows.weight], [c.dense.weight, c.dense.bias], lr=0.05)
    again.load_state_dict(copy.deepcopy(lazy.state_dict()))  # (as if read from a file)
    assert [g["lr"] for g in again.param_groups] == [0.02, 0.02]
    for opt, model in ((lazy, a), (again, c)):
        opt.zero_grad()
        model(torch.tensor([2, 4])).backward()
        opt.step()
    for p, q in zip(a.parameters(), c.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(ValueError, match="groups differ"):
        LazyAdam([c.rows.weight, c.dense.weight, c.dense.bias]).load_state_dict(lazy.state_dict())


def test_a_dense_gradient_on_a_lazy_table_is_refused() -> None:
    table = nn.Embedding(5, 2)  # dense gradients
    opt = LazyAdam([table.weight])
    table(torch.tensor([1])).sum().backward()
    with pytest.raises(RuntimeError, match="dense gradient"):
        opt.step()


# ------------------------------------------------------------------------ configuration
def test_config_accepts_lazy_adam_for_mf_only() -> None:
    """MF and the denoising frameworks around it (sparse MF tables; any other parameter, such as
    DeCA's auxiliary models, takes dense Adam)."""
    for name in ("mf", "wbpr-mf", "tce-mf", "deca-mf"):
        cfg = load_config(None, ['train.optimizer="lazy_adam"'], model=name)
        assert cfg.train.optimizer == "lazy_adam"
    load_config(None, ['train.optimizer="lazy_adam"'], model="pop")  # nothing to optimise
    with pytest.raises(
        ConfigError,
        match=r"model 'lightgcn' does not support it \(supported: deca-mf, mf, tce-mf, wbpr-mf\)",
    ):
        load_config(None, ['train.optimizer="lazy_adam"'], model="lightgcn")
    with pytest.raises(ConfigError, match=r"train\.weight_decay=0\.01 does not combine"):
        load_config(None, ['train.optimizer="lazy_adam"', "train.weight_decay=0.01"], model="mf")
    with pytest.raises(ConfigError, match=r"train\.optimizer"):
        load_config(None, ['train.optimizer="lazyadam"'], model="mf")


def test_models_without_sparse_tables_reject_lazy_adam(data: TrainData) -> None:
    lgn = build_model("lightgcn", {"dim": 8, "n_layers": 1}, data)
    with pytest.raises(ConfigError, match="does not support it"):
        lgn.make_optimisers(0.01, 0.0, "lazy_adam")
    with pytest.raises(ConfigError, match="does not combine"):
        _mf(data).make_optimisers(0.01, 1e-4, "lazy_adam")
    with pytest.raises(ValueError, match="lazy_adam"):
        make_optimizer(lgn.parameters(), "lazy_adam", 0.01)


# ------------------------------------------------------------------------ training runs
def test_resume_with_lazy_adam_reaches_identical_metrics(tmp_path, dataset_dir) -> None:
    args = [
        *FAST,
        "train.epochs=5",
        "train.patience=50",
        "train.lr=0.01",
        'train.optimizer="lazy_adam"',
        'train.lr_schedule="cyclic"',
        "train.max_lr=0.05",
        "train.cycle_up=3",
    ]
    full = polyrec.train("mf", dataset_dir, overrides=args, out=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        polyrec.train(
            "mf", dataset_dir, overrides=args, out=tmp_path / "killed", reporter=Killer(3)
        )
    assert (tmp_path / "killed" / "last.safetensors").exists()
    resumed = polyrec.train(resume=tmp_path / "killed")
    assert resumed["epochs_run"] == full["epochs_run"] == 5
    assert resumed["best_epoch"] == full["best_epoch"]
    assert resumed["valid"]["metrics"] == full["valid"]["metrics"]
    assert resumed["test"]["metrics"] == full["test"]["metrics"]
    for a, b in zip(resumed["history"], full["history"], strict=True):
        assert a["train"] == b["train"]
    # the run's own evaluation reloads the best weights into a dense-gradient model
    assert polyrec.evaluate(tmp_path / "full")["test"]["metrics"] == full["test"]["metrics"]


# The settings of test_distributed's Retailrocket run (4 epochs, lr 0.03, d = 32, every behavior,
# sampled HR@10). Measured here: POP 0.108, MF with Adam 0.211, MF with lazy Adam 0.199.
RETAILROCKET = [
    "train.epochs=4",
    "train.lr=0.03",
    "train.patience=100",
    "train.threads=1",
    "train.batch_size=4096",
    "train.select_protocol=sampled",
    "train.metric=hr@10",
    'eval.protocols=["sampled"]',
    "eval.ks=[10]",
]


def test_lazy_adam_trains_mf_on_embedded_data_and_beats_pop(tmp_path) -> None:
    data = "embedded:retailrocket"
    pop = polyrec.train("pop", data, overrides=RETAILROCKET, out=tmp_path / "pop")
    mf = ["params.dim=32", "params.behaviors=all"]
    runs = {
        opt: polyrec.train(
            "mf",
            data,
            overrides=[*RETAILROCKET, *mf, f"train.optimizer={opt}"],
            out=tmp_path / opt,
        )
        for opt in ("adam", "lazy_adam")
    }
    key = "hr@10"
    base = pop["valid"]["metrics"]["sampled"][key]
    lazy = runs["lazy_adam"]["valid"]["metrics"]["sampled"][key]
    dense = runs["adam"]["valid"]["metrics"]["sampled"][key]
    assert lazy > 1.5 * base, (lazy, base)
    assert abs(lazy - dense) <= 0.15 * dense, (lazy, dense)  # about the spread between seeds
