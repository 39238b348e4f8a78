"""The explicit registry: model name → class (and its pydantic config).

Add a model by importing its class here and adding one entry to :data:`REGISTRY` (see the
README's "Adding a model").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from polyrec.data.views import TrainData
from polyrec.errors import ConfigError
from polyrec.models.base import Model, ModelConfig
from polyrec.models.bert4rec import BERT4Rec
from polyrec.models.caser import Caser
from polyrec.models.cml import CML
from polyrec.models.comirec import ComiRecDR, ComiRecSA
from polyrec.models.crgcn import CRGCN
from polyrec.models.deca import DeCALightGCN, DeCAMF
from polyrec.models.ease import EASE
from polyrec.models.egcm import EGCM
from polyrec.models.ehcf import EHCF
from polyrec.models.gru4rec import GRU4Rec
from polyrec.models.heco import HeCo
from polyrec.models.hgn import HGN
from polyrec.models.hgt import HGT
from polyrec.models.history import History
from polyrec.models.hpcl4sr import HPCL4SR
from polyrec.models.itemknn import ItemKNN
from polyrec.models.khgt import KHGT
from polyrec.models.lightgcn import LightGCN
from polyrec.models.magnn import MAGNN
from polyrec.models.matn import MATN
from polyrec.models.mba import MBA
from polyrec.models.mbcgcn import MBCGCN
from polyrec.models.mbgcn import MBGCN
from polyrec.models.mbhybrid import MBHybrid
from polyrec.models.mf import MF
from polyrec.models.mind import MIND
from polyrec.models.mule import MuLe
from polyrec.models.ngcf import NGCF
from polyrec.models.nmtr import NMTR
from polyrec.models.pinsage import PinSage
from polyrec.models.pop import Pop
from polyrec.models.re4 import Re4DR, Re4SA
from polyrec.models.remi import REMI
from polyrec.models.sasrec import SASRec
from polyrec.models.sgl import SGL
from polyrec.models.tce import TCEMF, TCELightGCN
from polyrec.models.tisasrec import TiSASRec
from polyrec.models.wbpr import WBPRMF, WBPRLightGCN
from polyrec.models.youtube_dnn import YouTubeDNN

REGISTRY: dict[str, type[Model]] = {
    "pop": Pop,
    "mf": MF,
    "lightgcn": LightGCN,
    "heco": HeCo,
    "hgt": HGT,
    "ngcf": NGCF,
    "pinsage": PinSage,
    "history": History,
    "ease": EASE,
    "itemknn": ItemKNN,
    "sgl": SGL,
    "mbgcn": MBGCN,
    "matn": MATN,
    "khgt": KHGT,
    "cml": CML,
    "egcm": EGCM,
    "mba": MBA,
    "ehcf": EHCF,
    "nmtr": NMTR,
    "mbcgcn": MBCGCN,
    "crgcn": CRGCN,
    "mule": MuLe,
    "mbhybrid": MBHybrid,
    "wbpr-mf": WBPRMF,
    "wbpr-lightgcn": WBPRLightGCN,
    "tce-mf": TCEMF,
    "tce-lightgcn": TCELightGCN,
    "deca-mf": DeCAMF,
    "deca-lightgcn": DeCALightGCN,
    "youtube-dnn": YouTubeDNN,
    "sasrec": SASRec,
    "comirec-sa": ComiRecSA,
    "comirec-dr": ComiRecDR,
    "gru4rec": GRU4Rec,
    "caser": Caser,
    "hgn": HGN,
    "magnn": MAGNN,
    "bert4rec": BERT4Rec,
    "tisasrec": TiSASRec,
    "mind": MIND,
    "re4-sa": Re4SA,
    "re4-dr": Re4DR,
    "remi": REMI,
    "hpcl4sr": HPCL4SR,
}

ALIASES: dict[str, str] = {
    "bpr": "mf",
    "mf-bpr": "mf",
    "bprmf": "mf",
    "youtubednn": "youtube-dnn",
    "ma-gnn": "magnn",
    "youtube_dnn": "youtube-dnn",
    "comirec_sa": "comirec-sa",
    "comirec_dr": "comirec-dr",
    "re4": "re4-sa",
    "re4_sa": "re4-sa",
    "re4_dr": "re4-dr",
    "ease-r": "ease",
    "easer": "ease",
    "item-knn": "itemknn",
    "itemcf": "itemknn",
    "mb-cgcn": "mbcgcn",
    "mb_cgcn": "mbcgcn",
    "mb-hybrid": "mbhybrid",
}


def canonical_name(name: str) -> str:
    """The registry name for ``name`` (case-insensitive; aliases resolved)."""
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    if key not in REGISTRY:
        raise ConfigError(f"unknown model {name!r}; available: {', '.join(REGISTRY)}")
    return key


def get_model_class(name: str) -> type[Model]:
    """The class registered under ``name`` (or an alias); :class:`ConfigError` if unknown."""
    return REGISTRY[canonical_name(name)]


def _describe(cls: type[Model]) -> str:
    doc = (cls.__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def list_models() -> list[dict[str, Any]]:
    """One dict per registered model: ``name``, ``paper``, ``kind``, ``description``."""
    return [
        {"name": name, "paper": cls.paper, "kind": cls.kind, "description": _describe(cls)}
        for name, cls in REGISTRY.items()
    ]


def _format_validation_error(err: ValidationError, cls: type[Model], prefix: str) -> str:
    known = ", ".join(cls.Config.model_fields)
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"])
        key = f"{prefix}.{loc}" if prefix else loc
        if e["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key for model {cls.name!r} (valid keys: {known})")
        else:
            parts.append(f"{key}: {e['msg']}")
    return "; ".join(parts)


def make_config(
    name: str, params: Mapping[str, Any] | ModelConfig, *, prefix: str = "model"
) -> ModelConfig:
    """Validate ``params`` with the model's config; errors become one-line :class:`ConfigError`.

    A config object of the model's own class passes through unchanged."""
    cls = get_model_class(name)
    if isinstance(params, cls.Config):
        return params
    if isinstance(params, ModelConfig):
        raise ConfigError(
            f"{prefix}: a {type(params).__name__} is not the config of model {cls.name!r} "
            f"({cls.Config.__name__})"
        )
    if not isinstance(params, Mapping):
        raise ConfigError(f"{prefix}: expected a table of settings, got {type(params).__name__}")
    try:
        return cls.Config.model_validate(dict(params))
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, cls, prefix)) from None


def create_model(
    name: str, params: Mapping[str, Any] | ModelConfig | None = None, *, prefix: str = "model"
) -> Model:
    """Model ``name`` built from its settings alone (no parameters yet: call ``setup(data)`` or
    ``restore(schema)``)."""
    cls = get_model_class(name)
    return cls(make_config(name, params if params is not None else {}, prefix=prefix))


def build_model(
    name: str,
    params: Mapping[str, Any] | ModelConfig | None,
    data: TrainData,
    *,
    prefix: str = "model",
) -> Model:
    """Model ``name`` with settings ``params`` (validated; unknown keys are errors), set up for
    ``data``: ``create_model(name, params).setup(data)``."""
    return create_model(name, params, prefix=prefix).setup(data)


__all__ = [
    "ALIASES",
    "REGISTRY",
    "build_model",
    "canonical_name",
    "create_model",
    "get_model_class",
    "list_models",
    "make_config",
]
