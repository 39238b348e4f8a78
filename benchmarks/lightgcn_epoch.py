"""Seconds per LightGCN training epoch: fused symmetric propagation, per-layer symmetric SpMM
and autograd through torch.sparse.mm.

Synthetic graph shaped like Retailrocket (2,174 users × 30,113 items; ~97k distinct pairs over
all behaviors, ~9.5k target pairs), d = 64, 3 layers, batch 2,048, Adam. Not a test.

    python benchmarks/lightgcn_epoch.py [--epochs 3] [--mallopt] [--profile] [--note TEXT]

Writes ``results/<name>.json`` (``polyrec-bench/1``; ``--name``, default ``lightgcn_epoch_mallopt``
or ``lightgcn_epoch_default``; ``--quick``: one timed epoch, no files); its markdown is
``polyrec report benchmarks/results --markdown``'s.

``--mallopt`` keeps freed memory in glibc's heap (mallopt M_MMAP_THRESHOLD / M_TRIM_THRESHOLD)
so that each new 8 MB activation does not page-fault fresh pages; on the 2-core VM used here
that alone changed per-epoch time a lot (see the printed numbers).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import _bench
import numpy as np
import torch

from polyrec.data.log import IdMap, InteractionLog
from polyrec.models import LightGCN, TrainData, build_model
from polyrec.runtime import tune_allocator

HERE = Path(__file__).resolve().parent
# fused: one SymmetricPolynomial node; layerwise: SymmetricSpMM per layer; autograd: sparse.mm
MODES = ("fused", "layerwise", "autograd")
COLUMNS = ("behaviors", "propagation", "graph_nnz", "batches", "s_per_epoch_median",
           "s_per_epoch_all")  # fmt: skip


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


def report(res: dict[str, Any]) -> _bench.Doc:
    doc = _bench.Doc(f"LightGCN s / epoch: {res['name']}")
    note = f" {res['note']}" if res.get("note") else ""
    doc.text(
        f"d = {res['d']}, {res['layers']} layers, batch {res['batch_size']}, glibc mallopt "
        f"{res['mallopt']}.{note}"
    )
    doc.table(list(COLUMNS))
    for r in res["results"]:
        doc.row(*(str(r[c]) if isinstance(r[c], list) else r[c] for c in COLUMNS))
    if res.get("profile_top"):
        doc.section("Profile of one epoch (all behaviors, fused)")
        doc.text(f"```\n{res['profile_top'].rstrip()}\n```")
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--mallopt", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--behaviors", choices=["target", "all", "both"], default="both")
    ap.add_argument("--note", default="", help="a sentence for the report (e.g. machine load)")
    ap.add_argument("--name", help="default lightgcn_epoch_mallopt / lightgcn_epoch_default")
    ap.add_argument("--out-dir", type=Path, default=HERE / "results")
    ap.add_argument("--quick", action="store_true", help="1 timed epoch, no files")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs = 1
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

    res = {
        "name": args.name or f"lightgcn_epoch_{'mallopt' if args.mallopt else 'default'}",
        "date": _bench.now_utc(),
        "machine": _bench.machine(),
        "command": _bench.command(__file__, argv),
        "settings": {
            "threads": torch.get_num_threads(),
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "mallopt": malloc_tuned,
            "behaviors": args.behaviors,
            "profile": args.profile,
        },
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "mallopt": malloc_tuned,
        "d": 64,
        "layers": 3,
        "batch_size": args.batch_size,
        "results": results,
        "profile_top": profile_lines,
        "note": args.note,
    }
    return _bench.emit(res, report(res), args.out_dir, args.quick, "lightgcn_epoch")


if __name__ == "__main__":
    raise SystemExit(main())
