"""Task-gradient cosine similarity read from run directories: the ``cosine.csv`` the trainer's
probe wrote (``train.cosine_every``), or measured afresh on a saved checkpoint (no training)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from experiments.training import rundir
from experiments.benchmarks import create_benchmark
from experiments.errors import UserError
from experiments.training.gradients import cosine_matrix, mean_pairwise_cosine, task_gradients


@dataclass
class CosineMeasurement:
    tasks: list[str]
    #: cos_KxK (float64, CPU)
    matrix: torch.Tensor
    mean: float
    checkpoint: str
    epoch: int
    step: int

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.matrix.numpy(), index=self.tasks, columns=self.tasks)


def cosine_from_checkpoint(run_dir: str | Path, checkpoint: str = rundir.BEST, method: str = "auto") -> CosineMeasurement:
    """The K×K task-gradient cosine matrix of a run's saved model on the same probe batch the
    trainer uses (the first validation batch at the run's batch size), in eval mode."""
    from experiments.training.trainer import load_run_dir_config, resolve_device  # the run's own model and data

    run_dir = Path(run_dir)
    cfg = load_run_dir_config(run_dir)
    state = rundir.load_checkpoint(run_dir / checkpoint)
    try:
        bench = create_benchmark(cfg.benchmark.name, cfg.benchmark.variant, **cfg.benchmark.options)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    device = resolve_device("auto")  # wherever it trained: here, CUDA when available
    model = bench.build_model(**cfg.model).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    _, val_loader, _ = bench.loaders(cfg.train.batch_size, cfg.seed)
    batch = bench.to_device(next(iter(val_loader)), device)
    grads = task_gradients(model, bench, batch, method=method)
    return CosineMeasurement(list(bench.task_names), cosine_matrix(grads).cpu(), mean_pairwise_cosine(grads),
                             checkpoint, int(state.get("epoch", -1)), int(state.get("step", -1)))


def read_cosine(run_dir: str | Path) -> pd.DataFrame:
    """The run's ``cosine.csv`` (UserError when the run had no probe)."""
    run_dir = Path(run_dir)
    if not (run_dir / rundir.COSINE).is_file():
        raise UserError(f"{run_dir} has no {rundir.COSINE} (train with --set train.cosine_every=50)")
    return rundir.read_table(run_dir, rundir.COSINE)


def mean_cosine(run_dir: str | Path) -> float:
    """The mean pairwise cosine averaged over all probes of a run (NaN without cosine.csv)."""
    path = Path(run_dir) / rundir.COSINE
    if not path.is_file():
        return math.nan
    values = read_cosine(run_dir)["mean_cosine"].astype(float)
    return float(values.mean()) if len(values) else math.nan


def probe_overhead(run_dir: str | Path) -> dict[str, float]:
    """The probe's cost in a run: its total seconds and that as a fraction of the training time
    without it (the sum of epoch_seconds, which includes the in-epoch probes, minus those)."""
    probes = read_cosine(run_dir)
    metrics = rundir.read_table(Path(run_dir), rundir.METRICS)
    train_seconds = float(metrics.loc[metrics["epoch"] > 0, "epoch_seconds"].sum())
    inside = float(probes.loc[probes["step"] > 0, "seconds"].sum())
    total = float(probes["seconds"].sum())
    base = train_seconds - inside
    return {"probes": float(len(probes)), "probe_seconds": total, "train_seconds_without_probe": base,
            "overhead": total / base if base > 0 else math.nan}
