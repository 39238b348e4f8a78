"""Data-parallel training under torchrun (``polyrec.training.distributed``), on CPU with gloo.

* the gradient-averaging step hook, model broadcast and rank-0 calls in a 2-process group
  spawned with torch.multiprocessing; lazy Adam's sparse gradients averaged and kept sparse;
* a few synchronised steps of every registered model under torchrun (``_ddp_worker.py``);
* ``polyrec train`` under torchrun with 2 processes against 1 process on the embedded
  Retailrocket data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from polyrec import api
from polyrec.models import REGISTRY
from polyrec.optim import LazyAdam
from polyrec.training import distributed

TESTS = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def _torchrun(*args: str, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*TORCHRUN, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


# ---------------------------------------------------------------------- no process group
def test_without_a_launch_everything_is_a_no_op() -> None:
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size(), distributed.is_main()) == (0, 1, True)
    batches = [1, 2, 3]
    assert distributed.shard(batches) is batches
    assert distributed.broadcast_object("x") == "x"
    assert distributed.run_on_main(lambda: 7) == 7
    assert distributed.sync_gradients([]) == []
    with distributed.process_group(torch.device("cpu")) as on:
        assert not on and not dist.is_initialized()
    # no group was made: an ordinary exit (os._exit only after a torchrun group)
    with pytest.raises(SystemExit) as exc:
        distributed.exit_process(3)
    assert exc.value.code == 3


@dataclass
class _Batch:
    which: str
    index: int  # data, not kind: only string fields name a kind


def test_shard_takes_one_batch_per_group_and_never_mixes_kinds() -> None:
    seq = [_Batch("f", k) for k in range(5)] + [_Batch("g", k) for k in range(4)]
    shares = [list(distributed.shard_of(seq, r, 2)) for r in range(2)]
    # f: groups (0, 1), (2, 3), 4 dropped where g begins; g: (0, 1), (2, 3)
    assert [(b.which, b.index) for b in shares[0]] == [("f", 0), ("f", 2), ("g", 0), ("g", 2)]
    assert [(b.which, b.index) for b in shares[1]] == [("f", 1), ("f", 3), ("g", 1), ("g", 3)]
    assert list(distributed.shard_of(range(7), 1, 3)) == [1, 4]  # 6 is an incomplete group


# ---------------------------------------------------------------------- 2-process gloo group
def _spawn_two(worker: Any, tmp_path: Path) -> None:
    """Run ``worker`` on two gloo processes. gloo can abort a process (SIGABRT, "terminate
    called without an active exception") while it tears its threads down after the last
    barrier; seen once in CI on 2 cores. A signal after both processes wrote their
    ``checked-<rank>`` marker — every assertion passed — is that teardown race, not a failure;
    any other exit fails the test."""
    try:
        mp.spawn(worker, args=(str(tmp_path / "rendezvous"),), nprocs=2, join=True)
    except mp.ProcessExitedException as exc:
        checked = all((tmp_path / f"checked-{r}").exists() for r in range(2))
        if not (checked and exc.signal_name):
            raise


def _hook_worker(r: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=2)
    try:
        torch.manual_seed(r)
        model = torch.nn.ModuleDict(
            {
                "dense": torch.nn.Linear(3, 2),
                "sometimes": torch.nn.Linear(2, 1, bias=False),  # grad on rank 1 only
                "never": torch.nn.Linear(2, 1, bias=False),  # no grad anywhere
                "rows": torch.nn.Embedding(4, 2, sparse=True),  # sparse grads
            }
        )
        distributed.broadcast_model(model)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        gathered = distributed.all_gather_object(before)
        for k in before:
            torch.testing.assert_close(gathered[0][k], gathered[1][k], rtol=0, atol=0)

        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        hooks = distributed.sync_gradients([opt])
        assert len(hooks) == 1
        opt.zero_grad(set_to_none=True)
        x = torch.full((1, 3), float(r + 1))
        loss = model["dense"](x).sum() + model["rows"](torch.tensor([r])).sum()
        if r == 1:
            loss = loss + model["sometimes"].weight.sum()
        loss.backward()
        opt.step()
        d, s, n, e = (model[k].weight for k in ("dense", "sometimes", "never", "rows"))
        # dense: mean of x over the ranks = 1.5; bias grad 1 everywhere
        torch.testing.assert_close(d.grad, torch.full((2, 3), 1.5))
        torch.testing.assert_close(model["dense"].bias.grad, torch.ones(2))
        # None on rank 0, ones on rank 1: zeros count, mean 0.5 on both
        torch.testing.assert_close(s.grad, torch.full((1, 2), 0.5))
        assert n.grad is None  # None everywhere stays None (the optimiser skips it)
        assert e.grad is not None and not e.grad.is_sparse
        torch.testing.assert_close(
            e.grad, torch.tensor([[0.5] * 2, [0.5] * 2, [0.0] * 2, [0.0] * 2])
        )
        torch.testing.assert_close(n, before["never.weight"], rtol=0, atol=0)
        after = distributed.all_gather_object({k: v.clone() for k, v in model.state_dict().items()})
        for k in before:
            torch.testing.assert_close(after[0][k], after[1][k], rtol=0, atol=0)
        for h in hooks:
            h.remove()

        # rank 0 alone runs the function; every rank gets its result, or its exception
        calls: list[int] = []
        assert distributed.run_on_main(lambda: calls.append(r) or "done") == "done"
        assert calls == ([0] if r == 0 else [])

        def fail() -> None:
            raise ValueError("bad validation")

        with pytest.raises(ValueError, match="bad validation"):
            distributed.run_on_main(fail)
        assert distributed.broadcast_object(f"from {r}") == "from 0"
        dist.barrier()  # nobody tears the group down while a peer still uses it
        Path(init_file).with_name(f"checked-{r}").touch()
    finally:
        dist.destroy_process_group()


def test_gradient_hook_averages_over_two_processes(tmp_path: Path) -> None:
    _spawn_two(_hook_worker, tmp_path)


def _sparse_hook_worker(r: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=r, world_size=2)
    try:
        torch.manual_seed(0)
        rows = torch.nn.Embedding(5, 2, sparse=True)
        rank1_only = torch.nn.Embedding(3, 2, sparse=True)  # a gradient on rank 1 only
        never = torch.nn.Embedding(3, 2, sparse=True)  # no gradient anywhere
        dense = torch.nn.Linear(2, 1)
        opt = LazyAdam(
            [rows.weight, rank1_only.weight, never.weight], [dense.weight, dense.bias], lr=0.1
        )
        before = rows.weight.detach().clone()
        hooks = distributed.sync_gradients([opt])
        # rank 0 looks up rows 0, 1, 1; rank 1 rows 1, 3: sums of ones per lookup
        idx = torch.tensor([0, 1, 1]) if r == 0 else torch.tensor([1, 3])
        loss = rows(idx).sum() + dense(torch.ones(1, 2)).sum() * (r + 1)
        if r == 1:
            loss = loss + rank1_only(torch.tensor([2])).sum()
        loss.backward()
        opt.step()
        g = rows.weight.grad
        assert g is not None and g.is_sparse  # kept sparse: lazy Adam stays lazy
        # mean over the ranks: row 0 (1 + 0) / 2, row 1 (2 + 1) / 2, row 3 (0 + 1) / 2
        expected = torch.tensor([[0.5] * 2, [1.5] * 2, [0.0] * 2, [0.5] * 2, [0.0] * 2])
        torch.testing.assert_close(g.to_dense(), expected)
        assert sorted(g.coalesce().indices()[0].tolist()) == [0, 1, 3]
        g1 = rank1_only.weight.grad
        assert g1 is not None and g1.is_sparse
        torch.testing.assert_close(g1.to_dense()[2], torch.full((2,), 0.5))
        assert never.weight.grad is None
        torch.testing.assert_close(dense.bias.grad, torch.tensor([1.5]))
        # only the rows some rank looked up moved, identically everywhere
        moved = (rows.weight != before).any(1).nonzero().flatten().tolist()
        assert moved == [0, 1, 3]
        got = distributed.all_gather_object(rows.weight.detach().clone())
        torch.testing.assert_close(got[0], got[1], rtol=0, atol=0)
        for h in hooks:
            h.remove()
        dist.barrier()  # nobody tears the group down while a peer still uses it
        Path(init_file).with_name(f"checked-{r}").touch()
    finally:
        dist.destroy_process_group()


def test_lazy_adam_gradients_are_averaged_and_stay_sparse(tmp_path: Path) -> None:
    _spawn_two(_sparse_hook_worker, tmp_path)


# ---------------------------------------------------------------------- torchrun
def test_every_model_stays_in_sync_under_torchrun(tmp_path: Path) -> None:
    proc = _torchrun(str(TESTS / "_ddp_worker.py"), cwd=tmp_path)
    done = {line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ok ")}
    assert done == set(REGISTRY), proc.stdout


# Two processes at train.batch_size = B/2 (global batch B) against one process at B. Measured
# (seeds 2024, 2025, 2026; best validation sampled HR@10 after 4 epochs): 1 process 0.2113,
# 0.2215, 0.1977; 2 processes 0.2102, 0.2056, 0.2124 — at most 7.4 % apart, about the spread
# between seeds (0.198-0.221). The tolerance is twice that: 15 % relative.
TOLERANCE = 0.15
RETAILROCKET = [
    "data.path=embedded:retailrocket",
    "train.epochs=4",
    "train.lr=0.03",
    "train.patience=100",
    "train.threads=1",
    "train.select_protocol=sampled",
    "train.metric=hr@10",
    'eval.protocols=["sampled"]',
    "eval.ks=[10]",
    "params.dim=32",
    "params.behaviors=all",
]


def test_two_processes_match_one_process_on_retailrocket(tmp_path: Path) -> None:
    config = TESTS.parent / "configs" / "mf-retailrocket.toml"
    one = api.train(
        config=config, overrides=[*RETAILROCKET, "train.batch_size=4096"], out=tmp_path / "one"
    )
    out = tmp_path / "two"
    proc = _torchrun(
        "-m", "polyrec.cli", "train", "--config", str(config), "--out", str(out), "--json",
        *RETAILROCKET, "train.batch_size=2048",
        cwd=tmp_path,
    )  # fmt: skip
    # only rank 0 prints, and writes the run directory once (no leftover temporary files)
    printed = json.loads(proc.stdout)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in (tmp_path / "one").iterdir()
    )
    two = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "run.json").read_text())["status"] == "done"
    assert printed["best_valid"] == two["best_valid"] and printed["test"] == two["test"]
    # the history merges every process's batches: twice as many, of half the size
    assert [h["batches"] for h in two["history"]] == [2 * h["batches"] for h in one["history"]]
    assert two["epochs_run"] == one["epochs_run"] == 4
    assert one["best_valid"] > 0.15
    assert abs(two["best_valid"] - one["best_valid"]) <= TOLERANCE * one["best_valid"], (
        one["best_valid"],
        two["best_valid"],
    )
