"""The one training loop every method and benchmark runs through.

Methods differ only in the balancer; the trainer reads what a balancer needs from its registry
metadata (closure, model, learnable parameters, epoch hook) and never branches on its name.
"""

from __future__ import annotations

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

from balancers import balancer_info
from experiments.training import distributed, rundir
from experiments.benchmarks import Benchmark
from experiments.config import RunConfig
from experiments.errors import ConfigError, NonFiniteLossError, RunInterrupted, UserError
from experiments.training.evaluation import delta_m, evaluate, literature_reference, load_reference_file
from experiments.training.gradients import CosineProbe
from experiments.training.parts import build_balancer, build_benchmark, build_model, build_optimizer, build_scheduler
from experiments.training.precision import Precision
from experiments.training.progress import progress_bar
from experiments.training.resume import check_resume, config_entry, load_run_dir_config, prepare_run_dir  # noqa: F401
from experiments.training.runlog import RunLog
from experiments.training.tensorboard import TensorBoardLog

#: ``on_epoch(epoch, val_objective)``: called after each epoch; may raise to stop (pruning).
EpochCallback = Callable[[int, float], None]


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    #: a resumed run that had already finished: returned as it was, nothing trained or written
    already_finished: bool = False


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

    def __init__(self, model: torch.nn.Module, bench: Benchmark, device: torch.device, precision: Precision) -> None:
        self.model, self.bench, self.device, self.precision = model, bench, device, precision
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
                with self.precision.autocast():
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
        self.replica = distributed.current()
        self.device = self.replica.device(resolve_device(cfg.train.device))
        self.precision = Precision.of(cfg.train, self.device)
        seed_everything(cfg.seed)
        self.bench = build_benchmark(cfg)
        self.model = build_model(cfg, self.bench).to(self.device)
        float64 = any(p.dtype == torch.float64 for p in self.model.parameters())  # e.g. the toy's dtype option
        self.balancer = build_balancer(cfg, self.bench).to(device=self.device, dtype=torch.float64 if float64 else None)
        self.balancer.check_values = False  # the trainer checks losses lazily (see _check_window)
        self.info = balancer_info(cfg.balancer.name)  # known: build_balancer checked it
        self.replica.check_balancer(cfg.balancer.name, self.info.needs_task_grads)
        self.replica.check_batch_size(cfg.train.batch_size)
        self.forward_model = self.replica.wrap(self.model, self.device)  # DDP when N > 1
        self.optimizer = build_optimizer(cfg, list(self.model.parameters()), self.balancer)
        if self.info.needs_model:
            self.balancer.attach(self.model, self.optimizer)
        self.uses_closure = self.balancer.uses_closure
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.closures = LossClosureFactory(self.model, self.bench, self.device, self.precision)
        self.replica.offset_rng(cfg.seed, 0)
        self.log = RunLog(self.bench, self.device)
        #: task-gradient cosine probe (train.cosine_every); its rows are flushed with the run log
        self.cosine = CosineProbe(self.model, self.bench, self.device, cfg.train.cosine_every) if cfg.train.cosine_every else None
        self.log.cosine = self.cosine
        if cfg.train.tensorboard and self.replica.is_main:  # rank 0 alone writes the run directory
            self.log.tensorboard = TensorBoardLog(self.run_dir, self.bench.task_names)
        self.epoch, self.step_count, self.best, self.best_epoch, self.since_best = 0, 0, math.inf, -1, 0
        self.reference: dict[str, float] | None = None
        self.reference_kind = ""
        self.val_loader: Any = None
        self.test_loader: Any = None

    # ------------------------------------------------------------------------------- steps
    def train_step(self, batch: Any, n_global: int | None = None) -> None:
        """One step on ``batch`` (this rank's shard of a global batch of ``n_global`` samples)."""
        # last step's gradients are freed before the forward rather than after the balancer call:
        # nothing reads them, and balancers that backprop themselves (MARIGOLD faithful, the O(K)
        # methods) then do not hold them alive (one parameter-sized set less at peak)
        self.optimizer.zero_grad(set_to_none=True)
        rng = self.closures.capture() if self.uses_closure else None
        with self.precision.autocast():
            outputs = self.forward_model(self.bench.inputs(batch))
            losses = task_losses(self.bench, outputs, batch)  # fp32 (fp64 kept): never the autocast dtype
        n_local = self.bench.batch_size(batch)
        n_global = n_global or n_local
        losses = self.replica.global_losses(losses, n_local, n_global)  # identical on every rank
        closure = self.replica.closure(self.closures.make(batch, rng), n_local, n_global) if rng is not None else None
        self.replica.prepare_balancer(self.balancer, n_local, n_global)  # MARIGOLD's virtual-step all-reduce
        loss = self.balancer(losses, closure=closure)
        self.precision.backward(loss)
        self.precision.unscale(self.optimizer)  # the balancer and clipping see true gradients
        self.balancer.after_backward()  # the method's own gradient surgery (Nash-MTL's max_norm)
        if self.cfg.train.grad_clip is not None:  # after backward, where it clips something
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        if self.precision.step(self.optimizer):  # False: fp16's scaler skipped an overflowing step
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
            self.train_step(self.bench.to_device(self.replica.shard(batch), self.device), self.bench.batch_size(batch))
            bar.update(1)
            if bar.enabled and self.step_count % max(self.cfg.train.log_every, 1) == 0:
                bar.set_postfix_str(self.log.postfix())
        self._check_window()
        self.balancer.epoch_end()

    # -------------------------------------------------------------------------- evaluation
    def evaluate_splits(self) -> dict[str, float]:
        # each pass on its own seeded random streams (isolated_rng): evaluation cannot change training
        row: dict[str, float] = {}
        val = evaluate(self.model, self.bench, self.val_loader, self.device, self.precision.autocast_dtype,
                       seed=self.cfg.seed)
        row.update({f"val_{k}": v for k, v in val.items()})
        if self.cfg.train.evaluate_test:
            test = evaluate(self.model, self.bench, self.test_loader, self.device, self.precision.autocast_dtype,
                       seed=self.cfg.seed)
            row.update({f"test_{k}": v for k, v in test.items()})
        if self.reference is None:
            self.reference, self.reference_kind = self._reference(val)
        row["val_objective"] = delta_m(val, self.objective_metrics, self.reference)
        return self.replica.agree(row)  # every rank evaluates the full sets; rank 0's numbers decide

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
        if self._steps_per_epoch() == 0:  # e.g. a batch larger than a training set that drops the last batch
            raise ConfigError(f"train.batch_size {self.cfg.train.batch_size} leaves no full batch in the training set: "
                              "no training step would run")
        if self.cosine is not None:
            self.cosine.set_batch(self.val_loader)  # the fixed probe batch: the first validation batch
        if resume and (self.run_dir / rundir.LAST).is_file():
            self._restore()
            self.replica.offset_rng(self.cfg.seed, self.step_count)
        else:
            self.log.write_config(self.run_dir, self.cfg, self)
            self.log.add_epoch({"epoch": 0, **self.evaluate_splits()})
            if self.cosine is not None:
                self.cosine.measure(0, 0)
        steps_per_epoch = self._steps_per_epoch()
        bar = progress_bar(total=self.cfg.train.epochs * steps_per_epoch, initial=self.step_count,
                           enabled=self.cfg.train.progress and self.replica.is_main, desc=f"{self.bench.name}/{self.balancer}")
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
            "torch_rng": torch.get_rng_state(), "config": config_entry(self.cfg),
            "grad_scaler": self.precision.state_dict(),
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
        self.precision.load_state_dict(state.get("grad_scaler"))
        self.log.load(self.run_dir, self.epoch)


def _status_of(exc: BaseException) -> str:
    if isinstance(exc, NonFiniteLossError):
        return "diverged"
    if type(exc).__name__ == "TrialPruned":
        return "pruned"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return "failed"


def default_run_dir(cfg: RunConfig) -> Path:
    """A new empty run directory, created here so that concurrent runs never share one."""
    parts = [cfg.benchmark.name] + ([cfg.benchmark.variant] if cfg.benchmark.variant else [])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = cfg.name or f"{'-'.join(parts)}_{cfg.balancer.name}_seed{cfg.seed}_{stamp}"
    return rundir.create_run_dir(Path(cfg.out), name, unique=not cfg.name)


def train(cfg: RunConfig, run_dir: Path | None = None, *, resume: bool = False,
          on_epoch: EpochCallback | None = None) -> RunResult:
    """Train one run; returns its directory and summary (see the README's run directory section).

    ``resume``: continue ``run_dir`` from its last checkpoint; a config that differs from the one it
    was trained with is refused, and a finished run is returned untouched. Ctrl-C raises
    :class:`RunInterrupted` carrying the run directory (None when nothing was saved yet)."""
    with distributed.session(cfg.train.device) as replica:
        run_dir, created, finished = distributed.on_main(replica, lambda: prepare_run_dir(cfg, run_dir, resume, default_run_dir))
        if finished is not None:
            return RunResult(run_dir, finished, already_finished=True)
        try:
            with distributed.work_dir(replica, run_dir, resume) as own_dir:  # rank 0 alone writes run_dir
                summary = Trainer(cfg, own_dir, on_epoch=on_epoch).run(resume=resume)
        except (KeyboardInterrupt, UserError) as exc:
            saved = any(run_dir.iterdir())
            if created and not saved and replica.is_main:  # stopped before anything was written: no empty folder
                run_dir.rmdir()
            if isinstance(exc, KeyboardInterrupt):
                raise RunInterrupted(run_dir if saved else None) from exc
            raise
    return RunResult(run_dir, summary)

