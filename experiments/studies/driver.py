"""Fair Optuna studies of multi-task balancers: ``run_study(cfg) -> StudyOutcome``.

The fairness protocol, enforced here and in :mod:`experiments.studies.worker`:

* one Optuna study per method, ``<group>/<method>`` with ``<group> = <benchmark>-<variant>-<scale>``,
  all in ONE storage; every study records the same ``protocol`` user attribute (run config,
  shared space, sampler class and seed, pruner, epochs, objective, budget, methods, rerun seeds,
  EMA) and its own space; reopening a study with any of them changed is a one-line error naming
  the field, its stored and its new value;
* the same trial budget per method, counted across all workers and machines (complete + pruned +
  failed trials; see :mod:`experiments.studies.storage` for the exact lock-based count);
* each method's published default configuration is enqueued as its trial 0, and the same
  ``shared_draws`` points of the shared space (drawn once from the sampler seed) as its trials
  1..N — the method's own parameters sampled — so the first N + 1 trials of every method try the
  same lr / weight decay / dropout values (``StudyConfig.shared_draws``);
* objective: the trainer's validation Δm% (lower is better), reported per epoch to the pruner,
  against single-task runs of the same setting trained once before any trial
  (:mod:`experiments.studies.reference`; ``reference: untrained | literature`` on request);
* afterwards each method's best configuration within the budget is re-trained on the rerun seeds,
  and test metrics are reported as mean ± standard error; uniform loss gets exactly this;
* ``fixed_from_X`` takes no search budget: it trains ``fixed`` with weights extracted by EMA
  (:mod:`experiments.studies.extract`) from X's reruns, with X's best shared hyperparameters, on the same
  seeds (seed 003 §3.5 did the same).

Run the same call again after an interruption: finished trials and reruns are kept, killed or
interrupted trials are re-queued with their parameters, and the budget is completed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from experiments.errors import UserError, mask_url, redact
from experiments.training.progress import progress_bar
from experiments.studies.config import StudyConfig
from experiments.studies.plan import StudyPlan, differences, make_plan
from experiments.studies.reference import ensure_stl_reference
from experiments.studies.results import results_table, write_results
from experiments.studies.storage import BudgetLock, budget_lock, counted_trials, open_storage, quiet_optuna
from experiments.studies.worker import Worker, print_line


@dataclass
class StudyOutcome:
    group: str
    #: the storage, password masked
    storage: str
    out_dir: Path
    results: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0
    #: the real storage URL (may hold a password: never printed; for the report hook)
    storage_url: str = field(default="", repr=False)

    @property
    def budget(self) -> pd.DataFrame:
        from experiments.studies.results import budget_table

        return budget_table(self.results)


def run_study(cfg: StudyConfig, *, progress: bool = True, verbose: bool | None = None) -> StudyOutcome:
    """Search, rerun and tabulate; ``cfg.workers`` processes share the storage (1: in-process).

    Worker processes are started with ``spawn``: a script that calls this with ``workers > 1``
    needs the usual ``if __name__ == "__main__":`` guard.
    """
    started = time.perf_counter()
    verbose = progress if verbose is None else verbose
    plan = make_plan(cfg)
    storage = open_storage(plan.storage_url, writer=True)
    lock = budget_lock(plan.storage_url, storage)
    with quiet_optuna():
        setup_studies(plan, storage, lock)
        # before any trial: every trial's objective is measured against it
        ensure_stl_reference(plan, storage, lock, print_line if verbose else lambda msg: None)
        monitor = StudyProgress(plan, storage, enabled=progress)
        try:
            if cfg.workers > 1:
                _run_processes(plan, cfg.workers, verbose)
            # in-process: the whole study; after worker processes: a check that normally finds
            # nothing left, and otherwise finishes what a killed worker left (its trial re-queued)
            Worker(plan, 0, storage, lock, print_line if verbose else None).run()
        finally:
            monitor.close()
    results = results_table(storage, plan.group)
    results.attrs["storage"] = mask_url(plan.storage_url)
    files = write_results(results, plan.out_dir)
    return StudyOutcome(plan.group, mask_url(plan.storage_url), Path(plan.out_dir), results, files,
                        time.perf_counter() - started, plan.storage_url)


def run_search(cfg: StudyConfig, *, verbose: bool = False) -> tuple[StudyPlan, pd.DataFrame]:
    """Only the search part of a study, in this process (no reruns, no derived methods): the plan
    and the results table, whose ``best_params`` is each method's best configuration within the
    budget. For callers that re-train the best configurations on their own seeds
    (``balancebench claims``). Resumable like ``run_study``: a finished search is only read."""
    plan = make_plan(cfg)
    if plan.derived:
        raise UserError(f"a search-only study has no derived methods, got {', '.join(plan.derived)}")
    storage = open_storage(plan.storage_url, writer=True)
    lock = budget_lock(plan.storage_url, storage)
    with quiet_optuna():
        setup_studies(plan, storage, lock)
        ensure_stl_reference(plan, storage, lock, print_line if verbose else lambda msg: None)
        Worker(plan, 0, storage, lock, print_line if verbose else None).search()
    return plan, results_table(storage, plan.group)


# ---------------------------------------------------------------------------------- setup
def setup_studies(plan: StudyPlan, storage: BaseStorage, lock: BudgetLock) -> None:
    """Create (or check) one study per searched method with the shared protocol; enqueue the
    published default as trial 0 of a new study. Reopening a study with any protocol field changed
    (budget, spaces, sampler, pruner, epochs, scale, methods, rerun seeds, run config) is refused,
    before anything is written."""
    protocol = json.loads(json.dumps(plan.protocol))
    label = mask_url(plan.storage_url)
    with lock:
        existing = {s.study_name: s for s in storage.get_all_studies()}
        for method in plan.searched:  # check every existing study first: a refusal writes nothing
            name = plan.study_name(method)
            if name not in existing:
                continue
            attrs = existing[name].user_attrs
            if attrs.get("kind") == "search":
                own = _method_attrs(plan, method)
                _check_protocol(name, label, {**attrs.get("protocol", {}), **{k: attrs.get(k) for k in own}},
                                {**protocol, **own})
            elif storage.get_all_trials(existing[name]._study_id, deepcopy=False):
                raise UserError(f"study {name!r} in storage {label} was not created by balancebench")
        for method in plan.searched:
            name = plan.study_name(method)
            study = optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
            if study.user_attrs.get("kind") != "search":
                values = {"kind": "search", "group": plan.group, "method": method, "protocol": protocol,
                          "protocol_hash": plan.protocol_hash, "metric_specs": plan.metric_specs,
                          "tasks": plan.tasks, "n_trials": plan.cfg.n_trials, **_method_attrs(plan, method)}
                for key, value in values.items():
                    study.set_user_attr(key, value)
            if not study.get_trials(deepcopy=False):
                study.enqueue_trial(plan.first_trial[method], user_attrs={"published_default": True})
                for index, point in enumerate(plan.shared_draws):
                    study.enqueue_trial(point, user_attrs={"shared_draw": index})


def _method_attrs(plan: StudyPlan, method: str) -> dict[str, Any]:
    """The part of the protocol that is the method's own (as stored: plain JSON)."""
    return json.loads(json.dumps({
        "method_space": {k: v.as_dict() for k, v in plan.spaces[method].items()},
        "fixed_hparams": plan.fixed_hparams[method], "first_trial": plan.first_trial[method]}))


def _check_protocol(name: str, label: str, stored: dict[str, Any], current: dict[str, Any]) -> None:
    """One line naming the protocol field that changed, with its stored and current value (and the
    paths of any other changed fields)."""
    changed = differences(stored, current)
    if not changed:
        return
    (field_name, old, new), others = changed[0], [d[0] for d in changed[1:]]
    also = f" (also changed: {', '.join(others[:4])}{', ...' if len(others) > 4 else ''})" if others else ""
    if field_name.split(".")[0] not in stored:
        raise UserError(f"study {name!r} in storage {label} was created by an earlier balancebench that did not "
                        f"record {field_name} with the protocol; `balancebench results` reads it, but it cannot be "
                        "continued safely: start another study with another --out/--storage or name")
    raise UserError(f"study {name!r} in storage {label} was created with a different protocol: {field_name} was "
                    f"{old!r}, now {new!r}{also}; a study's protocol cannot change (run it with the stored value, "
                    "or start another study with another --out/--storage or name)")


# ---------------------------------------------------------------------------------- workers
def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _worker_main(plan: StudyPlan, index: int, threads: int, verbose: bool, errors: Any) -> None:
    import torch

    torch.set_num_threads(threads)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a terminated worker marks its trial interrupted
    try:
        with quiet_optuna():
            storage = open_storage(plan.storage_url, writer=True)
            Worker(plan, index, storage, budget_lock(plan.storage_url, storage), print_line if verbose else None).run()
    except KeyboardInterrupt:
        sys.exit(130)
    except UserError as exc:
        errors.put(("user", redact(str(exc))))
        sys.exit(2)
    except BaseException:  # internal errors keep their traceback (passwords masked)
        errors.put(("internal", redact(traceback.format_exc())))
        sys.exit(1)


def _run_processes(plan: StudyPlan, workers: int, verbose: bool) -> None:
    ctx = multiprocessing.get_context("spawn")  # no forked torch/OpenMP state
    errors = ctx.Queue()
    # the parent's torch thread count (OMP_NUM_THREADS / torch.set_num_threads; default: the cores)
    # shared by the workers, so that several studies or programs can split one machine
    import torch

    threads = max(1, min(os.cpu_count() or 1, torch.get_num_threads()) // workers)
    procs = [ctx.Process(target=_worker_main, args=(plan, i, threads, verbose, errors),
                         name=f"balancebench-worker-{i}") for i in range(workers)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:  # the workers got SIGINT too: they mark their trials and exit
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
        raise
    messages = []
    while True:
        try:
            messages.append(errors.get(timeout=0.1))
        except Exception:  # queue.Empty
            break
    for kind, text in messages:
        if kind == "user":
            raise UserError(text)
        raise RuntimeError(f"a study worker failed:\n{text}")
    killed = [p for p in procs if p.exitcode not in (0, None)]
    if any(p.exitcode == 130 for p in killed):
        raise KeyboardInterrupt
    for proc in killed:  # e.g. killed by the OOM killer: its trial is re-queued and run again
        print_line(f"balancebench: warning: {proc.name} exited with code {proc.exitcode}; "
                   "its unfinished trial is re-queued")


# ---------------------------------------------------------------------------------- progress
class StudyProgress:
    """One bar over all epochs of the study (search budget + reruns), updated from the storage."""

    def __init__(self, plan: StudyPlan, storage: BaseStorage, enabled: bool, every: float = 2.0) -> None:
        self.plan, self.storage, self.every = plan, storage, every
        runs = len(plan.searched) * plan.cfg.n_trials + len(plan.methods) * len(plan.cfg.rerun_seeds)
        self.bar = progress_bar(total=runs * plan.epochs, enabled=enabled, desc=plan.group, unit="epoch")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True) if enabled else None
        if self._thread is not None:
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.update()

    def update(self) -> None:
        try:
            done = self.epochs_done()
        except Exception:  # a transient storage error must not kill the study
            return
        self.bar.n = min(done, self.bar.total)
        self.bar.refresh()

    def epochs_done(self) -> int:
        plan, epochs = self.plan, self.plan.epochs
        done = 0
        latest: dict[str, Any] = {}
        for study in self.storage.get_all_studies():
            attrs = study.user_attrs
            if attrs.get("group") != plan.group:
                continue
            if attrs.get("kind") == "rerun":
                prev = latest.get(attrs["method"])
                if prev is None or study._study_id > prev._study_id:
                    latest[attrs["method"]] = study
                continue
            if attrs.get("kind") == "search":
                done += self._count(study, plan.cfg.n_trials, epochs)
        for study in latest.values():
            done += self._count(study, len(plan.cfg.rerun_seeds), epochs)
        return done

    def _count(self, study: Any, budget: int, epochs: int) -> int:
        trials = counted_trials(self.storage.get_all_trials(study._study_id, deepcopy=False))[:budget]
        return sum(epochs if t.state != TrialState.RUNNING else len(t.intermediate_values) for t in trials)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self.update()
        self.bar.close()
