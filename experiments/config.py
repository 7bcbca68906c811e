"""Run configuration: frozen dataclasses loaded from YAML, scales, ``--set`` overrides.

A benchmark YAML holds a base run config plus ``scales: {tiny: {...}, small: {...}, full: {...}}``
whose entries are deep-merged over the base. Unknown keys are rejected with their dotted path.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from experiments.errors import ConfigError

SCALES = ("tiny", "small", "full")
#: the YAML configs shipped with the repository (the README installs it editable)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass(frozen=True)
class BenchmarkConfig:
    name: str = "toy"
    variant: str | None = None
    #: constructor options of the benchmark (e.g. ``subset`` for QM9)
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BalancerConfig:
    name: str = "uniform"
    #: constructor keyword arguments of the balancer
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    #: cap on training steps per epoch (None: the whole training set)
    max_steps_per_epoch: int | None = None
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    scheduler: str = "none"  # none | plateau | cosine | step
    scheduler_factor: float = 0.7
    scheduler_patience: int = 5
    scheduler_min_lr: float = 1e-5
    scheduler_step_size: int = 30
    #: max global gradient norm, applied after backward (None: no clipping)
    grad_clip: float | None = None
    #: stop after this many epochs without a better validation objective (None: never)
    early_stopping_patience: int | None = None
    evaluate_test: bool = True
    #: log weights and losses every N training steps
    log_every: int = 10
    #: check losses for NaN/Inf every N steps (one host sync each time)
    check_every: int = 25
    #: measure task-gradient cosine similarity on a fixed probe batch every N steps (0: off)
    cosine_every: int = 0
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = False
    progress: bool = True
    num_threads: int | None = None


@dataclass(frozen=True)
class RunConfig:
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: ``build_model`` options of the benchmark (e.g. ``dropout``)
    model: dict[str, Any] = field(default_factory=dict)
    #: per-balancer hyperparameter defaults on this benchmark, under ``balancer.hparams``
    #: (e.g. ``{famo: {gamma: 0.0}}`` on the toy, as the FAMO reference code runs it)
    method_defaults: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    scale: str | None = None
    #: Δm% reference: auto (literature STL at full scale, else the untrained model), literature,
    #: initial, or the path of an STL reference file/directory written by ``balancebench stl``
    reference: str = "auto"
    #: restrict the validation objective (model selection, early stopping) to these task names
    #: (None: all tasks); single-task reference runs select on their own task
    objective_tasks: list[str] | None = None
    #: parent directory of run directories
    out: str = "runs"
    #: a free-form name used in the run directory
    name: str | None = None


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, path: str) -> Any:
    """Check/convert a YAML value against a type hint (YAML reads 1e-3 as a string)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, path)
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if hint in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if isinstance(value, str):
            try:
                value = float(value) if hint is float else int(value)
            except ValueError:
                raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if hint is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, (int, float)) or (hint is int and not isinstance(value, int)):
            raise ConfigError(f"{path}: expected {hint.__name__}, got {value!r}")
        return hint(value)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def _build(cls: type, data: Any, path: str = "") -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(f"unknown config key {where!r}; valid keys here: {', '.join(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    return cls(**kwargs)


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A new dict: ``override`` merged into ``base`` recursively (mappings merge, others replace)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_set(assignments: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", "balancer.hparams.gamma=0.01"]`` -> nested dict (values parsed as YAML)."""
    result: dict[str, Any] = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r} conflicts with another --set")
        node[parts[-1]] = value
    return result


def load_yaml(path: str | Path) -> dict[str, Any]:
    """``yaml.safe_load`` a file; a missing file or malformed YAML is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"malformed YAML in {path}{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def resolve_scale(raw: dict[str, Any], scale: str | None, source: str = "config") -> dict[str, Any]:
    """Merge the ``scales[scale]`` section over the base and drop ``scales``."""
    raw = dict(raw)
    scales = raw.pop("scales", {}) or {}
    if not isinstance(scales, dict):
        raise ConfigError(f"{source}: 'scales' must be a mapping of {SCALES}")
    bad = [s for s in scales if s not in SCALES]
    if bad:
        raise ConfigError(f"{source}: unknown scale {bad[0]!r} under 'scales'; valid: {', '.join(SCALES)}")
    if scale is None:
        return raw
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; valid: {', '.join(SCALES)}")
    merged = deep_merge(raw, scales.get(scale) or {})
    merged["scale"] = scale
    return merged


def run_config_from_dict(data: dict[str, Any]) -> RunConfig:
    return _build(RunConfig, data)


def load_run_config(
    path: str | Path | None = None,
    scale: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """YAML file (optional) → scale merged → overrides merged → validated RunConfig."""
    raw = load_yaml(path) if path is not None else {}
    raw = resolve_scale(raw, scale, str(path))
    raw = deep_merge(raw, overrides or {})
    return run_config_from_dict(raw)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def replace(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with nested ``overrides`` merged in and re-validated."""
    return run_config_from_dict(deep_merge(to_dict(cfg), overrides))


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)
