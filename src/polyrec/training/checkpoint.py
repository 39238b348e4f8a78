"""Atomic checkpoints without pickle.

One checkpoint is one safetensors file: the model weights (``model.*``), every optimiser's
tensors (``optim.<k>.<param>.<name>``), the torch RNG states (``rng.*``); everything else
(epoch, early-stopping state, history, optimiser hyper-parameters, numpy and python RNG states)
is JSON in the file's metadata. Files are written to a temporary sibling and renamed, so a crash
never leaves a half-written checkpoint; a truncated or foreign file is refused with a
:class:`CheckpointError`, and so is a file whose tensors no longer match the SHA-256 checksum
stored in its metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from polyrec.errors import CheckpointError
from polyrec.fsutil import temporary_sibling

MAGIC = "polyrec-checkpoint-1"
CHECKSUM = "sha256"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = temporary_sibling(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    tmp = temporary_sibling(path)
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    try:
        save_file(clean, str(tmp), metadata={**meta, CHECKSUM: tensor_checksum(clean)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order: stored in each
    file's metadata and checked on load, so a flipped byte inside a tensor is found."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _short(e: BaseException, limit: int = 200) -> str:
    """An exception's text cut to one short line (a garbled header can echo kilobytes)."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def save_weights(path: Path, model: torch.nn.Module) -> None:
    _save_tensors(path, dict(model.state_dict()), {"format": MAGIC, "kind": "weights"})


def load_weights(path: Path, model: torch.nn.Module) -> None:
    tensors = _load(path)
    _load_model(model, tensors, path)


def _load(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, checked against the checksum in its metadata (files written before
    checksums existed have none and are read as they are)."""
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    expected = _meta(path).get(CHECKSUM)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({_short(e)})"
        ) from None
    if expected is not None and tensor_checksum(tensors) != expected:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is damaged: its tensors do not match the checksum stored "
            "in it (the file changed after it was written)"
        )
    return tensors


def _meta(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} is corrupt or truncated ({_short(e)})"
        ) from None


def _load_model(model: torch.nn.Module, tensors: dict[str, torch.Tensor], path: Path) -> None:
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    if not weights:
        weights = tensors
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "mismatch"
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match this model: {first}"
        ) from None


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimisers: list[torch.optim.Optimizer],
    generator: torch.Generator,
    state: dict[str, Any],
) -> None:
    """Model, optimisers, every RNG state and the trainer's JSON-able ``state``, atomically."""
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in model.state_dict().items()}
    opt_meta = []
    for k, opt in enumerate(optimisers):
        sd = opt.state_dict()
        per_param: dict[str, dict[str, Any]] = {}
        for pid, pstate in sd["state"].items():
            scalars = {}
            for name, val in pstate.items():
                if isinstance(val, torch.Tensor):
                    tensors[f"optim.{k}.{pid}.{name}"] = val
                else:
                    scalars[name] = val
            per_param[str(pid)] = scalars
        opt_meta.append({"param_groups": sd["param_groups"], "scalars": per_param})
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.generator"] = generator.get_state()
    if torch.cuda.is_available():
        for d, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{d}"] = s
    np_state: Any = np.random.get_state(legacy=True)
    py_state = random.getstate()
    meta = {
        "format": MAGIC,
        "kind": "checkpoint",
        "state": json.dumps(state),
        "optimisers": json.dumps(opt_meta),
        "rng.numpy": json.dumps(
            [
                np_state[0],
                np_state[1].tolist(),
                int(np_state[2]),
                int(np_state[3]),
                float(np_state[4]),
            ]
        ),
        "rng.python": json.dumps([py_state[0], list(py_state[1]), py_state[2]]),
    }
    _save_tensors(path, tensors, meta)


def load_checkpoint(
    path: Path,
    model: torch.nn.Module,
    optimisers: list[torch.optim.Optimizer],
    generator: torch.Generator,
) -> dict[str, Any]:
    """Restore everything :func:`save_checkpoint` wrote; returns the trainer's state."""
    meta = _meta(path)
    if meta.get("format") != MAGIC or meta.get("kind") != "checkpoint":
        raise CheckpointError(f"{str(path)!r} is not a polyrec training checkpoint")
    tensors = _load(path)
    _load_model(model, tensors, path)
    try:
        opt_meta = json.loads(meta["optimisers"])
        state = json.loads(meta["state"])
        np_state = json.loads(meta["rng.numpy"])
        py_state = json.loads(meta["rng.python"])
    except (KeyError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"checkpoint {str(path)!r} has corrupt metadata ({_short(e)})"
        ) from None
    if len(opt_meta) != len(optimisers):
        raise CheckpointError(
            f"checkpoint {str(path)!r} holds {len(opt_meta)} optimisers, the model has "
            f"{len(optimisers)}"
        )
    for k, (opt, om) in enumerate(zip(optimisers, opt_meta, strict=True)):
        st: dict[int, dict[str, Any]] = {}
        for pid, scalars in om["scalars"].items():
            st[int(pid)] = dict(scalars)
        prefix = f"optim.{k}."
        for name, val in tensors.items():
            if name.startswith(prefix):
                pid_s, tname = name[len(prefix) :].split(".", 1)
                st.setdefault(int(pid_s), {})[tname] = val
        try:
            opt.load_state_dict({"state": st, "param_groups": om["param_groups"]})
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(
                f"checkpoint {str(path)!r}: optimiser state mismatch ({_short(e)})"
            ) from None
    torch.set_rng_state(tensors["rng.torch"])
    generator.set_state(tensors["rng.generator"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
        if states:
            torch.cuda.set_rng_state_all(states)
    np.random.set_state(
        (
            np_state[0],
            np.asarray(np_state[1], dtype=np.uint32),
            np_state[2],
            np_state[3],
            np_state[4],
        )
    )
    random.setstate((py_state[0], tuple(py_state[1]), py_state[2]))
    return dict(state)
