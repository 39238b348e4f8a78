"""Seconds per LightGCN training epoch: fused symmetric propagation, per-layer symmetric SpMM
and autograd through torch.sparse.mm.

Synthetic graph shaped like Retailrocket (2,174 users × 30,113 items; ~97k distinct pairs over
all behaviors, ~9.5k target pairs), d = 64, 3 layers, batch 2,048, Adam. Not a test.

    python benchmarks/lightgcn_epoch.py [--epochs 3] [--mallopt] [--profile] [--out FILE.json]

``--mallopt`` keeps freed memory in glibc's heap (mallopt M_MMAP_THRESHOLD / M_TRIM_THRESHOLD)
so that each new 8 MB activation does not page-fault fresh pages; on the 2-core VM used here
that alone changed per-epoch time a lot (see the printed numbers).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from polyrec.data.log import IdMap, InteractionLog
from polyrec.models import LightGCN, TrainData, build_model
from polyrec.runtime import tune_allocator

# fused: one SymmetricPolynomial node; layerwise: SymmetricSpMM per layer; autograd: sparse.mm
MODES = ("fused", "layerwise", "autograd")


def synthetic_retailrocket(
    seed: int = 0,
    n_users: int = 2174,
    n_items: int = 30113,
    n_pairs: int = 97_000,
    n_buy: int = 9_500,
    n_cart: int = 3_000,
) -> InteractionLog:
    """Distinct (user, item) pairs with skewed user activity and item popularity."""
    rng = np.random.default_rng(seed)
    user_w = rng.lognormal(0.0, 1.0, n_users)
    item_w = 1.0 / np.arange(1, n_items + 1) ** 0.8
    rng.shuffle(item_w)
    keys = np.empty(0, dtype=np.int64)
    while len(keys) < n_pairs:
        k = n_pairs - len(keys)
        u = rng.choice(n_users, size=2 * k, p=user_w / user_w.sum())
        i = rng.choice(n_items, size=2 * k, p=item_w / item_w.sum())
        keys = np.unique(np.concatenate([keys, u * n_items + i]))
    keys = rng.permutation(keys)[:n_pairs]
    beh = np.zeros(n_pairs, dtype=np.int8)  # view
    beh[:n_cart] = 1
    beh[n_cart : n_cart + n_buy] = 2
    return InteractionLog(
        user=keys // n_items,
        item=keys % n_items,
        behavior=beh,
        behaviors=("view", "cart", "buy"),
        target="buy",
        user_map=IdMap.range(n_users),
        item_map=IdMap.range(n_items),
        name="synthetic-rr",
    )


def set_mallopt() -> bool:
    return tune_allocator()


def epoch(
    model: LightGCN,
    data: TrainData,
    opts: list[torch.optim.Optimizer],
    gen: torch.Generator,
    batch_size: int,
) -> tuple[float, int]:
    t = time.perf_counter()
    n = 0
    for batch in model.batches(data, batch_size, gen):
        model.train_step(batch, opts)
        n += 1
    return time.perf_counter() - t, n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--mallopt", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--behaviors", choices=["target", "all", "both"], default="both")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    malloc_tuned = set_mallopt() if args.mallopt else False

    data = TrainData(synthetic_retailrocket())
    print(
        f"threads={torch.get_num_threads()} mallopt={malloc_tuned} "
        f"target pairs={data.csr('buy').nnz} all pairs={data.csr(None).nnz}"
    )
    results = []
    for behaviors in ("target", "all") if args.behaviors == "both" else (args.behaviors,):
        models = {}
        for mode in MODES:
            torch.manual_seed(0)
            m = build_model("lightgcn", {"behaviors": behaviors}, data)
            assert isinstance(m, LightGCN)
            m.propagation = mode
            models[mode] = (
                m,
                m.make_optimisers(1e-3, 0.0, "adam"),
                torch.Generator().manual_seed(0),
            )
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        n_batches = 0
        for rep in range(args.epochs + 1):  # first epoch is warm-up; modes interleaved
            for mode, (m, opts, gen) in models.items():
                secs, n_batches = epoch(m, data, opts, gen, args.batch_size)
                if rep:
                    times[mode].append(secs)
        nnz = models["fused"][0].adj._nnz()
        for mode in MODES:
            row = {
                "behaviors": behaviors,
                "propagation": mode,
                "graph_nnz": nnz,
                "batches": n_batches,
                "s_per_epoch_median": statistics.median(times[mode]),
                "s_per_epoch_all": times[mode],
            }
            results.append(row)
            print(
                f"{behaviors:6s} {mode:9s} nnz={nnz:7d} batches={n_batches:3d} "
                f"s/epoch median={row['s_per_epoch_median']:.3f} "
                f"({', '.join(f'{t:.3f}' for t in times[mode])})"
            )

    profile_lines = ""
    if args.profile:
        from torch.profiler import profile

        torch.manual_seed(0)
        m = build_model("lightgcn", {"behaviors": "all"}, data)
        assert isinstance(m, LightGCN)
        opts, gen = m.make_optimisers(1e-3, 0.0, "adam"), torch.Generator().manual_seed(0)
        epoch(m, data, opts, gen, args.batch_size)
        with profile() as prof:
            epoch(m, data, opts, gen, args.batch_size)
        profile_lines = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)
        print(profile_lines)

    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "benchmark": "lightgcn_epoch",
                    "machine": platform.processor() or platform.machine(),
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                    "mallopt": malloc_tuned,
                    "d": 64,
                    "layers": 3,
                    "batch_size": args.batch_size,
                    "results": results,
                    "profile_top": profile_lines,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
