"""Export directories: everything a trained model needs to answer requests, without the dataset.

An export holds::

    manifest.json        format, version, model, dataset, protocol, index, sha256 of every file
    config.toml          the run's resolved config
    metrics.json         the run's validation/test metrics (when the run finished)
    weights.safetensors  the model's state_dict
    tables.safetensors   item embeddings, user embeddings (or users' histories), popularity,
                         every user's seen items
    users.parquet        external user ids (row = dense code)
    items.parquet        external item ids
    items.faiss          the faiss item index (when faiss was installed at export time)

**Two kinds.** A :class:`~polyrec.models.base.Scorer` whose scores are an inner product
(``user_item_embeddings()`` is not None) is exported as its *final* user and item embeddings —
graph models after propagation, so serving needs no graph (kind ``"embedding"``). A scorer
without embeddings whose scores are the same for every user (POP) is exported as a one-column
table (user vector ``[1]``, item vector ``[score]``); any other scorer is refused with a
:class:`ConfigError` ("not exportable for serving"). An
:class:`~polyrec.models.base.InterestModel` (kind ``"interest"``) is exported as its weights, its
item table and each user's latest ``max_len`` items; serving rebuilds the network from the
registry and the config and embeds a user's history with ``interests(histories, lengths)``.

**Definitions** (the same as ``polyrec recommend`` on a run directory). *Seen* items: every item
the user has in the target behavior anywhere in the dataset (train, validation and test).
*History*: the user's chronological sequence in the behaviors the model trained on (target or
all), every split, its latest ``max_len`` items. *Popularity* (the fallback for unknown users):
the number of distinct users with the item in the target behavior.

Exports are written to a temporary sibling folder, loaded back and checked, then renamed: a crash
never leaves a half-written export. :func:`load_export` refuses a corrupt or mismatched export
(missing file, checksum mismatch, other manifest version) with one :class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import tomllib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor

from polyrec.data.log import IdMap, InteractionLog, UserItemSpace
from polyrec.data.sampling import pair_keys
from polyrec.data.sequences import SequenceSet
from polyrec.data.views import DataSchema
from polyrec.errors import CheckpointError, ConfigError, DataError, PolyrecError
from polyrec.eval.protocols import PairIndex
from polyrec.exporting.index import (
    INDEX_FILE,
    IndexConfig,
    build_index,
    measure_recall,
    read_index,
    write_index,
)
from polyrec.fsutil import make_parent, replace_dir
from polyrec.models.base import InterestModel, Model, Scorer

FORMAT = "polyrec-export"
VERSION = 2  # 2: the manifest carries the data schema the network was built for
MANIFEST = "manifest.json"
CONFIG = "config.toml"
METRICS = "metrics.json"
WEIGHTS = "weights.safetensors"
TABLES = "tables.safetensors"
USERS = "users.parquet"
ITEMS = "items.parquet"
REQUIRED = (CONFIG, WEIGHTS, TABLES, USERS, ITEMS)
DEFAULT_MAX_LEN = 50


@dataclass(eq=False)
class Bundle(UserItemSpace):
    """An exported model in memory (from :func:`build_bundle` or :func:`load_export`).

    ``kind`` is ``"embedding"`` (``user_emb`` set) or ``"interest"`` (``histories`` and
    ``model`` set). ``seen`` holds every user's seen items; ``index`` is the faiss index or None.
    """

    kind: str
    manifest: dict[str, Any]
    user_map: IdMap
    item_map: IdMap
    item_emb: Tensor
    popularity: Tensor
    seen: PairIndex
    user_emb: Tensor | None = None
    histories: SequenceSet | None = None
    model: InterestModel | None = None
    index: Any | None = None
    config_toml: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, Tensor] = field(default_factory=dict, repr=False)
    item_category: np.ndarray | None = None

    @property
    def max_len(self) -> int:
        return int(self.manifest["model"].get("max_len") or DEFAULT_MAX_LEN)

    @property
    def model_name(self) -> str:
        return str(self.manifest["model"]["name"])


def is_export_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` looks like an export directory (has a manifest.json)."""
    return (Path(path) / MANIFEST).is_file()


# ---------------------------------------------------------------------------------- building
def _constant_scores(model: Scorer, name: str, batch_size: int = 1024) -> Tensor:
    """The per-item score vector of a scorer whose scores do not depend on the user.

    Raises :class:`ConfigError` (not exportable) as soon as two users' scores differ.
    """
    first: Tensor | None = None
    for start in range(0, model.n_users, batch_size):
        users = torch.arange(start, min(start + batch_size, model.n_users), device=model.device)
        s = model.scores(users).float()
        if first is None:
            first = s[0].clone()
        if not bool((s == first).all()):
            raise ConfigError(
                f"model {name!r} is not exportable for serving: its scores are not an inner "
                "product of user and item embeddings (Scorer.user_item_embeddings() returns None) "
                "and differ between users; recommend from its run directory with 'polyrec "
                "recommend RUN_DIR' instead"
            )
    if first is None:  # no users at all: nothing to score
        first = torch.zeros(model.n_items)
    return first


def _latest(seqs: SequenceSet, max_len: int) -> SequenceSet:
    """Each user's latest ``max_len`` items (vectorised)."""
    lengths = seqs.lengths
    pos = np.arange(len(seqs.items)) - np.repeat(seqs.indptr[:-1], lengths)
    keep = pos >= np.repeat(lengths - max_len, lengths)
    indptr = np.zeros_like(seqs.indptr)
    np.cumsum(np.minimum(lengths, max_len), out=indptr[1:])
    return SequenceSet(indptr, seqs.items[keep], seqs.n_items)


def _item_categories(log: InteractionLog) -> np.ndarray | None:
    if log.category is None:
        return None
    cat = np.full(log.n_items, -1, dtype=np.int64)
    cat[log.item] = log.category
    return cat


def build_bundle(
    model: Model, log: InteractionLog, config_toml: str, metrics: dict[str, Any] | None = None
) -> Bundle:
    """The in-memory export of a trained ``model`` over ``log`` (the run's whole dataset)."""
    cfg = tomllib.loads(config_toml)
    name = str(cfg.get("model", type(model).name))
    model.eval()
    t = log.behavior == log.target_code
    keys = pair_keys(log.user[t], log.item[t], log.n_items)
    seen = PairIndex(keys, log.n_users, log.n_items)
    popularity = torch.from_numpy(
        np.bincount(keys % log.n_items, minlength=log.n_items).astype(np.float32)
    )
    info: dict[str, Any] = {
        "name": name,
        "class": type(model).__name__,
        "paper": getattr(model, "paper", ""),
        "registry_kind": type(model).kind,
    }
    user_emb: Tensor | None = None
    histories: SequenceSet | None = None
    with torch.no_grad():
        model.prepare_scoring()
        if isinstance(model, Scorer):
            kind = "embedding"
            emb = model.user_item_embeddings()
            if emb is None:
                scores = _constant_scores(model, name)
                user_emb = torch.ones(model.n_users, 1)
                item_emb = scores.reshape(-1, 1)
                info["scoring"] = "constant: the same score vector for every user"
            else:
                user_emb, item_emb = emb
                info["scoring"] = "inner product of final user and item embeddings"
            user_emb = user_emb.detach().float().cpu().contiguous().clone()
            info["interests"] = 1
        elif isinstance(model, InterestModel):
            if model.uses_times:
                raise ConfigError(
                    f"export: {name!r} reads the timestamps of a user's history, which an export "
                    "bundle and its requests do not carry yet; evaluate it with polyrec "
                    "evaluate, or export a model that reads items only (e.g. sasrec)"
                )
            kind = "interest"
            item_emb = model.item_embeddings()
            config = getattr(model, "config", None)
            max_len = int(getattr(config, "max_len", DEFAULT_MAX_LEN))
            behaviors = getattr(config, "behaviors", "target")
            behavior = log.target if behaviors == "target" else None
            histories = _latest(SequenceSet.from_log(log, behavior), max_len)
            info |= {
                "scoring": "max over the user's interest vectors of the inner product with items",
                "max_len": max_len,
                "history_behaviors": log.target if behavior else "all",
            }
        else:
            raise ConfigError(f"model {name!r} is neither a Scorer nor an InterestModel")
        item_emb = item_emb.detach().float().cpu().contiguous().clone()
    info["dim"] = int(item_emb.shape[1])
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "model": info,
        "dataset": {
            "name": log.name,
            "fingerprint": log.fingerprint(),
            "n_users": log.n_users,
            "n_items": log.n_items,
            "behaviors": list(log.behaviors),
            "target": log.target,
            "path": cfg.get("data", {}).get("path"),
        },
        "schema": (model.schema or DataSchema.of(log)).to_dict(),
        "definitions": {
            "seen": "every item of the user in the target behavior, all splits",
            "history": "the user's latest max_len items (all splits), chronological",
            "popularity": "distinct users per item in the target behavior (unknown-user fallback)",
        },
    }
    weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    bundle = Bundle(
        kind=kind,
        manifest=manifest,
        user_map=log.user_map,
        item_map=log.item_map,
        item_emb=item_emb,
        popularity=popularity,
        seen=seen,
        user_emb=user_emb,
        histories=histories,
        model=model if isinstance(model, InterestModel) else None,
        config_toml=config_toml,
        metrics=dict(metrics or {}),
        weights=weights,
        item_category=_item_categories(log),
    )
    if kind == "interest":
        info["interests"] = int(_interest_count(bundle))
    return bundle


def _interest_count(bundle: Bundle) -> int:
    assert bundle.model is not None and bundle.histories is not None
    lengths = bundle.histories.lengths
    user = int(np.argmax(lengths > 0)) if bool((lengths > 0).any()) else 0
    hist, length = bundle.histories.padded(np.array([user]), bundle.max_len)
    if int(length[0]) == 0:  # no history anywhere: a one-item history
        hist[0, -1], length[0] = 1, 1
    with torch.no_grad():
        return int(bundle.model.interests(hist, length).shape[1])


# ---------------------------------------------------------------------------------- writing
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _recall_queries(bundle: Bundle, cfg: IndexConfig) -> Tensor:
    """Flat query vectors ``[Q, d]`` of up to ``cfg.recall_queries`` sampled users."""
    gen = np.random.default_rng(cfg.seed)
    if bundle.kind == "embedding":
        assert bundle.user_emb is not None
        n = min(cfg.recall_queries, bundle.n_users)
        users = np.sort(gen.choice(bundle.n_users, size=n, replace=False))
        return bundle.user_emb[torch.from_numpy(users)]
    assert bundle.histories is not None and bundle.model is not None
    active = np.flatnonzero(bundle.histories.lengths > 0)
    n = min(cfg.recall_queries, len(active))
    users = np.sort(gen.choice(active, size=n, replace=False))
    hist, lengths = bundle.histories.padded(users, bundle.max_len)
    with torch.no_grad():
        vecs = bundle.model.interests(hist.to(bundle.model.device), lengths.to(bundle.model.device))
    return vecs.reshape(-1, vecs.shape[-1]).float().cpu()


def _prepare_out(out: Path, force: bool) -> None:
    make_parent(out)
    if out.exists() and not out.is_dir():
        raise DataError(f"export directory {str(out)!r} is a file")
    if out.exists() and any(out.iterdir()):
        if not is_export_dir(out):
            raise DataError(
                f"{str(out)!r} exists and is not a polyrec export; choose another --out"
            )
        if not force:
            raise DataError(f"export {str(out)!r} exists; give --force to replace it")


def write_export(
    bundle: Bundle,
    out: str | os.PathLike[str],
    *,
    index: IndexConfig | None = None,
    force: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``bundle`` to ``out`` atomically, check that it loads back, return its manifest."""
    out = Path(out)
    cfg = index or IndexConfig()
    _prepare_out(out, force)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if str(out.parent) else "."))
    tmp.chmod(0o755)
    try:
        save_file(bundle.weights, str(tmp / WEIGHTS), metadata={"format": FORMAT})
        tables: dict[str, Tensor] = {
            "item_emb": bundle.item_emb,
            "popularity": bundle.popularity,
            "seen_indptr": bundle.seen.indptr.cpu(),
            "seen_items": bundle.seen.indices.cpu(),
        }
        if bundle.user_emb is not None:
            tables["user_emb"] = bundle.user_emb
        if bundle.histories is not None:
            tables["history_indptr"] = torch.from_numpy(bundle.histories.indptr)
            tables["history_items"] = torch.from_numpy(bundle.histories.items)
        if bundle.item_category is not None:
            tables["item_category"] = torch.from_numpy(bundle.item_category)
        tables = {k: v.contiguous() for k, v in tables.items()}
        save_file(tables, str(tmp / TABLES), metadata={"format": FORMAT})
        pq.write_table(bundle.user_map.to_arrow(), tmp / USERS)
        pq.write_table(bundle.item_map.to_arrow(), tmp / ITEMS)
        (tmp / CONFIG).write_text(bundle.config_toml)
        if bundle.metrics:
            (tmp / METRICS).write_text(json.dumps(bundle.metrics, indent=2))
        faiss_index, info = build_index(bundle.item_emb, cfg)
        if faiss_index is not None:
            write_index(faiss_index, tmp / INDEX_FILE)
            if not info.get("exact"):
                queries = _recall_queries(bundle, cfg)
                info["recall"] = {
                    "k": min(cfg.recall_k, bundle.n_items),
                    "value": round(
                        measure_recall(faiss_index, bundle.item_emb, queries, cfg.recall_k), 4
                    ),
                    "queries": len(queries),
                    "against": "exact inner-product search (torch)",
                }
        manifest = dict(bundle.manifest)
        manifest["index"] = info
        manifest["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        from polyrec import __version__

        manifest["software"] = {
            "polyrec": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        manifest |= extra or {}
        manifest["files"] = {
            p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        load_export(tmp)  # round trip: checksums, tables, and the rebuilt network
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# ---------------------------------------------------------------------------------- loading
def _read_manifest(d: Path) -> dict[str, Any]:
    if not d.is_dir():
        raise CheckpointError(f"export directory {str(d)!r} does not exist")
    path = d / MANIFEST
    if not path.is_file():
        raise CheckpointError(
            f"{str(d)!r} is not a polyrec export (no {MANIFEST}); create one with "
            "'polyrec export RUN_DIR --out DIR'"
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a polyrec export manifest")
    if manifest.get("version") != VERSION:
        raise CheckpointError(
            f"export {str(d)!r} has manifest version {manifest.get('version')!r}; this polyrec "
            f"reads version {VERSION}: export the run again with this version"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or any(name not in files for name in REQUIRED):
        raise CheckpointError(f"{str(path)!r} does not list every file of an export")
    root = d.resolve()
    for name, meta in files.items():
        # a manifest names files inside its bundle only: never an absolute path or '..'
        inside = (
            isinstance(name, str) and not Path(name).is_absolute() and ".." not in Path(name).parts
        )
        if not inside or not (d / name).resolve().is_relative_to(root):
            raise CheckpointError(
                f"export {str(d)!r}: {MANIFEST} names a file outside the export folder "
                f"({str(name)[:80]!r}); refusing to read it"
            )
        if not isinstance(meta, dict):
            raise CheckpointError(f"{str(path)!r}: the entry of {name} is not an object")
        p = d / name
        if not p.is_file():
            raise CheckpointError(f"export {str(d)!r} is missing {name}")
        if _sha256(p) != meta.get("sha256"):
            raise CheckpointError(
                f"export {str(d)!r}: {name} does not match its checksum in {MANIFEST} "
                "(corrupt or modified); export the run again"
            )
    return manifest


def _schema(bundle: Bundle) -> DataSchema:
    """The data schema the network was built for (the manifest's ``schema``)."""
    try:
        return DataSchema.from_dict(bundle.manifest["schema"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"export manifest has no valid data schema ({e})") from None


def _rebuild_network(bundle: Bundle, d: Path) -> InterestModel:
    """The exported network from its config and weights alone (no training data)."""
    from polyrec.config import load_config
    from polyrec.models.registry import create_model

    try:
        cfg = load_config(d / CONFIG)
        model = create_model(cfg.model, cfg.params).restore(_schema(bundle))
    except PolyrecError as e:
        raise CheckpointError(f"export {str(d)!r}: cannot rebuild the model: {e}") from None
    try:
        model.load_state_dict(bundle.weights, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise CheckpointError(
            f"export {str(d)!r}: {WEIGHTS} does not match the model: {first}"
        ) from None
    if not isinstance(model, InterestModel):
        raise CheckpointError(f"export {str(d)!r}: model {cfg.model!r} is not an InterestModel")
    model.eval()
    with torch.no_grad():
        model.prepare_scoring()
        table = model.item_embeddings().float().cpu()
    if table.shape != bundle.item_emb.shape or not torch.equal(table, bundle.item_emb):
        raise CheckpointError(
            f"export {str(d)!r}: the item table of {WEIGHTS} differs from {TABLES}"
        )
    return model


def load_export(path: str | os.PathLike[str]) -> Bundle:
    """Load and verify an export directory (:class:`CheckpointError` on any mismatch)."""
    d = Path(path)
    manifest = _read_manifest(d)
    try:
        tables = load_file(str(d / TABLES))
        weights = load_file(str(d / WEIGHTS))
        users = IdMap.from_arrow(pq.read_table(d / USERS))
        items = IdMap.from_arrow(pq.read_table(d / ITEMS))
        metrics = json.loads((d / METRICS).read_text()) if (d / METRICS).is_file() else {}
        config_toml = (d / CONFIG).read_text()
    except (SafetensorError, OSError, ValueError, pa.ArrowException) as e:
        raise CheckpointError(f"export {str(d)!r} is unreadable ({e})") from None
    ds = manifest.get("dataset", {})
    kind = manifest.get("kind")
    need = {"item_emb", "popularity", "seen_indptr", "seen_items"}
    need |= {"user_emb"} if kind == "embedding" else {"history_indptr", "history_items"}
    missing = sorted(need - set(tables))
    if kind not in ("embedding", "interest") or missing:
        raise CheckpointError(
            f"export {str(d)!r}: {TABLES} lacks {', '.join(missing) or 'a known kind'}"
        )
    n_users, n_items = len(users), len(items)
    item_emb = tables["item_emb"].float()
    if (n_users, n_items) != (ds.get("n_users"), ds.get("n_items")) or item_emb.shape[0] != n_items:
        raise CheckpointError(
            f"export {str(d)!r}: id maps ({n_users} users, {n_items} items) and tables "
            f"({item_emb.shape[0]} items) do not match the manifest"
        )
    indptr, seen_items = tables["seen_indptr"].numpy(), tables["seen_items"].numpy()
    seen_users = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(indptr))
    bundle = Bundle(
        kind=str(kind),
        manifest=manifest,
        user_map=users,
        item_map=items,
        item_emb=item_emb,
        popularity=tables["popularity"].float(),
        seen=PairIndex(seen_users * n_items + seen_items, n_users, n_items),
        config_toml=config_toml,
        metrics=metrics,
        weights=weights,
        item_category=tables["item_category"].numpy() if "item_category" in tables else None,
    )
    if kind == "embedding":
        bundle.user_emb = tables["user_emb"].float()
        if bundle.user_emb.shape != (n_users, item_emb.shape[1]):
            raise CheckpointError(f"export {str(d)!r}: user and item embeddings do not match")
    else:
        bundle.histories = SequenceSet(
            tables["history_indptr"].numpy(), tables["history_items"].numpy(), n_items
        )
        if bundle.histories.n_users != n_users:
            raise CheckpointError(f"export {str(d)!r}: histories do not match the user map")
        bundle.model = _rebuild_network(bundle, d)
    info = manifest.get("index", {})
    if info.get("backend") == "faiss" and INDEX_FILE in manifest["files"]:
        bundle.index = read_index(d / INDEX_FILE, info)
        if bundle.index is not None and int(bundle.index.ntotal) != n_items:
            raise CheckpointError(f"export {str(d)!r}: {INDEX_FILE} does not hold {n_items} items")
        if bundle.index is not None and int(bundle.index.d) != item_emb.shape[1]:
            raise CheckpointError(
                f"export {str(d)!r}: {INDEX_FILE} has dimension {int(bundle.index.d)}, the item "
                f"embeddings {item_emb.shape[1]}"
            )
    dim = manifest.get("model", {}).get("dim")
    if dim is not None and int(dim) != item_emb.shape[1]:
        raise CheckpointError(
            f"export {str(d)!r}: {TABLES} holds {item_emb.shape[1]}-dimensional embeddings, "
            f"the manifest's model {dim}"
        )
    return bundle


__all__ = [
    "FORMAT",
    "MANIFEST",
    "VERSION",
    "Bundle",
    "build_bundle",
    "is_export_dir",
    "load_export",
    "write_export",
]
