"""One study worker: claims trials under the budget lock and trains them through ``train()``.

Every worker (in-process or one of ``--workers N`` processes, on any machine sharing the storage)
runs the same loop: first the search trials of each method up to its budget, then the reruns of
each method's best configuration on the rerun seeds (themselves trials of a small Optuna study
per method, so that they are shared out, resumed and retried exactly like search trials), then
``fixed_from_X`` on weights extracted from X's reruns.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, Trial, TrialState

from experiments.training import rundir
from experiments.config import RunConfig
from experiments.errors import NonFiniteLossError, UserError
from experiments.training.evaluation import delta_m
from experiments.benchmarks.base import MetricSpec
from experiments.studies.plan import StudyPlan
from experiments.studies.trial_dirs import fresh_dir, read_summary, record_summary, reusable_summary, test_split_reference
from experiments.studies.storage import (
    BudgetLock,
    counted_trials,
    reap_dead_trials,
    worker_identity,
)

POLL_SECONDS = 1.0


class NoObjectiveError(RuntimeError):
    """A run ended without a finite validation objective (recorded as a FAILED trial)."""


class OverBudgetError(RuntimeError):
    """Only without an exact budget lock: this trial was created past the budget."""


CAUGHT = (NonFiniteLossError, NoObjectiveError, OverBudgetError)


def make_sampler(cfg: Any, index: int) -> optuna.samplers.BaseSampler:
    """The same sampler class and seed for every method; re-seeded per trial index so that trial k
    of every method draws from the same random stream whatever the number of workers."""
    seed = (int(cfg.seed) * 1_000_003 + index) % 2**31
    if cfg.name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    kwargs = {} if cfg.n_startup_trials is None else {"n_startup_trials": cfg.n_startup_trials}
    return optuna.samplers.TPESampler(seed=seed, **kwargs)


def make_pruner(cfg: Any, epochs: int) -> optuna.pruners.BasePruner:
    if cfg.name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps)
    if cfg.name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=cfg.min_resource, max_resource=max(epochs, 1),
                                              reduction_factor=cfg.reduction_factor)
    return optuna.pruners.NopPruner()


def best_trial(trials: list[FrozenTrial]) -> FrozenTrial | None:
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return min(complete, key=lambda t: (t.value, t.number)) if complete else None


class Worker:
    def __init__(self, plan: StudyPlan, index: int, storage: BaseStorage, lock: BudgetLock,
                 say: Callable[[str], None] | None = None) -> None:
        self.plan, self.index, self.storage, self.lock = plan, index, storage, lock
        self.say = say or (lambda msg: None)
        #: the metrics of the objective's tasks: the reruns' test Δm% is over these
        self.specs = [MetricSpec(**s) for s in plan.objective_metric_specs]
        self._said: set[str] = set()

    # ----------------------------------------------------------------------------- driver
    def run(self) -> None:
        for method, source in self.plan.derived.items():  # listed in results from the start
            self._derived_record(method, source)
        for method in self.plan.searched:
            self._source_best(method)
        pending = list(self.plan.methods)
        while pending:
            progressed = False
            for method in list(pending):
                state = self._rerun_step(method)
                if state == "done":
                    pending.remove(method)
                progressed |= state in ("done", "ran")
            if pending and not progressed:
                time.sleep(POLL_SECONDS)  # other workers are finishing what this one waits for

    def search(self) -> None:
        """Only the searches, each method's up to its budget (in-process: until finished)."""
        for method in self.plan.searched:
            self._source_best(method)

    def _load(self, name: str, pruned: bool) -> optuna.Study:
        pruner = make_pruner(self.plan.cfg.pruner, self.plan.epochs) if pruned else optuna.pruners.NopPruner()
        return optuna.load_study(study_name=name, storage=self.storage, pruner=pruner)

    def _claim(self, study: optuna.Study, budget: int, objective: Callable[[Trial], float]) -> str:
        """Run trials while the budget has room: "done" (all finished), "ran", or "blocked"."""
        ran = False
        while True:
            with self.lock:
                reap_dead_trials(study)
                trials = study.get_trials(deepcopy=False)
                counted = counted_trials(trials)
                if len(counted) >= budget:
                    if any(t.state == TrialState.RUNNING for t in counted):
                        return "ran" if ran else "blocked"
                    return "done"
                study.sampler = make_sampler(self.plan.cfg.sampler, len(counted))
                wrapped = functools.partial(self._guard, study, budget, objective)
                study.optimize(wrapped, n_trials=1, catch=CAUGHT)
            ran = True

    def _guard(self, study: optuna.Study, budget: int, objective: Callable[[Trial], float], trial: Trial) -> float:
        self.lock.release()  # the trial exists: other workers may count it now
        try:
            trial.set_user_attr("worker", worker_identity())
            trial.set_user_attr("failure_kind", None)  # a retry inherits its original's attributes
            trial.set_user_attr("fail_reason", None)
            if not self.lock.exact:
                numbers = [t.number for t in counted_trials(study.get_trials(deepcopy=False))]
                if trial.number in numbers and numbers.index(trial.number) >= budget:
                    self._fail(trial, "over_budget", "created past the budget by a concurrent worker")
                    raise OverBudgetError("over budget")
            return objective(trial)
        except KeyboardInterrupt:  # not the method's fault: re-queued, not counted
            self._fail(trial, "interrupted", "interrupted (Ctrl-C/SIGTERM); re-queued with the same parameters")
            raise

    # ----------------------------------------------------------------------------- search
    def _search_objective(self, method: str, trial: Trial) -> float:
        plan = self.plan
        values = {name: spec.suggest(trial, name) for name, spec in plan.spaces[method].items()}
        cfg = plan.run_config(method, values, plan.fixed_hparams[method], plan.base.seed, evaluate_test=False)
        run_dir = fresh_dir(plan.trial_dir(method, trial.number))
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("method", method)

        def on_epoch(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} (val Δm% {value:.4g})")

        summary = self._train(trial, cfg, run_dir, on_epoch, resume=False, label=f"{method} trial {trial.number}")
        return self._objective_of(trial, summary, f"{method} trial {trial.number}")

    # ----------------------------------------------------------------------------- reruns
    def _source_best(self, source: str) -> tuple[str, FrozenTrial | None]:
        """("done", best trial within the budget) once the source's search is finished; re-queued
        trials of dead or interrupted workers are run here by whichever worker gets them."""
        study = self._load(self.plan.study_name(source), pruned=True)
        state = self._claim(study, self.plan.cfg.n_trials, functools.partial(self._search_objective, source))
        if state != "done":
            return state, None
        return "done", best_trial(counted_trials(study.get_trials(deepcopy=False))[: self.plan.cfg.n_trials])

    def _rerun_step(self, method: str) -> str:
        plan = self.plan
        source = plan.derived.get(method, method)
        state, best = self._source_best(source)
        if state != "done":
            return state
        if best is None:
            reason = f"no completed search trial of {source}: no reruns"
            if method in plan.derived:
                return self._unavailable(method, source, f"nothing to extract weights from ({reason})")
            self._say_once(f"[{method}] {reason}")
            return "done"
        if method in plan.derived:
            return self._derived_step(method, source, best)
        study = self._rerun_study(method, best.number, best.params, {})
        objective = functools.partial(self._rerun_objective, method, method, best.number, best.params,
                                      plan.fixed_hparams[method])
        return self._claim(study, len(study.user_attrs["seeds"]), objective)

    def _derived_step(self, method: str, source: str, best: FrozenTrial) -> str:
        from experiments.studies.extract import WEIGHTS_JSON, ema_extract, recorded_epoch_weights

        plan = self.plan
        state = self._rerun_step(source)
        if state != "done":
            return state
        trials = self._load(plan.rerun_study_name(source, best.number), pruned=False).get_trials(deepcopy=False)
        runs = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.params["seed"])
        if not runs:
            why = "; ".join(f"seed {t.params.get('seed')}: {t.user_attrs.get('failure_kind') or t.state.name.lower()}"
                            for t in trials) or "none ran"
            return self._unavailable(method, source,
                                     f"no completed rerun of {source} trial {best.number} to extract weights from ({why})")
        try:
            extracted = ema_extract([recorded_epoch_weights(t.user_attrs, f"seed {t.params['seed']}")
                                     for t in runs], plan.cfg.ema)
        except UserError as exc:
            return self._unavailable(method, source, f"cannot extract weights from {source}'s reruns: {exc}")
        self._derived_record(method, source, best.number, None)
        extra = {"weights": extracted.weights, "weights_tasks": extracted.tasks,
                 "weights_source_runs": extracted.sources, "ema": plan.cfg.ema, "source_method": source}
        shared = plan.shared_values(best.params)
        study = self._rerun_study(method, best.number, shared, extra)
        weights = study.user_attrs["weights"]  # the stored ones: the same on every machine
        out = plan.rerun_dir(method, best.number, 0).parent
        if not (out / WEIGHTS_JSON).is_file():  # here or on the machine that created the study
            extracted.write(out)
        objective = functools.partial(self._rerun_objective, method, "fixed", best.number, shared,
                                      {"weights": weights})
        return self._claim(study, len(study.user_attrs["seeds"]), objective)

    def _derived_record(self, method: str, source: str, source_trial: int | None = None,
                        reason: str | None = "pending") -> None:
        """The storage's record of a derived method (kind ``derived``), so that the results list
        it whatever happens: ``unavailable`` says why it has no reruns (None once extracted)."""
        with self.lock:
            study = optuna.create_study(study_name=self.plan.study_name(method), storage=self.storage,
                                        direction="minimize", load_if_exists=True)
            attrs, new = study.user_attrs, {"source_trial": source_trial, "unavailable": reason}
            if attrs.get("kind") is None:
                new.update(kind="derived", group=self.plan.group, method=method, source_method=source,
                           seeds=list(self.plan.cfg.rerun_seeds))
            elif reason == "pending":
                return  # created before: keep what it says
            for key, value in new.items():
                if attrs.get(key, ...) != value:
                    study.set_user_attr(key, value)

    def _unavailable(self, method: str, source: str, reason: str) -> str:
        """A derived method that cannot be trained: one line, and the reason in the storage."""
        self._derived_record(method, source, None, reason)
        self._say_once(f"[{method}] not trained: {reason}")
        return "done"

    def _say_once(self, msg: str) -> None:
        if msg not in self._said:
            self._said.add(msg)
            self.say(msg)

    def _rerun_study(self, method: str, source_trial: int, params: dict[str, Any], extra: dict[str, Any]) -> optuna.Study:
        plan = self.plan
        name = plan.rerun_study_name(method, source_trial)
        seeds = list(plan.cfg.rerun_seeds)
        with self.lock:
            try:  # a journal records every create_study call: a waiting worker polls here each second
                study = optuna.load_study(study_name=name, storage=self.storage)
            except KeyError:
                study = optuna.create_study(study_name=name, storage=self.storage, direction="minimize",
                                            load_if_exists=True)
            if study.user_attrs.get("kind") != "rerun":
                attrs = {"kind": "rerun", "group": plan.group, "method": method, "source_trial": source_trial,
                         "params": params, "protocol_hash": plan.protocol_hash, **extra}
                for key, value in attrs.items():
                    study.set_user_attr(key, value)
            queued = {t.params.get("seed", t.system_attrs.get("fixed_params", {}).get("seed"))
                      for t in study.get_trials(deepcopy=False)}
            for seed in seeds:
                if seed not in queued:
                    study.enqueue_trial({"seed": seed})
            known = study.user_attrs.get("seeds", [])
            if not set(seeds) <= set(known):
                study.set_user_attr("seeds", known + [s for s in seeds if s not in known])
        return self._load(name, pruned=False)

    def _rerun_objective(self, method: str, balancer: str, source_trial: int, values: dict[str, Any],
                         hparams: dict[str, Any], trial: Trial) -> float:
        plan = self.plan
        seed = trial.suggest_int("seed", 0, 2**31 - 1)
        cfg = plan.run_config(balancer, values, hparams, seed, evaluate_test=True)
        run_dir = plan.rerun_dir(method, source_trial, seed)
        label = f"{method} rerun seed {seed}"
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("method", method)
        summary = reusable_summary(run_dir, cfg)
        if summary is None:
            summary = self._train(trial, cfg, run_dir, lambda e, v: trial.report(v, e), resume=True, label=label)
        else:
            self.say(f"[{label}] re-using the finished run {run_dir}")
            record_summary(trial, summary)
        self._record_rerun(trial, run_dir, summary)
        return self._objective_of(trial, summary, label)

    def _record_rerun(self, trial: Trial, run_dir: Path, summary: dict[str, Any]) -> None:
        from experiments.studies.extract import epoch_weights

        metrics = rundir.read_table(run_dir, rundir.METRICS)
        first = metrics[metrics["epoch"] == 0].iloc[0].to_dict() if len(metrics) else {}
        initial = {k[5:]: float(v) for k, v in first.items() if k.startswith("test_")}
        test = summary.get("test_metrics") or {}
        reference = test_split_reference(summary.get("reference", ""), initial, self.specs)
        value = None
        if reference is not None and all(s.name in test for s in self.specs):
            value = delta_m(test, self.specs, reference)
        trial.set_user_attr("initial_test_metrics", initial)
        trial.set_user_attr("test_delta_m", value if value is None or math.isfinite(value) else None)
        try:
            trial.set_user_attr("epoch_weights", epoch_weights(run_dir).to_dict())
            trial.set_user_attr("epoch_weights_error", None)
        except UserError as exc:  # kept with the trial: fixed_from_<method> reports it
            trial.set_user_attr("epoch_weights", None)
            trial.set_user_attr("epoch_weights_error", str(exc))

    # ----------------------------------------------------------------------------- training
    def _train(self, trial: Trial, cfg: RunConfig, run_dir: Path, on_epoch: Callable[[int, float], None],
               resume: bool, label: str) -> dict[str, Any]:
        from experiments.training.trainer import train

        try:
            return train(cfg, run_dir, resume=resume, on_epoch=on_epoch).summary
        except NonFiniteLossError as exc:
            self._fail(trial, "diverged", str(exc))
            self.say(f"[{label}] FAILED (diverged): {exc}")
            raise
        except optuna.TrialPruned as exc:
            self.say(f"[{label}] pruned: {exc}")
            raise
        except Exception as exc:
            self._fail(trial, "error", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            summary = read_summary(run_dir)
            if summary is not None:
                record_summary(trial, summary)

    def _objective_of(self, trial: Trial, summary: dict[str, Any], label: str) -> float:
        value = summary.get("best_val_objective")
        if value is None or not math.isfinite(float(value)):
            self._fail(trial, "no_objective", "the run produced no finite validation objective")
            raise NoObjectiveError(f"{label}: no finite validation objective")
        self.say(f"[{label}] val Δm% {float(value):.4g}  {_short(trial.params)}")
        return float(value)

    @staticmethod
    def _fail(trial: Trial, kind: str, reason: str) -> None:
        trial.set_user_attr("failure_kind", kind)
        trial.set_user_attr("fail_reason", reason)


# --------------------------------------------------------------------------------- helpers
def _short(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def print_line(msg: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(msg, file=sys.stderr)
