"""What a run records: per-step losses and weights (kept on the device, flushed per epoch),
per-epoch metrics, the resolved config and the summary."""

from __future__ import annotations

import platform
import resource
import time
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import torch
from torch import Tensor

from experiments.training import rundir
from experiments.benchmarks import Benchmark
from experiments.config import dump_yaml, to_dict


class TrainerState(Protocol):
    """What the run log reads from the trainer when it writes the config and the summary (a
    protocol, so the log does not import the trainer that owns it)."""

    balancer: Any
    device: torch.device
    cfg: Any
    epoch: int
    step_count: int
    best_epoch: int
    best: float
    reference_kind: str


def peak_memory_bytes(device: torch.device) -> int:
    """CUDA: max allocated by torch; CPU: the process's peak resident set size (ru_maxrss)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class RunLog:
    def __init__(self, bench: Benchmark, device: torch.device) -> None:
        self.bench, self.device = bench, device
        self.tasks = bench.task_names
        self._pending: list[Tensor] = []
        self._pending_steps: list[int] = []
        self._logged: list[tuple[int, int, Tensor, Tensor]] = []
        self._epoch_sum = torch.zeros(len(self.tasks), device=device)
        self._epoch_weight_sum = torch.zeros(len(self.tasks), device=device)
        self._epoch_count = 0
        self.epochs: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        #: optional ``experiments.training.gradients.CosineProbe`` whose cosine.csv is written with the tables
        self.cosine: Any = None
        #: optional ``experiments.training.tensorboard.TensorBoardLog``: the same rows, as event files
        self.tensorboard: Any = None

    # ------------------------------------------------------------------ per step (no syncs)
    def record_step(self, step: int, epoch: int, losses: Tensor, loss: Tensor, weights: Tensor, log: bool) -> None:
        self._pending.append(torch.cat([losses, loss.reshape(1).to(losses.dtype)]))
        self._pending_steps.append(step)
        self._epoch_sum += losses
        self._epoch_weight_sum += weights.to(self._epoch_weight_sum.dtype)
        self._epoch_count += 1
        if log:
            self._logged.append((step, epoch, losses, weights.detach().clone()))

    def first_nonfinite(self) -> tuple[int, int, float, Tensor] | None:
        """(step, column, value, that step's task losses) of the first NaN/Inf since the last check
        (one host sync), else None. Column K is the balanced loss."""
        if not self._pending:
            return None
        stacked = torch.stack(self._pending)
        steps, self._pending, self._pending_steps = self._pending_steps, [], []
        finite = torch.isfinite(stacked)
        if bool(finite.all()):
            return None
        row, column = (~finite).nonzero()[0].tolist()
        return steps[row], column, float(stacked[row, column]), stacked[row, :-1]

    def postfix(self) -> str:
        if not self._logged:
            return ""
        losses = self._logged[-1][2]
        if len(self.tasks) > 6:
            return f"mean loss {float(losses.mean()):.4g}"
        return " ".join(f"{t}={v:.3g}" for t, v in zip(self.tasks, losses.tolist()))

    # ------------------------------------------------------------------ per epoch
    def epoch_train_losses(self) -> dict[str, float]:
        """Epoch means of the training losses and of the effective weights (exact, every step)."""
        count = max(self._epoch_count, 1)
        losses = (self._epoch_sum / count).tolist()
        weights = (self._epoch_weight_sum / count).tolist()
        self._epoch_sum.zero_()
        self._epoch_weight_sum.zero_()
        self._epoch_count = 0
        row = {f"train_loss_{t}": v for t, v in zip(self.tasks, losses)}
        row.update({f"weight_{t}": v for t, v in zip(self.tasks, weights)})
        return row

    def add_epoch(self, row: dict[str, Any]) -> None:
        self.epochs.append(row)

    def sync_time(self, device: torch.device, started: float) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    def flush(self, run_dir: Path) -> None:
        for step, epoch, losses, weights in self._logged:
            row: dict[str, Any] = {"step": step, "epoch": epoch}
            row.update({f"loss_{t}": v for t, v in zip(self.tasks, losses.tolist())})
            row.update({f"weight_{t}": v for t, v in zip(self.tasks, weights.tolist())})
            self.steps.append(row)
        self._logged = []
        rundir.write_table(run_dir / rundir.METRICS, pd.DataFrame(self.epochs))
        if self.steps:
            rundir.write_table(run_dir / rundir.STEPS, pd.DataFrame(self.steps))
        if self.cosine is not None:
            self.cosine.flush(run_dir)
        if self.tensorboard is not None:  # the rows just written, already on the host: no extra sync
            self.tensorboard.write(self.steps, self.epochs, self.cosine.rows if self.cosine is not None else None)

    def close(self) -> None:
        """Close the event files, if any (the CSV files are complete after every flush)."""
        if self.tensorboard is not None:
            self.tensorboard.close()

    def load(self, run_dir: Path, epoch: int) -> None:
        """On resume: the tables up to the checkpointed epoch."""
        metrics = rundir.read_table(run_dir, rundir.METRICS)
        self.epochs = metrics[metrics["epoch"] <= epoch].to_dict("records")
        if (run_dir / rundir.STEPS).is_file():
            steps = rundir.read_table(run_dir, rundir.STEPS)
            self.steps = steps[steps["epoch"] < epoch].to_dict("records")
        if self.cosine is not None:
            self.cosine.load(run_dir, epoch)
        if self.tensorboard is not None:  # written by the session that saved the checkpoint
            self.tensorboard.skip_existing(len(self.steps), len(self.epochs),
                                           len(self.cosine.rows) if self.cosine is not None else 0)

    # ------------------------------------------------------------------ files
    def write_config(self, run_dir: Path, cfg: Any, trainer: TrainerState) -> None:
        resolved = to_dict(cfg)
        resolved["resolved"] = {
            "n_tasks": len(self.tasks), "tasks": self.tasks, "balancer": repr(trainer.balancer),
            "balancer_hparams": _plain(trainer.balancer.hparams()), "device": str(trainer.device),
            "torch": str(torch.__version__), "python": platform.python_version(), "run_dir": str(run_dir),
        }
        rundir.atomic_write_text(run_dir / rundir.CONFIG, dump_yaml(resolved))

    def write_summary(self, run_dir: Path, trainer: TrainerState, status: str, reason: str | None = None,
                      wall: float | None = None) -> dict[str, Any]:
        self.flush(run_dir)
        frame = pd.DataFrame(self.epochs)
        best = frame[frame["epoch"] == trainer.best_epoch] if trainer.best_epoch >= 0 else frame.iloc[0:0]
        best_row = best.iloc[0].to_dict() if len(best) else {}
        trained = frame[frame["epoch"] > 0] if "epoch" in frame else frame
        summary = {
            "status": status, "reason": reason, "benchmark": self.bench.name, "variant": self.bench.variant,
            "balancer": str(trainer.balancer), "seed": trainer.cfg.seed, "scale": trainer.cfg.scale,
            "tasks": self.tasks, "epochs_trained": int(trainer.epoch), "steps": int(trainer.step_count),
            "best_epoch": int(trainer.best_epoch), "best_val_objective": _finite_or_none(trainer.best),
            "reference": trainer.reference_kind,
            "val_metrics": {k[4:]: v for k, v in best_row.items() if k.startswith("val_") and k != "val_objective"},
            "test_metrics": {k[5:]: v for k, v in best_row.items() if k.startswith("test_")},
            "step_seconds_median": float(trained["step_seconds"].median()) if "step_seconds" in trained and len(trained) else None,
            "epoch_seconds_mean": float(trained["epoch_seconds"].mean()) if "epoch_seconds" in trained and len(trained) else None,
            "peak_memory_bytes": peak_memory_bytes(trainer.device), "device": str(trainer.device),
            "wall_seconds": wall,
        }
        rundir.write_json(run_dir / rundir.SUMMARY, summary)
        self.close()  # the run's last rows are flushed: nothing more goes to the event files
        return summary


def _finite_or_none(x: float) -> float | None:
    return x if x == x and abs(x) != float("inf") else None


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
