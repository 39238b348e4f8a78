"""Export: every registered model round-trips, faiss and torch search agree, exports are atomic,
and a corrupt or mismatched export is refused with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import polyrec
from model_contract import ModelSpec, build, fit
from polyrec.cli import app
from polyrec.config import RunConfig, to_toml
from polyrec.errors import CheckpointError, ConfigError, DataError
from polyrec.exporting import (
    IndexConfig,
    Query,
    Recommender,
    build_bundle,
    load_export,
    write_export,
)
from polyrec.exporting import bundle as bundle_mod
from polyrec.exporting import index as index_mod
from polyrec.models import REGISTRY, InterestModel, Scorer, TrainData

runner = CliRunner()
FAST = ["train.batch_size=256", "eval.ks=[10]", "data.n_negatives=20", "params.dim=16"]
# small settings, applied to whichever models have these fields (new models are covered too)
SMALL = {
    "dim": 8,
    "n_layers": 1,
    "batches_per_epoch": 2,
    "max_len": 8,
    "n_interests": 2,
    "min_history": 1,
}
HAS_FAISS = index_mod.import_faiss() is not None


def small_params(name: str) -> dict:
    fields = REGISTRY[name].Config.model_fields
    return {k: v for k, v in SMALL.items() if k in fields}


def seen_matrix(bundle) -> np.ndarray:
    m = np.zeros((bundle.n_users, bundle.n_items), dtype=bool)
    indptr, items = bundle.seen.indptr.numpy(), bundle.seen.indices.numpy()
    m[np.repeat(np.arange(bundle.n_users), np.diff(indptr)), items] = True
    return m


def assert_topk(items, scores, truth, excluded, k, tol=1e-5):
    """``items/scores [U, k]`` (dense codes, -1 pads) are a correct top-k of ``truth [U, n]``
    without the ``excluded [U, n]`` items (ties in any order)."""
    for u in range(len(truth)):
        it = items[u][items[u] >= 0]
        sc = scores[u][: len(it)]
        assert len(it) == min(k, int((~excluded[u]).sum())), u
        assert not excluded[u, it].any(), u
        assert len(set(it.tolist())) == len(it), u
        np.testing.assert_allclose(sc, truth[u, it], rtol=1e-4, atol=tol)
        assert (np.diff(sc) <= tol).all(), u
        rest = truth[u].copy()
        rest[excluded[u]] = -np.inf
        rest[it] = -np.inf
        assert rest.max(initial=-np.inf) <= sc.min() + tol, u


def true_scores(model, bundle) -> np.ndarray:
    """What the model itself says, ``[n_users, n_items]``, by the export's definitions."""
    with torch.no_grad():
        model.prepare_scoring()
        if isinstance(model, Scorer):
            return model.scores(torch.arange(bundle.n_users)).numpy()
        assert isinstance(model, InterestModel)
        users = np.arange(bundle.n_users)
        hist, lengths = bundle.histories.padded(users, bundle.max_len)
        has = lengths > 0
        vecs = model.interests(hist[has], lengths[has])
        per = torch.einsum("bkd,nd->bkn", vecs, model.item_embeddings()).amax(dim=1)
        out = np.tile(bundle.popularity.numpy(), (bundle.n_users, 1))  # fallback rows
        out[has.numpy()] = per.numpy()
        return out


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_round_trip_of_every_registered_model(name, small_log, tmp_path):
    params = small_params(name)
    data = TrainData(small_log)
    spec = ModelSpec(name, params, epochs=1, batch_size=256)
    model = build(spec, data)
    fit(model, spec, data)
    config = to_toml(RunConfig(model=name, params=params))
    if isinstance(model, Scorer) and model.user_item_embeddings() is None:
        # a scorer without embeddings exports only when its scores are user-independent
        with torch.no_grad():
            model.prepare_scoring()
            s = model.scores(torch.arange(small_log.n_users))
        if not bool((s == s[0]).all()):
            with pytest.raises(ConfigError, match="not exportable for serving"):
                build_bundle(model, small_log, config)
            return
    if isinstance(model, InterestModel) and model.uses_times:
        with pytest.raises(ConfigError, match="timestamps of a user's history"):
            build_bundle(model, small_log, config)
        return
    manifest = write_export(build_bundle(model, small_log, config), tmp_path / "exp")
    assert manifest["model"]["name"] == name
    loaded = load_export(tmp_path / "exp")
    assert loaded.kind == ("interest" if isinstance(model, InterestModel) else "embedding")
    if loaded.kind == "interest":
        # the network rebuilt from the registry gives the original's interest vectors
        hist, lengths = loaded.histories.padded(np.arange(8), loaded.max_len)
        keep = lengths > 0
        with torch.no_grad():
            a = model.interests(hist[keep], lengths[keep])
            b = loaded.model.interests(hist[keep], lengths[keep])
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    truth = true_scores(model, loaded)
    excluded = seen_matrix(loaded)
    users = np.arange(loaded.n_users)
    k = 10
    searches = ["torch", "faiss"] if HAS_FAISS else ["torch"]
    results = {}
    for search in searches:
        rec = Recommender(loaded, max_k=k, search=search)
        items, scores, _ = rec.topk_users(users, k)
        assert_topk(items, scores, truth, excluded, k)
        plain, _, _ = rec.topk_users(users, k, exclude_seen=False)
        assert_topk(
            plain,
            rec.topk_users(users, k, exclude_seen=False)[1],
            truth,
            np.zeros_like(excluded),
            k,
        )
        results[search] = scores
    if HAS_FAISS:  # faiss and torch agree (scores position by position; tied items may swap)
        np.testing.assert_allclose(results["faiss"], results["torch"], rtol=1e-4, atol=1e-5)


def test_faiss_and_torch_agree_with_filters(small_log, tmp_path):
    if not HAS_FAISS:
        pytest.skip("faiss is not installed")
    params = small_params("comirec-sa")
    data = TrainData(small_log)
    spec = ModelSpec("comirec-sa", params, epochs=1, batch_size=256)
    model = build(spec, data)
    fit(model, spec, data)
    bundle = build_bundle(model, small_log, to_toml(RunConfig(model="comirec-sa", params=params)))
    write_export(bundle, tmp_path / "exp")
    loaded = load_export(tmp_path / "exp")
    queries = [
        Query(user=u, k=7, deny=[0, 1, 2, 3], exclude_seen=bool(u % 2)) for u in range(0, 120, 7)
    ] + [Query(history=[5, 9, 11], k=12), Query(user=3, k=5, allow=list(range(40)))]
    a = Recommender(loaded, search="faiss").recommend(queries)
    b = Recommender(loaded, search="torch").recommend(queries)
    for q, x, y in zip(queries, a, b, strict=True):
        assert len(x.items) == len(y.items) == q.k
        np.testing.assert_allclose(x.scores, y.scores, rtol=1e-4, atol=1e-5)
        assert not set(q.deny or ()) & (set(x.items) | set(y.items))
    assert set(a[-1].items) <= set(range(40)) and set(b[-1].items) <= set(range(40))


@pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed")
@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_index_reports_recall(small_log, tmp_path, kind):
    data = TrainData(small_log)
    spec = ModelSpec("mf", {"dim": 8}, epochs=1, batch_size=256)
    model = build(spec, data)
    fit(model, spec, data)
    bundle = build_bundle(model, small_log, to_toml(RunConfig(model="mf", params={"dim": 8})))
    manifest = write_export(bundle, tmp_path / kind, index=IndexConfig(type=kind, recall_k=10))
    recall = manifest["index"]["recall"]
    assert recall["k"] == 10 and recall["queries"] == small_log.n_users
    assert 0.5 < recall["value"] <= 1.0
    rec = Recommender(load_export(tmp_path / kind))
    assert rec.backend == "faiss"
    assert len(rec.recommend([Query(user=0, k=5)])[0].items) == 5


def test_without_faiss_flat_uses_torch_and_approximate_is_refused(small_log, tmp_path, monkeypatch):
    data = TrainData(small_log)
    model = build(ModelSpec("mf", {"dim": 8}), data)
    bundle = build_bundle(model, small_log, to_toml(RunConfig(model="mf", params={"dim": 8})))
    write_export(bundle, tmp_path / "with")
    monkeypatch.setattr(index_mod, "import_faiss", lambda: None)
    with pytest.raises(ConfigError, match=r"polyrec\[faiss\]"):
        write_export(bundle, tmp_path / "hnsw", index=IndexConfig(type="hnsw"))
    manifest = write_export(bundle, tmp_path / "flat")
    assert manifest["index"] == {"type": "flat", "backend": "torch", "exact": True}
    # an export made with faiss still serves without it (exact torch search)
    rec = Recommender(load_export(tmp_path / "with"))
    assert rec.backend == "torch"
    assert len(rec.recommend([Query(user=1, k=4)])[0].items) == 4


def test_not_exportable_scorer_is_a_clear_error(small_log):
    class Quadratic(Scorer):
        """Scores that are no inner product and differ per user."""

        name = "quadratic"
        paper = "test"
        Config = REGISTRY["pop"].Config

        def build(self, schema, data):
            pass

        def batches(self, data, batch_size, generator):
            return iter(())

        def loss(self, batch):
            raise RuntimeError

        def scores(self, users):
            return (users.float().unsqueeze(1) - torch.arange(self.n_items).float()) ** 2

    model = Quadratic(REGISTRY["pop"].Config()).setup(TrainData(small_log))
    with pytest.raises(ConfigError, match="not exportable for serving"):
        build_bundle(model, small_log, 'model = "pop"\n')


# ---------------------------------------------------------------------------- run → export
@pytest.fixture(scope="module")
def lgn_run(tmp_path_factory, dataset_dir):
    out = tmp_path_factory.mktemp("runs") / "lgn"
    polyrec.train("lightgcn", dataset_dir, overrides=[*FAST, "train.epochs=2"], out=out)
    return out


@pytest.fixture(scope="module")
def sa_run(tmp_path_factory, dataset_dir):
    out = tmp_path_factory.mktemp("runs") / "sa"
    params = [f"params.{k}={v}" for k, v in small_params("comirec-sa").items()]
    polyrec.train("comirec-sa", dataset_dir, overrides=[*FAST, *params, "train.epochs=1"], out=out)
    return out


def test_cli_export_writes_a_checked_manifest(lgn_run, tmp_path):
    out = tmp_path / "exp"
    r = runner.invoke(app, ["export", str(lgn_run), "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "exported lightgcn" in r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["version"] == 2 and manifest["kind"] == "embedding"
    assert manifest["dataset"]["n_items"] == 150
    assert manifest["protocol"]["split"]["name"] == "leave-one-out"
    listed = set(manifest["files"])
    assert {
        "weights.safetensors",
        "tables.safetensors",
        "config.toml",
        "metrics.json",
        "users.parquet",
        "items.parquet",
    } <= listed
    assert listed == {p.name for p in out.iterdir()} - {"manifest.json"}
    assert "history" not in json.loads((out / "metrics.json").read_text())
    # an existing export needs --force; anything else is never overwritten
    r = runner.invoke(app, ["export", str(lgn_run), "--out", str(out)])
    assert r.exit_code == 2 and "--force" in r.output
    r = runner.invoke(app, ["export", str(lgn_run), "--out", str(out), "--force"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(lgn_run), "--out", str(lgn_run)])
    assert r.exit_code == 2 and "not a polyrec export" in r.output
    r = runner.invoke(app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "e2")])
    assert r.exit_code == 2 and "does not exist" in r.output
    r = runner.invoke(app, ["export", str(lgn_run), "--out", str(tmp_path / "x" / "y")])
    assert r.exit_code == 0 and (tmp_path / "x" / "y").is_dir(), r.output  # parents created
    r = runner.invoke(
        app, ["export", str(lgn_run), "--out", str(tmp_path / "e3"), "--index", "lsh"]
    )
    assert r.exit_code == 2 and "index" in r.output


def test_interrupted_export_leaves_nothing(lgn_run, tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(bundle_mod, "build_index", boom)
    with pytest.raises(KeyboardInterrupt):
        polyrec.export(lgn_run, tmp_path / "exp")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("run", ["lgn_run", "sa_run"])
def test_recommend_reads_an_export_with_identical_topk(run, request, tmp_path):
    run_dir = request.getfixturevalue(run)
    polyrec.export(run_dir, tmp_path / "exp")
    users = [0, 3, 5, 17, 42, 99]
    from_run = polyrec.recommend(run_dir, users, k=10)
    exact = polyrec.recommend(tmp_path / "exp", users, k=10, search="torch")
    assert from_run.height == 60
    assert exact["user"].to_list() == from_run["user"].to_list()
    assert exact["item"].to_list() == from_run["item"].to_list()
    np.testing.assert_allclose(exact["score"].to_numpy(), from_run["score"].to_numpy(), rtol=1e-6)
    auto = polyrec.recommend(tmp_path / "exp", users, k=10, out=tmp_path / "r.csv")
    assert auto["item"].to_list() == from_run["item"].to_list()
    assert (tmp_path / "r.csv").exists()
    with pytest.raises(DataError, match="nobody"):
        polyrec.recommend(tmp_path / "exp", [0, "nobody"], k=5)


def corrupt_cases():
    def flip_byte(d: Path) -> None:
        p = d / "tables.safetensors"
        data = bytearray(p.read_bytes())
        data[-1] ^= 0xFF
        p.write_bytes(bytes(data))

    def drop_file(d: Path) -> None:
        (d / "weights.safetensors").unlink()

    def old_version(d: Path) -> None:
        m = json.loads((d / "manifest.json").read_text())
        m["version"] = 99
        (d / "manifest.json").write_text(json.dumps(m))

    def bad_json(d: Path) -> None:
        (d / "manifest.json").write_text("{")

    def no_manifest(d: Path) -> None:
        (d / "manifest.json").unlink()

    def mismatched_weights(d: Path) -> None:
        # a consistent manifest over weights of another shape: the rebuild must refuse it
        from safetensors.torch import load_file, save_file

        w = load_file(str(d / "weights.safetensors"))
        w = {k: torch.zeros(3, 3) for k in w}
        save_file(w, str(d / "weights.safetensors"))
        m = json.loads((d / "manifest.json").read_text())
        m["files"]["weights.safetensors"]["sha256"] = bundle_mod._sha256(d / "weights.safetensors")
        (d / "manifest.json").write_text(json.dumps(m))

    return {
        "checksum": (flip_byte, "checksum"),
        "missing": (drop_file, "missing weights.safetensors"),
        "version": (old_version, "manifest version 99"),
        "json": (bad_json, "not valid JSON"),
        "manifest": (no_manifest, "not a polyrec export"),
        "weights": (mismatched_weights, "does not match the model"),
    }


@pytest.mark.parametrize("case", sorted(corrupt_cases()))
def test_corrupt_export_is_refused_with_one_line(case, sa_run, tmp_path):
    polyrec.export(sa_run, tmp_path / "good")
    damage, message = corrupt_cases()[case]
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "good", bad)
    damage(bad)
    with pytest.raises(CheckpointError, match=message):
        load_export(bad)
    users = tmp_path / "u.txt"
    users.write_text("0\n")
    r = runner.invoke(
        app, ["recommend", str(bad), "--users", str(users), "--out", str(tmp_path / "r.parquet")]
    )
    out = r.output.strip()
    assert r.exit_code == 2 and out.startswith("error:") and "Traceback" not in out, out
    assert len(out.splitlines()) <= 2
    assert not (tmp_path / "r.parquet").exists()


@pytest.mark.skipif(not HAS_FAISS, reason="faiss is not installed")
def test_an_index_of_another_dimension_is_refused_at_load(small_log, tmp_path):
    import hashlib

    faiss = index_mod.import_faiss()
    data = TrainData(small_log)
    spec = ModelSpec("mf", {"dim": 8}, epochs=1, batch_size=256)
    model = build(spec, data)
    fit(model, spec, data)
    bundle = build_bundle(model, small_log, to_toml(RunConfig(model="mf", params={"dim": 8})))
    out = tmp_path / "hnsw"
    write_export(bundle, out, index=IndexConfig(type="hnsw"))
    wrong = faiss.IndexFlatIP(16)  # the same items, 16 dimensions instead of 8
    wrong.add(np.zeros((small_log.n_items, 16), dtype=np.float32))
    faiss.write_index(wrong, str(out / index_mod.INDEX_FILE))
    manifest = json.loads((out / "manifest.json").read_text())
    digest = hashlib.sha256((out / index_mod.INDEX_FILE).read_bytes()).hexdigest()
    manifest["files"][index_mod.INDEX_FILE]["sha256"] = digest
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="not the 'hnsw' index the manifest describes"):
        load_export(out)
    manifest["index"] = {k: v for k, v in manifest["index"].items() if k != "ef_search"}
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="dimension 16, the item embeddings 8"):
        load_export(out)
