"""The Δm% reference of a study: single-task runs of the same setting (default), trained once.

``reference: stl`` (the default at every scale) trains one single-task run per task
(:func:`experiments.training.stl.train_stl_references`: the study's base run config with fixed
one-hot weights, each run selected on its own task's validation metrics) at the search seed
(the base config's, 0 by default) with the base config's untuned hyperparameters, before any
trial. They are trained once per study and kept in two places:

* ``<out>/<study>/stl/`` — the run directories and ``stl_reference.json``, the file every trial's
  run config names as its ``reference`` (validation metrics for the objective, test metrics for
  the reruns' test Δm%); an interrupted STL run resumes from its checkpoint;
* the storage — a study ``<study>/stl-reference`` (user attrs ``kind: stl_reference``) holding the
  same values and their cost. Every invocation on the storage (another process, another machine)
  uses the stored values, so all trials of a study share one reference; the local file is written
  from them where it is missing.

Training happens under the storage's budget lock (:mod:`experiments.studies.storage`), checked
again once the lock is held: concurrent invocations wait for the one that trains and never train
them twice; the trials cannot start before the reference exists anyway.

``untrained`` (the untrained model's metrics, as the trainer's ``initial``) and ``literature``
(the papers' full-scale STL values, where a benchmark has them) are explicit choices.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.storages import BaseStorage

from experiments.errors import ConfigError
from experiments.training import rundir
from experiments.training.evaluation import REFERENCE_FILE, literature_reference

if TYPE_CHECKING:
    from experiments.benchmarks.base import Benchmark
    from experiments.studies.config import StudyConfig
    from experiments.studies.plan import StudyPlan
    from experiments.studies.storage import BudgetLock

#: how tables and the objective name each reference ("Δm% vs <label>")
REFERENCE_LABELS = {"stl": "STL", "untrained": "untrained model", "literature": "literature STL"}
#: the storage record's study name is ``<group>/<STL_STUDY>``
STL_STUDY = "stl-reference"
STL_KIND = "stl_reference"
#: the run-config ``reference`` of each study reference (``stl`` is the file's path)
_RUN_REFERENCE = {"untrained": "initial", "literature": "literature"}


def run_reference(cfg: StudyConfig, bench: Benchmark, out_dir: Path) -> str:
    """The run configs' ``reference`` for the study's choice; a reference the benchmark cannot
    give is a one-line ConfigError."""
    if cfg.reference == "literature":
        if literature_reference(bench.metrics) is None:
            raise ConfigError(f"reference: literature: benchmark {bench.name!r} (variant {bench.variant}) has no "
                              "literature STL values; use reference: stl (the default) or untrained")
        if cfg.scale not in (None, "full") and not bench.reference_at_any_scale:
            raise ConfigError(f"reference: literature: the papers' STL values were measured at full scale, not at "
                              f"scale {cfg.scale!r}; use reference: stl (the default) or untrained")
    if cfg.reference != "stl":
        return _RUN_REFERENCE[cfg.reference]
    unselectable = [t for i, t in enumerate(bench.task_names) if not any(m.task == i for m in bench.metrics)]
    if unselectable:
        raise ConfigError(f"reference: stl: benchmark {bench.name!r} has no metric for task(s) "
                          f"{', '.join(unselectable)}, so no single-task run can be selected on its own task; "
                          "use reference: untrained")
    if cfg.reference_file is not None:  # given: used as it is, never trained here
        given = Path(cfg.reference_file)
        given = given / REFERENCE_FILE if given.is_dir() else given
        if not given.is_file():
            raise ConfigError(f"reference_file: no single-task reference file at {cfg.reference_file}")
        return str(given.resolve())
    return str((Path(out_dir) / "stl" / REFERENCE_FILE).resolve())  # absolute: any working directory


def stl_record(storage: BaseStorage, group: str) -> dict[str, Any] | None:
    """The study's stored STL reference (values, runs and cost), or None when not trained yet."""
    for study in storage.get_all_studies():
        if study.study_name == f"{group}/{STL_STUDY}" and study.user_attrs.get("kind") == STL_KIND:
            return study.user_attrs.get("reference")
    return None


def ensure_stl_reference(plan: StudyPlan, storage: BaseStorage, lock: BudgetLock,
                         say: Callable[[str], None] = lambda msg: None) -> dict[str, Any] | None:
    """The study's STL reference record (None unless ``reference: stl``): read from the storage,
    else trained under the lock and stored; the local file the trials read is written from it."""
    if plan.cfg.reference != "stl" or plan.cfg.reference_file is not None:
        return None  # a given reference file is read by the trials as it is
    record = stl_record(storage, plan.group)
    if record is None:
        with lock:
            record = stl_record(storage, plan.group)  # another invocation may have trained them meanwhile
            if record is None:
                record = _train_and_store(plan, storage, say)
    path = Path(plan.base.reference)
    if _read(path) != record:
        rundir.write_json(path, record)
    return record


def stl_run_config(plan: StudyPlan) -> Any:
    """The single-task runs' config: the study's base config at the search seed, test evaluated."""
    from experiments.config import replace

    return replace(plan.base, {"train": {"evaluate_test": True, "progress": False}, "reference": "initial"})


def _train_and_store(plan: StudyPlan, storage: BaseStorage, say: Callable[[str], None]) -> dict[str, Any]:
    from experiments.training.stl import train_stl_references

    folder = Path(plan.base.reference).parent
    say(f"[stl] single-task references ({len(plan.tasks)} runs, seed {plan.base.seed}) -> {folder}")
    record = json.loads(train_stl_references(stl_run_config(plan), folder).read_text())
    study = optuna.create_study(study_name=f"{plan.group}/{STL_STUDY}", storage=storage, direction="minimize",
                                load_if_exists=True)
    for key, value in {"kind": STL_KIND, "group": plan.group, "protocol_hash": plan.protocol_hash,
                       "reference": record}.items():
        study.set_user_attr(key, value)
    say("[stl] " + ", ".join(f"{k} {v:.4g}" for k, v in record["metrics"].items()) + " (test)")
    return record


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
