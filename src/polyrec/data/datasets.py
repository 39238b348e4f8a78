"""Named datasets: the embedded default (Retailrocket) and polyrec dataset folders.

``load_dataset("embedded:retailrocket")`` (aliases ``"retailrocket"``, ``"default"``) returns the
dataset shipped inside the package; any other spec must be a folder written by
:meth:`InteractionLog.save` (foreign formats are converted first with
:func:`polyrec.data.importers.import_path`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from polyrec.data.log import InteractionLog
from polyrec.errors import DataError

_EMBEDDED_ROOT = Path(__file__).resolve().parent / "embedded"


@dataclass(frozen=True)
class EmbeddedDataset:
    """A dataset shipped inside the package (a folder under ``polyrec/data/embedded``)."""

    name: str
    description: str
    licence: str
    attribution: str


EMBEDDED: dict[str, EmbeddedDataset] = {
    "retailrocket": EmbeddedDataset(
        name="retailrocket",
        description=(
            "Retailrocket e-commerce multi-behavior log as preprocessed by HKUDS for CML / SSLRec: "
            "2,174 users x 30,113 items, behaviors view, cart, buy (target), unix-second "
            "timestamps; 97,381 train interactions plus the published test split of one held-out "
            "purchase per user (2,174 rows with fold=test)."
        ),
        licence="CC BY-NC-SA 4.0 (https://creativecommons.org/licenses/by-nc-sa/4.0/)",
        attribution=(
            "Retailrocket recommender system dataset, Retailrocket, Kaggle "
            "(https://www.kaggle.com/datasets/retailrocket/ecommerce-dataset); preprocessing by "
            "HKUDS (CML, https://github.com/weiwei1206/CML; SSLRec, "
            "https://github.com/HKUDS/SSLRec). Converted to polyrec's format; see NOTICE."
        ),
    ),
}

_ALIASES = {"default": "retailrocket"}


def embedded_path(name: str) -> Path:
    """The folder of embedded dataset ``name`` inside the installed package."""
    key = _ALIASES.get(name, name)
    if key not in EMBEDDED:
        raise DataError(
            f"unknown embedded dataset {name!r}; embedded datasets: {', '.join(EMBEDDED)}"
        )
    return _EMBEDDED_ROOT / key


def load_dataset(spec: str | os.PathLike[str]) -> InteractionLog:
    """Load ``"embedded:<name>"`` (or the bare name / ``"default"``) or a dataset folder."""
    text = os.fspath(spec)
    if isinstance(text, bytes):
        raise DataError("dataset spec must be a string or path")
    name: str | None = None
    if text.startswith("embedded:"):
        name = text[len("embedded:") :]
    elif (text in EMBEDDED or text in _ALIASES) and not Path(text).exists():
        name = text
    if name is not None:
        d = embedded_path(name)
        if not (d / "dataset.json").is_file():
            raise DataError(
                f"embedded dataset {name!r} is missing from the installed package ({d}); "
                "reinstall polyrec or run tools/make_embedded.py"
            )
        return InteractionLog.load(d)
    p = Path(text)
    if not p.exists():
        raise DataError(
            f"dataset {text!r} not found: give a polyrec dataset folder or one of "
            f"{', '.join('embedded:' + n for n in EMBEDDED)} (alias 'default')"
        )
    if not p.is_dir():
        raise DataError(
            f"{text!r} is a file, not a polyrec dataset folder; convert foreign files with "
            "'polyrec data import' (polyrec.data.importers.import_path) first"
        )
    return InteractionLog.load(p)


__all__ = ["EMBEDDED", "EmbeddedDataset", "embedded_path", "load_dataset"]
