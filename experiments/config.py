"""Run configuration: frozen dataclasses loaded from YAML, scales, ``--set`` overrides.

A benchmark YAML holds a base run config plus ``scales: {tiny: {...}, small: {...}, full: {...}}``
whose entries are deep-merged over the base. The dataclasses below are the schema: each field's
type hint carries its range or choices (:mod:`experiments.schema`), checked when a config is
loaded; unknown keys and bad values are one-line errors naming their dotted path.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml

from experiments.errors import ConfigError, UserError
from experiments.schema import (Matches, NonEmpty, NonNegativeInt, OneOf, PositiveInt, Range, Runtime, build, fields,
                                runtime_fields)

SCALES = ("tiny", "small", "full")
#: the YAML configs shipped with the repository (the README installs it editable)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


Name = Annotated[str, NonEmpty()]


@dataclass(frozen=True)
class Resolves:
    """A benchmark or balancer name that resolves: built-in, an installed entry point's name or a
    plug-in's dotted path ``package.module:ClassName`` (loaded here, so that a broken plug-in is a
    one-line error when the config is read, naming the config path). Built-in benchmarks are
    checked by name only (importing QM9 pulls in rdkit)."""

    kind: str  # "benchmark" | "balancer"

    def check(self, value: Any, path: str) -> None:
        try:
            if self.kind == "balancer":
                from balancers import balancer_info

                balancer_info(value)
            else:
                from experiments.benchmarks import benchmark_class, is_known

                if not is_known(value):
                    benchmark_class(value)
        except (UserError, ValueError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc


@dataclass(frozen=True)
class BenchmarkConfig:
    #: a benchmark (``balancebench list``): built-in, an entry point's name, or ``package.module:Class``
    name: Annotated[str, NonEmpty(), Resolves("benchmark")] = "toy"
    variant: Name | None = None
    #: constructor options of the benchmark (e.g. ``subset`` for QM9), checked against its signature
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BalancerConfig:
    #: a balancer (``balancebench list``): built-in, an entry point's name, or ``package.module:Class``
    name: Annotated[str, NonEmpty(), Resolves("balancer")] = "uniform"
    #: constructor keyword arguments of the balancer, checked against its signature
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainConfig:
    epochs: PositiveInt = 10
    #: at most 2**20: a data loader holds batch_size references per batch
    batch_size: Annotated[int, Range(ge=1, le=2**20)] = 64
    #: cap on training steps per epoch (None: the whole training set)
    max_steps_per_epoch: PositiveInt | None = None
    optimizer: Annotated[str, OneOf(("adam", "adamw", "sgd"))] = "adam"
    lr: Annotated[float, Range(gt=0)] = 1e-3
    weight_decay: Annotated[float, Range(ge=0)] = 0.0
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9  # sgd only
    scheduler: Annotated[str, OneOf(("none", "plateau", "cosine", "step"))] = "none"
    #: the lr is multiplied by this on a plateau / every ``scheduler_step_size`` epochs
    scheduler_factor: Annotated[float, Range(gt=0, lt=1)] = 0.7
    scheduler_patience: NonNegativeInt = 5
    scheduler_min_lr: Annotated[float, Range(ge=0)] = 1e-5
    scheduler_step_size: PositiveInt = 30
    #: max global gradient norm, applied after backward (None: no clipping)
    grad_clip: Annotated[float, Range(gt=0)] | None = None
    #: stop after this many epochs without a better validation objective (None: never)
    early_stopping_patience: PositiveInt | None = None
    evaluate_test: bool = True
    #: log weights and losses every N training steps
    log_every: PositiveInt = 10
    #: check losses for NaN/Inf every N steps (one host sync each time)
    check_every: PositiveInt = 25
    #: measure task-gradient cosine similarity on a fixed probe batch every N steps (0: off)
    cosine_every: NonNegativeInt = 0
    device: Annotated[str, Matches(r"auto|cpu|cuda(:\d+)?", "auto, cpu or cuda[:N]"), Runtime()] = "auto"
    #: mixed precision of the model's forward: fp32, bf16 (autocast) or fp16 (autocast + gradient
    #: scaler); the balancers compute in fp32 either way (experiments/training/precision.py)
    precision: Annotated[str, OneOf(("fp32", "bf16", "fp16"))] = "fp32"
    #: legacy: bf16 autocast on CUDA only (ignored on CPU); prefer ``precision: bf16``
    bf16: bool = False
    progress: Annotated[bool, Runtime()] = True
    #: also write TensorBoard event files into the run directory (losses, weights, metrics, cosine
    #: probe), rank 0 only, from the rows of the CSV files (needs ``balancebench[tensorboard]``)
    tensorboard: Annotated[bool, Runtime()] = False
    num_threads: Annotated[int, Range(ge=1, le=4096), Runtime()] | None = None


@dataclass(frozen=True)
class RunConfig:
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    balancer: BalancerConfig = field(default_factory=BalancerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    #: ``build_model`` options of the benchmark (e.g. ``dropout``), checked against its signature
    model: dict[str, Any] = field(default_factory=dict)
    #: per-balancer hyperparameter defaults on this benchmark, under ``balancer.hparams``
    #: (e.g. ``{famo: {gamma: 0.0}}`` on the toy, as the FAMO reference code runs it)
    method_defaults: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: below 2**32: numpy's limit, and the per-epoch loader seeds derived from it stay in range
    seed: Annotated[int, Range(ge=0, le=2**32 - 1)] = 0
    scale: Annotated[str, OneOf(SCALES)] | None = None
    #: Δm% reference: auto (literature STL at full scale, else the untrained model), literature,
    #: initial, or the path of an STL reference file/directory written by ``balancebench stl``
    reference: Name = "auto"
    #: restrict the validation objective (model selection, early stopping) to these task names
    #: (None: all tasks); single-task reference runs select on their own task
    objective_tasks: Annotated[list[Name], NonEmpty()] | None = None
    #: parent directory of run directories
    out: Annotated[str, NonEmpty(), Runtime()] = "runs"
    #: a free-form name used in the run directory
    name: Annotated[str, NonEmpty(), Runtime()] | None = None


_build = build  # the schema's dataclass loader (study configs use it too)


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
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; a config file (YAML) is needed")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path} is not a text (UTF-8) file: {exc.reason} at byte {exc.start}") from None
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
    """A validated RunConfig from a (YAML) mapping."""
    return build(RunConfig, data)


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


def config_diff(old: RunConfig, new: RunConfig, ignore_runtime: bool = True) -> list[str]:
    """``["train.lr: 0.001 -> 0.01", ...]``: the fields where ``new`` differs from ``old`` (free
    dicts compared key by key); fields marked Runtime are left out unless ``ignore_runtime`` is False."""
    skip = runtime_fields(RunConfig) if ignore_runtime else set()
    before, after = _flatten(to_dict(old)), _flatten(to_dict(new))
    return [f"{path}: {_show(before, path)} -> {_show(after, path)}"
            for path in sorted(set(before) | set(after), key=_schema_order)
            if path not in skip and before.get(path, _MISSING) != after.get(path, _MISSING)]


_MISSING = object()


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):  # an empty mapping sets nothing
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _show(flat: dict[str, Any], path: str) -> str:
    return "(unset)" if path not in flat else repr(flat[path])


def _schema_order(path: str) -> tuple[int, str]:
    order = [p for p, _ in fields(RunConfig)]
    owner = next((i for i, p in enumerate(order) if path == p or path.startswith(p + ".")), len(order))
    return owner, path


def replace(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """A copy of ``cfg`` with nested ``overrides`` merged in and re-validated."""
    return run_config_from_dict(deep_merge(to_dict(cfg), overrides))


def dump_yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False)
