"""Run configuration: pydantic models that reject unknown keys, TOML files, ``key=value`` overrides.

A run config has four sections plus the model's own parameters::

    model = "lightgcn"
    seed = 2024
    [data]   path, target, protocol and the split's parameters
    [train]  epochs, batch size, optimiser, early stopping
    [eval]   K list, protocols, masking
    [params] the model's config (validated by the model's own pydantic class)

A ``[tune]`` table (budget, validation metric and ``[tune.space]``, see :class:`TuneConfig`) is
read by ``polyrec tune`` only (:func:`load_tune_config`); ``polyrec train`` ignores it.

Overrides are ``section.key=value`` (e.g. ``train.lr=0.01``, ``params.n_layers=2``) or a bare
``key=value`` when the key exists in exactly one section. Values are parsed as TOML values
(``3``, ``0.5``, ``true``, ``[10, 20]``, ``"buy"``) and fall back to a plain string.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from polyrec.errors import ConfigError
from polyrec.models.base import ModelConfig

Protocol = Literal["leave-one-out", "random-ratio", "user-split", "time-slots"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    path: str = Field(
        "embedded:retailrocket",
        description="dataset directory (from 'polyrec data import') or 'embedded:retailrocket'",
    )
    target: str | None = Field(None, description="target behavior (default: the dataset's)")
    protocol: Protocol = Field("leave-one-out", description="split protocol")
    n_negatives: int = Field(99, ge=0, description="negatives per held-out pair for sampled 1+N")
    hide: Literal["all", "target"] | None = Field(
        None,
        description=(
            "remove a held-out pair from train in every behavior ('all': the HKUDS/CML test "
            "sets) or in the target behavior only ('target': auxiliary rows of held-out pairs "
            "stay in training, as MB-CGCN, CRGCN, MuLe and MBA's code). Default: for "
            "leave-one-out, the published split's own convention ('target' when the data's "
            "training rows hold auxiliary rows of its published test pairs, else 'all'); 'all' "
            "for time-slots; 'target' for random-ratio (MBA)"
        ),
    )
    valid_users: int | None = Field(
        None,
        ge=1,
        description="leave-one-out: validate on a seeded sample of at most this many users (the "
        "others' latest pairs stay in training; default: every user)",
    )
    ratio: float = Field(0.8, gt=0, lt=1, description="random-ratio: train share (MBA: 4:1)")
    valid_ratio: float = Field(
        0.1, ge=0, lt=1, description="random-ratio: validation slice of train"
    )
    user_ratios: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="user-split ratios"
    )
    history_fraction: float = Field(0.8, gt=0, lt=1, description="user-split: history share")
    slot_days: float = Field(30.0, gt=0, description="time-slots: slot length in days")
    seconds_per_unit: float = Field(1.0, gt=0, description="time-slots: seconds per timestamp unit")

    def split_params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"n_negatives": self.n_negatives}
        if self.protocol == "leave-one-out":
            p["hide"] = self.hide or "auto"
        if self.protocol == "time-slots":
            p["hide"] = self.hide or "all"
        if self.protocol == "leave-one-out" and self.valid_users is not None:
            p["valid_users"] = self.valid_users
        if self.protocol == "random-ratio":
            p |= {
                "ratio": self.ratio,
                "valid_ratio": self.valid_ratio,
                "hide": self.hide or "target",
            }
        elif self.protocol == "user-split":
            p |= {"ratios": self.user_ratios, "history_fraction": self.history_fraction}
        if self.protocol == "time-slots":
            p |= {"slot_days": self.slot_days, "seconds_per_unit": self.seconds_per_unit}
        return p


class TrainConfig(_Section):
    epochs: int = Field(100, ge=0, description="maximum number of epochs")
    batch_size: int = Field(2048, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    optimizer: Literal["adam", "adamw", "sgd", "adagrad", "lazy_adam"] = Field(
        "adam",
        description="'adam', 'adamw', 'sgd', 'adagrad' (torch's, over every parameter), or "
        "'lazy_adam' (models with embedding tables looked up by index, MF: sparse gradients "
        "and torch.optim.SparseAdam, so a step updates the batch's rows only and costs "
        "O(batch · d) instead of O((users + items) · d)). Lazy Adam is not Adam: the moments of "
        "rows absent from a batch are not decayed (nor those rows moved by their momentum), so "
        "results differ slightly; use it for large tables (hundreds of thousands of users or "
        "items), where Adam's whole-table update dominates the step. Needs "
        "train.weight_decay = 0 (regularise with the model's L2 term, MF's params.reg)",
    )
    metric: str = Field("ndcg@10", description="validation metric for early stopping")
    select_protocol: Literal["full", "sampled", "retrieval"] = Field(
        "full",
        description="protocol of the validation metric used for model selection ('retrieval' "
        "for interest models; they also answer 'full' with their retrieval figures)",
    )
    lr_schedule: Literal["constant", "cyclic"] = Field(
        "constant",
        description="'cyclic': triangular cyclical lr from train.lr up to train.max_lr and back, "
        "per optimisation step (CML §4.1.3 trains with CyclicLR)",
    )
    max_lr: float | None = Field(None, gt=0, description="cyclic schedule: the peak lr")
    cycle_up: int = Field(5, ge=1, description="cyclic schedule: steps from train.lr to max_lr")
    cycle_down: int = Field(10, ge=1, description="cyclic schedule: steps from max_lr back down")
    patience: int = Field(10, ge=1, description="epochs without validation improvement to stop")
    min_epochs: int = Field(
        0,
        ge=0,
        description="never stop early before this epoch (models that start from a tiny init "
        "show no validation signal for their first epochs)",
    )
    eval_every: int = Field(1, ge=1, description="validate every N epochs")
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'")
    threads: int | None = Field(None, ge=1, description="torch CPU threads (default: torch's)")
    max_minutes: float | None = Field(None, gt=0, description="stop training after this long")


class EvalConfig(_Section):
    ks: list[int] = Field([10, 20], description="cut-offs for every metric")
    protocols: list[Literal["full", "sampled", "retrieval"]] = Field(
        ["full", "sampled"],
        description="scorers: 'full' and/or 'sampled'; interest models are always evaluated by "
        "'retrieval' (ComiRec protocol)",
    )
    mask: Literal["target", "all"] = Field(
        "target", description="full ranking masks the user's training items of this behavior set"
    )
    batch_size: int = Field(1024, ge=1, description="users per scoring batch")
    metrics: list[
        Literal["hr", "recall", "ndcg", "mrr", "precision", "map", "coverage", "avgpop", "gini"]
    ] = Field(
        [],
        description="metrics reported besides hr, recall, ndcg, mrr (always reported; retrieval: "
        "hr, recall, ndcg): 'precision', 'map' (per user; 'mrr' for retrieval) and the "
        "list-level 'coverage', 'avgpop', 'gini' (full ranking and retrieval only)",
    )
    ndcg: Literal["standard", "comirec", "both"] = Field(
        "standard",
        description="retrieval NDCG: the standard one, ComiRec's variant (IDCG over recalled "
        "positives, reported as ndcg_comirec@k) or both",
    )
    exclude_history: bool = Field(
        False, description="retrieval: drop a user's history items from the ranking (ComiRec: no)"
    )
    search: Literal["auto", "torch", "faiss"] = Field(
        "auto",
        description="retrieval search: exact torch, faiss IndexFlatIP, or faiss if installed",
    )
    max_len: int | None = Field(
        None,
        ge=1,
        description="retrieval: the latest history items given to the model (default: the "
        "model's params.max_len, else 50)",
    )

    def retrieval_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`polyrec.eval.retrieval.evaluate_retrieval`."""
        return {
            "ndcg": self.ndcg,
            "exclude_history": self.exclude_history,
            "search": self.search,
            "max_len": self.max_len,
        }


class RunConfig(_Section):
    """A whole run. ``params`` is the model's own typed config (its ``Config`` class, e.g.
    :class:`~polyrec.models.mf.MFConfig`), from the TOML file to the model's constructor: a
    table of settings given here is validated by the model named in ``model``."""

    model: str = "lightgcn"
    seed: int = 2024
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    params: SerializeAsAny[ModelConfig] = Field(
        default_factory=ModelConfig, description="the model's own config"
    )

    @model_validator(mode="before")
    @classmethod
    def _typed_params(cls, values: Any) -> Any:
        """``params`` as the named model's config object (defaults when absent)."""
        if isinstance(values, dict):
            name = values.get("model", cls.model_fields["model"].default)
            values = dict(values)
            values["params"] = _model_params(str(name), values.get("params", {}))
        return values

    @model_validator(mode="after")
    def _params_match_model(self) -> RunConfig:
        expected = _model_class(self.model).Config
        if not isinstance(self.params, expected):
            raise ValueError(
                f"params is a {type(self.params).__name__}, not the config of model "
                f"{self.model!r} ({expected.__name__})"
            )
        return self


class SpaceParam(_Section):
    """One dimension of a search space: ``choices`` (a categorical), or ``low``/``high`` (an int
    when ``low``, ``high`` and ``step`` are all ints, else a float), sampled on a log scale
    with ``log = true`` or on a grid with ``step``."""

    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = Field(None, gt=0)
    log: bool = False
    choices: list[bool | int | float | str] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SpaceParam:
        if self.choices is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("give either choices or low/high (with step or log), not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give choices = [...] or both low and high")
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"log = true needs low > 0 (got {self.low})")
        if self.log and self.step is not None and not (self.is_int and self.step == 1):
            raise ValueError("log = true cannot be combined with a step (except 1 for ints)")
        return self

    @property
    def is_int(self) -> bool:
        ints = [v for v in (self.low, self.high, self.step) if v is not None]
        return all(isinstance(v, int) and not isinstance(v, bool) for v in ints)

    def values(self) -> list[Any]:
        """The values to check against the config: every choice, or the bounds."""
        if self.choices is not None:
            return list(self.choices)
        return [self.low, self.high]


# keys a search may not vary: they change the split or what is compared between trials
_FIXED_KEYS = {
    "model": "the model's parameters depend on it; tune one model at a time",
    "seed": "it changes the split, so trials would be compared on different validation sets",
    "data": "it changes the split, so trials would be compared on different validation sets",
    "eval": "it changes how validation is measured, so trials would not compare",
    "train.metric": "it is the tuned metric; set tune.metric instead",
    "train.select_protocol": "it decides the validation protocol of the tuned metric",
}

_METRIC_NAMES = ("hr", "recall", "ndcg", "mrr")


class TuneConfig(_Section):
    """The ``[tune]`` table of ``polyrec tune``: a budget, a validation metric and a space."""

    trials: int | None = Field(20, ge=1, description="number of trials (the study's total)")
    minutes: float | None = Field(
        None, gt=0, description="time budget of one invocation (stops after the running trial)"
    )
    metric: str | None = Field(
        None,
        description="validation metric to maximise (name@k; default train.metric), under "
        "train.select_protocol; the test split is never used for selection",
    )
    seed: int | None = Field(None, description="TPE sampler seed (default: the run's seed)")
    space: dict[str, SpaceParam] = Field(
        default_factory=dict, description="config key -> its range or choices"
    )

    @field_validator("metric")
    @classmethod
    def _validation_metric(cls, v: str | None) -> str | None:
        if v is None:
            return v
        text = v.strip()
        split, dot, rest = text.partition(".")
        if dot:
            if split.lower() == "test":
                raise ValueError(
                    f"{v!r} names the test split: tuning selects on the validation split only "
                    "(the best trial's test metrics are reported once, after selection); write "
                    f"{rest!r}"
                )
            if split.lower() not in ("valid", "validation"):
                raise ValueError(f"{v!r} is not a validation metric (write name@k, e.g. ndcg@10)")
            text = rest
        name, _, k = text.partition("@")
        if name not in _METRIC_NAMES or not k.isdigit() or int(k) < 1:
            raise ValueError(
                f"{v!r} is not a validation metric: write name@k with name in "
                f"{', '.join(_METRIC_NAMES)} (e.g. ndcg@10)"
            )
        return f"{name}@{int(k)}"

    @model_validator(mode="after")
    def _budget(self) -> TuneConfig:
        if self.trials is None and self.minutes is None:
            raise ValueError("give a budget: trials and/or minutes")
        return self


def check_space(tune: TuneConfig, cfg: RunConfig) -> dict[str, SpaceParam]:
    """The search space with every key resolved (``lr`` → ``train.lr``), checked against the
    run config: each key is a real config key that a trial may vary, and each bound or choice
    is a valid value of it. Raises ConfigError naming the key."""
    if not tune.space:
        raise ConfigError(
            "tune.space is empty: give at least one key to search, e.g. "
            '"train.lr" = { low = 1e-4, high = 1e-2, log = true }'
        )
    model_fields = set(type(cfg.params).model_fields)
    out: dict[str, SpaceParam] = {}
    for raw, param in tune.space.items():
        try:
            key = resolve_key(raw, model_fields)
        except ConfigError as e:
            raise ConfigError(f"tune.space: {e}") from None
        section, _, field = key.partition(".")
        why = _FIXED_KEYS.get(key) or _FIXED_KEYS.get(section)
        if why:
            raise ConfigError(f"tune.space key {raw!r} cannot be tuned: {why}")
        if section in SECTIONS:
            cls: type[BaseModel] = SECTIONS[section]
            current = getattr(cfg, section)
        elif section == "params":
            cls, current = type(cfg.params), cfg.params
        else:
            cls, current = RunConfig, None
        if "." in field or field not in cls.model_fields or current is None:
            known = sorted(
                [f"train.{k}" for k in TrainConfig.model_fields if f"train.{k}" not in _FIXED_KEYS]
                + [f"params.{k}" for k in model_fields]
            )
            raise ConfigError(
                f"tune.space key {raw!r} is not a config key of model {cfg.model!r}; "
                f"known keys: {', '.join(known)}"
            )
        if key in out:
            raise ConfigError(f"tune.space names {key!r} twice")
        base = current.model_dump()
        for value in param.values():
            try:
                cls.model_validate({**base, field: value})
            except ValidationError as e:
                first = e.errors()[0]
                raise ConfigError(
                    f"tune.space key {raw!r}: value {value!r} is not valid for {key} "
                    f"({first['msg']})"
                ) from None
        out[key] = param
    return out


SECTIONS: dict[str, type[BaseModel]] = {
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


def parse_value(text: str) -> Any:
    """A TOML value (``3``, ``1e-3``, ``true``, ``[10, 20]``, ``"x"``) or the raw string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _format_validation(err: ValidationError, prefix: str = "") -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"])
    key = f"{prefix}{loc}" if loc else prefix.rstrip(".")
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    elif first["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    extra = f" ({len(err.errors()) - 1} more problems)" if len(err.errors()) > 1 else ""
    return f"config key {key!r}: {msg}{extra}"


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key {dotted!r}: {p!r} is not a section")
    node[parts[-1]] = value


def _has(tree: dict[str, Any], dotted: str) -> bool:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def resolve_key(key: str, model_fields: set[str]) -> str:
    """Map a bare key to its section (``lr`` → ``train.lr``); dotted keys pass through."""
    if "." in key or key in RunConfig.model_fields:
        return key
    homes = [s for s, cls in SECTIONS.items() if key in cls.model_fields]
    if key in model_fields:
        homes.append("params")
    if len(homes) == 1:
        return f"{homes[0]}.{key}"
    if len(homes) > 1:
        raise ConfigError(
            f"config key {key!r} is ambiguous: write one of {', '.join(f'{h}.{key}' for h in homes)}"
        )
    known = sorted(
        [f"{s}.{k}" for s, cls in SECTIONS.items() for k in cls.model_fields]
        + [f"params.{k}" for k in model_fields]
        + [k for k in RunConfig.model_fields if k not in SECTIONS and k != "params"]
    )
    raise ConfigError(f"unknown config key {key!r}; known keys: {', '.join(known)}")


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    **fixed: Any,
) -> RunConfig:
    """Build a RunConfig from an optional TOML file, ``key=value`` overrides and fixed fields.

    ``fixed`` holds values given by dedicated CLI options (``model=``, ``data.path=`` …, written
    with ``__`` for the dot: ``data__path``); they apply after the file, before the overrides.
    The model's own parameters are validated here too, so a wrong key fails before training.
    Settings a kind of model needs (``Model.run_defaults``, e.g. the ComiRec protocol for the
    sequential models) fill the keys that none of the three sources set. A ``[tune]`` table is
    left out (see :func:`load_tune_config`).
    """
    return _load(path, overrides, fixed)[0]


def load_tune_config(
    path: str | os.PathLike[str] | None = None,
    overrides: list[str] | None = None,
    **fixed: Any,
) -> tuple[RunConfig, TuneConfig]:
    """The run config and its ``[tune]`` table (``tune.*`` overrides apply to it), checked: a
    budget, a validation metric and a search space of real, tunable config keys.

    ``train.metric`` of the returned config is ``tune.metric`` (when given), so every trial
    selects its best epoch on the metric the study maximises.
    """
    cfg, raw = _load(path, overrides, fixed)
    if raw is None:
        raise ConfigError(
            "the config has no [tune] table: give tune.trials (or tune.minutes) and a "
            "[tune.space] table of keys to search"
        )
    if not isinstance(raw, dict):
        raise ConfigError(f"config key 'tune' must be a table, got {type(raw).__name__}")
    try:
        tune = TuneConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, "tune.")) from None
    if tune.metric is None:
        tune.metric = cfg.train.metric
    else:
        cfg.train.metric = tune.metric
    tune.space = check_space(tune, cfg)
    return cfg, tune


def _load(
    path: str | os.PathLike[str] | None, overrides: list[str] | None, fixed: dict[str, Any]
) -> tuple[RunConfig, Any]:
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            tree = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {e}") from None
    for k, v in fixed.items():
        if v is not None:
            _set(tree, k.replace("__", "."), v)
    model_name = str(tree.get("model", RunConfig.model_fields["model"].default))
    # a model override must be known before params keys are resolved
    for ov in overrides or []:
        k, _, v = ov.partition("=")
        if k.strip() == "model":
            model_name = str(parse_value(v.strip()))
    model_cls = _model_class(model_name)
    for ov in overrides or []:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} is not key=value")
        k, _, v = ov.partition("=")
        k = k.strip()
        if not k:
            raise ConfigError(f"override {ov!r} has an empty key")
        _set(tree, resolve_key(k, set(model_cls.Config.model_fields)), parse_value(v.strip()))
    for key, value in getattr(model_cls, "run_defaults", {}).items():
        if not _has(tree, key):
            _set(tree, key, value)
    tune = tree.pop("tune", None)
    raw_params = tree.pop("params", {})
    if not isinstance(raw_params, dict):
        raise ConfigError(f"config key 'params' must be a table, got {type(raw_params).__name__}")
    try:
        params = model_cls.Config.model_validate(raw_params)
    except ValidationError as e:
        raise ConfigError(_format_validation(e, "params.")) from None
    tree["model"] = model_cls.name
    tree["params"] = params
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_validation(e)) from None
    if cfg.train.optimizer == "lazy_adam" and model_cls.trainable:
        from polyrec.models.registry import REGISTRY
        from polyrec.optim import check_lazy_adam

        lazy = sorted(n for n, c in REGISTRY.items() if c.supports_lazy_adam)
        check_lazy_adam(model_cls.name, model_cls.supports_lazy_adam, cfg.train.weight_decay, lazy)
    return cfg, tune


def _model_class(name: str) -> Any:
    from polyrec.models.registry import get_model_class

    return get_model_class(name)


def _model_params(name: str, params: Any) -> ModelConfig:
    from polyrec.models.registry import make_config

    return make_config(name, params, prefix="params")


def to_toml(cfg: RunConfig) -> str:
    """The resolved config as TOML (scalars, lists and one level of tables)."""
    data = cfg.model_dump(mode="json")
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for k, v in data.items():
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{k} = {toml_value(v)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{name}]")
        for k, v in table.items():
            if v is None:
                lines.append(f"# {k} = (unset)")
            else:
                lines.append(f"{k} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return (
            "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items() if x is not None) + " }"
        )
    raise TypeError(f"cannot write {type(v).__name__} to TOML")
