"""Why a graph scorer fails under full ranking: score and popularity diagnostics of a trained
run on its **validation** users (test is never read).

    python benchmarks/score_diagnose.py --config configs/egcm-retailrocket.toml \\
        --name egcm-retailrocket --set train.epochs=80 --set train.patience=15
    python benchmarks/score_diagnose.py --run runs/tune/egcm-memory3-retailrocket/v1 --name ...

Trains the config (``polyrec train``, validation selection as configured) unless ``--run``
gives a finished run directory, then reloads its best weights and reports, over the validation
users: the share of positive scores, how the held-out item ranks among all items (median rank,
full-ranking HR@10 without masking, ties pessimistic as in the evaluator), the mean training popularity of the top-10 against the
held-out items', the Pearson correlation between item-embedding norm and
log(1 + training popularity), and the share of top-10 slots taken by items with no training
interaction. Results: ``benchmarks/results/score-diagnose-<name>.{json,md}``. Not a test.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _bench
import numpy as np
import scipy.sparse as sp
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def diagnose(run_dir: Path, threads: int) -> dict[str, Any]:
    from polyrec.config import load_config
    from polyrec.training.checkpoint import load_weights
    from polyrec.training.trainer import prepare

    torch.set_num_threads(threads)
    cfg = load_config(run_dir / "config.toml")
    prepared = prepare(cfg, run_dir, reuse_split=True)
    model = prepared.model
    load_weights(run_dir / "best.safetensors", model)
    model.eval()
    with torch.no_grad():
        users_e, items_e = model.final_embeddings()  # type: ignore[operator]
    train = prepared.split.train
    pop = np.bincount(train.item, minlength=model.n_items).astype(np.float64)
    valid = prepared.split.valid
    users = torch.as_tensor(np.asarray(valid.user))
    held = torch.as_tensor(np.asarray(valid.item))
    pos_share, ranks, top_pop, cold_share = [], [], [], []
    ties: list[float] = []
    zero_held: list[float] = []
    cold = torch.as_tensor(pop == 0)
    # the user's own training items (any behavior): a top-10 slot there is an item the user
    # already viewed / carted / bought; the evaluator masks only training purchases
    seen = sp.csr_matrix(
        (np.ones(len(train.user), dtype=bool), (np.asarray(train.user), np.asarray(train.item))),
        shape=(model.n_users, model.n_items),
    )
    own_share: list[float] = []
    own_ranks: list[np.ndarray] = []
    with torch.no_grad():
        for lo in range(0, len(users), 1024):
            s = users_e[users[lo : lo + 1024]] @ items_e.T
            h = held[lo : lo + 1024]
            pos_share.append(float((s > 0).float().mean()))
            hs = s.gather(1, h[:, None])
            # pessimistic ties, as the evaluator: ties with the held-out item rank above it
            ranks.append(((s >= hs).sum(1) - 1).numpy())
            ties.append(float((s == hs).sum(1).float().mean() - 1))
            zero_held.append(float((hs == 0).float().mean()))
            top = s.topk(10, dim=1).indices
            top_pop.append(pop[top.numpy()].mean())
            cold_share.append(float(cold[top].float().mean()))
            # one dense [chunk, items] mask at a time, never users × items
            own = torch.from_numpy(seen[users[lo : lo + 1024].numpy()].toarray())
            own_share.append(float(own.gather(1, top).float().mean()))
            s_masked = s.masked_fill(own, float("-inf"))
            own_ranks.append(((s_masked >= hs).sum(1) - 1).numpy())
    rank = np.concatenate(ranks)
    norms = items_e.norm(dim=1).numpy()
    return {
        "run": str(run_dir),
        "model": cfg.model,
        "valid_users": len(users),
        "items": model.n_items,
        "share_positive_scores": float(np.mean(pos_share)),
        "median_rank_of_held_out": float(np.median(rank)),
        "hr@10_unmasked": float((rank < 10).mean()),
        "mean_popularity_top10": float(np.mean(top_pop)),
        "mean_popularity_held_out": float(pop[held.numpy()].mean()),
        "mean_popularity_items": float(pop.mean()),
        "corr_norm_logpop": float(np.corrcoef(norms, np.log1p(pop))[0, 1]),
        "share_top10_without_training": float(np.mean(cold_share)),
        "mean_ties_with_held_out": float(np.mean(ties)),
        "share_held_out_score_zero": float(np.mean(zero_held)),
        "share_top10_own_history": float(np.mean(own_share)),
        "hr@10_history_masked": float((np.concatenate(own_ranks) < 10).mean()),
    }


def report(res: dict[str, Any]) -> _bench.Doc:
    doc = _bench.Doc(f"Score diagnostics: {res['label']}")
    doc.text(
        "Validation users only (test is never read); training popularity = training rows of the "
        "item (all behaviors)."
    )
    doc.table(["run", "model", "valid users", "items", "positive scores",
               "median rank of held-out", "HR@10 (no mask)", "top-10 mean popularity",
               "held-out mean popularity", "all-item mean popularity", "corr(‖e_i‖, log(1+pop))",
               "top-10 slots without training", "items tied with held-out",
               "held-out scored exactly 0", "top-10 slots in the user's own training items",
               "HR@10 with the user's training items masked"])  # fmt: skip
    for r in res["runs"]:
        doc.row(
            r["label"], r["model"], r["valid_users"], r["items"],
            f"{r['share_positive_scores']:.3f}", f"{r['median_rank_of_held_out']:.0f}",
            f"{r['hr@10_unmasked']:.4f}", f"{r['mean_popularity_top10']:.2f}",
            f"{r['mean_popularity_held_out']:.2f}", f"{r['mean_popularity_items']:.2f}",
            f"{r['corr_norm_logpop']:+.2f}", f"{r['share_top10_without_training']:.3f}",
            f"{r['mean_ties_with_held_out']:.1f}", f"{r['share_held_out_score_zero']:.3f}",
            f"{r['share_top10_own_history']:.3f}", f"{r['hr@10_history_masked']:.3f}",
        )  # fmt: skip
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--config", action="append", default=[], help="train this config")
    ap.add_argument("--set", action="append", default=[], help="overrides for every config")
    ap.add_argument("--run", action="append", default=[], help="a finished run directory")
    ap.add_argument("--name", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work-dir", default=str(ROOT / "runs" / "diagnose"))
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    args = ap.parse_args()
    runs = [Path(r) for r in args.run]
    labels = [r.name for r in runs]
    exe = Path(sys.executable).with_name("polyrec")
    for k, config in enumerate(args.config):
        out = Path(args.work_dir) / args.name / f"c{k}"
        if not (out / "metrics.json").exists():
            out.mkdir(parents=True, exist_ok=True)
            for f in out.iterdir():
                f.unlink()
            ov = [s for o in args.set for s in shlex.split(o)]
            cmd = [str(exe), "train", "-q", "--config", config, "--out", str(out), *ov]
            cmd += [f"train.threads={args.threads}", 'train.device="cpu"']
            print("[diagnose]", " ".join(cmd), flush=True)
            subprocess.check_call(cmd, env=_bench.child_env(args.threads))
        runs.append(out)
        labels.append(Path(config).stem)
    if not runs:
        ap.error("give --config or --run")
    t0 = time.perf_counter()
    res: dict[str, Any] = {
        "name": f"score-diagnose-{args.name}",
        "label": args.name,
        "settings": {"threads": args.threads},
        "date": _bench.now_utc(),
        "machine": _bench.machine(),
        "command": "python benchmarks/score_diagnose.py " + shlex.join(sys.argv[1:]),
        "runs": [],
    }
    for r, label in zip(runs, labels, strict=True):
        d = diagnose(r, args.threads)
        d["label"] = label
        print("[diagnose]", d, flush=True)
        res["runs"].append(d)
    res["wall_seconds"] = time.perf_counter() - t0
    _bench.emit(res, report(res), Path(args.out_dir), False, "diagnose")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
