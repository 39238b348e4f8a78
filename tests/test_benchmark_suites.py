"""The quick reproduction suite covers every registered model, each with a shipped config."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from polyrec.config import load_config
from polyrec.models import REGISTRY

ROOT = Path(__file__).resolve().parents[1]


def test_quick_suite_runs_every_registered_model() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(
            "reproduce", ROOT / "benchmarks" / "reproduce.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert set(module.QUICK) == set(REGISTRY)
    for name, (config, _) in module.QUICK.items():
        cfg = load_config(ROOT / "configs" / config)
        assert cfg.model == name, config


def _load_benchmark(name: str) -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


def test_mbhybrid_ablations_are_measured_against_the_config_they_changed() -> None:
    """`no-cosim` against the shipped MB-Hybrid; the earlier ablations (run from `no-cosim`)
    against `no-cosim`, and their overrides switch behavior similarity off."""
    mb = _load_benchmark("multibehavior")
    assert all(mb.NO_COSIM in mb.VARIANTS[m][1] for m in mb.ABLATION), (
        "every ablation starts from the config without behavior similarity"
    )

    def cell(valid: float, test: float) -> dict[str, object]:
        part = {"full": {"ndcg@10": {"mean": valid, "sd": 0.0, "n": 1}}}
        test_part = {"full": {"ndcg@10": {"mean": test, "sd": 0.0, "n": 1}}}
        return {"valid": part, "test": test_part, "epoch_seconds_median": 1.0, "seeds": [1]}

    per_model = {
        "mbhybrid": cell(0.02, 0.04),
        "mbhybrid-no-cosim": cell(0.025, 0.03),
        "mbhybrid-no-history": cell(0.02, 0.027),
        "mbhybrid-popularity": cell(0.022, 0.05),
    }
    doc = mb._bench.Doc("t")
    mb.ablation(doc, {"results": {"rr": {"full": per_model}}})
    rows = {r[2]: r for r in doc.tables[-1]["rows"]}
    assert rows["no-cosim"][4] == "+25.0 %" and rows["no-cosim"][6] == "-25.0 %"
    assert rows["no-history"][4] == "-20.0 %" and rows["no-history"][6] == "-10.0 %"
    # an option added to the shipped config is measured against the shipped config
    assert rows["popularity"][4] == "+10.0 %" and rows["popularity"][6] == "+25.0 %"


def test_mbhybrid_default_similarity_is_the_measured_choice() -> None:
    """MB-Hybrid's default S is the candidate `benchmarks/knn_defaults.py` chose on validation
    (the committed result), and that candidate lost least against the per-dataset tuned values."""
    import json

    from polyrec.models.itemknn import MULTI_BEHAVIOR_KNN

    kd = _load_benchmark("knn_defaults")
    doc = json.loads((ROOT / "benchmarks" / "results" / "knn-defaults.json").read_text())
    data = doc.get("data", doc)
    best = data["selection"]["best"]
    assert kd.CANDIDATES[best] == MULTI_BEHAVIOR_KNN
    worst = data["selection"]["worst"]
    assert worst[best] == max(worst.values()) and worst[best] > worst["recbole"]
    assert len(data["selection"]["shares"][best]) >= 4  # judged on every multi-behavior dataset


def test_untuned_rows_get_the_shared_similarity_values() -> None:
    """On data without tuned values ItemKNN starts from MB-Hybrid's default S; `untuned` and
    `cosine` never take a dataset's tuned values, the shipped `mbhybrid` row does."""
    import argparse

    from polyrec.models.itemknn import MULTI_BEHAVIOR_KNN

    mb = _load_benchmark("multibehavior")
    args = argparse.Namespace(max_epochs=None, patience=3, min_epochs=0, eval_reps=1)

    def overrides(dataset: str, model: str) -> list[str]:
        return list(mb.spec_for(dataset, model, 2024, "full", "x", args)["overrides"])

    shared = [f"params.{k}={v}" for k, v in MULTI_BEHAVIOR_KNN.items()]
    assert mb.baseline_overrides("no-such-dataset", "itemknn") == shared
    assert mb.baseline_overrides("no-such-dataset", "history") == []
    tuned = mb.hybrid_knn("retailrocket")
    assert tuned, "the committed tuned-baselines.json holds Retailrocket's ItemKNN values"
    assert all(o in overrides("retailrocket", "mbhybrid") for o in tuned)
    assert not any(o in overrides("retailrocket", mb.UNTUNED) for o in tuned)
    assert not any(o.startswith("params.knn_") for o in overrides("retailrocket", mb.UNTUNED))
    assert "params.knn_alpha=0.5" in overrides("retailrocket", mb.COSINE)
