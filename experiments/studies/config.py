"""Study configuration: the YAML schema of ``configs/studies/*.yaml`` as frozen dataclasses.

A study names a benchmark run config (``benchmark_config`` + ``variant`` + ``scale`` +
``overrides``), the methods, the shared search space (same for every method), each method's own
space, the published defaults (enqueued as every method's first trial), the per-method trial
budget, the shared draws (points of the shared space drawn once and enqueued for every method),
the sampler, the pruner, the rerun seeds and the Δm% reference. Unknown keys are rejected with their dotted
path, as in :mod:`experiments.config`.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.config import CONFIG_DIR, SCALES, _build, deep_merge, load_yaml
from experiments.errors import ConfigError, UserError

DEFAULT_METHODS = ["uniform", "si", "rlw", "famo", "marigold", "fixed_from_famo"]
#: what every method's Δm% is measured against (see :mod:`experiments.studies.reference`): ``stl``
#: (the default) single-task runs of the same setting and scale, trained once by the study;
#: ``untrained`` the untrained model's metrics; ``literature`` the papers' full-scale STL values
REFERENCES = ("stl", "untrained", "literature")
#: ``fixed_from_<method>``: fixed weights extracted by EMA from ``<method>``'s best-config reruns
FIXED_FROM = "fixed_from_"
#: where the well-known shared parameters live in a run config
SHARED_PATHS = {"lr": "train.lr", "weight_decay": "train.weight_decay", "dropout": "model.dropout"}


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: ``choices`` (categorical) or ``low``/``high`` (float or int).

    ``path`` is the dotted run-config path it sets (default: ``train.lr``, ``train.weight_decay``,
    ``model.dropout`` for the shared names, ``balancer.hparams.<name>`` in a method space).
    """

    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None
    type: str | None = None  # float | int | categorical (inferred when omitted)
    path: str | None = None

    @property
    def kind(self) -> str:
        return self.type or ("categorical" if self.choices is not None else "float")

    def validate(self, where: str) -> None:
        if self.kind not in ("float", "int", "categorical"):
            raise ConfigError(f"{where}.type: expected float, int or categorical, got {self.type!r}")
        if self.kind == "categorical":
            if not self.choices:
                raise ConfigError(f"{where}.choices: a categorical parameter needs a non-empty list")
            if self.low is not None or self.high is not None:
                raise ConfigError(f"{where}: give either choices or low/high, not both")
            return
        if self.low is None or self.high is None:
            raise ConfigError(f"{where}: a {self.kind} parameter needs low and high (or choices)")
        if not self.low < self.high:
            raise ConfigError(f"{where}: low must be < high, got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ConfigError(f"{where}: a log-uniform range needs low > 0, got low={self.low}")

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            return value in (self.choices or [])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        return self.low <= value <= self.high  # type: ignore[operator]

    def suggest(self, trial: Any, name: str) -> Any:
        if self.kind == "categorical":
            return trial.suggest_categorical(name, self.choices)
        if self.kind == "int":
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_float(name, self.low, self.high, log=self.log, step=self.step)

    def draw(self, rng: Any) -> Any:
        """One value drawn from ``rng`` (a ``numpy.random.Generator``) with the distribution
        ``suggest`` searches: uniform over choices, uniform or log-uniform over [low, high] (on the
        step grid when there is one). Plain Python values, inside the space."""
        if self.kind == "categorical":
            return (self.choices or [])[int(rng.integers(len(self.choices or [])))]
        low, high = float(self.low), float(self.high)  # type: ignore[arg-type]
        if self.step:
            value = low + int(rng.integers(int(round((high - low) / self.step)) + 1)) * float(self.step)
        elif self.log:
            value = math.exp(rng.uniform(math.log(low), math.log(high)))
        else:
            value = float(rng.uniform(low, high))
        if self.kind == "int":
            return int(min(max(round(value), int(low)), int(high)))
        return min(max(value, low), high)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None and v is not False}


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "tpe"  # tpe | random
    seed: int = 0
    #: TPE's random start-up trials (None: Optuna's default, 10)
    n_startup_trials: int | None = None


@dataclass(frozen=True)
class PrunerConfig:
    name: str = "median"  # median | hyperband | none
    #: median: trials that must finish before any is pruned
    n_startup_trials: int = 2
    #: median: epochs a trial always runs before it may be pruned
    n_warmup_steps: int = 1
    #: hyperband: the smallest number of epochs a trial gets
    min_resource: int = 1
    reduction_factor: int = 3


@dataclass(frozen=True)
class StudyConfig:
    #: a benchmark run config (``configs/<benchmark>.yaml``)
    benchmark_config: str = ""
    variant: str | None = None
    scale: str | None = "small"
    #: the study group name (default ``<benchmark>-<variant>-<scale>``); one Optuna study per method
    #: is named ``<name>/<method>``
    name: str | None = None
    #: deep-merged over the benchmark run config after the scale (e.g. fewer epochs for a demo)
    overrides: dict[str, Any] = field(default_factory=dict)
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    #: name -> ParamSpec; the same space for every method
    shared_space: dict[str, Any] = field(default_factory=dict)
    #: method -> {name -> ParamSpec}
    method_spaces: dict[str, Any] = field(default_factory=dict)
    #: method -> {name -> value}: enqueued as the method's first trial; values of names outside
    #: the search space are held fixed for every trial of that method
    published_defaults: dict[str, Any] = field(default_factory=dict)
    #: trials per method, counted across all workers (complete + pruned + failed)
    n_trials: int = 20
    #: trials 1..N of every method get the SAME shared-space values: N points drawn once from the
    #: shared space (numpy generator seeded with ``sampler.seed``) and enqueued for every method
    #: after its published default; the method's own parameters are still sampled. None: every
    #: trial for the random sampler, TPE's start-up trials (n_startup_trials − 1, Optuna's 10 when
    #: unset) for tpe; at most n_trials − 1 (see ``shared_draw_count``)
    shared_draws: int | None = None
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    rerun_seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    #: EMA momentum of the fixed-weight extraction (seed 003 §3.5)
    ema: float = 0.9
    #: the Δm% reference of the objective and of the tables: one of :data:`REFERENCES`
    reference: str = "stl"
    #: with ``reference: stl``: an existing single-task reference file (``balancebench stl``'s
    #: ``stl_reference.json`` or its folder) used instead of training the study's own
    reference_file: str | None = None
    #: parent directory of study results (run directories, default storage, tables)
    out: str = "results"
    #: Optuna storage URL or journal file path (None: ``<out>/<name>/study.journal``)
    storage: str | None = None
    #: worker processes, each running trials on the same storage
    workers: int = 1


def _number(value: Any) -> Any:
    """YAML reads ``1e-3`` as a string; numbers written that way become floats."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _param_spec(data: Any, where: str) -> ParamSpec:
    if isinstance(data, list):
        data = {"choices": data}
    spec = _build(ParamSpec, data, where)
    if spec.choices is not None:
        spec = dataclasses.replace(spec, choices=[_number(c) for c in spec.choices])
    spec.validate(where)
    return spec


def _space(data: Any, where: str) -> dict[str, ParamSpec]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of parameter names, got {data!r}")
    return {str(k): _param_spec(v, f"{where}.{k}") for k, v in data.items()}


def _check(cfg: StudyConfig) -> StudyConfig:
    if not cfg.benchmark_config:
        raise ConfigError("benchmark_config: required (a benchmark run config, e.g. configs/multimnist.yaml)")
    if cfg.scale is not None and cfg.scale not in SCALES:
        raise ConfigError(f"scale: unknown scale {cfg.scale!r}; valid: {', '.join(SCALES)}")
    if cfg.n_trials < 1:
        raise ConfigError(f"n_trials: must be >= 1, got {cfg.n_trials}")
    if cfg.workers < 1:
        raise ConfigError(f"workers: must be >= 1, got {cfg.workers}")
    if cfg.shared_draws is not None and cfg.shared_draws < 0:
        raise ConfigError(f"shared_draws: must be >= 0 (or null for the default), got {cfg.shared_draws}")
    if not cfg.rerun_seeds or len(set(cfg.rerun_seeds)) != len(cfg.rerun_seeds) or min(cfg.rerun_seeds) < 0:
        raise ConfigError(f"rerun_seeds: need distinct non-negative seeds, got {cfg.rerun_seeds}")
    if cfg.reference not in REFERENCES:
        raise ConfigError(f"reference: expected {', '.join(REFERENCES)}, got {cfg.reference!r}")
    if cfg.reference_file is not None and cfg.reference != "stl":
        raise ConfigError(f"reference_file: only with reference: stl, got reference: {cfg.reference}")
    if not 0.0 <= cfg.ema < 1.0:
        raise ConfigError(f"ema: momentum must be in [0, 1), got {cfg.ema}")
    if cfg.sampler.name not in ("tpe", "random"):
        raise ConfigError(f"sampler.name: expected tpe or random, got {cfg.sampler.name!r}")
    if cfg.pruner.name not in ("median", "hyperband", "none"):
        raise ConfigError(f"pruner.name: expected median, hyperband or none, got {cfg.pruner.name!r}")
    if not cfg.methods:
        raise ConfigError("methods: need at least one method")
    shared = _space(cfg.shared_space, "shared_space")
    if not isinstance(cfg.method_spaces, dict):
        raise ConfigError("method_spaces: expected a mapping method -> space")
    spaces = {str(m): _space(s or {}, f"method_spaces.{m}") for m, s in cfg.method_spaces.items()}
    for method, space in spaces.items():
        clash = sorted(set(space) & set(shared))
        if clash:
            raise ConfigError(f"method_spaces.{method}.{clash[0]}: already in shared_space (names must differ)")
    if not isinstance(cfg.published_defaults, dict):
        raise ConfigError("published_defaults: expected a mapping method -> {name: value}")
    defaults: dict[str, dict[str, Any]] = {}
    for method, values in cfg.published_defaults.items():
        if not isinstance(values, dict):
            raise ConfigError(f"published_defaults.{method}: expected a mapping, got {values!r}")
        defaults[str(method)] = {str(k): _number(v) for k, v in values.items()}
    return dataclasses.replace(cfg, shared_space=shared, method_spaces=spaces, published_defaults=defaults,
                               methods=[str(m) for m in cfg.methods])


#: TPE's random start-up trials when ``sampler.n_startup_trials`` is unset (Optuna's default)
TPE_STARTUP_DEFAULT = 10


def shared_draw_count(cfg: StudyConfig) -> int:
    """How many trials after the published default get the shared draws (see ``shared_draws``)."""
    room = cfg.n_trials - 1
    if cfg.shared_draws is not None:
        return min(cfg.shared_draws, room)
    if cfg.sampler.name == "random":
        return room
    startup = cfg.sampler.n_startup_trials if cfg.sampler.n_startup_trials is not None else TPE_STARTUP_DEFAULT
    return max(0, min(room, startup - 1))  # the published default is TPE's first start-up trial


def study_config_from_dict(data: dict[str, Any]) -> StudyConfig:
    return _check(_build(StudyConfig, data))


def load_study_config(path: str | Path, overrides: dict[str, Any] | None = None) -> StudyConfig:
    """YAML file → CLI overrides merged (``scale``, ``n_trials``, ``methods``, ...) → validated.

    A relative ``benchmark_config`` is looked up from the working directory, then the repository
    root, then the study file's directory.
    """
    raw = deep_merge(load_yaml(path), overrides or {})
    bench = raw.get("benchmark_config")
    if isinstance(bench, str) and bench:
        raw["benchmark_config"] = str(resolve_config_path(bench, Path(path).parent))
    return study_config_from_dict(raw)


def resolve_config_path(name: str, relative_to: Path | None = None) -> Path:
    candidates = [Path(name), CONFIG_DIR.parent / name]
    if relative_to is not None:
        candidates.append(relative_to / name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"benchmark_config: file not found: {name}")


def split_methods(methods: list[str]) -> tuple[list[str], dict[str, str]]:
    """(methods searched with Optuna, {fixed_from_X: X}); ``X`` is added when it is missing.
    A method is a registered balancer, an installed plug-in's name or a plug-in's dotted path."""
    searched: list[str] = []
    derived: dict[str, str] = {}
    for method in methods:
        if method.startswith(FIXED_FROM):
            source = method[len(FIXED_FROM):]
            _check_method(source, f"unknown method {method!r}: {source!r} is not a balancer")
            derived[method] = source
        else:
            _check_method(method, f"unknown method {method!r}")
            if method not in searched:
                searched.append(method)
    for source in derived.values():
        if source not in searched:
            searched.append(source)
    return searched, derived


def _check_method(name: str, unknown: str) -> None:
    from balancers import PluginError, available_balancers, balancer_info

    try:
        balancer_info(name)
    except PluginError as exc:
        raise UserError(str(exc)) from exc
    except ValueError:
        raise UserError(f"{unknown}; valid: {', '.join(available_balancers())}, a plug-in's dotted path "
                        "or fixed_from_<balancer>") from None


def balancer_hparam_names(method: str) -> list[str]:
    from balancers import balancer_info

    params = inspect.signature(balancer_info(method).cls.__init__).parameters
    return [p for p in params if p not in ("self", "n_tasks")]


def balancer_hparam_defaults(method: str) -> dict[str, Any]:
    from balancers import balancer_info

    params = inspect.signature(balancer_info(method).cls.__init__).parameters
    return {n: p.default for n, p in params.items()
            if n not in ("self", "n_tasks") and p.default is not inspect.Parameter.empty}
