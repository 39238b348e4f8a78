"""Data-parallel training over several processes or machines, launched with ``torchrun``.

A launch is detected from the environment torchrun sets (``WORLD_SIZE`` > 1, ``RANK``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``). :func:`process_group` then joins the process
group (backend ``gloo`` on CPU, ``nccl`` when the device is CUDA, each process on
``cuda:LOCAL_RANK``). Without a launch every function here is a no-op (or the identity), so
single-process training runs exactly the code it ran before.

**Why not** :class:`torch.nn.parallel.DistributedDataParallel`. DDP synchronises gradients with
autograd hooks fired by *one* backward after *one* forward of the wrapped module. polyrec's
models own their optimisation step (:meth:`polyrec.models.base.Model.train_step`): CML runs a
virtual step, a second-order meta gradient (``torch.autograd.grad``) and two optimisers per
batch; MBA steps a different subset of its five optimisers per batch and alternates phases.
Those steps call ``autograd.grad`` and several backwards per batch and step optimisers in
between, which DDP's reducer neither expects nor supports. Instead the gradients are averaged
where they are used: a step pre-hook on every optimiser
(:meth:`torch.optim.Optimizer.register_step_pre_hook`) all-reduces the gradients of that
optimiser's parameters, flattened into one buffer (one collective per step), right before it
steps. Every process starts from rank 0's weights (:func:`broadcast_model`) and applies the same
averaged gradients, so the weights stay identical: synchronous data parallelism, the same
arithmetic as DDP (a gradient that is ``None`` on a process counts as zeros there, as DDP's
``find_unused_parameters`` does; it stays ``None`` only if it is ``None`` everywhere). The
sparse-gradient tables of ``train.optimizer = "lazy_adam"`` are averaged row-wise and stay
sparse (all-gathers of the rows each process touched), so lazy Adam stays lazy.

**Data.** Every process draws the same batch sequence (same generator seed) and process ``r``
trains on batch ``r`` of each group of ``world_size`` consecutive batches (:func:`shard`); the
effective (global) batch is ``world_size × train.batch_size``.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.hooks import RemovableHandle

T = TypeVar("T")

# Processes other than rank 0 wait in a collective while rank 0 evaluates or writes files: allow
# long evaluations (the backends' defaults are 10-30 min).
TIMEOUT = timedelta(hours=2)
_made_group = False  # whether this process ever joined a group through process_group()


def launched() -> bool:
    """Whether this process was started by torchrun (or similar) as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """Whether a process group of more than one process is active (collectives do something)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's global rank: the group's, else the launch's (``RANK``), else 0."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world_size() -> int:
    """Number of processes: the group's, else the launch's (``WORLD_SIZE``), else 1."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process is rank 0, the one that evaluates, writes files and reports."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """Under a launch, a CUDA device becomes this process's GPU, ``cuda:LOCAL_RANK``."""
    if device.type == "cuda" and launched():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextmanager
def process_group(device: torch.device) -> Iterator[bool]:
    """Join the launch's process group for the body (no-op without a launch, or when a group is
    already active); destroys the group it made on exit. Yields whether training is distributed.
    """
    made = False
    if launched() and not dist.is_initialized():
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if cuda else "gloo", timeout=TIMEOUT, device_id=device if cuda else None
        )
        made = True
        global _made_group
        _made_group = True
    ok = False
    try:
        yield is_distributed()
        ok = True
    finally:
        if made:
            if ok:
                # every process reaches the end before any tears the group down: rank 0 still
                # evaluates and writes while the others are done, and a peer leaving gloo mid-
                # teardown aborted rank 0 at exit ("terminate called without an active
                # exception", seen on a loaded 2-core machine)
                dist.barrier()
            dist.destroy_process_group()


def exit_process(code: int) -> NoReturn:
    """End the process now with ``code`` once it has used a process group: flush stdout / stderr
    and skip the interpreter's finalisation (``os._exit``).

    The group is destroyed before this (:func:`process_group`), but gloo's C++ threads can still
    release tensors during finalisation, after the thread states are freed: about one run in ten
    on a loaded 2-core machine then aborted at exit ("terminate called without an active
    exception", SIGABRT) after everything had been written. Every output is complete and closed
    before the CLI gets here, so nothing is lost by skipping finalisation (``atexit`` handlers do
    not run either; polyrec registers none). Without a group this is ``sys.exit(code)``.
    """
    if not _made_group:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):  # a closed pipe must not change the exit status
            stream.flush()
    os._exit(code)


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` as process ``src`` has it, on every process (the identity when not distributed)."""
    if not is_distributed():
        return obj
    box: list[Any] = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: T) -> list[T]:
    """Every process's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and return its result on every process (the others wait).

    An exception on rank 0 is raised on every process (rank 0 re-raises its own; the others
    raise its unpickled copy), so no process hangs in a later collective.
    """
    if not is_distributed():
        return fn()
    error: BaseException | None = None
    payload: tuple[str, Any] = ("ok", None)
    if is_main():
        try:
            payload = ("ok", fn())
        except Exception as e:
            error = e
            try:
                pickle.dumps(e)
                payload = ("error", e)
            except Exception:
                payload = ("error", RuntimeError(f"rank 0 failed: {type(e).__name__}: {e}"))
    kind, value = broadcast_object(payload)
    if error is not None:
        raise error
    if kind == "error":
        raise value
    return value


def broadcast_model(model: nn.Module, src: int = 0) -> None:
    """Give every process ``src``'s weights and persistent buffers (its ``state_dict``).

    The receivers load them with ``load_state_dict``, so a model's load hooks run as they do
    after loading a checkpoint. Graphs and other non-persistent buffers are not sent: every
    process builds them from the same data.
    """
    if not is_distributed():
        return
    main = rank() == src
    received: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        if t.is_sparse:
            received[name] = t
            continue
        buf = t if main else torch.empty_like(t)
        dist.broadcast(buf.view(torch.uint8) if buf.dtype == torch.bool else buf, src=src)
        received[name] = buf
    if not main:
        model.load_state_dict(received, strict=True)


def average_gradients(
    params: Sequence[torch.Tensor], keep_sparse: Sequence[torch.Tensor] = ()
) -> None:
    """Replace each parameter's gradient by its mean over the processes.

    One all-reduce per (device, dtype) of the parameters (one in practice): the gradients are
    flattened into one buffer, followed by one presence flag per parameter. A ``None`` gradient
    counts as zeros; it stays ``None`` only where it is ``None`` on every process, so every
    process ends with the same gradients. Sparse gradients are made dense, except those of the
    ``keep_sparse`` parameters (the tables of :class:`polyrec.optim.LazyAdam`, whose update
    needs sparse gradients): those are gathered row-wise (:func:`_average_sparse`).
    """
    if not is_distributed():
        return
    n = world_size()
    sparse_ids = {id(p) for p in keep_sparse}
    buckets: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}
    for p in params:
        if id(p) in sparse_ids:
            _average_sparse(p, n)
            continue
        buckets.setdefault((p.device, p.dtype), []).append(p)
    for (device, dtype), ps in buckets.items():
        parts = [_dense_grad(p).reshape(-1) for p in ps]
        flags = torch.tensor([p.grad is not None for p in ps], dtype=dtype, device=device)
        flat = torch.cat([*parts, flags])
        dist.all_reduce(flat)
        sizes = [p.numel() for p in ps]
        values = flat[: sum(sizes)].div_(n)
        present = flat[sum(sizes) :].tolist()
        for p, chunk, seen in zip(ps, values.split(sizes), present, strict=True):
            p.grad = chunk.view(p.shape) if seen else None


def _average_sparse(p: torch.Tensor, n: int) -> None:
    """Mean over the processes of a row-sparse gradient, kept sparse: every process sends its
    (row indices, row values) — padded to the longest, three all-gathers — and gets the
    coalesced sum / n. Costs O(rows in the batches · d), not O(table rows · d). ``None`` counts
    as no rows; it stays ``None`` only where it is ``None`` on every process."""
    g = p.grad
    if g is not None and not g.is_sparse:
        raise RuntimeError(
            "distributed averaging: a lazy_adam table has a dense gradient (the model must look "
            "its rows up with sparse gradients)"
        )
    if g is not None:
        g = g.coalesce()
        idx, vals = g.indices()[0], g.values()
    else:
        idx = torch.empty(0, dtype=torch.long, device=p.device)
        vals = torch.empty((0, *p.shape[1:]), dtype=p.dtype, device=p.device)
    meta = torch.tensor([idx.numel(), int(g is not None)], dtype=torch.long, device=p.device)
    metas = [torch.empty_like(meta) for _ in range(n)]
    dist.all_gather(metas, meta)
    counts = [int(m[0]) for m in metas]
    if not any(int(m[1]) for m in metas):
        p.grad = None
        return
    longest = max(counts)
    if longest == 0:
        p.grad = torch.sparse_coo_tensor(idx[None], vals, p.shape).coalesce()
        return
    pad_idx = torch.zeros(longest, dtype=torch.long, device=p.device)
    pad_idx[: idx.numel()] = idx
    pad_vals = torch.zeros((longest, *p.shape[1:]), dtype=p.dtype, device=p.device)
    pad_vals[: vals.shape[0]] = vals
    all_idx = [torch.empty_like(pad_idx) for _ in range(n)]
    all_vals = [torch.empty_like(pad_vals) for _ in range(n)]
    dist.all_gather(all_idx, pad_idx)
    dist.all_gather(all_vals, pad_vals)
    rows = torch.cat([t[:c] for t, c in zip(all_idx, counts, strict=True)])
    values = torch.cat([t[:c] for t, c in zip(all_vals, counts, strict=True)]).div_(n)
    p.grad = torch.sparse_coo_tensor(rows[None], values, p.shape).coalesce()


def _dense_grad(p: torch.Tensor) -> torch.Tensor:
    if p.grad is None:
        return torch.zeros_like(p, memory_format=torch.contiguous_format)
    return p.grad.to_dense() if p.grad.is_sparse else p.grad


def _average_before_step(opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    average_gradients(
        [p for group in opt.param_groups for p in group["params"]],
        keep_sparse=getattr(opt, "sparse_params", ()),
    )


def sync_gradients(optimisers: Iterable[torch.optim.Optimizer]) -> list[RemovableHandle]:
    """Average gradients over the processes before every step of these optimisers (a step
    pre-hook each); returns the hooks' handles (none when not distributed)."""
    if not is_distributed():
        return []
    return [opt.register_step_pre_hook(_average_before_step) for opt in optimisers]


def batch_kind(batch: Any) -> tuple[Any, ...]:
    """What a batch is for: its class and its string fields (e.g. MBA's ``which`` = "f"/"g").

    Batches of different kinds may step different optimisers, so :func:`shard` never puts two
    kinds in one group.
    """
    fields = vars(batch).values() if hasattr(batch, "__dict__") else ()
    return (type(batch), *(v for v in fields if isinstance(v, str)))


def shard(batches: Iterable[T]) -> Iterable[T]:
    """This process's share of an epoch's batches (``batches`` itself when not distributed).

    Every process iterates the same sequence; consecutive batches of one kind
    (:func:`batch_kind`) form groups of ``world_size`` and process ``r`` takes batch ``r`` of
    each. An incomplete group (at the end, or where the kind changes) is dropped, so every
    process takes the same number of optimiser steps, of the same kinds, in the same order.
    """
    if not is_distributed():
        return batches
    return shard_of(batches, rank(), world_size())


def shard_of(batches: Iterable[T], r: int, n: int) -> Iterator[T]:
    """Process ``r``'s share of ``batches`` out of ``n`` processes (see :func:`shard`)."""
    group: list[T] = []
    kind: tuple[Any, ...] | None = None
    for batch in batches:
        k = batch_kind(batch)
        if k != kind:
            group, kind = [], k
        group.append(batch)
        if len(group) == n:
            yield group[r]
            group = []
