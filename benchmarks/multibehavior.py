"""Multi-behavior reproduction (CML, WSDM'22 Table 2) and CML speed, on Retailrocket and more.

Runs CML, MBGCN, SGL, LightGCN and MF-BPR on the embedded Retailrocket data (view, cart, buy;
target buy) under the CML paper's protocol — leave-one-out on buy with the published held-out
purchase as test, each user's latest remaining purchase as validation, HR@10 and NDCG@10 over
1 positive + 99 sampled never-bought negatives — and under full ranking (every item, the user's
training purchases masked). Each model uses its shipped config (``configs/<model>-retailrocket
.toml``, the paper settings). Model selection is on validation only: ``--select sampled`` picks
the best epoch by validation 1+99 NDCG@10 (the paper's protocol), ``--select full`` by validation
full-ranking NDCG@10, ``--select both`` runs each model twice so that each table's numbers come
from runs selected under that table's protocol. Seeds 2024, 2025, … (``--seeds``); mean ± sd.

``--datasets tmall,ijcai`` adds CML (only, by default) on the Tmall and IJCAI folders of
../shared/data: their largest behavior (page view / click) is missing there, so the numbers are
not comparable with the paper's (the table says so). Not a test.

    python benchmarks/multibehavior.py                    # Retailrocket, 5 models, 3 seeds, both
    python benchmarks/multibehavior.py --quick            # smoke: 1 seed, 2 epochs, no files
    python benchmarks/multibehavior.py --models cml --seeds 1 --select sampled
    python benchmarks/multibehavior.py --datasets retailrocket,tmall,ijcai --jobs 2 --threads 1

Results: ``benchmarks/results/multibehavior.{json,md}`` (``--name`` to change), with the
paper's Table 2 numbers and the official CML code's speed on this machine class
(../shared/ANCHORS.md) beside ours.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import _bench
import tune_baselines

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MODELS = ["cml", "cml-d32", "sgl", "lightgcn", "mf", "pop-all", "mbgcn", "mbcgcn", "crgcn",
          "mbhybrid"]  # fmt: skip
NO_COSIM = "params.behavior_similarity=false"
# benchmark entries that are a shipped config plus overrides
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "pop-all": ("pop", ['params.behaviors="all"']),  # popularity over every behavior
    # the strong baselines on every behavior merged (issue 22)
    "mf-all": ("mf", ['params.behaviors="all"', "train.min_epochs=150"]),
    "lightgcn-all": ("lightgcn", ['params.behaviors="all"']),
    # MF-BPR at lr 1e-3 (0.08 s / epoch) shows no validation signal for its first 40-90 epochs
    # from Xavier init (5 steps per epoch); without this a seed can stop before it learns
    "mf": ("mf", ["train.min_epochs=150"]),
    # MB-CGCN's official N(0, 0.01) init at lr 1e-3 learns as slowly as MF-BPR's
    "mbcgcn": ("mbcgcn", ["train.min_epochs=150"]),
    # the paper's range is 16 <= d <= 32 (Fig. 3b); the shipped config uses 16 (half the time)
    "cml-d32": ("cml", ["params.dim=32"]),
    # MB-Hybrid's ablation (issue 23): the shipped config without the auxiliary behaviors' own
    # co-occurrence neighbourhoods (the config shipped before them), and each part of that
    # config removed, or added back (run before behavior_similarity existed: the same
    # computation as with it off)
    "mbhybrid-no-cosim": ("mbhybrid", [NO_COSIM]),
    **{f"mbhybrid-{name}": ("mbhybrid", [NO_COSIM, *overrides]) for name, overrides in (
        ("no-history", ["params.history=false"]),  # neighbourhood terms only
        ("no-neighbours", ["params.neighbours=false"]),  # own-history terms only
        ("no-conversion", ["params.conversion=false"]),  # history without conversion rates
        ("graph", ["params.graph=true", "params.item_bias=true"]),  # + LightGCN-all term, bias
        ("bpr", ['params.loss="bpr"']),  # one negative instead of the candidate softmax
    )},
}  # fmt: skip
# MB-Hybrid as `polyrec train -m mbhybrid` runs it on a new log: its defaults (S from
# MULTI_BEHAVIOR_KNN), not ItemKNN's values tuned on this dataset
UNTUNED = "mbhybrid-untuned"
VARIANTS[UNTUNED] = ("mbhybrid", [])
# ... and at RecBole's ItemKNN values for S (the defaults before MULTI_BEHAVIOR_KNN)
COSINE = "mbhybrid-cosine"
VARIANTS[COSINE] = ("mbhybrid", ["params.knn_k=100", "params.knn_shrink=0.0",
                                 "params.knn_alpha=0.5", "params.knn_other_weight=0.0"])  # fmt: skip
# ... and the shipped config plus one option (its Δ against the shipped model)
POPULARITY = "mbhybrid-popularity"
VARIANTS[POPULARITY] = ("mbhybrid", ["params.popularity=true"])
ADDED = (POPULARITY,)
DEFAULT_S = (UNTUNED, COSINE)  # variants whose S is not ItemKNN's tuned one
ABLATION = [m for m in VARIANTS if m.startswith("mbhybrid-") and m not in (*DEFAULT_S, *ADDED)]
PREVIOUS = "mbhybrid-no-cosim"  # the reference of the ablations below it
# dataset → (how to load it, importer format or "" for a polyrec spec, note)
DATASETS: dict[str, tuple[str, str, str]] = {
    "retailrocket": ("embedded:retailrocket", "", "view, cart, buy (as in the paper)"),
    "tmall": ("tmall-cml-partial", "hkuds", "fav, cart, buy — page view missing"),
    "ijcai": ("ijcai15-cml-partial", "hkuds", "fav, cart, buy — click missing"),
    "retailrocket-target": ("embedded:retailrocket", "",
                            "view, cart, buy; hide = target: a held-out purchase's views and "
                            "carts stay in training"),
    "jdata": ("jdata-mule-partial", "lightgcn-txt",
              "collect, cart, buy — page view missing; hide = target (MB-CGCN/CRGCN/MuLe protocol)"),
}  # fmt: skip
# dataset → its protocol overrides: JData is judged as its papers judge it (auxiliary rows of
# held-out purchases stay in training); its 92k users are validated on a 10k sample
DATA_OVERRIDES: dict[str, list[str]] = {
    "retailrocket-target": ['data.hide="target"'],
    "jdata": ['data.hide="target"', "data.valid_users=10000"],
}
# (model, dataset) → overrides: EASE's dense matrices for JData's 24,624 items need ~7.3 GB
MODEL_DATA_OVERRIDES: dict[tuple[str, str], list[str]] = {
    ("ease", "jdata"): ["params.max_memory_gb=10"],
    # the cascades' chains name the behaviors: JData has collect, cart, buy (CRGCN's JD order
    # without view; MB-CGCN's layers carried over from view to collect)
    ("mbcgcn", "jdata"): [
        'params.behavior_order=["collect", "cart", "buy"]',
        "params.behavior_layers={ collect = 2, cart = 4, buy = 3 }",
    ],
    ("crgcn", "jdata"): [
        'params.behavior_order=["collect", "cart", "buy"]',
        "params.loss_weights={ collect = 1.0, cart = 1.0, buy = 1.0 }",
    ],
    # the HKUDS Tmall and IJCAI copies have fav, cart, buy (CRGCN's Tmall chain view → collect →
    # cart → buy without view; MB-CGCN's layers carried over from view to fav, as on JData);
    # MuLe's published Tmall settings (README: lr 5e-4, weight decay 1e-5, 5 TDA layers) on both
    **{(model, ds): overrides for ds in ("tmall", "ijcai") for model, overrides in (
        ("mbcgcn", ['params.behavior_order=["fav", "cart", "buy"]',
                    "params.behavior_layers={ fav = 2, cart = 4, buy = 3 }"]),
        ("crgcn", ['params.behavior_order=["fav", "cart", "buy"]',
                   "params.loss_weights={ fav = 1.0, cart = 1.0, buy = 1.0 }"]),
        ("mule", ["train.lr=0.0005", "train.weight_decay=1e-05", "params.tda_layers=5"]),
    )},
}  # fmt: skip
# CML paper Table 2 (HR@10, NDCG@10; 1 + 99 sampled negatives, leave-one-out), read from
# ../shared/papers/001_c9da5e5d35ed0033.txt (BPR = MF-BPR)
PAPER = {
    "retailrocket": {"cml": (0.356, 0.222), "mbgcn": (0.308, 0.181), "sgl": (0.263, 0.165),
                     "lightgcn": (0.261, 0.152), "mf": (0.235, 0.146), "ngcf": (0.260, 0.140),
                     "ehcf": (0.321, 0.207), "nmtr": (0.314, 0.201),
                     "pinsage": (0.247, 0.139), "hgt": (0.305, 0.176), "heco": (0.297, 0.178),
                     "matn": (0.301, 0.181), "khgt": (0.324, 0.202)},
    "tmall": {"cml": (0.543, 0.327), "mbgcn": (0.381, 0.213), "sgl": (0.350, 0.210),
              "lightgcn": (0.342, 0.205), "mf": (0.243, 0.143), "ngcf": (0.322, 0.184),
              "ehcf": (0.433, 0.260), "nmtr": (0.362, 0.215),
              "pinsage": (0.274, 0.151), "hgt": (0.357, 0.210), "heco": (0.358, 0.199),
              "matn": (0.406, 0.225), "khgt": (0.391, 0.232)},
    "ijcai": {"cml": (0.477, 0.283), "mbgcn": (0.304, 0.160), "sgl": (0.249, 0.123),
              "lightgcn": (0.257, 0.122), "mf": (0.163, 0.085), "ngcf": (0.256, 0.124),
              "ehcf": (0.409, 0.237), "nmtr": (0.294, 0.161),
              "pinsage": (0.176, 0.091), "hgt": (0.250, 0.119), "heco": (0.262, 0.121),
              "matn": (0.369, 0.209), "khgt": (0.317, 0.182)},
}  # fmt: skip
# official CML code on this machine class (../shared/ANCHORS.md)
OFFICIAL_CML = {"epoch_seconds": 10.6, "epoch_seconds_as_shipped": 14.3, "eval_seconds": 4.0,
                "peak_mib": 1.4 * 1024}  # fmt: skip
SELECT = {
    "sampled": ('train.select_protocol="sampled"',),
    "full": ('train.select_protocol="full"',),
}


def ensure_dataset(name: str, shared: Path, root: Path) -> str:
    spec, fmt, _ = DATASETS[name]
    if not fmt:
        return spec
    out = root / spec
    if (out / "dataset.json").exists():
        return str(out)
    src = shared / spec
    if not src.exists():
        raise SystemExit(f"dataset {name}: {src} not found (give --shared)")
    from polyrec.api import import_data

    root.mkdir(parents=True, exist_ok=True)
    print(f"[multibehavior] importing {src} → {out}", flush=True)
    import_data(src, out, fmt=fmt)
    return str(out)


def other_seeds(spec: str, dataset: str) -> int:
    """``--other-seeds``: a count for every other dataset, or ``tmall=3,ijcai=1`` per dataset
    (a dataset not named gets 1)."""
    if "=" not in spec:
        return int(spec)
    counts = dict(part.split("=", 1) for part in spec.split(",") if part)
    return int(counts.get(dataset, 1))


def other_select(spec: str | None, dataset: str, default: list[str]) -> list[str]:
    """``--other-select``: one protocol for every other dataset, or ``tmall=sampled,jdata=full``
    per dataset (a dataset not named gets ``default``, the ``--select`` ones)."""
    if spec is None:
        return default
    if "=" not in spec:
        return [spec]
    chosen = dict(part.split("=", 1) for part in spec.split(",") if part)
    return [chosen[dataset]] if dataset in chosen else default


# MB-Hybrid's item similarity S is ItemKNN's: the values tuned for ItemKNN on the dataset's
# validation split carry over (ItemKNN key → MB-Hybrid key)
KNN_KEYS = {"params.k": "params.knn_k", "params.shrink": "params.knn_shrink",
            "params.alpha": "params.knn_alpha", "params.other_weight": "params.knn_other_weight"}  # fmt: skip


def hybrid_knn(dataset: str) -> list[str]:
    """ItemKNN's tuned values on ``dataset`` as MB-Hybrid's S overrides ([] when not tuned)."""
    out = []
    for o in tune_baselines.overrides(dataset, "itemknn"):
        key, _, value = o.partition("=")
        if key in KNN_KEYS:
            out.append(f"{KNN_KEYS[key]}={value}")
    return out


def baseline_overrides(dataset: str, model: str) -> list[str]:
    """The values tuned on ``dataset``'s validation, if any; else, for ItemKNN, the values that
    held across the tuned datasets (``MULTI_BEHAVIOR_KNN``, MB-Hybrid's defaults), so that on a
    new log ItemKNN and MB-Hybrid start from the same S."""
    tuned = tune_baselines.overrides(dataset, model)
    if tuned or model != "itemknn":
        return tuned
    from polyrec.models.itemknn import MULTI_BEHAVIOR_KNN

    return [f"params.{k}={v}" for k, v in MULTI_BEHAVIOR_KNN.items()]


def seeds_from(n: int) -> list[int]:
    return [2024 + i for i in range(n)]


def config_for(model: str, dataset: str) -> Path:
    """``configs/<model>-<dataset>.toml`` when shipped, else the Retailrocket one (the data path
    is overridden either way)."""
    own = ROOT / "configs" / f"{model}-{dataset.removesuffix('-target')}.toml"
    return own if own.exists() else ROOT / "configs" / f"{model}-retailrocket.toml"


def spec_for(
    d: str, m: str, seed: int, select: str, data: str, args: argparse.Namespace
) -> dict[str, Any]:
    return {
        "name": f"{d}-{m}-{select}-{seed}",
        "dataset": d,
        "model": m,
        "seed": seed,
        "select": select,
        "config": str(config_for(VARIANTS.get(m, (m, []))[0], d)),
        "overrides": [
            f"data.path={json.dumps(data)}",
            f"seed={seed}",
            'train.device="cpu"',
            'train.metric="ndcg@10"',
            *SELECT[select],
            'eval.protocols=["full", "sampled"]',
            *([f"train.epochs={args.max_epochs}"] if args.max_epochs else []),
            f"train.patience={args.patience}",
            f"train.min_epochs={args.min_epochs}",
            *VARIANTS.get(m, (m, []))[1],
            *DATA_OVERRIDES.get(d, []),
            *MODEL_DATA_OVERRIDES.get((m, d), []),
            *baseline_overrides(d, m),  # the values tuned on validation, if any
            *(
                hybrid_knn(d)
                if VARIANTS.get(m, (m, []))[0] == "mbhybrid" and m not in DEFAULT_S
                else []
            ),
        ],
        "eval_reps": args.eval_reps,
        "eval_protocols": ["sampled"],
    }


def _cell(runs: list[dict[str, Any]], part: str, proto: str, key: str) -> dict[str, Any]:
    vals = [float(r[part][proto][key]) for r in runs if key in r[part].get(proto, {})]
    return {"mean": _bench.mean(vals), "sd": _bench.sd(vals), "n": len(vals)}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    agg: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
    for part in ("valid", "test"):
        agg[part] = {
            proto: {k: _cell(runs, part, proto, k) for k in ("hr@10", "ndcg@10")}
            for proto in ("sampled", "full")
        }
    epochs = [x for r in runs for x in r["epoch_seconds"]]
    evals = [x for r in runs for x in r["test_eval_seconds"]]
    agg |= {
        "epoch_seconds_median": _bench.median(epochs),
        "eval_seconds_median": _bench.median(evals),
        "peak_rss_mib_max": max(r["peak_rss_mib"] for r in runs),
        "best_epoch": [r["best_epoch"] for r in runs],
        "stopped": sorted({r["stopped"] for r in runs}),
        "fit_wall_seconds_mean": _bench.mean([r["fit_wall_seconds"] for r in runs]),
        "other_cpu_load": _bench.mean(
            [r["contention"]["other_cpu_load"] for r in runs if r.get("contention")]
        ),
    }
    return agg


def _num(x: float | None, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _ms(c: dict[str, Any]) -> str:
    return _bench.fmt_mean_sd_from(c["mean"], c["sd"])


def report(res: dict[str, Any]) -> _bench.Doc:
    s = res["settings"]
    doc = _bench.Doc("Multi-behavior models: CML paper protocol and full ranking")
    doc.text(
        "Protocol: leave-one-out on the target behavior (buy): test = the published held-out "
        "purchase per user, validation = each user's latest remaining purchase (held-out pairs "
        "removed from every behavior's training rows). *Sampled*: HR@10 / NDCG@10 of the "
        "held-out item among 99 stored never-bought negatives (fixed per split seed; the "
        "official code redraws them each pass). *Full*: every item ranked, training purchases "
        "masked. Each table's numbers come from runs whose best epoch was chosen on the "
        "validation NDCG@10 of that table's protocol (never on test); mean ± sd over seeds "
        f"{', '.join(map(str, s['seeds']))}. The paper selected nothing on validation (its code "
        "reports the best test epoch). Early stopping: patience "
        f"{s.get('patience', '?')} epochs, never before epoch {s.get('min_epochs', '?')} "
        "(MF-BPR: 150); per-model overrides: "
        + "; ".join(f"{k}: {' '.join(v[1])}" for k, v in VARIANTS.items())
        + ".",
        "Tuning budget: the closed-form baselines `history`, `itemknn` and `ease` run the values "
        "`benchmarks/tune_baselines.py` chose on each dataset's full-ranking validation NDCG@10 "
        "(Optuna TPE: 16, 16 and 8 trials; `tuned-baselines.md`); EASE does not fit Tmall's or "
        "IJCAI's 28k active items in its 4 GB limit (10 GB needed), so ItemKNN is their "
        "closed-form row. Every trained model — the seed papers', MF-all, LightGCN-all, MB-CGCN, "
        "CRGCN, MuLe — runs its paper's settings (0 tuning trials here); on JData the trained "
        "models' epochs were capped for the CPU budget (LightGCN 20, CRGCN and MB-CGCN 10, MuLe "
        "15 at ~460 s per epoch; the `best epochs` column shows where a run was still "
        "improving at its cap), and so were the full-ranking rows of Tmall and IJCAI (CML, "
        "MB-CGCN, CRGCN, MuLe and MB-Hybrid on IJCAI: 10 epochs, patience 3; MB-Hybrid on "
        "Tmall: 20; LightGCN and LightGCN-all: 40; MF-all: 100, patience 10). MB-Hybrid (polyrec's model) "
        "runs `configs/mbhybrid-retailrocket.toml` (its switches chosen on Retailrocket's "
        "validation) with the item similarity of the tuned ItemKNN.",
    )
    for ds, per_sel in res["results"].items():
        doc.section(f"{ds} ({DATASETS[ds][2]})")
        if ds == "jdata":
            doc.text(
                "JData as MuLe publishes it (`../shared/data/jdata-mule-partial`: its test "
                "pairs, leave-one-out style, 1.17 per test user) with **page views missing**; "
                "hide = target: the cart/collect rows of held-out purchases stay in training "
                "(14.4 % of the test pairs have one). Validation: the latest remaining purchase "
                "of a seeded sample of 10,000 users. Published HR@10 / NDCG@10 on JData *with* "
                "views (MuLe's README; not comparable): LightGCN 0.2252 / 0.1436, MB-CGCN "
                "0.4349 / 0.2758, CRGCN 0.5001 / 0.2914, MuLe 0.5889 / 0.4061. Seeds per cell: "
                "see `best epochs`."
            )
        elif ds.endswith("-target"):
            doc.text(
                "The same data and test purchases as the first table, under hide = target. "
                "Caution: the published (HKUDS) test purchases have no view or cart row at all, "
                "so hide = target changes only validation here — validation then rewards the "
                "user's own history (history: validation NDCG@10 0.79, test 0.014), which the "
                "test never does. Not a protocol to select models with on this data; use JData "
                "or MBA's random split for hide = target."
            )
        elif ds == "retailrocket":
            doc.text(
                "Validation covers 885 of the 2,174 test users (41 %): 59 % of the test users "
                "have one training purchase, which cannot be held out, so validation holds the "
                "heavier buyers (8.3 training purchase rows on average, against 4.0 over all test "
                "users). "
                "Models strong on light users (e.g. through views alone) gain more on test than "
                "validation shows, and selection cannot see it."
            )
        else:
            doc.text(
                f"Not comparable with the paper's {ds} row: {DATASETS[ds][2]}. The paper's "
                "numbers are shown for reference only. Seeds per cell: see `best epochs` "
                "(one entry per seed)."
            )
        for proto, per_model in per_sel.items():
            doc.section(
                f"test, {'1 + 99 sampled' if proto == 'sampled' else 'full ranking'} "
                f"(selected on validation {proto} NDCG@10)",
                3,
            )
            best = _bench.strongest(
                {m: a["valid"][proto]["ndcg@10"]["mean"] for m, a in per_model.items()}
            )
            base = per_model[best]["test"][proto]["ndcg@10"]["mean"] if best else None
            if best:
                doc.text(
                    f"Strongest baseline (by validation NDCG@10, among "
                    f"{', '.join(_bench.STRONG_BASELINES)}): **{best}**; the last column is each "
                    "model's test NDCG@10 against it."
                )
            doc.table(["model", "HR@10", "NDCG@10", "paper HR@10", "paper NDCG@10",
                       "valid NDCG@10", "s / epoch", "s / eval (test, 1+99)", "peak MiB",
                       "best epochs", "vs strongest baseline"])  # fmt: skip
            for model, a in per_model.items():
                t, v = a["test"][proto], a["valid"][proto]
                paper = (  # the paper's row of the same model (not of its all-behavior variant)
                    PAPER.get(ds, {}).get(VARIANTS.get(model, (model, []))[0])
                    if proto == "sampled" and not model.endswith("-all")
                    else None
                )
                doc.row(
                    model, _ms(t["hr@10"]), _ms(t["ndcg@10"]), paper[0] if paper else None,
                    paper[1] if paper else None, _ms(v["ndcg@10"]),
                    _num(a["epoch_seconds_median"]), _num(a["eval_seconds_median"]),
                    _num(a["peak_rss_mib_max"], 0), ", ".join(map(str, a["best_epoch"])),
                    _bench.gain(t["ndcg@10"]["mean"], base) if best and model != best else "",
                )  # fmt: skip
    ablation(doc, res)
    if res.get("not_run"):
        doc.section("Cells not run (or with fewer seeds than the table's)")
        doc.text(
            "Runs kept for these cells are fewer than asked (compute budget of the session; "
            "EASE does not fit Tmall's and IJCAI's 28k items in 4 GB): "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in res["not_run"].items())
            + ". A row with fewer seeds lists one best epoch per seed it has."
        )
    cml = res.get("cml_speed")
    if cml:
        o = OFFICIAL_CML
        doc.section("CML speed against the official implementation")
        doc.table(["measure", "polyrec", "official (ANCHORS.md, same machine class)", "ratio"])
        doc.row("s / training epoch", f"{cml['epoch_seconds']:.2f}",
                f"{o['epoch_seconds']} ({o['epoch_seconds_as_shipped']} as shipped)",
                f"{o['epoch_seconds'] / cml['epoch_seconds']:.1f}×")  # fmt: skip
        doc.row("s / evaluation (1+99, all test users)", f"{cml['eval_seconds']:.2f}",
                o["eval_seconds"], f"{o['eval_seconds'] / cml['eval_seconds']:.1f}×")  # fmt: skip
        doc.row("peak memory MiB", f"{cml['peak_mib']:.0f}", f"{o['peak_mib']:.0f}",
                f"{o['peak_mib'] / cml['peak_mib']:.1f}×")  # fmt: skip
        doc.text(
            (
                f"Other processes used on average {cml['other_cpu_load']:.2f} CPUs during our runs "
                if cml["other_cpu_load"] is not None
                else "The machine was shared while our runs trained "
            )
            + "(our times are upper bounds). The official figures were measured "
            "separately (they are not re-run here). The epoch times here are the training "
            "runs' own, under whatever load the machine had; `step-speed-cml.md` "
            "(`python benchmarks/step_speed.py --suite cml`) measures the epoch and the "
            "evaluation in isolation with CPU seconds as well as wall seconds."
        )
    return doc


def ablation(doc: _bench.Doc, res: dict[str, Any]) -> None:
    """MB-Hybrid against its variants with one part removed or added, where both were run."""
    cells = [
        (ds, proto, per_model)
        for ds, per_sel in res["results"].items()
        for proto, per_model in per_sel.items()
        if "mbhybrid" in per_model and any(m in per_model for m in [*DEFAULT_S, *ADDED, *ABLATION])
    ]
    if not cells:
        return
    doc.section("MB-Hybrid ablation")
    doc.text(
        "`untuned` is MB-Hybrid at its defaults for S (`MULTI_BEHAVIOR_KNN`, the values that "
        "held across the datasets, `knn-defaults.md`) instead of ItemKNN's values tuned on this "
        "dataset's validation: what `polyrec train -m mbhybrid` gives on a new log; its Δ is "
        "against the shipped model; `cosine` is the same at RecBole's ItemKNN values (k = 100, "
        "plain cosine of the purchases: the defaults before). `popularity` is the shipped "
        "model plus the item-popularity feature (`params.popularity`, off by default); its Δ "
        "is against the shipped model. "
        "`no-cosim` is the shipped MB-Hybrid without the auxiliary behaviors' own co-occurrence "
        "neighbourhoods β'_b R_b S_b (`behavior_similarity`; the config shipped before them, "
        "its runs made before the option existed — the same computation); its Δ is against "
        "the shipped model. Each variant below it changes one thing in `no-cosim` (same data, "
        "seeds, selection and budget), and its Δ is against `no-cosim`: `no-history` drops "
        "the own-history terms (γ_b R_b and the conversion features), `no-neighbours` the "
        "neighbourhood terms β_b R_b S, `no-conversion` the per-behavior conversion-rate "
        "features R_b · c_b (on by default only where training purchases keep their own "
        "history, hide = target: JData; under hide = all it is off by construction, so "
        "Retailrocket has no such row), `graph` adds the LightGCN-all term and the item bias "
        "(off in the shipped config), `bpr` trains with one negative instead of the softmax "
        "over 256 shared candidates. Δ = relative change of NDCG@10 (validation: what the "
        "switches were chosen on; test: reported, not used). JData's `no-conversion` rows are "
        "the runs made before that feature existed (the same computation)."
    )
    doc.table(["data", "protocol", "variant", "valid NDCG@10", "Δ valid", "test NDCG@10",
               "Δ test", "s / epoch", "seeds"])  # fmt: skip
    for ds, proto, per_model in cells:
        full = per_model["mbhybrid"]
        fv, ft = full["valid"][proto]["ndcg@10"], full["test"][proto]["ndcg@10"]
        doc.row(ds, proto, "mbhybrid (shipped)", _ms(fv), "", _ms(ft), "",
                _num(full["epoch_seconds_median"]), len(full["seeds"]))  # fmt: skip
        ref = per_model.get(PREVIOUS, full)
        for m in [m for m in [*DEFAULT_S, *ADDED, *ABLATION] if m in per_model]:
            a = per_model[m]
            base = full if m in (PREVIOUS, *DEFAULT_S, *ADDED) else ref
            bv, bt = base["valid"][proto]["ndcg@10"], base["test"][proto]["ndcg@10"]
            v, t = a["valid"][proto]["ndcg@10"], a["test"][proto]["ndcg@10"]
            doc.row(ds, proto, m.removeprefix("mbhybrid-"), _ms(v),
                    _bench.gain(v["mean"], bv["mean"]), _ms(t), _bench.gain(t["mean"], bt["mean"]),
                    _num(a["epoch_seconds_median"]), len(a["seeds"]))  # fmt: skip


def results_rows(res: dict[str, Any], split: str) -> list[dict[str, Any]]:
    """The HTML report's rows: results[dataset][selection][model] (also EGCM's layout), each
    naming its table's strongest baseline (on that table's validation NDCG@10)."""
    rows = []
    for ds, per_sel in res["results"].items():
        for sel, per_model in per_sel.items():
            best = _bench.strongest(
                {m: a["valid"][sel]["ndcg@10"]["mean"] for m, a in per_model.items()}
            )
            rows += [
                _bench.result_row(ds, model, sel, f"validation {sel} ndcg@10", split,
                                  len(e.get("seeds") or [1]), e["test"][sel], strongest=best)
                for model, e in per_model.items()
            ]  # fmt: skip
    return rows


SPLIT = "leave-one-out on buy (published test purchase)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--datasets", default="retailrocket")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--other-models", default="cml", help="models run on tmall/ijcai")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--other-seeds",
        default=None,
        help="seeds on tmall/ijcai (default --seeds): a count, or per dataset 'tmall=3,ijcai=1'",
    )
    ap.add_argument(
        "--other-select",
        default=None,
        help="selection protocol on tmall/ijcai/jdata (default: those of --select): sampled, "
        "full, or per dataset 'tmall=sampled,jdata=full'",
    )
    ap.add_argument("--select", choices=["sampled", "full", "both"], default="both")
    ap.add_argument("--max-epochs", type=int, default=None, help="cap the configs' epochs")
    ap.add_argument(
        "--patience",
        type=int,
        default=25,
        help="epochs without validation gain (the same for every model: the sampled validation "
        "metric is noisy and the baselines learn slowly at their papers' learning rates)",
    )
    ap.add_argument(
        "--min-epochs",
        type=int,
        default=40,
        help="no early stop before this epoch (MF-BPR at lr 1e-3 shows no validation signal "
        "for ~30 epochs from its Xavier init)",
    )
    ap.add_argument("--name", default="multibehavior")
    _bench.add_run_options(
        ap, "multibehavior", threads=2, jobs=1, eval_reps=3, quick_help="1 seed, 2 epochs, no files"
    )
    args = ap.parse_args(argv)
    if args.worker:
        return _bench.worker_main(["--worker", args.worker]) or 0
    if args.quick:
        args.seeds, args.max_epochs, args.eval_reps = 1, 2, 1
    datasets = [d for d in args.datasets.split(",") if d]
    models = [m for m in args.models.split(",") if m]
    for d in datasets:
        if d not in DATASETS:
            ap.error(f"unknown dataset {d!r}; choose from {', '.join(DATASETS)}")
    selects = ["sampled", "full"] if args.select == "both" else [args.select]
    seeds = seeds_from(args.seeds)
    specs = []
    for d in datasets:
        data = ensure_dataset(d, Path(args.shared), Path(args.data_root))
        if d == "retailrocket":
            ms, sels, sds = models, selects, seeds
        else:
            ms = [m for m in args.other_models.split(",") if m]
            sels = other_select(args.other_select, d, selects)
            bad = [x for x in sels if x not in SELECT]
            if bad:
                ap.error(f"--other-select: unknown protocol {bad[0]!r}; choose sampled or full")
            sds = (
                seeds if args.other_seeds is None else seeds_from(other_seeds(args.other_seeds, d))
            )
        specs += [spec_for(d, m, seed, sel, data, args) for sel in sels for seed in sds for m in ms]
    t0 = time.perf_counter()
    runs, failures = _bench.run_specs(specs, __file__, args, _bench.keep_dir(args), "multibehavior")
    # --report-only: cells never run are listed compactly, not as failures
    not_run: dict[str, list[str]] = {}
    by_name = {x["name"]: x for x in specs}
    for f in [f for f in failures if "not run yet" in f.splitlines()[0]]:
        spec = by_name[f.split(":", 1)[0]]  # a failure starts with its spec's name
        key = f"{spec['dataset']} ({spec['select']})"
        not_run.setdefault(key, [])
        if spec["model"] not in not_run[key]:
            not_run[key].append(spec["model"])
    failures = [f for f in failures if "not run yet" not in f.splitlines()[0]]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for d in datasets:
        for sel in selects:
            for m in models + [x for x in args.other_models.split(",") if x not in models]:
                cell = [r for r in runs if (r["dataset"], r["model"], r["select"]) == (d, m, sel)]
                if cell:
                    results.setdefault(d, {}).setdefault(sel, {})[m] = aggregate(cell)
    cml_runs = [r for r in runs if r["model"] == "cml" and r["dataset"] == "retailrocket"]
    cml_speed = None
    if cml_runs:
        a = aggregate(cml_runs)
        cml_speed = {
            "epoch_seconds": a["epoch_seconds_median"],
            "eval_seconds": a["eval_seconds_median"],
            "peak_mib": a["peak_rss_mib_max"],
            "other_cpu_load": a["other_cpu_load"],
        }
    res = {
        **_bench.run_header(args.name, __file__, argv, t0),
        "settings": {
            "seeds": seeds,
            "select": selects,
            "other_seeds": args.other_seeds,
            "other_select": args.other_select,
            "threads": args.threads,
            "jobs": args.jobs,
            "max_epochs": args.max_epochs,
            "patience": args.patience,
            "min_epochs": args.min_epochs,
        },
        "paper": PAPER,
        "official_cml": OFFICIAL_CML,
        "results": results,
        "cml_speed": cml_speed,
        "runs": runs,
        "failures": failures,
        "not_run": not_run,
    }
    return _bench.emit(
        res, report(res), Path(args.out_dir), args.quick, "multibehavior", results_rows(res, SPLIT)
    )


if __name__ == "__main__":
    raise SystemExit(main())
