"""MBA (Xin et al., SIGIR 2023) reproduction under MBA's protocol, with baselines and speed.

Datasets (imported from ``../shared/data`` into the git-ignored ``data/`` folder on first use):

* **Retailrocket** (HKUDS preprocessing; target buy, auxiliary view) and **Tmall** (CML's
  folder, the Taobao UserBehavior period; target buy, auxiliary cart — its page views are
  missing): every purchase, the published leave-one-out test purchases included, becomes a
  training row, so that the protocol splits all purchases 4:1 at random over (user, item) pairs.
  Models: MF-BPR on buy only, MF-BPR on every behavior merged, LightGCN on buy, MBA-MF and
  MBA-LightGCN; the strong baselines (POP over every behavior, history, ItemKNN, EASE); and the
  multi-behavior models that lead under full ranking (LightGCN on every behavior merged,
  MB-CGCN, CRGCN, MuLe) with polyrec's MB-Hybrid, each at its shipped settings. Every behavior
  of the folder is training data for the models that take several (MBA uses page views only).
* **Beibei** (MBA's own files; purchases only, its 4:1 test file kept): MF-BPR and LightGCN, to
  check the baselines against the paper's rows. MBA cannot run (no page views); the benchmark
  records the configuration error it raises.

Protocol: the paper's 4:1 random split; a validation slice (10 % of the training purchases) for
early stopping and model selection (the paper has none and stops on the test set); full ranking
with the user's training purchases masked (validation purchases too at test time); Recall@10/20
and NDCG@10/20 of the best validation epoch (Recall@20, patience 50 main-phase evaluations), mean
± sd over seeds. Speed: seconds per epoch of each MBA phase, per evaluation, and peak memory on
Retailrocket, next to the official code's figures from ``../shared/ANCHORS.md``.

    python benchmarks/mba_reproduce.py                 # full run (3 seeds; hours on 2 cores)
    python benchmarks/mba_reproduce.py --quick         # smoke run: 1 seed, few epochs, no files
    python benchmarks/mba_reproduce.py --prepare-only  # only import the data folders
    python benchmarks/mba_reproduce.py --datasets retailrocket --threads 1
    python benchmarks/mba_reproduce.py --labels MB-Hybrid,CRGCN   # only these rows (others kept)

Every run is its own child process (``--threads`` torch threads), so its peak memory
(``ru_maxrss``) is its own. Results: ``benchmarks/results/mba-reproduce.json``
(``polyrec-bench/1``; its markdown: ``polyrec report benchmarks/results --markdown``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import _bench

from polyrec.models.itemknn import MULTI_BEHAVIOR_KNN

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CONFIGS = ROOT / "configs"
SHARED = Path(os.environ.get("POLYREC_SHARED_DATA", ROOT.parent / "shared" / "data"))
NAME = "mba-reproduce"
METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")

# dataset → (shared folder, importer, drop the published fold?, data folder name)
DATASETS: dict[str, tuple[str, str, bool, str]] = {
    "retailrocket": ("retailrocket-hkuds", "hkuds", True, "mba-retailrocket"),
    "tmall": ("tmall-cml-partial", "hkuds", True, "mba-tmall"),
    "beibei": ("beibei-mba-partial", "mba", False, "mba-beibei"),
}

# (label, config file, extra overrides) per dataset
RUNS: dict[str, list[tuple[str, str, list[str]]]] = {
    "retailrocket": [
        ("MF-BPR (buy)", "mf-mba-retailrocket.toml", []),
        ("MF-BPR (all behaviors)", "mf-mba-retailrocket.toml", ['params.behaviors="all"']),
        ("LightGCN (buy)", "lightgcn-mba-retailrocket.toml", []),
        ("MBA-MF", "mba-retailrocket.toml", []),
        ("MBA-LightGCN", "mba-lightgcn-retailrocket.toml", []),
    ],
    "tmall": [
        ("MF-BPR (buy)", "mf-mba-tmall.toml", []),
        ("MF-BPR (all behaviors)", "mf-mba-tmall.toml", ['params.behaviors="all"']),
        ("LightGCN (buy)", "lightgcn-mba-tmall.toml", []),
        ("MBA-MF", "mba-tmall.toml", []),
        ("MBA-LightGCN", "mba-lightgcn-tmall.toml", []),
    ],
    "beibei": [
        ("MF-BPR (buy)", "mf-mba-beibei.toml", []),
        ("LightGCN (buy)", "lightgcn-mba-beibei.toml", []),
    ],
}

# the strong baselines of issue 22 (closed form, at their defaults: MBA's protocol has no tuned
# values; the MF/LightGCN rows keep MBA's §4.5 settings): (label, shipped config, overrides).
# The shipped Retailrocket configs carry leave-one-out; these overrides give MBA's protocol.
MBA_PROTOCOL = [
    'data.protocol="random-ratio"', "data.ratio=0.8", "data.valid_ratio=0.1",
    "data.n_negatives=0", 'data.target="buy"', 'train.metric="recall@20"',
    'train.select_protocol="full"', "eval.ks=[10, 20]", 'eval.protocols=["full"]',
]  # fmt: skip
BASELINES: list[tuple[str, str, list[str]]] = [
    ("POP (all behaviors)", "pop-retailrocket.toml", [*MBA_PROTOCOL, 'params.behaviors="all"']),
    ("history", "history-retailrocket.toml", MBA_PROTOCOL),
    # S as MB-Hybrid's defaults: the values that held across datasets (knn-defaults.md)
    (
        "ItemKNN",
        "itemknn-retailrocket.toml",
        [*MBA_PROTOCOL, *(f"params.{k}={v}" for k, v in MULTI_BEHAVIOR_KNN.items())],
    ),
    ("EASE", "ease-retailrocket.toml", MBA_PROTOCOL),
]
for _runs in RUNS.values():
    _runs += BASELINES
# issue 23: the models that lead under full ranking and polyrec's own, under MBA's protocol
# (auxiliary rows of held-out purchases stay in training, as hide = "target"), each at its own
# shipped settings; LightGCN on every behavior merged at MBA's §4.5 settings
_TMALL_CHAIN = 'params.behavior_order=["fav", "cart", "buy"]'
# the protocol's patience (50 evaluations, as every trained row above) for the leaders too; on
# Tmall (30-45 s per epoch) their shipped configs' 10 (compute budget; said in the table notes)
LEADER_PATIENCE = {"retailrocket": ["train.patience=50"], "tmall": []}
LEADERS: dict[str, list[tuple[str, str, list[str]]]] = {
    ds: [
        ("LightGCN (all behaviors)", f"lightgcn-mba-{ds}.toml", ['params.behaviors="all"']),
        ("MB-CGCN", "mbcgcn-retailrocket.toml",
         [*MBA_PROTOCOL, *([_TMALL_CHAIN, "params.behavior_layers={ fav = 2, cart = 4, buy = 3 }"]
                           if ds == "tmall" else [])]),
        ("CRGCN", "crgcn-retailrocket.toml",
         [*MBA_PROTOCOL, *([_TMALL_CHAIN, "params.loss_weights={ fav = 1.0, cart = 1.0, buy = 1.0 }"]
                           if ds == "tmall" else [])]),
        ("MuLe", "mule-retailrocket.toml", MBA_PROTOCOL),
        ("MB-Hybrid", "mbhybrid-retailrocket.toml", MBA_PROTOCOL),
        # without the auxiliary behaviors' own co-occurrence neighbourhoods (the ablation)
        ("MB-Hybrid (no behavior similarity)", "mbhybrid-retailrocket.toml",
         [*MBA_PROTOCOL, "params.behavior_similarity=false"]),
        # with the graph term (LightGCN over every behavior merged) and the item bias, at
        # LightGCN's lr 1e-3 with the term weights at 10× (the settings of the ``graph`` row of
        # the multi-behavior ablation): MF on every behavior beats ItemKNN on MBA's Tmall
        ("MB-Hybrid (graph term)", "mbhybrid-retailrocket.toml",
         [*MBA_PROTOCOL, "params.graph=true", "params.item_bias=true", "train.lr=0.001",
          "params.weight_lr_scale=10"]),
        # with the optional own-history features (the user's conversion rates, repeat counts,
        # recency and purchase proximity, the products with the other terms), at lr 3e-2 (the
        # shipped model reaches the same validation there in a fifth of the epochs)
        ("MB-Hybrid (history detail)", "mbhybrid-retailrocket.toml",
         [*MBA_PROTOCOL, "params.user_conversion=true", "params.history_counts=true",
          "params.temporal=true", "params.interactions=true", "train.lr=0.03"]),
    ]
    for ds in ("retailrocket", "tmall")
}  # fmt: skip
for _ds, _runs in LEADERS.items():
    RUNS[_ds] += [(label, cfg, [*extra, *LEADER_PATIENCE[_ds]]) for label, cfg, extra in _runs]
# issue 29: MBA's Table 3 denoising frameworks around its MF and LightGCN (their MBA settings;
# the frameworks' own defaults from their authors' code)
DENOISERS = [
    (f"{label} ({bb_label})", f"{fw}-{bb}-mba-retailrocket.toml", [])
    for fw, label in (("wbpr", "WBPR"), ("tce", "T-CE"), ("deca", "DeCA"))
    for bb, bb_label in (("mf", "MF"), ("lightgcn", "LightGCN"))
]
for _runs in RUNS.values():
    _runs += DENOISERS
# the rows a table's strongest baseline is chosen from (on validation Recall@20)
STRONG = ("MF-BPR (buy)", "MF-BPR (all behaviors)", "LightGCN (buy)", "LightGCN (all behaviors)",
          *(b[0] for b in BASELINES))  # fmt: skip

# The paper's Tables 2-3 (Recall@10, Recall@20, NDCG@10, NDCG@20); MBA rows: Table 3.
PAPER: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "Beibei": {
        "MF-BPR (buy)": (0.0901, 0.1438, 0.0668, 0.0855),
        "LightGCN (buy)": (0.0988, 0.1541, 0.0733, 0.0925),
        "MBA-MF": (0.1127, 0.1742, 0.0834, 0.1046),
        "MBA-LightGCN": (0.1078, 0.1698, 0.0786, 0.1002),
        "WBPR (MF)": (0.0770, 0.1189, 0.0586, 0.0731),
        "T-CE (MF)": (0.0795, 0.1262, 0.0562, 0.0724),
        "WBPR (LightGCN)": (0.0879, 0.1310, 0.0682, 0.0832),
        "T-CE (LightGCN)": (0.0779, 0.1254, 0.0526, 0.0691),
        "DeCA (MF)": (0.0898, 0.1378, 0.0664, 0.0831),
        "DeCA (LightGCN)": (0.0770, 0.1230, 0.0528, 0.0687),
    },
    "Taobao": {
        "MF-BPR (buy)": (0.0303, 0.0420, 0.0190, 0.0224),
        "LightGCN (buy)": (0.0460, 0.0640, 0.0290, 0.0342),
        "MBA-MF": (0.0579, 0.0812, 0.0369, 0.0435),
        "MBA-LightGCN": (0.0538, 0.0780, 0.0327, 0.0396),
    },
    "MBD": {
        "MF-BPR (buy)": (0.3816, 0.4597, 0.2490, 0.2697),
        "LightGCN (buy)": (0.4145, 0.4974, 0.2719, 0.2939),
        "MBA-MF": (0.4644, 0.5677, 0.3012, 0.3285),
        "MBA-LightGCN": (0.4750, 0.5926, 0.3026, 0.3337),
    },
}

# ../shared/ANCHORS.md, "Official MBA implementation" (LiuXiangYuan/MBA @ db155c8, --device cpu,
# Retailrocket under MBA's protocol, MF d = 32, batch 2048; 2-core CPU of this machine class)
OFFICIAL = {
    "seconds_per_epoch": {"pretrain_view": 1.58, "pretrain_buy": 0.16, "main": 2.64},
    "seconds_per_eval": {"pretrain_view": 0.25, "pretrain_buy": 0.15, "main": 0.37},
    "epochs_to_early_stop": {"pretrain_view": 118, "pretrain_buy": 102, "main": 63},
    "peak_memory_mib": {"pretrain": 576, "main": 672},
    "test_selected_on_test": {
        "MBA-MF": {"recall@20": 0.111, "ndcg@20": 0.066},
        "MF-BPR (buy)": {"recall@20": 0.056, "ndcg@20": 0.037},
    },
}


# --------------------------------------------------------------------------------------- data
def prepare_data(data_dir: Path, names: list[str]) -> dict[str, str]:
    """Import the shared folders into ``data_dir`` (once); returns dataset → folder."""
    from polyrec.data.importers import read_hkuds, read_mba

    out = {}
    data_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        shared, fmt, drop_fold, folder = DATASETS[name]
        target = data_dir / folder
        out[name] = str(target)
        if (target / "dataset.json").exists():
            continue
        src = SHARED / shared
        if not src.exists():
            raise SystemExit(f"{src} is missing: point POLYREC_SHARED_DATA at the shared data")
        log = read_hkuds(src) if fmt == "hkuds" else read_mba(src)
        if drop_fold:  # MBA's protocol splits every purchase, the published test ones too
            log = replace(log, fold=None, name=folder)
        log.save(target)
        print(f"imported {src} → {target} ({len(log)} rows)", flush=True)
    return out


# ------------------------------------------------------------------------------------- worker
def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Child process: train one configuration, return metrics, per-phase timings and memory."""
    import torch

    from polyrec.config import load_config
    from polyrec.errors import PolyrecError
    from polyrec.eval.evaluator import evaluate
    from polyrec.training.trainer import Reporter, Trainer, final_metrics, prepare

    torch.set_num_threads(spec["threads"])
    overrides = [
        f"seed={spec['seed']}",
        f"data.path={json.dumps(spec['data'])}",
        'train.device="cpu"',
        f"train.threads={spec['threads']}",
        *spec["overrides"],
    ]
    try:
        cfg = load_config(spec["config"], overrides)
        prepared = prepare(cfg)
    except PolyrecError as e:
        return {"error": str(e)}
    model = prepared.model

    class PhaseReporter(Reporter):
        """Per epoch: the trainer's seconds, the phase, and MBA's time split by phase."""

        def __init__(self) -> None:
            self.epochs: list[dict[str, Any]] = []
            self.cpu: list[float] = []
            self._t: dict[str, float] = {}
            self._phase = "train"

        def epoch_start(self, epoch: int, n_batches: int | None) -> None:
            self._t = dict(getattr(model, "timing", {}))
            if hasattr(model, "pretraining"):
                self._phase = "pretrain" if model.pretraining else "main"

        def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
            timing = getattr(model, "timing", {})
            row = {
                "epoch": epoch,
                "phase": self._phase,
                "seconds": record["seconds"],
                "cpu_seconds": self.cpu[-1] if self.cpu else None,
                "eval_seconds": record.get("eval_seconds"),
                "valid_recall@20": record.get("valid", {}).get("recall@20"),
            }
            row |= {k: v - self._t.get(k, 0.0) for k, v in timing.items()}
            self.epochs.append(row)

    reporter = PhaseReporter()
    with tempfile.TemporaryDirectory(prefix="mba-run-") as run_dir:
        trainer = Trainer(prepared, Path(run_dir), reporter)
        epoch_fn = trainer._epoch

        def cpu_timed_epoch(*a: Any, **kw: Any) -> dict[str, Any]:
            # process CPU seconds of the training part of each epoch: on a shared machine the
            # wall time also counts the time other processes held the cores
            c = time.process_time()
            record = epoch_fn(*a, **kw)
            reporter.cpu.append(time.process_time() - c)
            return record

        trainer._epoch = cpu_timed_epoch  # type: ignore[method-assign]
        t0 = time.perf_counter()
        state = trainer.fit()
        fit_seconds = time.perf_counter() - t0
    metrics = final_metrics(prepared)
    t0 = time.perf_counter()
    evaluate(model, prepared.split, "test", protocols=("full",), ks=(10, 20))
    test_eval_seconds = time.perf_counter() - t0
    return {
        "label": spec["label"],
        "seed": spec["seed"],
        "model": cfg.model,
        "params": cfg.params.model_dump(mode="json"),
        "split": prepared.split.describe(),
        "best_epoch": state["best_epoch"],
        "epochs_run": state["epoch"],
        "stopped": state["stopped"],
        "fit_seconds": fit_seconds,
        "test_eval_seconds": test_eval_seconds,
        "valid": {k: metrics["valid"]["metrics"]["full"][k] for k in METRICS},
        "test": {k: metrics["test"]["metrics"]["full"][k] for k in METRICS},
        "epochs": reporter.epochs,
        "pretrain_epochs": int(getattr(model, "pre_epochs", 0)),
        "peak_rss_mib": _bench.peak_rss_mib(),
    }


def run_official_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Child process: time the official code (a checkout of LiuXiangYuan/MBA at ``spec['dir']``)
    on polyrec's Retailrocket split, MF, ``spec['epochs']`` epochs per phase.

    Its own modules do the work (``train.TrainModel.pretrain`` / ``.train``, its
    ``MultiDataset``, its evaluation); this only builds their inputs as its ``data_utils`` does
    (dok matrices and per-user lists; the click data merged with the training purchases; every
    user needs both behaviors, so users without a training purchase are left out of the click
    lists) and times each epoch from the end of one evaluation to the start of the next.
    """
    import resource
    from collections import defaultdict

    import numpy as np
    import scipy.sparse as sp
    import torch

    sys.path.insert(0, spec["dir"])
    import evaluate as off_eval  # the official modules
    import train as off_train
    from datasets import MultiDataset, train_collate_fn
    from model import MF as OffMF
    from torch.utils.data import DataLoader
    from utils import set_seed

    from polyrec.config import load_config
    from polyrec.training.trainer import prepare

    torch.set_num_threads(spec["threads"])
    cfg = load_config(
        spec["config"], [f"seed={spec['seed']}", f"data.path={json.dumps(spec['data'])}"]
    )
    split = prepare(cfg).split
    log = split.train
    n_users, n_items = log.n_users, log.n_items

    def pairs(users: Any, items: Any) -> list[tuple[int, int]]:
        return list(zip(users.tolist(), items.tolist(), strict=True))

    bm = log.behavior == log.target_code
    buy = set(pairs(log.user[bm], log.item[bm]))
    buy |= set(pairs(split.valid.user, split.valid.item))  # the code's 4:1 has no validation
    vm = log.behavior == log.behavior_code("view")
    views = sorted(set(pairs(log.user[vm], log.item[vm])))
    perm = np.random.default_rng(0).permutation(len(views))
    cut = int(0.8 * len(views))  # its click files are split 4:1 too (pre-training tests on them)
    buyers = {u for u, _ in buy}
    pv_train = [views[i] for i in perm[:cut] if views[i][0] in buyers]
    pv_test = [views[i] for i in perm[cut:]]
    buy_test = pairs(split.test.user, split.test.item)

    def lists(pairs: Any) -> defaultdict[int, list[int]]:
        d: defaultdict[int, list[int]] = defaultdict(list)
        for u, i in pairs:
            d[u].append(i)
        return d

    def build(pv: Any, bought: Any) -> tuple[Any, Any, Any, Any]:
        pv = sorted(set(pv) | set(bought))
        mats = []
        for pairs in (pv, sorted(bought)):
            m = sp.dok_matrix((n_users, n_items), dtype=np.float32)
            for u, i in pairs:
                m[u, i] = 1.0
            mats.append(m)
        return mats[0], mats[1], lists(pv), lists(sorted(bought))

    param = {
        "model": "MF", "h_model": "MF", "dataset": "rr", "folder": spec["work"],
        "epochs": spec["epochs"], "top_k": [10, 20], "C_1": 1, "C_2": 1, "alpha": 1.0,
        "lambda0": 1e-4, "lambda1": 1e-4, "seed": spec["seed"], "lr": 0.001, "NSR": 1,
        "device": "cpu", "emb_dim": 32, "early_stop_rounds": 30, "denoise_type": "DP",
        "beta1": 0.8, "beta2": 0.2, "dropout": 0.0, "num_layers": 3,
    }  # fmt: skip
    marks: list[tuple[float, float, float, float]] = []
    for name in ("test_all_users", "test_all_users_with_two_model"):
        fn = getattr(off_eval, name)

        def timed(*a: Any, _fn: Any = fn, **k: Any) -> Any:
            t, c = time.perf_counter(), time.process_time()
            out = _fn(*a, **k)
            marks.append((t, time.perf_counter(), c, time.process_time()))
            return out

        setattr(off_eval, name, timed)

    def epochs_since(t0: float, c0: float) -> dict[str, list[float]]:
        wall, cpu, ev = [], [], []
        for a, b, ca, cb in marks:
            wall.append(a - t0)
            cpu.append(ca - c0)
            ev.append(b - a)
            t0, c0 = b, cb
        marks.clear()
        return {"wall": wall, "cpu": cpu, "eval": ev}

    out: dict[str, Any] = {}
    for phase in ("pre", "mba"):
        pv = pv_train if phase == "pre" else views
        mat_pv, mat_buy, d_pv, d_buy = build(pv, buy)
        set_seed(spec["seed"])
        ds = MultiDataset(
            user_num=n_users, item_num=n_items, train_mat_pv=mat_pv, train_mat_buy=mat_buy,
            user_pos_dict_pv=d_pv, user_pos_dict_buy=d_buy, train_data_dict_pv=d_pv,
            train_data_dict_buy=d_buy, is_pretrain=phase == "pre",
        )  # fmt: skip
        loader = DataLoader(ds, batch_size=2048, shuffle=True, collate_fn=train_collate_fn)
        tm = off_train.TrainModel(param, n_users, n_items, mat_buy, mat_pv)
        if phase == "pre":
            for mode, test in (("pv", lists(pv_test)), ("buy", lists(buy_test))):
                set_seed(spec["seed"])
                t0, c0 = time.perf_counter(), time.process_time()
                tm.pretrain(
                    OffMF(n_users, n_items, 32), loader, mode, test, d_pv if mode == "pv" else d_buy,
                    "MF", 20, model_save_path=f"{spec['work']}/pre_{mode}.pt",
                )  # fmt: skip
                out["pretrain_view" if mode == "pv" else "pretrain_buy"] = epochs_since(t0, c0)
        else:
            pre = []
            for mode in ("pv", "buy"):
                m = OffMF(n_users, n_items, 32)
                m.load_state_dict(torch.load(f"{spec['work']}/pre_{mode}.pt"))
                pre.append(m)
            t0, c0 = time.perf_counter(), time.process_time()
            tm.train(pre[0], pre[1], loader, lists(buy_test), d_buy, "buy", "MF")
            out["main"] = epochs_since(t0, c0)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return out


def spawn(spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """Run one spec in a child process (own threads, own peak memory)."""
    spec_file = work / f"spec-{time.monotonic_ns()}.json"
    out_file = spec_file.with_suffix(".out.json")
    spec_file.write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", str(spec_file), "--result", str(out_file)],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0 or not out_file.exists():
        raise RuntimeError(
            f"run {spec['label']} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    result = json.loads(out_file.read_text())
    result["load_avg_start"] = load
    result["load_avg_end"] = os.getloadavg()[0]
    return result


# ---------------------------------------------------------------------------------- summaries
def _mean_sd(xs: list[float]) -> tuple[float, float]:
    if not xs:
        return float("nan"), float("nan")
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _fmt(ms: tuple[float, float], digits: int = 4, n: int = 2) -> str:
    """``mean ± sd``; the mean alone for one seed (``n = 1``), whose sd is not a spread."""
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}" if n > 1 else f"{ms[0]:.{digits}f}"


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """Mean ± sd of every metric per dataset and model; gains of MBA over the MF variants."""
    out: dict[str, Any] = {}
    for ds, by_label in results.items():
        rows = {}
        for label, runs in by_label.items():
            ok = [r for r in runs if "error" not in r]
            if not ok:
                rows[label] = {"error": runs[0].get("error") if runs else "no runs"}
                continue
            rows[label] = {
                "seeds": [r["seed"] for r in ok],
                "test": {m: _mean_sd([r["test"][m] for r in ok]) for m in METRICS},
                "valid": {m: _mean_sd([r["valid"][m] for r in ok]) for m in METRICS},
                "best_epoch": _mean_sd([float(r["best_epoch"]) for r in ok]),
                "epochs_run": _mean_sd([float(r["epochs_run"]) for r in ok]),
                "fit_seconds": _mean_sd([r["fit_seconds"] for r in ok]),
            }
        gains: dict[str, Any] = {}
        for mba in ("MBA-MF", "MBA-LightGCN"):
            for base in ("MF-BPR (buy)", "MF-BPR (all behaviors)", "LightGCN (buy)"):
                a, b = rows.get(mba, {}), rows.get(base, {})
                if "test" in a and "test" in b:
                    gains[f"{mba} vs {base}"] = {
                        m: a["test"][m][0] / b["test"][m][0] - 1.0 for m in METRICS
                    }
        out[ds] = {"rows": rows, "gains": gains}
    return out


def paper_gains() -> dict[str, dict[str, float]]:
    out = {}
    for ds, rows in PAPER.items():
        for mba in ("MBA-MF", "MBA-LightGCN"):
            base = rows["MF-BPR (buy)"]
            out[f"{ds}: {mba} vs MF-BPR (buy)"] = {
                m: rows[mba][k] / base[k] - 1.0 for k, m in enumerate(METRICS)
            }
    return out


def speed_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds per epoch of each MBA phase (medians pooled over seeds), per evaluation, memory.

    Wall seconds, and process CPU seconds (on a shared machine the wall time also counts the
    time other processes held the cores). A pre-training epoch trains both behavior models; it
    is split between P(R_g) and P(R_f) by the model's own timers (batch building + steps).
    """
    wall: dict[str, list[float]] = {"pretrain_view": [], "pretrain_buy": [], "main": []}
    cpu: dict[str, list[float]] = {"pretrain_view": [], "pretrain_buy": [], "main": []}
    evals: dict[str, list[float]] = {"pretrain": [], "main": []}
    for r in runs:
        for e in r["epochs"]:
            if e["eval_seconds"]:
                evals[e["phase"]].append(e["eval_seconds"])
            if e["phase"] == "main":
                wall["main"].append(e["seconds"])
                cpu["main"].append(e["cpu_seconds"])
                continue
            g, f = e.get("pretrain_g", 0.0), e.get("pretrain_f", 0.0)
            for key, part in (("pretrain_view", g), ("pretrain_buy", f)):
                if part > 0:
                    share = part / (g + f)
                    wall[key].append(e["seconds"] * share)
                    cpu[key].append(e["cpu_seconds"] * share)

    def med(xs: list[float]) -> float | None:
        return statistics.median(xs) if xs else None

    ours = {
        "seconds_per_epoch": {k: med(v) for k, v in wall.items()},
        "cpu_seconds_per_epoch": {k: med(v) for k, v in cpu.items()},
        "seconds_per_eval": {k: med(v) for k, v in evals.items()},
        "pretrain_epochs": [r["pretrain_epochs"] for r in runs],
        "main_epochs": [sum(e["phase"] == "main" for e in r["epochs"]) for r in runs],
        "peak_memory_mib": max(r["peak_rss_mib"] for r in runs),
        "load_avg": [(round(r["load_avg_start"], 2), round(r["load_avg_end"], 2)) for r in runs],
    }
    speedup = {}
    for k, off in OFFICIAL["seconds_per_epoch"].items():
        v = ours["seconds_per_epoch"].get(k)
        c = ours["cpu_seconds_per_epoch"].get(k)
        speedup[k] = {"wall": off / v if v else None, "cpu": off / c if c else None}
    return {"ours": ours, "official": OFFICIAL, "speedup_per_epoch": speedup}


def side_by_side(args: argparse.Namespace, data: str, work: Path) -> dict[str, Any]:
    """Alternate short runs of the official code and of ours (same split, threads, machine)."""
    epochs = args.official_epochs
    official: dict[str, dict[str, list[float]]] = {}
    ours_runs = []
    peaks: dict[str, list[float]] = {"official": [], "ours": []}
    for r in range(args.official_rounds):
        spec = {
            "kind": "official",
            "label": "official",
            "dir": str(Path(args.official).resolve()),
            "work": str(work),
            "config": str(CONFIGS / "mba-retailrocket.toml"),
            "data": data,
            "seed": args.first_seed,
            "threads": args.threads,
            "epochs": epochs,
        }
        res = spawn(spec, work)
        for phase in ("pretrain_view", "pretrain_buy", "main"):
            for m in ("wall", "cpu", "eval"):
                official.setdefault(phase, {}).setdefault(m, []).extend(res[phase][m])
        peaks["official"].append(res["peak_rss_mib"])
        ours = spawn(
            {
                "label": "MBA-MF (short)",
                "config": str(CONFIGS / "mba-retailrocket.toml"),
                "data": data,
                "seed": args.first_seed,
                "threads": args.threads,
                "overrides": [f"train.epochs={2 * epochs}", f"params.pretrain_epochs={epochs}"],
            },
            work,
        )
        ours_runs.append(ours)
        peaks["ours"].append(ours["peak_rss_mib"])
        print(f"side by side: round {r + 1}/{args.official_rounds} done", flush=True)
    med = statistics.median
    off = {ph: {m: med(v) for m, v in d.items()} for ph, d in official.items()}
    sp = speed_summary(ours_runs)["ours"]
    speedup = {
        ph: {
            "wall": off[ph]["wall"] / sp["seconds_per_epoch"][ph],
            "cpu": off[ph]["cpu"] / sp["cpu_seconds_per_epoch"][ph],
        }
        for ph in off
    }
    return {
        "official": off,
        "ours": sp,
        "speedup": speedup,
        "peak_memory_mib": {k: max(v) for k, v in peaks.items()},
        "threads": args.threads,
        "epochs_per_phase": epochs,
        "rounds": args.official_rounds,
    }


# ------------------------------------------------------------------------------------ report
SPLIT = "purchases 4:1 at random + 10 % validation (MBA §4.3)"
SELECTION = "validation recall@20"


def report(res: dict[str, Any]) -> _bench.Doc:
    doc = _bench.Doc("MBA reproduction (Xin et al., SIGIR 2023)")
    doc.section("Protocol").text("\n".join(f"- {line}" for line in res["protocol"]))
    doc.section("Accuracy (test, full ranking, best validation epoch; mean ± sd over seeds)")
    for ds, s in res["summary"].items():
        doc.section(ds, level=3)
        ok = {k: r for k, r in s["rows"].items() if "error" not in r}
        strong = _bench.strongest({k: r["valid"]["recall@20"][0] for k, r in ok.items()}, STRONG)
        if strong:
            doc.text(
                f"Strongest baseline (by validation Recall@20, among {', '.join(STRONG)}): "
                f"**{strong}**; the last column is each model's test Recall@20 against it."
            )
        sb = ok[strong]["test"] if strong else None
        doc.table(["model", "Recall@10", "Recall@20", "NDCG@10", "NDCG@20", "valid Recall@20",
                   "best epoch", "epochs", "seeds", "vs strongest baseline (R@20)",
                   "vs strongest baseline (NDCG@10)"])  # fmt: skip
        for label, row in s["rows"].items():
            if "error" in row:
                doc.row(label, f"cannot run: {row['error']}", *[""] * 9)
                continue
            t, n = row["test"], len(row["seeds"])
            vs = (
                [_bench.gain(t[m][0], sb[m][0]) for m in ("recall@20", "ndcg@10")]
                if sb is not None and label != strong
                else ["", ""]
            )
            doc.row(label, *(_fmt(t[m], n=n) for m in METRICS),
                    _fmt(row["valid"]["recall@20"], n=n), f"{row['best_epoch'][0]:.0f}",
                    f"{row['epochs_run'][0]:.0f}", str(n), *vs)  # fmt: skip
    doc.section("Relative gain of MBA (Recall@20 / NDCG@20): the paper vs ours")
    doc.table(["source", "comparison", "Recall@20", "NDCG@20"])
    for k, g in res["paper_gains"].items():
        doc.row("paper Tables 2–3", k, f"{g['recall@20']:+.1%}", f"{g['ndcg@20']:+.1%}")
    off = OFFICIAL["test_selected_on_test"]
    og = {m: off["MBA-MF"][m] / off["MF-BPR (buy)"][m] - 1 for m in ("recall@20", "ndcg@20")}
    doc.row("official code on Retailrocket (ANCHORS.md, selected on test)",
            "MBA-MF vs MF-BPR (buy)", f"{og['recall@20']:+.1%}", f"{og['ndcg@20']:+.1%}")  # fmt: skip
    for ds, s in res["summary"].items():
        for k, g in s["gains"].items():
            doc.row(f"ours, {ds}", k, f"{g['recall@20']:+.1%}", f"{g['ndcg@20']:+.1%}")
    doc.section("Published numbers next to ours (Recall@10, Recall@20, NDCG@10, NDCG@20)")
    doc.table(["dataset", "model", "paper", "ours"])
    for paper_ds, ds in (("Beibei", "beibei"), ("Taobao", "tmall")):
        rows = res["summary"].get(ds, {}).get("rows", {})
        for label, vals in PAPER[paper_ds].items():
            ours = rows.get(label, {})
            ours_s = (
                " / ".join(f"{ours['test'][m][0]:.4f}" for m in METRICS) if "test" in ours else "—"
            )
            doc.row(f"{paper_ds} (ours: {ds})", label, " / ".join(f"{v:.4f}" for v in vals), ours_s)
    doc.text(
        "Tmall here is the Taobao UserBehavior period the paper's Taobao also comes from, but "
        "with *cart* as the auxiliary behavior (its page views are missing) and another "
        "preprocessing; it is not the paper's dataset."
    )
    if res.get("speed"):
        speed_section(doc, res["speed"])
    if res.get("side_by_side"):
        side_by_side_section(doc, res["side_by_side"])
    doc.section("Notes").text("\n".join(f"- {n}" for n in res["notes"]))
    return doc


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def speed_section(doc: _bench.Doc, sp: dict[str, Any]) -> None:
    o, ours = sp["official"], sp["ours"]
    doc.section("Speed on Retailrocket (MBA-MF; CPU)")
    doc.table(["phase", "official s / epoch", "ours s / epoch (wall)", "ours CPU s / epoch",
               "speed-up (wall / CPU)", "official s / eval", "ours s / eval"])  # fmt: skip
    names = {
        "pretrain_view": ("pre-train P(R_g) (view MF)", "pretrain"),
        "pretrain_buy": ("pre-train P(R_f) (buy MF)", "pretrain"),
        "main": ("MBA main phase", "main"),
    }
    for k, (label, ek) in names.items():
        su = sp["speedup_per_epoch"][k]
        doc.row(label, f"{o['seconds_per_epoch'][k]:.2f}",
                _num(ours["seconds_per_epoch"][k], ".3f"),
                _num(ours["cpu_seconds_per_epoch"][k], ".3f"),
                f"{_num(su['wall'], '.1f')}× / {_num(su['cpu'], '.1f')}×",
                f"{o['seconds_per_eval'][k]:.2f}", _num(ours["seconds_per_eval"][ek], ".3f"))  # fmt: skip
    doc.text(
        f"Peak memory (whole run, one process): ours {ours['peak_memory_mib']:.0f} MiB; "
        f"official {o['peak_memory_mib']['pretrain']} MiB (pre-training) / "
        f"{o['peak_memory_mib']['main']} MiB (main phase). A pre-training epoch of ours trains "
        "both behavior models (the official code trains them in two runs); it is split "
        "between them by the model's own timers. The official figures are wall seconds on an "
        "idle 2-core machine; ours were measured with other jobs running — load average "
        f"(start, end) of each run: {[tuple(x) for x in ours['load_avg']]} — so the CPU seconds "
        "are the fairer "
        f"comparison. Epochs run: pre-training {ours['pretrain_epochs']}, main "
        f"{ours['main_epochs']} per seed."
    )


def side_by_side_section(doc: _bench.Doc, sb: dict[str, Any]) -> None:
    doc.section(
        f"Side by side with the official code ({sb['rounds']} alternating rounds of "
        f"{sb['epochs_per_phase']} epochs per phase, {sb['threads']} thread(s), same split)",
        level=3,
    )
    doc.table(["phase", "official s / epoch (wall / CPU)", "ours s / epoch (wall / CPU)",
               "speed-up (wall / CPU)"])  # fmt: skip
    for ph in ("pretrain_view", "pretrain_buy", "main"):
        o, su = sb["official"][ph], sb["speedup"][ph]
        w, c = sb["ours"]["seconds_per_epoch"][ph], sb["ours"]["cpu_seconds_per_epoch"][ph]
        doc.row(ph, f"{o['wall']:.3f} / {o['cpu']:.3f}", f"{w:.3f} / {c:.3f}",
                f"{su['wall']:.1f}× / {su['cpu']:.1f}×")  # fmt: skip
    doc.text(
        f"Official evaluation (main phase): {sb['official']['main']['eval']:.3f} s; ours: "
        f"{sb['ours']['seconds_per_eval']['main']:.3f} s. Peak memory: official "
        f"{sb['peak_memory_mib']['official']:.0f} MiB, ours {sb['peak_memory_mib']['ours']:.0f} MiB."
    )


def results_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The document's ``results``: one row per dataset and model (a failed model: no metrics)."""
    out = []
    for ds, s in summary.items():
        ok = {k: r for k, r in s["rows"].items() if "error" not in r}
        best = _bench.strongest({k: r["valid"]["recall@20"][0] for k, r in ok.items()}, STRONG)
        out += [
            _bench.result_row(ds, label, "full", SELECTION, SPLIT, len(row.get("seeds") or [0]),
                              row.get("test", {}), strongest=best)
            for label, row in s["rows"].items()
        ]  # fmt: skip
    return out


def flat_runs(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """The document's ``runs``: every run with its dataset, model and validation curve."""
    out = []
    for ds, by_label in results.items():
        for label, runs in by_label.items():
            for r in runs:
                run = {"dataset": ds, "model": r.get("model", label), **r}
                if r.get("epochs"):
                    run["curve"] = [[e["epoch"], e.get("valid_recall@20")] for e in r["epochs"]]
                    run["curve_metric"] = "valid recall@20"
                out.append(run)
    return out


def grouped_runs(runs: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """:func:`flat_runs` back by dataset and label (an earlier document's runs, ``--reuse``)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in runs:
        out.setdefault(r["dataset"], {}).setdefault(r.get("label", r["model"]), []).append(r)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="1 seed, few epochs, no result files")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per run (default 2)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per model (default 3)")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (default 1)")
    ap.add_argument(
        "--report-only",
        action="store_true",
        help="write the report from the runs kept in OUT_DIR/mba-runs/; run nothing",
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="reuse the per-run results kept in OUT_DIR/mba-runs/ (each run is kept when it ends)",
    )
    ap.add_argument("--first-seed", type=int, default=2020)
    ap.add_argument("--datasets", default="retailrocket,tmall,beibei")
    ap.add_argument("--data-dir", default=str(ROOT / "data"), help="where imported data goes")
    ap.add_argument("--out-dir", default=str(HERE / "results"))
    ap.add_argument("--prepare-only", action="store_true", help="import the data and stop")
    ap.add_argument(
        "--official",
        metavar="DIR",
        help="a checkout of LiuXiangYuan/MBA: also time it side by side with ours on Retailrocket",
    )
    ap.add_argument("--official-rounds", type=int, default=3, help="alternating rounds (3)")
    ap.add_argument(
        "--reuse",
        metavar="JSON",
        action="append",
        default=[],
        help="an earlier report (repeatable): its runs of the datasets not run now (and its "
        "side-by-side timing) join this report; read when the report is written",
    )
    ap.add_argument("--official-epochs", type=int, default=3, help="epochs per phase (3)")
    ap.add_argument(
        "--labels",
        help="run only these rows (comma-separated labels, e.g. 'MB-Hybrid,CRGCN'); the other "
        "rows come from the runs kept in OUT_DIR/mba-runs/ where there are any",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        spec = json.loads(Path(args.worker).read_text())
        fn = run_official_worker if spec.get("kind") == "official" else run_worker
        Path(args.result).write_text(json.dumps(fn(spec)))
        return 0

    names = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in names if d not in DATASETS]
    if unknown:
        raise SystemExit(f"unknown dataset(s) {unknown}; choose from {', '.join(DATASETS)}")
    folders = prepare_data(Path(args.data_dir), names)
    if args.prepare_only:
        return 0
    seeds = [args.first_seed] if args.quick else [args.first_seed + k for k in range(args.seeds)]
    only = {x.strip() for x in (args.labels or "").split(",") if x.strip()}
    known = {label for ds in names for label, _, _ in RUNS[ds]} | {"MBA-MF"}
    if only - known:
        raise SystemExit(f"unknown --labels {sorted(only - known)}; choose from {sorted(known)}")
    quick = ["train.epochs=3", "params.pretrain_epochs=1"]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    started = _bench.now_utc()
    keep = Path(args.out_dir) / "mba-runs"
    jobs: list[tuple[str, str, int, dict[str, Any]]] = []
    for ds in names:
        results[ds] = {}
        runs = list(RUNS[ds])
        if ds == "beibei":  # MBA needs page views: record the error it raises
            runs.append(("MBA-MF", "mba-retailrocket.toml", []))
        for label, config, extra in runs:
            results[ds][label] = []
            for seed in seeds:
                overrides = list(extra)
                if args.quick:
                    overrides += [
                        o for o in quick if "params." not in o or config.startswith("mba")
                    ]
                spec = {
                    "label": label,
                    "config": str(CONFIGS / config),
                    "data": folders[ds],
                    "seed": seed,
                    "threads": args.threads,
                    "overrides": overrides,
                }
                jobs.append((ds, label, seed, spec))
    with tempfile.TemporaryDirectory(prefix="mba-bench-") as tmp:
        work = Path(tmp)

        def one(job: tuple[str, str, int, dict[str, Any]]) -> dict[str, Any]:
            ds, label, seed, spec = job
            slug = "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-")
            cached = keep / f"{ds}-{slug}-{seed}.json"
            reuse = args.resume or args.report_only or (only and label not in only)
            if reuse and not args.quick and cached.exists():
                print(f"[{ds}] {label} seed {seed}: reusing {cached}", flush=True)
                result: dict[str, Any] = json.loads(cached.read_text())
                return result
            if args.report_only or (only and label not in only):
                return {"missing": True}
            t0 = time.time()
            r = spawn(spec, work)
            if not args.quick:  # kept per run, so that --resume can continue a stopped run
                keep.mkdir(parents=True, exist_ok=True)
                part = cached.with_suffix(".json.tmp")
                part.write_text(json.dumps(r, indent=1))
                part.replace(cached)
            if "error" in r:
                print(f"[{ds}] {label}: cannot run: {r['error']}", flush=True)
            else:
                print(
                    f"[{ds}] {label} seed {seed}: test R@20 {r['test']['recall@20']:.4f} "
                    f"N@20 {r['test']['ndcg@20']:.4f} (valid R@20 {r['valid']['recall@20']:.4f}; "
                    f"best epoch {r['best_epoch']}/{r['epochs_run']}; {time.time() - t0:.0f} s)",
                    flush=True,
                )
            return r

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for (ds, label, _seed, _spec), r in zip(jobs, pool.map(one, jobs), strict=True):
                if r.get("missing"):  # --report-only: not run yet
                    continue
                if not any("error" in x for x in results[ds][label]):  # one error is enough
                    results[ds][label].append(r)
        results = {  # drop what has not run yet (--report-only)
            ds: {label: runs for label, runs in by.items() if runs}
            for ds, by in results.items()
            if any(by.values())
        }
        side = None
        if args.official and "retailrocket" in folders:
            if args.quick:
                args.official_rounds, args.official_epochs = 1, 2
            side = side_by_side(args, folders["retailrocket"], work)
    for path in [] if args.quick else args.reuse:
        try:
            previous = _bench.read_document(Path(path))
        except (OSError, ValueError, KeyError) as e:  # keep this run's results whatever happens
            print(f"--reuse {path}: not merged ({e})", flush=True)
            continue
        for ds, runs in grouped_runs(previous["runs"]).items():
            results.setdefault(ds, runs)
        side = side or previous.get("side_by_side")
    summary = summarise(results)
    speed_runs = [r for r in results.get("retailrocket", {}).get("MBA-MF", []) if "error" not in r]
    res = {
        "name": NAME,
        "date": started,
        "machine": _bench.machine(),
        "command": _bench.command(__file__),
        "settings": {
            "threads": args.threads,
            "jobs": args.jobs,
            "datasets": names,
            "first_seed": args.first_seed,
            "seeds_per_model": 1 if args.quick else args.seeds,
            "quick": args.quick,
            "official": args.official,
            "official_rounds": args.official_rounds,
            "official_epochs": args.official_epochs,
        },
        "threads": args.threads,
        "seeds": {
            ds: sorted({r["seed"] for runs in by.values() for r in runs if "seed" in r})
            for ds, by in results.items()
        },
        "quick": args.quick,
        "protocol": [
            "Retailrocket (HKUDS; view/cart/buy) and Tmall (CML; fav/cart/buy, page views missing): "
            "every purchase is a training row before the split (the published leave-one-out test "
            "purchases included); Beibei: MBA's own files (purchases only), its 4:1 test file kept.",
            "Split (MBA §4.3): distinct purchase (user, item) pairs 4:1 at random (seeded by the run "
            "seed); 10 % of the training purchases form a validation set (polyrec's addition: the "
            "paper has none and early-stops on the test set). Auxiliary rows are all kept.",
            "Full ranking over every item; the user's training purchases masked (and the validation "
            "purchases at test time); Recall@k = hits / held-out purchases of the user; NDCG@k with "
            "IDCG over min(n, k) positives; averaged over users with a held-out purchase.",
            "Model selection: best validation Recall@20, early stopping after 50 evaluations without "
            "a gain (MBA: main-phase evaluations; its pre-training stops on its own criteria, see "
            "polyrec.models.mba). The paper's patience is 20 on its test set; on polyrec's small "
            "validation set 20 stopped the MF baselines on a plateau (MF on all behaviors, "
            "Retailrocket: epoch 23, test Recall@20 0.18, against 0.48 at epoch 409 with 50). All "
            "models: Adam lr 1e-3, batch 2048, d = 32 (MBA §4.5).",
            "Test metrics of the selected epoch, mean ± sd over the seeds (the split changes with "
            "the seed).",
            "⚑ Auxiliary rows of held-out purchases stay in training (MBA's protocol and code): "
            "a user's view or cart of the very item bought later is a training row.",
            "Strong baselines (issue 22): POP over every behavior, the user's own history "
            "(counts × smoothed purchase rate), ItemKNN and EASE, closed form at their shipped "
            "defaults (not tuned for this protocol; ItemKNN at the multi-behavior values "
            "MB-Hybrid's S starts from, `knn-defaults.md`), beside MF-BPR on every behavior "
            "merged; each "
            "table names the strongest on validation Recall@20.",
        ],
        "summary": summary,
        "paper_gains": paper_gains(),
        "speed": speed_summary(speed_runs) if speed_runs else None,
        "side_by_side": side,
        "runs": flat_runs(results),
        "notes": [
            "MF-BPR (all behaviors) merges every behavior into one positive set. Under MBA's "
            "protocol the auxiliary rows of held-out purchases stay in training (the official code "
            "does the same), so on Retailrocket, where most purchases were viewed first, "
            "'recommend what the user viewed' is a strong signal that the merged baseline uses "
            "fully; MBA passes it only through P(R_g) and the R_g terms, averaged with the "
            "purchase model (its KL terms pull t_θ towards both).",
            "Accuracy runs are the same runs as the speed runs (Retailrocket MBA-MF).",
            "Issue 23's rows (LightGCN on every behavior, MB-CGCN, CRGCN, MuLe, MB-Hybrid) run "
            "their shipped configurations (chosen for leave-one-out on the embedded "
            "Retailrocket data; nothing tuned for this protocol), with every behavior of the "
            "folder (view, cart, buy; fav, cart, buy on Tmall) and selection on validation "
            "Recall@20. This protocol keeps the auxiliary rows of held-out purchases in "
            "training — the hide = 'target' situation — so MB-Hybrid keeps the purchases' own "
            "history in its training targets and adds its per-behavior conversion-rate "
            "features (conversion = 'auto'). A row missing from a table was not run (compute "
            "budget of the session); see the kept runs. Patience: on Retailrocket these rows "
            "stop after the protocol's 50 evaluations without a gain, like every trained row; "
            "on Tmall (30-45 s per epoch) after their shipped configs' 10 (compute budget): "
            "there they may stop on a plateau before their best epoch.",
            "`MB-Hybrid (graph term)` is MB-Hybrid with its collaborative term (LightGCN over "
            "every behavior merged) and item bias on, at LightGCN's lr 1e-3 with the term "
            "weights at 10× (the ablation's `graph` settings). On validation it is below the "
            "shipped MB-Hybrid on all three Retailrocket seeds and above it on all three Tmall "
            "seeds (where MF on every behavior beats ItemKNN): a choice made per dataset on "
            "validation takes it on Tmall only. `MB-Hybrid (history detail)` adds every "
            "optional own-history feature (`user_conversion`, `history_counts`, `temporal`, "
            "`interactions`) at lr 3e-2 (the shipped model reaches the same validation Recall@20 "
            "at 3e-2 as at 5e-3, 0.6841 on seed 2020, in 28 epochs instead of 144); run on "
            "Retailrocket only: on Tmall (seed 2020, exploratory, stopped at epoch 5) its "
            "validation NDCG@10 was 0.131 against the shipped model's 0.142.",
        ],
    }
    # a model that cannot run on a dataset (MBA on Beibei) is a result (its table row), not a
    # failure; a run that crashes stops the script
    return _bench.emit(res, report(res), Path(args.out_dir), args.quick, "mba",
                       results=results_rows(summary), failures=[])  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
