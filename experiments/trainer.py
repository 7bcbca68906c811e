"""The one training loop every method and benchmark runs through.

Methods differ only in the balancer; the trainer reads what a balancer needs from its registry
metadata (closure, model, learnable parameters, epoch hook) and never branches on its name.
"""

from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.func import functional_call

from balancers import Balancer, balancer_info, create_balancer
from experiments import rundir
from experiments.benchmarks import Benchmark, create_benchmark
from experiments.config import RunConfig
from experiments.errors import ConfigError, NonFiniteLossError, UserError
from experiments.evaluation import delta_m, evaluate, literature_reference, load_reference_file
from experiments.gradients import CosineProbe
from experiments.progress import progress_bar
from experiments.runlog import RunLog

#: ``on_epoch(epoch, val_objective)``: called after each epoch; may raise to stop (pruning).
EpochCallback = Callable[[int, float], None]


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available on this machine (use --device cpu)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError(f"train.device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def build_optimizer(cfg: RunConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    t = cfg.train
    if not t.lr > 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if t.weight_decay < 0:
        raise ConfigError(f"train.weight_decay must be >= 0, got {t.weight_decay}")
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    raise ConfigError(f"train.optimizer must be adam, adamw or sgd, got {t.optimizer!r}")


def build_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer) -> Any:
    t = cfg.train
    if t.scheduler == "none":
        return None
    if t.scheduler == "plateau":  # the QM9 reference: on the validation objective
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=t.scheduler_factor, patience=t.scheduler_patience, min_lr=t.scheduler_min_lr)
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(t.epochs, 1))
    if t.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.scheduler_step_size, gamma=t.scheduler_factor)
    raise ConfigError(f"train.scheduler must be none, plateau, cosine or step, got {t.scheduler!r}")


def build_balancer(cfg: RunConfig, bench: Benchmark) -> Balancer:
    """The configured balancer. Unless the config sets them: a benchmark's loss lower bounds go to
    a ``min_losses`` hyperparameter, and the run seed to a stochastic balancer's ``seed``."""
    try:
        info = balancer_info(cfg.balancer.name)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    hparams = {**(cfg.method_defaults.get(cfg.balancer.name) or {}), **cfg.balancer.hparams}
    accepted = inspect.signature(info.cls.__init__).parameters
    bounds = getattr(bench, "loss_lower_bounds", None)
    if bounds is not None and "min_losses" in accepted:
        hparams.setdefault("min_losses", list(bounds))
    if info.stochastic and "seed" in accepted:  # each run seed gets its own balancer draws
        hparams.setdefault("seed", cfg.seed)
    try:
        return create_balancer(cfg.balancer.name, bench.n_tasks, **hparams)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def task_losses(bench: Benchmark, outputs: Any, batch: Any) -> Tensor:
    """(K,) training losses in float32 (bf16 autocast promoted), float64 kept (a float64 model)."""
    losses = bench.losses(outputs, batch)
    return losses if losses.dtype == torch.float64 else losses.float()


class LossClosureFactory:
    """Builds the same-batch closure of :data:`balancers.LossClosure` for one batch.

    The closure replays the RNG state captured before the training forward (same dropout masks)
    and runs on cloned buffers (BatchNorm statistics are not updated a second time). It runs
    without autograd and its losses are never logged as training losses.
    """

    def __init__(self, model: torch.nn.Module, bench: Benchmark, device: torch.device, autocast: bool) -> None:
        self.model, self.bench, self.device, self.autocast = model, bench, device, autocast
        self.has_buffers = any(True for _ in model.buffers())

    def capture(self) -> tuple[Tensor, Any]:
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return torch.get_rng_state(), cuda

    def make(self, batch: Any, rng: tuple[Tensor, Any]) -> Callable[..., Tensor]:
        def closure(params: dict[str, Tensor] | None = None) -> Tensor:
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.no_grad(), torch.random.fork_rng(devices=devices):
                torch.set_rng_state(rng[0])
                if rng[1] is not None:
                    torch.cuda.set_rng_state(rng[1], self.device)
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                    inputs = self.bench.inputs(batch)
                    if params is None and not self.has_buffers:
                        outputs = self.model(inputs)
                    else:
                        state = dict(self.model.named_parameters()) if params is None else dict(params)
                        state.update({k: v.clone() for k, v in self.model.named_buffers()})
                        outputs = functional_call(self.model, state, (inputs,))
                    return task_losses(self.bench, outputs, batch)

        return closure


class Trainer:
    """One run: model, optimizer, balancer, loops, evaluation, checkpoints, run directory."""

    def __init__(self, cfg: RunConfig, run_dir: Path, on_epoch: EpochCallback | None = None) -> None:
        self.cfg, self.run_dir, self.on_epoch = cfg, Path(run_dir), on_epoch
        if cfg.train.num_threads:
            torch.set_num_threads(cfg.train.num_threads)
        self.device = resolve_device(cfg.train.device)
        self.autocast = bool(cfg.train.bf16 and self.device.type == "cuda")
        seed_everything(cfg.seed)
        try:
            self.bench = create_benchmark(cfg.benchmark.name, cfg.benchmark.variant, **cfg.benchmark.options)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self.model = self.bench.build_model(**cfg.model).to(self.device)
        float64 = any(p.dtype == torch.float64 for p in self.model.parameters())  # e.g. the toy's dtype option
        self.balancer = build_balancer(cfg, self.bench).to(device=self.device, dtype=torch.float64 if float64 else None)
        self.balancer.check_values = False  # the trainer checks losses lazily (see _check_window)
        self.info = balancer_info(cfg.balancer.name)  # known: build_balancer checked it
        params = list(self.model.parameters())
        self.optimizer = build_optimizer(cfg, params)
        learnables = [p for _, p in self.balancer.named_learnables()]
        if learnables:
            self.optimizer.add_param_group({"params": learnables, "weight_decay": 0.0})
        if self.info.needs_model:
            self.balancer.attach(self.model, self.optimizer)
        self.uses_closure = self.balancer.uses_closure
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.closures = LossClosureFactory(self.model, self.bench, self.device, self.autocast)
        self.log = RunLog(self.bench, self.device)
        if cfg.train.cosine_every < 0:
            raise ConfigError(f"train.cosine_every must be >= 0 (0: off), got {cfg.train.cosine_every}")
        #: task-gradient cosine probe (train.cosine_every); its rows are flushed with the run log
        self.cosine = CosineProbe(self.model, self.bench, self.device, cfg.train.cosine_every) if cfg.train.cosine_every else None
        self.log.cosine = self.cosine
        self.epoch, self.step_count, self.best, self.best_epoch, self.since_best = 0, 0, math.inf, -1, 0
        self.reference: dict[str, float] | None = None
        self.reference_kind = ""
        self.val_loader: Any = None
        self.test_loader: Any = None

    # ------------------------------------------------------------------------------- steps
    def train_step(self, batch: Any) -> None:
        # last step's gradients are freed before the forward rather than after the balancer call:
        # nothing reads them, and balancers that backprop themselves (MARIGOLD faithful, the O(K)
        # methods) then do not hold them alive (one parameter-sized set less at peak)
        self.optimizer.zero_grad(set_to_none=True)
        rng = self.closures.capture() if self.uses_closure else None
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            outputs = self.model(self.bench.inputs(batch))
            losses = task_losses(self.bench, outputs, batch)
        closure = self.closures.make(batch, rng) if rng is not None else None
        loss = self.balancer(losses, closure=closure)
        loss.backward()
        if self.cfg.train.grad_clip is not None:  # after backward, where it clips something
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.balancer.step(closure)
        self.step_count += 1
        self.log.record_step(self.step_count, self.epoch, losses.detach(), loss.detach(), self.balancer.weights,
                             log=self.step_count % self.cfg.train.log_every == 0)
        if self.step_count % self.cfg.train.check_every == 0:
            self._check_window()
        if self.cosine is not None and self.step_count % self.cosine.every == 0:
            self.cosine.measure(self.step_count, self.epoch)

    def _check_window(self) -> None:
        bad = self.log.first_nonfinite()
        if bad is None:
            return
        step, column, value, task_losses = bad
        if column == self.bench.n_tasks:  # finite task losses, non-finite balanced loss: ask why
            try:
                self.balancer.check_losses(task_losses)
            except ValueError as exc:
                raise NonFiniteLossError(step, "<balanced loss>", value, self.epoch, reason=str(exc)) from None
        names = self.bench.task_names + ["<balanced loss>"]
        raise NonFiniteLossError(step, names[column], value, self.epoch)

    def train_epoch(self, bar: Any) -> None:
        self.model.train()
        loader_seed = self.cfg.seed * 100_003 + self.epoch  # per-epoch shuffles: resumes exactly
        train_loader, _, _ = self.bench.loaders(self.cfg.train.batch_size, loader_seed)
        cap = self.cfg.train.max_steps_per_epoch
        for i, batch in enumerate(train_loader):
            if cap is not None and i >= cap:
                break
            self.train_step(self.bench.to_device(batch, self.device))
            bar.update(1)
            if bar.enabled and self.step_count % max(self.cfg.train.log_every, 1) == 0:
                bar.set_postfix_str(self.log.postfix())
        self._check_window()
        self.balancer.epoch_end()

    # -------------------------------------------------------------------------- evaluation
    def evaluate_splits(self) -> dict[str, float]:
        row: dict[str, float] = {}
        val = evaluate(self.model, self.bench, self.val_loader, self.device, self.autocast)
        row.update({f"val_{k}": v for k, v in val.items()})
        if self.cfg.train.evaluate_test:
            test = evaluate(self.model, self.bench, self.test_loader, self.device, self.autocast)
            row.update({f"test_{k}": v for k, v in test.items()})
        if self.reference is None:
            self.reference, self.reference_kind = self._reference(val)
        row["val_objective"] = delta_m(val, self.objective_metrics, self.reference)
        return row

    @property
    def objective_metrics(self) -> list:
        wanted = self.cfg.objective_tasks
        if wanted is None:
            return self.bench.metrics
        unknown = sorted(set(wanted) - set(self.bench.task_names))
        if unknown:
            raise ConfigError(f"objective_tasks: unknown task(s) {unknown}; valid: {self.bench.task_names}")
        index = {self.bench.task_names.index(t) for t in wanted}
        return [m for m in self.bench.metrics if m.task in index]

    def _reference(self, initial_val: dict[str, float]) -> tuple[dict[str, float], str]:
        """Δm% reference: literature STL values at full scale, measured STL metrics when a file is
        configured, else the untrained model's validation metrics (same for every method at a seed)."""
        spec = self.cfg.reference
        if spec not in ("auto", "literature", "initial"):
            return load_reference_file(spec, self.bench.metrics), f"stl:{spec}"
        literature = literature_reference(self.bench.metrics)
        valid_here = self.cfg.scale in (None, "full") or self.bench.reference_at_any_scale
        if spec == "literature" or (spec == "auto" and literature and valid_here):
            if literature is None:
                raise ConfigError(f"reference 'literature': benchmark {self.bench.name!r} has no STL values")
            return literature, "literature_stl"
        return dict(initial_val), "initial_model"

    # ------------------------------------------------------------------------------ driver
    def run(self, resume: bool = False) -> dict[str, Any]:
        _, self.val_loader, self.test_loader = self.bench.loaders(self.cfg.train.batch_size, self.cfg.seed)
        if self.cosine is not None:
            self.cosine.set_batch(self.val_loader)  # the fixed probe batch: the first validation batch
        if resume and (self.run_dir / rundir.LAST).is_file():
            self._restore()
        else:
            self.log.write_config(self.run_dir, self.cfg, self)
            self.log.add_epoch({"epoch": 0, **self.evaluate_splits()})
            if self.cosine is not None:
                self.cosine.measure(0, 0)
        steps_per_epoch = self._steps_per_epoch()
        bar = progress_bar(total=self.cfg.train.epochs * steps_per_epoch, initial=self.step_count,
                           enabled=self.cfg.train.progress, desc=f"{self.bench.name}/{self.balancer}")
        start = time.perf_counter()
        try:
            while self.epoch < self.cfg.train.epochs:
                if self._run_epoch(bar):
                    break
        except BaseException as exc:
            self.log.write_summary(self.run_dir, self, status=_status_of(exc), reason=str(exc) or type(exc).__name__)
            raise
        finally:
            bar.close()
        return self.log.write_summary(self.run_dir, self, status="complete", wall=time.perf_counter() - start)

    def _run_epoch(self, bar: Any) -> bool:
        """Train, evaluate, checkpoint one epoch; True when early stopping triggers."""
        started = time.perf_counter()
        steps_before = self.step_count
        self.train_epoch(bar)
        self.epoch += 1
        train_seconds = self.log.sync_time(self.device, started)
        row = {"epoch": self.epoch, "lr": self.optimizer.param_groups[0]["lr"], **self.log.epoch_train_losses(),
               **self.evaluate_splits(), "epoch_seconds": train_seconds,
               "step_seconds": train_seconds / max(self.step_count - steps_before, 1)}
        self.log.add_epoch(row)
        objective = row["val_objective"]
        if objective < self.best:
            self.best, self.best_epoch, self.since_best = objective, self.epoch, 0
            rundir.save_checkpoint(self.run_dir / rundir.BEST, self._state())
        else:
            self.since_best += 1
        if self.scheduler is not None:
            is_plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
            self.scheduler.step(objective) if is_plateau else self.scheduler.step()
        rundir.save_checkpoint(self.run_dir / rundir.LAST, self._state())
        self.log.flush(self.run_dir)
        if self.on_epoch is not None:
            self.on_epoch(self.epoch, objective)
        patience = self.cfg.train.early_stopping_patience
        return patience is not None and self.since_best >= patience

    def _steps_per_epoch(self) -> int:
        train_loader, _, _ = self.bench.loaders(self.cfg.train.batch_size, 0)
        n = len(train_loader)
        cap = self.cfg.train.max_steps_per_epoch
        return n if cap is None else min(n, cap)

    # -------------------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "balancer": self.balancer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "epoch": self.epoch, "step": self.step_count, "best": self.best, "best_epoch": self.best_epoch,
            "since_best": self.since_best, "reference": self.reference, "reference_kind": self.reference_kind,
            "torch_rng": torch.get_rng_state(),
        }

    def _restore(self) -> None:
        state = rundir.load_checkpoint(self.run_dir / rundir.LAST, map_location=self.device)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.balancer.load_state_dict(state["balancer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step_count = int(state["epoch"]), int(state["step"])
        self.best, self.best_epoch, self.since_best = float(state["best"]), int(state["best_epoch"]), int(state["since_best"])
        self.reference, self.reference_kind = state["reference"], state["reference_kind"]
        torch.set_rng_state(state["torch_rng"].cpu())
        self.log.load(self.run_dir, self.epoch)


def _status_of(exc: BaseException) -> str:
    if isinstance(exc, NonFiniteLossError):
        return "diverged"
    if type(exc).__name__ == "TrialPruned":
        return "pruned"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return "failed"


def load_run_dir_config(run_dir: Path) -> RunConfig:
    """The resolved config a run directory was trained with (for resuming it)."""
    from experiments.config import load_yaml, run_config_from_dict

    path = Path(run_dir) / rundir.CONFIG
    if not path.is_file():
        raise UserError(f"not a run directory (no {rundir.CONFIG}): {run_dir}")
    data = load_yaml(path)
    data.pop("resolved", None)
    return run_config_from_dict(data)


def default_run_dir(cfg: RunConfig) -> Path:
    parts = [cfg.benchmark.name] + ([cfg.benchmark.variant] if cfg.benchmark.variant else [])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = cfg.name or f"{'-'.join(parts)}_{cfg.balancer.name}_seed{cfg.seed}_{stamp}"
    return Path(cfg.out) / name


def train(cfg: RunConfig, run_dir: Path | None = None, *, resume: bool = False,
          on_epoch: EpochCallback | None = None) -> RunResult:
    """Train one run; returns its directory and summary (see the README's run directory section)."""
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    if run_dir.exists() and not resume and any(run_dir.iterdir()):
        raise UserError(f"run directory {run_dir} already exists and is not empty (use --resume to continue it)")
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, run_dir, on_epoch=on_epoch)
    summary = trainer.run(resume=resume)
    return RunResult(run_dir, summary)
