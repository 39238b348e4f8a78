"""Scale benchmark: one training epoch of MF-BPR, LightGCN and CML on synthetic multi-behavior
logs of about 1M and 10M interactions — time, setup and peak memory, and how they grow.

Data: :func:`polyrec.data.synthetic.synthetic_log` (power-law users and items, view → cart →
buy funnel with timestamps, 50 topics as item categories), users and items scaled with the
interactions (``N`` interactions: ``N / 20`` users, ``N / 50`` items, so 1M = 50k users × 20k
items, 10M = 500k × 200k; about 20 interactions per user and 50 per item at every size). Each log
is generated once (in a child process, its time and peak memory recorded) and cached as a polyrec
dataset folder ``data/synthetic-<size>`` (git-ignored).

Each case (model × size) is its own child process with 2 torch threads: it loads the dataset,
makes the leave-one-out split on buy (as :func:`polyrec.training.trainer.prepare` does: load,
split, audit, build the model — for the graph models the normalised adjacency), then runs ONE
training epoch of the model's own batches with the model's shipped Retailrocket config
(``configs/<model>-retailrocket.toml``: batch 2,048, its dimensions, layers and optimiser),
timing every batch (wall and process CPU seconds). When the epoch would take longer than
``--max-epoch-seconds`` (or has more than ``--max-batches`` batches) it stops there and
extrapolates: epoch = first batch + mean of the later timed batches × (batches per epoch − 1);
the report marks such rows. Then one full-ranking evaluation batch (the config's
``eval.batch_size`` test users, every item scored, training buys masked; this includes the
propagation for the graph models and the mask index) is timed. Peak memory is the child's
``ru_maxrss`` after setup, after the epoch and after the evaluation batch. Not a test.

    python benchmarks/scale.py                      # 1m and 10m, three models (about 30 min)
    python benchmarks/scale.py --sizes 1m           # one size
    python benchmarks/scale.py --models mf,lightgcn --max-epoch-seconds 120
    python benchmarks/scale.py --quick              # smoke: 20k and 200k interactions, no files
    python benchmarks/scale.py --report-only        # rewrite scale.md from scale.json
    # MF-BPR with Adam against lazy Adam (train.optimizer = "lazy_adam"), its own results file
    python benchmarks/scale.py --models mf,mf-lazy --threads 1 --max-epoch-seconds 900 \
        --name scale-mf-sparse --accuracy-seeds 2024,2025,2026   # + accuracy on Retailrocket

Cases (``--models``): ``mf``, ``lightgcn``, ``cml`` run their Retailrocket config as shipped;
``mf-lazy`` is ``configs/mf-retailrocket.toml`` with ``train.optimizer = "lazy_adam"`` (sparse
embedding gradients, only the batch's rows updated).

Results: ``benchmarks/results/<name>.{json,md}`` (``--name``, default ``scale``; the MF dense /
lazy comparison is ``scale-mf-sparse``).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _bench

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TAG = "scale"
MODELS = {"mf": "MF-BPR", "mf-lazy": "MF-BPR (lazy Adam)", "lightgcn": "LightGCN", "cml": "CML"}
# case → (config configs/<stem>-retailrocket.toml, overrides on top of it)
CASES: dict[str, tuple[str, list[str]]] = {
    "mf": ("mf", []),
    "mf-lazy": ("mf", ['train.optimizer="lazy_adam"']),
    "lightgcn": ("lightgcn", []),
    "cml": ("cml", []),
}
USERS_PER = 20  # interactions per user (users = N / 20)
ITEMS_PER = 50  # interactions per item (items = N / 50)
N_TOPICS = 50  # item categories
GEN_SEED = 0


def parse_size(text: str) -> int:
    """``1m`` → 1,000,000; ``200k`` → 200,000; a plain integer as is."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([km]?)", text.strip().lower())
    if not m:
        raise SystemExit(f"--sizes: cannot read {text!r} (write e.g. 1m, 10m, 200k)")
    return int(float(m.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[m.group(2)])


def size_spec(name: str) -> dict[str, Any]:
    n = parse_size(name)
    return {
        "size": name,
        "interactions_wanted": n,
        "n_users": max(10, n // USERS_PER),
        "n_items": max(10, n // ITEMS_PER),
        "n_topics": N_TOPICS,
        "seed": GEN_SEED,
    }


# --------------------------------------------------------------------------------- children
def generate_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Generate one log and save it as a dataset folder; times and peak memory."""
    from polyrec.data.synthetic import n_views_for, synthetic_log

    n_views = n_views_for(int(spec["interactions_wanted"]))
    w0, c0 = time.perf_counter(), time.process_time()
    log = synthetic_log(
        int(spec["n_users"]),
        int(spec["n_items"]),
        n_views,
        n_topics=int(spec["n_topics"]),
        seed=int(spec["seed"]),
        name=f"synthetic-{spec['size']}",
    )
    gen_wall, gen_cpu = time.perf_counter() - w0, time.process_time() - c0
    peak_gen = _bench.peak_rss_mib()
    t0 = time.perf_counter()
    log.save(spec["path"])
    import numpy as np

    counts = np.bincount(log.behavior, minlength=len(log.behaviors))
    return {
        "n_views_param": n_views,
        "interactions": len(log),
        "per_behavior": {b: int(c) for b, c in zip(log.behaviors, counts, strict=True)},
        "users_active": int(np.unique(log.user).size),
        "items_active": int(np.unique(log.item).size),
        "generate_wall_s": gen_wall,
        "generate_cpu_s": gen_cpu,
        "save_s": time.perf_counter() - t0,
        "peak_rss_generate_mib": peak_gen,
        "peak_rss_mib": _bench.peak_rss_mib(),
        "fingerprint": log.fingerprint(),
    }


def train_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Setup (load, split, graph), one epoch (or a capped part of it), one eval batch."""
    import dataclasses

    import numpy as np
    import torch

    from polyrec.config import load_config
    from polyrec.data.datasets import load_dataset
    from polyrec.data.splits import Holdout, make_split
    from polyrec.data.views import TrainData
    from polyrec.eval.audit import audit_split
    from polyrec.eval.evaluator import evaluate
    from polyrec.models.registry import build_model
    from polyrec.runtime import tune_allocator
    from polyrec.training.trainer import seed_everything

    th = int(spec["threads"])
    torch.set_num_threads(th)
    cfg = load_config(
        spec["config"],
        [
            f"data.path={json.dumps(spec['data'])}",
            f"train.threads={th}",
            'train.device="cpu"',
            *spec.get("overrides", []),
        ],
    )
    # the steps of polyrec.training.trainer.prepare, timed one by one
    tune_allocator()
    t0 = time.perf_counter()
    log = load_dataset(cfg.data.path)
    if cfg.data.target:
        log = log.with_target(cfg.data.target)
    t1 = time.perf_counter()
    split = make_split(log, cfg.data.protocol, seed=cfg.seed, **cfg.data.split_params())
    audit_split(split)
    t2 = time.perf_counter()
    seed_everything(cfg.seed)
    data = TrainData(split.train, split.slot)
    model = build_model(cfg.model, cfg.params, data)
    t3 = time.perf_counter()
    peak_setup = _bench.peak_rss_mib()
    optimisers = model.make_optimisers(cfg.train.lr, cfg.train.weight_decay, cfg.train.optimizer)
    gen = torch.Generator().manual_seed(cfg.seed)
    bs = cfg.train.batch_size
    n_fn = getattr(model, "n_batches", None)
    if callable(n_fn):
        n_total = int(n_fn(data, bs))
    else:
        n_total = math.ceil(len(data.pairs(getattr(model, "train_behavior", None))[0]) / bs)

    max_batches = int(spec.get("max_batches") or 0)
    budget = float(spec.get("max_epoch_seconds") or 0)
    model.train()
    walls: list[float] = []
    cpus: list[float] = []
    e0 = time.perf_counter()
    it = iter(model.batches(data, bs, gen))
    while True:
        w0, c0 = time.perf_counter(), time.process_time()
        batch = next(it, None)  # drawing the batch (negatives, positives) is part of the step
        if batch is None:
            break
        model.train_step(batch, optimisers)
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        if max_batches and len(walls) >= max_batches:
            break
        if budget and time.perf_counter() - e0 > budget and len(walls) >= 2:
            break
    done = len(walls)
    complete = done >= n_total
    peak_train = _bench.peak_rss_mib()

    def epoch_estimate(xs: list[float]) -> float | None:
        if complete:
            return sum(xs)
        if done >= 2:  # first batch (lazy caches) + the mean later batch for the rest
            return xs[0] + sum(xs[1:]) / (done - 1) * (n_total - 1)
        return xs[0] * n_total if xs else None

    out: dict[str, Any] = {
        "n_users": data.n_users,
        "n_items": data.n_items,
        "interactions": len(log),
        "optimizer": cfg.train.optimizer,
        "train_interactions": len(split.train),
        "train_target_pairs": len(data.pairs(log.target)[0]),
        "test_users": int(split.test.users.size),
        "load_s": t1 - t0,
        "split_s": t2 - t1,
        "model_s": t3 - t2,
        "setup_s": t3 - t0,
        "batch_size": bs,
        "batches_per_epoch": n_total,
        "batches_timed": done,
        "epoch_complete": complete,
        "first_batch_wall_s": walls[0] if walls else None,
        "timed_wall_s": sum(walls),
        "timed_cpu_s": sum(cpus),
        "batch_wall_s": (sum(walls[1:]) / (done - 1)) if done > 1 else None,
        "batch_cpu_s": (sum(cpus[1:]) / (done - 1)) if done > 1 else None,
        "epoch_wall_s": epoch_estimate(walls),
        "epoch_cpu_s": epoch_estimate(cpus),
        "peak_rss_setup_mib": peak_setup,
        "peak_rss_train_mib": peak_train,
    }
    del optimisers
    if spec.get("eval", True):
        users = split.test.users[: cfg.eval.batch_size]
        keep = np.isin(split.test.user, users)
        one_batch = dataclasses.replace(
            split, test=Holdout(split.test.user[keep], split.test.item[keep])
        )
        w0, c0 = time.perf_counter(), time.process_time()
        rep = evaluate(
            model,
            one_batch,
            "test",
            protocols=("full",),
            ks=tuple(cfg.eval.ks),
            mask=cfg.eval.mask,
            batch_size=cfg.eval.batch_size,
        )
        out["eval_batch_users"] = int(rep["n_evaluated"]["full"])
        out["eval_batch_wall_s"] = time.perf_counter() - w0
        out["eval_batch_cpu_s"] = time.process_time() - c0
    out["peak_rss_mib"] = _bench.peak_rss_mib()
    return out


def worker_main(path: str) -> int:
    spec = json.loads(Path(path).read_text())
    if spec.get("kind") == "fit":  # an accuracy run (see accuracy_specs)
        fn = _bench.train_worker
    else:
        fn = generate_worker if spec["kind"] == "generate" else train_worker
    out = fn(spec)
    tmp = Path(spec["out"] + ".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(spec["out"])
    return 0


def run_spec(spec: dict[str, Any], work: Path, threads: int) -> tuple[dict[str, Any] | None, str]:
    name = spec["name"]
    spec["out"] = str(work / f"{name}.json")
    Path(spec["out"]).unlink(missing_ok=True)
    spec_path = work / f"{name}.spec.json"
    spec_path.write_text(json.dumps(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)]
    log = work / f"{name}.log"
    rc, wall, cont = _bench.run_child(cmd, _bench.child_env(threads), log, name, tag=TAG)
    if rc != 0 or not Path(spec["out"]).exists():
        return None, f"{name} failed (exit {rc}): {_bench.tail(log, 8)}"
    out = json.loads(Path(spec["out"]).read_text())
    out["contention"] = cont
    out["child_wall_s"] = wall
    return out, ""


# ------------------------------------------------------------------------ accuracy runs
# MF-BPR's cases trained to early stop on the embedded Retailrocket data, with the settings of
# benchmarks/multibehavior.py's MF row (full-ranking selection on validation NDCG@10, patience
# 25, no stop before epoch 150), so dense Adam's runs are comparable to multibehavior.md's.
ACCURACY_OVERRIDES = [
    'data.path="embedded:retailrocket"',
    'train.device="cpu"',
    'train.metric="ndcg@10"',
    'train.select_protocol="full"',
    'eval.protocols=["full", "sampled"]',
    "train.patience=25",
    "train.min_epochs=150",
]


def accuracy_specs(models: list[str], seeds: list[int], quick: bool) -> list[dict[str, Any]]:
    smoke = ["train.epochs=2", "train.min_epochs=0"] if quick else []
    out = []
    for m in models:
        stem, overrides = CASES[m]
        for seed in seeds:
            out.append(
                {
                    "kind": "fit",
                    "name": f"accuracy-{m}-{seed}",
                    "model": m,
                    "seed": seed,
                    "config": str(ROOT / "configs" / f"{stem}-retailrocket.toml"),
                    "overrides": [*ACCURACY_OVERRIDES, f"seed={seed}", *overrides, *smoke],
                    "eval_reps": 0,
                }
            )
    return out


def accuracy_row(run: dict[str, Any]) -> dict[str, Any]:
    keep = (
        "model",
        "seed",
        "best_epoch",
        "epochs_run",
        "stopped",
        "train_seconds",
        "valid",
        "test",
    )
    epochs = run.get("epoch_seconds") or []
    return {
        **{k: run.get(k) for k in keep},
        "epoch_seconds_mean": sum(epochs) / len(epochs) if epochs else None,
        "contention": run.get("contention"),
    }


ACC_COLUMNS = [
    ("valid", "full", "ndcg@10"),
    ("valid", "full", "hr@10"),
    ("test", "full", "ndcg@10"),
    ("test", "full", "hr@10"),
    ("valid", "sampled", "ndcg@10"),
    ("test", "sampled", "ndcg@10"),
    ("test", "sampled", "hr@10"),
]


def accuracy_table(doc: _bench.Doc, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    seeds = sorted({r["seed"] for r in rows})
    doc.section("Accuracy on the embedded Retailrocket")
    doc.text(
        "What lazy Adam trades: MF-BPR's config (`configs/mf-retailrocket.toml`: d = 64, lr 1e-3, "
        "batch 2,048, λ = 1e-4) trained to early stop with each optimiser, seeds "
        f"{', '.join(map(str, seeds))} (the same split, init and batches per seed), selection "
        "on validation full-ranking NDCG@10 with patience 25 and no stop before epoch 150 (as "
        "`multibehavior.py`'s MF row). Mean ± sd over the seeds. Full: every item ranked, "
        "training buys masked; sampled: the held-out item among 99 stored negatives."
    )
    doc.table(["model", *(f"{part} {proto} {k.upper()}" for part, proto, k in ACC_COLUMNS),
               "best epochs", "s / epoch (train)"])  # fmt: skip
    for m in [m for m in MODELS if any(r["model"] == m for r in rows)]:
        rs = [r for r in rows if r["model"] == m]
        cells = []
        for part, proto, k in ACC_COLUMNS:
            vals = [float(r[part][proto][k]) for r in rs if k in (r[part] or {}).get(proto, {})]
            cells.append(_bench.fmt_mean_sd(vals))
        secs = [r["epoch_seconds_mean"] for r in rs if r.get("epoch_seconds_mean")]
        doc.row(MODELS[m], *cells, ", ".join(str(r["best_epoch"]) for r in rs),
                _f(sum(secs) / len(secs) if secs else None, 2))  # fmt: skip


def paragraphs(lines: list[str]) -> list[str]:
    """Markdown lines (blank-line separated) → paragraphs."""
    return [p for p in "\n".join(lines).split("\n\n") if p.strip()]


# --------------------------------------------------------------------------------- report
def _f(x: float | None, nd: int = 2) -> str:
    return "–" if x is None else f"{x:,.{nd}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}×" if a and b else "–"


def report(res: dict[str, Any]) -> _bench.Doc:
    s = res["settings"]
    doc = _bench.Doc("Scale: one training epoch on synthetic multi-behavior logs")
    doc.text(
        f"Data: `polyrec.data.synthetic.synthetic_log` (seed {GEN_SEED}, {N_TOPICS} topics = "
        f"item categories, view → cart → buy, timestamps over 60 days), N interactions with "
        f"N / {USERS_PER} users and N / {ITEMS_PER} items; cached under `data/synthetic-<size>`. "
        "Split: leave-one-out on buy (validation = latest remaining buy), as in the Retailrocket "
        "configs, whose model parameters are used unchanged (MF-BPR and LightGCN train on buy "
        'pairs only — `behaviors = "target"` —, CML on all three behaviors; MF-BPR (lazy Adam) '
        'is the MF config with `train.optimizer = "lazy_adam"`). Each case is a '
        "child process; `CPU` is the process's CPU seconds (what the work costs on idle cores: "
        "the machine was shared, see `other CPUs busy` = CPU-seconds per second used by other "
        "processes meanwhile)."
    )
    doc.section("Data")
    doc.table(["size", "users", "items", "interactions", "view / cart / buy", "generate s (CPU)",
               "generator peak MiB"])  # fmt: skip
    for d in res["datasets"]:
        g = d.get("generated") or {}
        pb = g.get("per_behavior") or {}
        doc.row(d["size"], f"{d['n_users']:,}", f"{d['n_items']:,}",
                f"{g.get('interactions', 0):,}", " / ".join(f"{v:,}" for v in pb.values()) or "–",
                _f(g.get("generate_cpu_s"), 1), _f(g.get("peak_rss_generate_mib"), 0))  # fmt: skip
    doc.section("One epoch")
    doc.text(
        "`epoch` = all batches of one epoch at batch 2,048; rows marked * ran the first "
        "`batches timed` batches only and extrapolate (first batch + mean later batch × "
        "(batches − 1)). `setup` = load + split (with leakage audit) + model build (graph "
        "normalisation for LightGCN and CML). `eval batch` = one full-ranking batch of test "
        "users (propagation, mask index, scores of every item, top-k)."
    )
    doc.table(["model", "size", "train buy pairs", "batches timed / epoch",
               "s / batch wall (CPU)", "s / epoch wall", "s / epoch CPU", "setup s",
               "eval batch s (users)", "peak MiB setup / train / eval", "other CPUs busy"])  # fmt: skip
    for r in res["runs"]:
        star = "" if r["epoch_complete"] else "*"
        ev = (
            f"{_f(r.get('eval_batch_wall_s'))} ({r.get('eval_batch_users', 0):,})"
            if r.get("eval_batch_wall_s") is not None
            else "–"
        )
        doc.row(
            MODELS[r["model"]], r["size"], f"{r['train_target_pairs']:,}",
            f"{r['batches_timed']} / {r['batches_per_epoch']}{star}",
            f"{_f(r['batch_wall_s'], 3)} ({_f(r['batch_cpu_s'], 3)})",
            f"{_f(r['epoch_wall_s'], 1)}{star}", f"{_f(r['epoch_cpu_s'], 1)}{star}",
            _f(r["setup_s"], 1), ev,
            f"{_f(r['peak_rss_setup_mib'], 0)} / {_f(r['peak_rss_train_mib'], 0)} / "
            f"{_f(r['peak_rss_mib'], 0)}",
            str(r["contention"].get("other_cpu_load")),
        )  # fmt: skip
    sizes = [d["size"] for d in res["datasets"]]
    if len(sizes) >= 2:
        growth(doc, res, sizes[0], sizes[-1])
    extra = [
        f"{MODELS[r['model']]} {r['size']}: {r['batches_timed']} of {r['batches_per_epoch']} "
        f"batches timed ({r['timed_wall_s']:.0f} s wall); the whole epoch would take about "
        f"{r['epoch_wall_s'] / 60:.0f} min wall ({r['epoch_cpu_s'] / 60:.0f} min CPU) here"
        for r in res["runs"]
        if not r["epoch_complete"]
    ]
    if extra:
        doc.text("Extrapolated epochs (*):", "\n".join(f"- {x}" for x in extra))
    accuracy_table(doc, res.get("accuracy") or [])
    doc.section("No users × items memory").text(*paragraphs(NO_DENSE_NOTE))
    doc.text("Settings: " + json.dumps(s))
    if res.get("notes"):
        doc.section("Notes").text("\n".join(f"- {n}" for n in res["notes"]))
    return doc


def growth(doc: _bench.Doc, res: dict[str, Any], lo: str, hi: str) -> None:
    dl = {d["size"]: d for d in res["datasets"]}
    n_lo = (dl[lo].get("generated") or {}).get("interactions")
    n_hi = (dl[hi].get("generated") or {}).get("interactions")
    doc.section(f"Growth {hi} / {lo}")
    doc.text(
        f"Interactions grew {_ratio(n_hi, n_lo)} (users and items too). A ratio near that "
        "figure is linear growth, near its square quadratic. `s / batch` is one optimisation "
        "step on 2,048 target pairs; `s / epoch` = batches × step. Every case ran under the "
        "same background load (`other CPUs busy` above), so the ratios compare like with "
        "like."
    )
    keys = ["train_target_pairs", "batches_per_epoch", "batch_cpu_s", "epoch_cpu_s",
            "epoch_wall_s", "setup_s", "peak_rss_train_mib", "peak_rss_mib"]  # fmt: skip
    doc.table(["model", "interactions", "train buy pairs", "batches / epoch", "s / batch CPU",
               "s / epoch CPU", "s / epoch wall", "setup s", "peak MiB (train)",
               "peak MiB (all)"])  # fmt: skip
    by = {(r["model"], r["size"]): r for r in res["runs"]}
    for m in res["settings"]["models"]:
        a, b = by.get((m, hi)), by.get((m, lo))
        if a and b:
            doc.row(MODELS[m], _ratio(n_hi, n_lo), *(_ratio(a[k], b[k]) for k in keys))
    doc.text(*paragraphs(growth_note(res["settings"]["models"])))


def growth_note(models: list[str]) -> list[str]:
    """The notes on how each case's epoch grows, for the cases of this run."""
    lines = ["How the epoch grows, and why (read from the code):", ""]
    for m in models:
        lines += [x for x in GROWTH_NOTE.get(m, []) if x not in lines]
    return [*lines, *GROWTH_MEMORY]


GROWTH_NOTE: dict[str, list[str]] = {}
GROWTH_NOTE["mf"] = [
    "- **MF-BPR**: the batches per epoch grow with the buy pairs (≈ the interactions), and each "
    "step also grows with the model: `nn.Embedding` returns a dense gradient of the whole "
    "[users + items, d] tables and Adam updates every row at every step, so a step costs "
    "O((users + items) · d) besides its O(batch · d) lookups, and an epoch "
    "O(pairs / batch · (users + items) · d): quadratic in the limit when users and items grow "
    "with the interactions. How much of a step the whole-table part takes depends on the "
    "machine. In `scale.md`'s run (2 threads, AMD EPYC) the fixed part dominated (many small "
    "[2,048 × 64] ops, slowed by thread synchronisation on the shared 2 cores), hence a "
    "per-batch ratio well below 10×; a side measurement of 20 steps gave Adam's step 0.012 s "
    "CPU at 1M and 0.047 s at 10M, forward + backward 0.21 and 0.38 s. In "
    "`scale-mf-sparse.md`'s (1 thread, Intel Xeon) the 1M step was cheap and at 10M the "
    "whole-table update dominated (weights, gradient and two moments: 4 × 180 MB, beyond the "
    "caches), hence a per-batch ratio above 10×. Sparse embedding gradients with a lazy Adam "
    '(`train.optimizer = "lazy_adam"`) make the epoch linear: see `scale-mf-sparse.md` '
    "(MF-BPR with Adam against lazy Adam, 1 thread, `--models mf,mf-lazy --name "
    "scale-mf-sparse`).",
]
GROWTH_NOTE["mf-lazy"] = [
    '- **MF-BPR (lazy Adam)**: `train.optimizer = "lazy_adam"` makes both tables return sparse '
    "gradients (the batch's users, positives and negatives only; the L2 term is on those rows "
    "too) and `polyrec.optim.LazyAdam` (`torch.optim.SparseAdam`) updates those rows' moments "
    "and weights alone, so a step is O(batch · d) whatever the table sizes and an epoch "
    "O(pairs · d): linear in the interactions. The measured per-batch ratio is 1.5×, not 1×: "
    "a side measurement of one epoch (1 thread, 1M → 10M) gave negative sampling 0.03 → 0.35 s "
    "CPU, forward 0.05 → 0.48 s, backward 0.06 → 0.58 s — about 10×, the batches — and the "
    "SparseAdam steps 0.28 → 4.0 s (7 → 10 ms per step): the same work, but its random row "
    "reads and writes go to 3 × 180 MB arrays at 10M against cache-sized ones at 1M (memory "
    "latency, not more operations). Lazy Adam is not Adam (rows absent from a batch keep "
    "their moments undecayed); its accuracy against Adam's is under `Accuracy on the "
    "embedded Retailrocket` in `scale-mf-sparse.md`.",
]
GROWTH_NOTE["lightgcn"] = GROWTH_NOTE["cml"] = [
    "- **LightGCN, CML**: every batch of 2,048 target pairs propagates the whole graph "
    "(CML: per behavior, twice, with a second-order backward through the virtual step), so a "
    "step is O(nnz · d) — at most linear, see `s / batch CPU` — and an epoch "
    "O(pairs / batch · nnz · d), quadratic. A linear epoch needs a batch that grows with the "
    "data (or sampled sub-graphs); the configs' batch 2,048 is kept here.",
]
GROWTH_MEMORY = [
    "- Memory (peak RSS, which includes the ~350 MiB interpreter + torch baseline) grows "
    "linearly or less: embeddings, optimiser state, CSR graphs and per-interaction arrays.",
]


NO_DENSE_NOTE = [
    "Read along the code paths these runs take (a users × items float32 block would be "
    "373 GiB at 10M: 500k × 200k; the measured peaks above are a few GiB):",
    "",
    "- generator (`data/synthetic.py`): per-view arrays, the users × topics preference table, "
    "the topic draw in chunks of 2^20 views × topics (was one views × topics block: 3.5 GiB "
    "peak at 10M with 50 topics, now 1.3 GiB; same output);",
    "- split (`data/splits.py`, leave-one-out) and audit (`eval/audit.py`): sorts and "
    "`PairSet` membership tests over sorted `user * n_items + item` int64 keys; sampled-protocol "
    "negatives are [held-out users, 99];",
    "- training views (`data/views.py` `TrainData`): scipy CSR per behavior (nnz-sized); BPR "
    "negatives by rejection against the sorted pair keys (`data/sampling.py`); CML's "
    "per-behavior positives from CSR `indptr`/`indices`;",
    "- graphs (`data/graphs.py`): the normalised (users + items)² adjacency is sparse CSR "
    "(2 × nnz entries); propagation is SpMM on [users + items, d] embeddings;",
    "- evaluation (`eval/evaluator.py`, `eval/protocols.py`): scores one [batch users, items] "
    "block at a time (1,024 × 200k float32 = 0.8 GiB at 10M: proportional to the batch, not to "
    "the users); the mask and positives are `PairIndex` CSRs over sorted pair keys.",
    "",
    "No users × items allocation was found in the training or evaluation path.",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", default="1m,10m", help="comma list of interaction counts (1m, 10m)")
    ap.add_argument(
        "--models", default="mf,lightgcn,cml", help=f"comma list of {', '.join(MODELS)}"
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads per child")
    ap.add_argument(
        "--max-epoch-seconds",
        type=float,
        default=240.0,
        help="stop an epoch after this many wall seconds and extrapolate (0: never)",
    )
    ap.add_argument("--max-batches", type=int, default=0, help="cap on timed batches (0: none)")
    ap.add_argument("--no-eval", action="store_true", help="skip the evaluation batch")
    ap.add_argument(
        "--accuracy-seeds",
        default="",
        help="also train the MF cases of --models to early stop on the embedded Retailrocket "
        "data with these seeds (comma list, e.g. 2024,2025,2026) and report their accuracy",
    )
    ap.add_argument("--data-dir", default=str(ROOT / "data"))
    ap.add_argument("--work-dir", default=str(ROOT / "runs" / "bench-scale"))
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument(
        "--name", default=TAG, help="results file stem: <out-dir>/<name>.{json,md} (default scale)"
    )
    ap.add_argument("--quick", action="store_true", help="20k and 200k interactions, no files")
    ap.add_argument(
        "--report-only", action="store_true", help="rewrite the report from <out-dir>/<name>.json"
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    if args.report_only:
        kept = _bench.read_document(Path(args.out_dir) / f"{args.name}.json")
        return _bench.emit(kept, report(kept), Path(args.out_dir), False, TAG)
    if args.quick:
        args.sizes = "20k,200k"
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; choose from {', '.join(MODELS)}")
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    sizes.sort(key=parse_size)
    tmp = tempfile.TemporaryDirectory(prefix="polyrec-scale-") if args.quick else None
    work = Path(tmp.name) if tmp else Path(args.work_dir)
    data_dir = work / "data" if tmp else Path(args.data_dir)
    work.mkdir(parents=True, exist_ok=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    notes: list[str] = []
    datasets = []
    for size in sizes:
        d = size_spec(size)
        path = data_dir / f"synthetic-{size}"
        d["path"] = str(path)
        meta = path / "generation.json"
        if (path / "dataset.json").exists() and meta.exists():
            d["generated"] = json.loads(meta.read_text())
            d["generated"]["cached"] = True
            print(f"[{TAG}] {size}: cached dataset {path}", flush=True)
        else:
            out, err = run_spec(
                {**d, "kind": "generate", "name": f"generate-{size}"}, work, args.threads
            )
            if out is None:
                failures.append(err)
                continue
            meta.write_text(json.dumps(out, indent=2))
            d["generated"] = out
        datasets.append(d)
    runs = []
    for m in models:
        for d in datasets:
            stem, overrides = CASES[m]
            spec = {
                "kind": "train",
                "name": f"{m}-{d['size']}",
                "model": m,
                "size": d["size"],
                "config": str(ROOT / "configs" / f"{stem}-retailrocket.toml"),
                "overrides": overrides,
                "data": d["path"],
                "threads": args.threads,
                "max_epoch_seconds": args.max_epoch_seconds,
                "max_batches": args.max_batches,
                "eval": not args.no_eval,
            }
            out, err = run_spec(spec, work, args.threads)
            if out is None:
                failures.append(err)
                continue
            runs.append({"model": m, "size": d["size"], **out})
            r = runs[-1]
            print(
                f"[{TAG}] {spec['name']}: {r['batches_timed']}/{r['batches_per_epoch']} batches, "
                f"epoch {r['epoch_wall_s']:.1f} s wall, {r['epoch_cpu_s']:.1f} s CPU, peak "
                f"{r['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    accuracy: list[dict[str, Any]] = []
    seeds = [int(x) for x in args.accuracy_seeds.split(",") if x.strip()]
    acc_models = [m for m in models if CASES[m][0] == "mf"]
    if seeds and acc_models:
        done, fails = _bench.run_jobs(
            accuracy_specs(acc_models, seeds, args.quick),
            Path(__file__).resolve(),
            work / "accuracy",
            threads=args.threads,
            tag=TAG,
        )
        failures += fails
        accuracy = [accuracy_row(r) for r in done]
    if any(not r["epoch_complete"] for r in runs):
        notes.append(
            "Rows marked * stopped after --max-epoch-seconds / --max-batches: their epoch times "
            "are extrapolated from the timed batches (batches within an epoch do the same work)."
        )
    res = {
        "name": args.name,
        "date": _bench.now_utc(),
        "machine": _bench.machine(),
        "command": " ".join(["python benchmarks/scale.py", *(argv or sys.argv[1:])]),
        "settings": {
            "sizes": sizes,
            "models": models,
            "threads": args.threads,
            "jobs": 1,
            "max_epoch_seconds": args.max_epoch_seconds,
            "max_batches": args.max_batches,
            "users_per": USERS_PER,
            "items_per": ITEMS_PER,
            "n_topics": N_TOPICS,
            "generator_seed": GEN_SEED,
            "accuracy_seeds": seeds,
        },
        "datasets": datasets,
        "runs": runs,
        "accuracy": accuracy,
        "notes": notes,
        "failures": failures,
    }
    rc = _bench.emit(res, report(res), Path(args.out_dir), args.quick, TAG)
    if tmp:
        tmp.cleanup()
    return rc


if __name__ == "__main__":
    sys.exit(main())
