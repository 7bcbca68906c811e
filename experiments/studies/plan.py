"""A study config resolved against its benchmark: spaces per method, the first (published-default)
trial of each method, the fairness protocol, run configs and result paths.

A :class:`StudyPlan` is plain data (picklable), so worker processes receive it whole.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from experiments.config import RunConfig, load_run_config, replace, run_config_from_dict, to_dict
from experiments.errors import ConfigError, UserError
from experiments.studies.config import (
    REFERENCES,
    SHARED_PATHS,
    shared_draw_count,
    ParamSpec,
    StudyConfig,
    balancer_hparam_defaults,
    balancer_hparam_names,
    split_methods,
)
from experiments.studies.reference import REFERENCE_LABELS, run_reference
from experiments.studies.storage import default_storage_url

HPARAMS = "balancer.hparams."
#: run-config keys that do not change what a trial computes (left out of the protocol)
_NOT_PROTOCOL = {"out", "name"}
_NOT_PROTOCOL_TRAIN = {"progress", "num_threads", "device", "evaluate_test", "tensorboard"}


@dataclass(frozen=True)
class StudyPlan:
    cfg: StudyConfig
    group: str
    storage_url: str
    out_dir: str
    base: RunConfig
    searched: list[str]
    derived: dict[str, str]
    #: method -> {param name -> ParamSpec} (shared names first, in config order)
    spaces: dict[str, dict[str, ParamSpec]]
    #: param name -> run-config path
    paths: dict[str, str]
    #: method -> balancer hyperparameters held fixed in every trial
    fixed_hparams: dict[str, dict[str, Any]]
    #: method -> parameters of the enqueued first trial (published defaults)
    first_trial: dict[str, dict[str, Any]]
    protocol: dict[str, Any]
    metric_specs: list[dict[str, Any]]
    tasks: list[str]
    dropped: list[str] = field(default_factory=list)
    #: shared-space points enqueued, in order, as trials 1..N of EVERY method (``shared_draws``)
    shared_draws: list[dict[str, Any]] = field(default_factory=list)

    @property
    def methods(self) -> list[str]:
        """Searched methods, then derived ones (in config order)."""
        return self.searched + [m for m in self.cfg.methods if m in self.derived]

    @property
    def objective_metric_specs(self) -> list[dict[str, Any]]:
        """The metrics of the validation objective's tasks (run config ``objective_tasks``; all when
        None): the test Δm% of the reruns is taken over the same metrics."""
        wanted = self.base.objective_tasks
        if wanted is None:
            return self.metric_specs
        index = {self.tasks.index(t) for t in wanted}
        return [s for s in self.metric_specs if s["task"] in index]

    @property
    def protocol_hash(self) -> str:
        return protocol_hash(self.protocol)

    @property
    def epochs(self) -> int:
        return self.base.train.epochs

    def study_name(self, method: str) -> str:
        return f"{self.group}/{method}"

    def rerun_study_name(self, method: str, source_trial: int) -> str:
        return f"{self.group}/{method}/rerun-t{source_trial}"

    def trial_dir(self, method: str, number: int) -> Path:
        return Path(self.out_dir) / method / f"trial_{number}"

    def rerun_dir(self, method: str, source_trial: int, seed: int) -> Path:
        return Path(self.out_dir) / method / f"rerun_t{source_trial}" / f"seed_{seed}"

    def run_config(self, balancer: str, values: dict[str, Any], hparams: dict[str, Any], seed: int,
                   evaluate_test: bool) -> RunConfig:
        """The base run config with searched ``values`` (by parameter name) and the balancer."""
        data = to_dict(self.base)
        hp = dict(hparams)
        for name, value in values.items():
            path = self.paths[name]
            if path.startswith(HPARAMS):
                hp[path[len(HPARAMS):]] = value
            else:
                set_path(data, path, value)
        if "seed" in balancer_hparam_names(balancer) and "seed" not in hp:
            hp["seed"] = seed  # stochastic balancers draw from the run's seed
        data["balancer"] = {"name": balancer, "hparams": hp}
        data["seed"] = seed
        data["train"]["evaluate_test"] = evaluate_test
        data["train"]["progress"] = False
        return run_config_from_dict(data)

    def shared_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """The shared-space part of a trial's parameters (what a derived method inherits)."""
        shared = self.protocol["shared_space"]
        return {k: v for k, v in params.items() if k in shared}


def set_path(data: dict[str, Any], path: str, value: Any) -> None:
    """Set the dotted ``path`` of a nested config dict, creating sections on the way."""
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"path {path!r}: {part!r} is not a section")
    node[parts[-1]] = value


def _get_path(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def protocol_hash(protocol: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(protocol, sort_keys=True, default=str).encode()).hexdigest()[:16]


#: protocol fields named first when several changed (what users change on the command line first)
_FIELD_ORDER = ["n_trials", "methods", "scale", "variant", "benchmark", "reference", "epochs", "rerun_seeds",
                "sampler", "pruner",
                "ema", "shared_space", "method_space", "fixed_hparams", "first_trial", "dropped_parameters"]


def differences(stored: Any, current: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted path, stored value, current value) of every leaf where two JSON-like values differ,
    the fields users set most often first."""
    if not (isinstance(stored, dict) and isinstance(current, dict)):
        return [] if stored == current else [(path, stored, current)]
    found = []
    for key in sorted(set(stored) | set(current), key=str):
        if stored.get(key) != current.get(key):
            found += differences(stored.get(key), current.get(key), f"{path}.{key}" if path else str(key))
    rank = {name: i for i, name in enumerate(_FIELD_ORDER)}
    return sorted(found, key=lambda d: rank.get(d[0].split(".")[0], len(rank))) if not path else found


def group_name(cfg: StudyConfig, bench_name: str, variant: str) -> str:
    if cfg.name:
        if "/" in cfg.name:
            raise ConfigError(f"name: must not contain '/', got {cfg.name!r}")
        return cfg.name
    return f"{bench_name}-{variant}-{cfg.scale or 'base'}"


def make_plan(cfg: StudyConfig) -> StudyPlan:
    """Resolve ``cfg``: load the benchmark run config, build the benchmark once (metrics, tasks,
    model options), check every space, published default and method name."""
    from experiments.benchmarks import create_benchmark

    searched, derived = split_methods(cfg.methods)
    overrides = copy.deepcopy(cfg.overrides)
    if "reference" in overrides:
        raise ConfigError("overrides.reference: the study's Δm% reference is its own key, "
                          f"reference: {' | '.join(REFERENCES)}")
    if cfg.variant is not None:
        overrides.setdefault("benchmark", {})["variant"] = cfg.variant
    base = load_run_config(cfg.benchmark_config, cfg.scale, overrides)
    try:
        bench = create_benchmark(base.benchmark.name, base.benchmark.variant, **base.benchmark.options)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    group = group_name(cfg, bench.name, bench.variant)
    out_dir = Path(cfg.out) / group
    base = replace(base, {"reference": run_reference(cfg, bench, out_dir)})
    unknown = sorted(set(base.objective_tasks or []) - set(bench.task_names))
    if unknown:
        raise ConfigError(f"objective_tasks: unknown task(s) {unknown}; valid: {bench.task_names}")
    model_options = inspect.signature(type(bench).build_model).parameters

    shared, paths, dropped = _shared_space(cfg, model_options)
    base_dict = to_dict(base)
    spaces, fixed, first = _method_spaces(cfg, searched, shared, paths, dropped, base_dict)

    draws = shared_draw_count(cfg) if shared else 0  # nothing shared (every name dropped): nothing to draw
    protocol = {
        "benchmark": bench.name, "variant": bench.variant, "scale": cfg.scale,
        "run_config": _protocol_config(base_dict),
        "shared_space": {name: {**spec.as_dict(), "path": paths[name]} for name, spec in shared.items()},
        "dropped_parameters": dropped,
        "sampler": asdict(cfg.sampler), "pruner": asdict(cfg.pruner), "epochs": base.train.epochs,
        "objective": _objective_text(base, cfg.reference), "direction": "minimize", "reference": cfg.reference,
        # the budget and what the table compares: fixed for the life of the study
        "n_trials": cfg.n_trials, "methods": sorted(set(cfg.methods)), "rerun_seeds": sorted(cfg.rerun_seeds),
        "ema": cfg.ema, "shared_draws": draws,
    }
    storage = cfg.storage or default_storage_url(cfg.out, group)
    specs = [{"name": m.name, "task": m.task, "higher_is_better": m.higher_is_better, "stl": m.stl}
             for m in bench.metrics]
    plan = StudyPlan(cfg, group, storage, str(out_dir), base, searched, derived, spaces, paths, fixed, first,
                     protocol, specs, list(bench.task_names), dropped,
                     draw_shared(shared, draws, cfg.sampler.seed))
    for method in searched:  # every method's first trial must make a valid run config
        plan.run_config(method, first[method], fixed[method], base.seed, False)
    return plan


def draw_shared(shared: dict[str, ParamSpec], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` points of the shared space, drawn once (numpy's generator seeded with ``seed``, the
    parameters in config order): every method's trials 1..n take them, so that no method's
    shared hyperparameters are luckier than another's by the sampler's state."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [{name: spec.draw(rng) for name, spec in shared.items()} for _ in range(n)]


def _shared_space(cfg: StudyConfig, model_options: Any) -> tuple[dict[str, ParamSpec], dict[str, str], list[str]]:
    """The parameters searched for every method, their config paths, and the names dropped
    because this benchmark's model has no such option."""
    paths: dict[str, str] = {}
    shared: dict[str, ParamSpec] = {}
    dropped: list[str] = []
    for name, spec in cfg.shared_space.items():
        path = spec.path or SHARED_PATHS.get(name)
        if path is None:
            raise ConfigError(f"shared_space.{name}.path: required for a parameter other than "
                              f"{', '.join(SHARED_PATHS)} (e.g. train.batch_size)")
        if path.startswith("model.") and path.split(".", 1)[1] not in model_options:
            dropped.append(name)  # "dropout where the model has one": same for every method
            continue
        if path.startswith(HPARAMS):
            raise ConfigError(f"shared_space.{name}.path: balancer hyperparameters belong in method_spaces")
        shared[name], paths[name] = spec, path
    return shared, paths, dropped


def _method_spaces(cfg: StudyConfig, searched: list[str], shared: dict[str, ParamSpec], paths: dict[str, str],
                   dropped: list[str], base_dict: dict[str, Any]
                   ) -> tuple[dict[str, dict[str, ParamSpec]], dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per searched method: its search space (shared + own), its fixed published values and its
    first trial; adds the methods' own parameter paths to ``paths``."""
    from balancers import available_balancers

    spaces: dict[str, dict[str, ParamSpec]] = {}
    fixed: dict[str, dict[str, Any]] = {}
    first: dict[str, dict[str, Any]] = {}
    for section in ("method_spaces", "published_defaults"):  # entries of methods not run now are ignored
        unknown = sorted(m for m in getattr(cfg, section) if m not in searched and not _resolves(m))
        if unknown:
            valid = ", ".join(available_balancers())
            raise ConfigError(f"{section}.{unknown[0]}: not a registered balancer; valid: {valid}")
    for method in searched:
        accepted = balancer_hparam_names(method)
        own = cfg.method_spaces.get(method, {})
        for name, spec in own.items():
            path = spec.path or HPARAMS + name
            if path.startswith(HPARAMS) and path[len(HPARAMS):] not in accepted:
                raise ConfigError(f"method_spaces.{method}.{name}: balancer {method!r} has no such hyperparameter; "
                                  f"accepted: {', '.join(accepted) or 'none'}")
            if paths.get(name, path) != path:
                raise ConfigError(f"method_spaces.{method}.{name}: the name is used with another path elsewhere")
            paths[name] = path
        spaces[method] = {**shared, **own}
        published = cfg.published_defaults.get(method, {})
        fixed[method] = {}
        for name, value in published.items():
            if name in spaces[method] or name in dropped:
                continue
            if name not in accepted:
                raise ConfigError(f"published_defaults.{method}.{name}: neither a searched parameter nor a "
                                  f"hyperparameter of {method!r} (accepted: {', '.join(accepted) or 'none'})")
            fixed[method][name] = value
        first[method] = _first_trial(method, spaces[method], paths, published, base_dict)
    return spaces, fixed, first


def _resolves(method: str) -> bool:
    from balancers import balancer_info

    try:
        balancer_info(method)
    except ValueError:
        return False
    return True


def _objective_text(base: RunConfig, reference: str) -> str:
    """The protocol's objective, naming its Δm% reference (see :data:`REFERENCE_LABELS`)."""
    over = f" over {', '.join(base.objective_tasks)}" if base.objective_tasks is not None else ""
    return f"validation Δm%{over} vs {REFERENCE_LABELS[reference]} (lower is better)"


def _first_trial(method: str, space: dict[str, ParamSpec], paths: dict[str, str], published: dict[str, Any],
                 base: dict[str, Any]) -> dict[str, Any]:
    constructor = balancer_hparam_defaults(method)
    params: dict[str, Any] = {}
    for name, spec in space.items():
        path = paths[name]
        if name in published:
            value, origin = published[name], f"published_defaults.{method}.{name}"
        elif path.startswith(HPARAMS) and path[len(HPARAMS):] in constructor:
            value, origin = constructor[path[len(HPARAMS):]], f"the default of {method}({name}=...)"
            if not spec.contains(value):
                continue  # no usable default: the sampler chooses
        else:
            value, origin = _get_path(base, path), f"the benchmark config's {path}"
        if not spec.contains(value):
            raise ConfigError(f"{origin} = {value!r} is outside the search space of {name} ({spec.as_dict()}); "
                              "widen the space or set published_defaults")
        params[name] = value
    return params


def _protocol_config(base: dict[str, Any]) -> dict[str, Any]:
    # the reference is the protocol's own field (its kind): an STL file's path is where this
    # machine keeps it, not part of what a trial computes
    data = {k: v for k, v in copy.deepcopy(base).items() if k not in _NOT_PROTOCOL | {"reference"}}
    data["train"] = {k: v for k, v in data["train"].items() if k not in _NOT_PROTOCOL_TRAIN}
    data.pop("balancer", None)  # the method is what differs between studies
    return data
