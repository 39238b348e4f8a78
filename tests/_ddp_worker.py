"""Launched by ``tests/test_distributed.py`` under torchrun (2 processes, gloo): a few
data-parallel training steps of every registered model, on the contract tests' tiny data.

Each process builds the model from a different seed; :func:`broadcast_model` must make them
equal, and the gradient-averaging step hooks must keep them bit-identical while each process
trains on its own share of the batches. Prints one ``ok <model> <steps>`` line per model
(rank 0); any mismatch raises, so torchrun exits non-zero.
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from interest_contract import sequence_log
from model_contract import synthetic_log
from polyrec.models import REGISTRY, Model, TrainData, build_model
from polyrec.training import distributed
from test_contract import SMALL_PARAMS as SCORER_PARAMS
from test_interest_contract import COMMON
from test_interest_contract import SMALL_PARAMS as INTEREST_PARAMS

STEPS = 3  # optimiser steps per process and model
BATCH = 40  # MBA: 5 batches of P(R_f), the 5th dropped where P(R_g)'s begin

# every registry entry, plus the schedules the default settings do not reach
CASES: list[tuple[str, dict[str, Any], str]] = [
    *((name, {}, "adam") for name in REGISTRY),
    ("mba", {"pretrain_epochs": 0}, "adam"),  # main phase: alternating steps, 3 of 5 optimisers
    ("cml", {"meta_order": "first"}, "adam"),  # finite-difference meta gradient
    ("mf", {}, "lazy_adam"),  # sparse gradients, averaged row-wise and kept sparse
]


def params_for(name: str, extra: dict[str, Any]) -> dict[str, Any]:
    if REGISTRY[name].kind == "interest":
        return {**COMMON, **INTEREST_PARAMS.get(name, {}), **extra}
    return {**SCORER_PARAMS.get(name, {}), **extra}


def digest(model: Model) -> str:
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        if not t.is_sparse:
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_same(what: str, value: Any) -> None:
    values = distributed.all_gather_object(value)
    if any(v != values[0] for v in values):
        raise AssertionError(f"{what} differs across ranks: {values}")


def run_case(name: str, extra: dict[str, Any], optimizer: str, data: dict[str, TrainData]) -> int:
    train = data[REGISTRY[name].kind]
    torch.manual_seed(distributed.rank())  # different initial weights on each process
    model = build_model(name, params_for(name, extra), train)
    distributed.broadcast_model(model)
    start = digest(model)
    check_same(f"{name}: weights after broadcast", start)
    if not model.trainable:
        return 0
    opts = model.make_optimisers(0.01, 0.0, optimizer)
    hooks = distributed.sync_gradients(opts)
    gen = torch.Generator().manual_seed(0)  # the same batch sequence on every process
    model.train()
    model.on_epoch_start(1)
    steps = 0
    seen = []
    for batch in distributed.shard(model.batches(train, BATCH, gen)):
        model.train_step(batch, opts)
        if optimizer == "lazy_adam" and any(
            p.grad is not None and not p.grad.is_sparse for p in model.parameters()
        ):
            raise AssertionError(f"{name}: lazy_adam's averaged gradients are not sparse")
        seen.append(distributed.batch_kind(batch)[1:])
        steps += 1
        if steps == STEPS:
            break
    for hook in hooks:
        hook.remove()
    check_same(f"{name}: batch kinds", seen)
    check_same(f"{name}: weights after {steps} steps", digest(model))
    if steps == 0 or digest(model) == start:
        raise AssertionError(f"{name}: no training step changed the weights")
    return steps


def main() -> None:
    with distributed.process_group(torch.device("cpu")) as on:
        assert on and distributed.world_size() == 2, "launch with torchrun --nproc_per_node 2"
        data = {"scorer": TrainData(synthetic_log()), "interest": TrainData(sequence_log())}
        for name, extra, optimizer in CASES:
            steps = run_case(name, extra, optimizer, data)
            if distributed.is_main():
                print(f"ok {name} {steps} {extra} {optimizer}", flush=True)


if __name__ == "__main__":
    main()
    distributed.exit_process(0)  # skips finalisation, where gloo can abort (see its docstring)
