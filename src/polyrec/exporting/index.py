"""The item index of an export: exact inner product (faiss ``IndexFlatIP``, or torch when faiss is
absent) or an approximate faiss index (IVF or HNSW) for large catalogues.

An approximate index is built once at export time and its recall@K against exact search is
measured on a sample of real queries (users' embeddings, or the interest vectors of users'
histories) and written into the manifest, so the speed/recall trade is visible before serving.

faiss is imported lazily (optional ``faiss`` extra): the core package works without it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from polyrec.errors import CheckpointError, ConfigError

IndexType = Literal["flat", "ivf", "hnsw"]
INDEX_FILE = "items.faiss"
FAISS_HINT = "pip install 'polyrec[faiss]'"


def import_faiss() -> Any:
    """The faiss module, or None when the optional extra is not installed."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


class IndexConfig(BaseModel):
    """How the item index of an export is built (unknown keys are errors)."""

    model_config = ConfigDict(extra="forbid")

    type: IndexType = Field(
        "flat",
        description=(
            "'flat': exact inner product (faiss IndexFlatIP, or torch when faiss is absent); "
            "'ivf': faiss IndexIVFFlat (inverted lists, approximate); 'hnsw': faiss IndexHNSWFlat "
            "(graph, approximate). IVF/HNSW need the faiss extra."
        ),
    )
    nlist: int | None = Field(
        None, ge=1, description="IVF lists (default: 4·√n_items, at most n_items / 39)."
    )
    nprobe: int = Field(16, ge=1, description="IVF lists visited per query.")
    hnsw_m: int = Field(32, ge=2, description="HNSW neighbours per node (M).")
    ef_construction: int = Field(200, ge=1, description="HNSW efConstruction.")
    ef_search: int = Field(128, ge=1, description="HNSW efSearch (at least k is used).")
    recall_k: int = Field(20, ge=1, description="K of the recall@K measured against exact search.")
    recall_queries: int = Field(
        1000, ge=1, description="Queries sampled (seeded) for the recall measurement."
    )
    seed: int = Field(0, description="Seed of the recall sample.")


def _auto_nlist(n_items: int) -> int:
    return max(1, min(int(4 * math.sqrt(n_items)), n_items // 39))


def build_index(items: Tensor, cfg: IndexConfig) -> tuple[Any | None, dict[str, Any]]:
    """The faiss index over ``items [n, d]`` (None for 'flat' without faiss) and its description."""
    faiss = import_faiss()
    n, d = items.shape
    if faiss is None:
        if cfg.type != "flat":
            raise ConfigError(f"index type {cfg.type!r} needs the faiss extra: {FAISS_HINT}")
        return None, {"type": "flat", "backend": "torch", "exact": True}
    emb = np.ascontiguousarray(items.detach().float().cpu().numpy())
    info: dict[str, Any] = {"type": cfg.type, "backend": "faiss", "faiss": faiss.__version__}
    if cfg.type == "flat":
        index = faiss.IndexFlatIP(d)
        index.add(emb)
        info["exact"] = True
        return index, info
    if cfg.type == "ivf":
        nlist = min(cfg.nlist or _auto_nlist(n), n)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(emb)
        index.add(emb)
        index.nprobe = min(cfg.nprobe, nlist)
        info |= {"exact": False, "nlist": nlist, "nprobe": int(index.nprobe)}
        return index, info
    index = faiss.IndexHNSWFlat(d, cfg.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = cfg.ef_construction
    index.add(emb)
    index.hnsw.efSearch = cfg.ef_search
    info |= {
        "exact": False,
        "m": cfg.hnsw_m,
        "ef_construction": cfg.ef_construction,
        "ef_search": cfg.ef_search,
    }
    return index, info


def faiss_search(index: Any, queries: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``(items [B, K, n], scores [B, K, n])`` of queries ``[B, K, d]`` (faiss pads with -1)."""
    b, k, d = queries.shape
    q = np.ascontiguousarray(queries.detach().float().cpu().reshape(b * k, d).numpy())
    scores, items = index.search(q, n)
    return (
        torch.from_numpy(items.astype(np.int64, copy=False)).reshape(b, k, n),
        torch.from_numpy(scores).reshape(b, k, n),
    )


def exact_topk(queries: Tensor, items: Tensor, n: int) -> Tensor:
    """Exact top-``n`` item ids ``[Q, n]`` of flat queries ``[Q, d]`` by inner product (torch)."""
    return torch.topk(queries @ items.T, min(n, items.shape[0]), dim=1).indices


def measure_recall(index: Any, items: Tensor, queries: Tensor, k: int) -> float:
    """Mean recall@k of ``index`` against exact search for flat ``queries [Q, d]``."""
    k = min(k, items.shape[0])
    exact = exact_topk(queries, items, k)
    approx, _ = faiss_search(index, queries.unsqueeze(1), k)
    approx = approx[:, 0]
    hits = (approx.unsqueeze(2) == exact.unsqueeze(1)).any(dim=2) & (approx >= 0)
    return float(hits.sum(dim=1).double().mean() / k)


def write_index(index: Any, path: Path) -> None:
    faiss = import_faiss()
    assert faiss is not None
    faiss.write_index(index, str(path))


def read_index(path: Path, info: dict[str, Any]) -> Any | None:
    """The saved faiss index, or None when faiss is not installed (exact torch search then)."""
    faiss = import_faiss()
    if faiss is None:
        return None
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unreadable"
        raise CheckpointError(f"index {str(path)!r} is corrupt ({first})") from None
    try:
        if info.get("type") == "ivf" and "nprobe" in info:
            faiss.extract_index_ivf(index).nprobe = int(info["nprobe"])
        elif info.get("type") == "hnsw" and "ef_search" in info:
            index.hnsw.efSearch = int(info["ef_search"])
    except (AttributeError, RuntimeError):
        raise CheckpointError(
            f"index {str(path)!r} is not the {info.get('type')!r} index the manifest describes"
        ) from None
    return index


__all__ = [
    "FAISS_HINT",
    "INDEX_FILE",
    "IndexConfig",
    "IndexType",
    "build_index",
    "exact_topk",
    "faiss_search",
    "import_faiss",
    "measure_recall",
    "read_index",
    "write_index",
]
