"""Fixed task weights extracted from a balancer's runs (seed 003 §3.5).

Input: the exact per-epoch mean effective weights ``weight_<task>`` of ``metrics.csv`` (the mean
over every training step of the epoch; rows ``epoch >= 1``, every epoch). ``steps.csv`` is not
used: it holds only every ``log_every``-th step, so epochs without a logged step would vanish and
the others would be subsampled.

Per run, each epoch's mean weights are normalised to sum 1; the per-epoch weights are averaged
across the runs (over the runs that reached each epoch); an exponential moving average runs over
the epochs from the first one::

    m_1 = w_1,    m_e = ema * m_{e-1} + (1 - ema) * w_e

and the last value, renormalised to sum 1, is the extracted weight vector. This is the
convention of Gama & Grassi's code (``supervised_experiments/evaluation/show_weights.py`` in
Gabriel-SGama/UnitScal_vs_SMTOs @ 45800c5): per-epoch means over every iteration, each
normalised to sum 1, the average starting at the first epoch's value, momentum 0.9, every
training epoch, the last value renormalised. They extracted from one run (``n_runs 1``); with
several runs we average the runs' per-epoch weights first (identical for one run). Any
balancer's runs work: the weights are the logged ``d loss / d loss_i``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from experiments.training import rundir
from experiments.errors import UserError

WEIGHTS_JSON = "weights.json"
WEIGHTS_PNG = "weights.png"
#: where the per-epoch weights come from (stored with them, so older records can be told apart)
SOURCE_TABLE = rundir.METRICS


@dataclass(frozen=True)
class EpochWeights:
    """One run's per-epoch mean effective weights (epochs 1..E), each row normalised to sum 1."""

    tasks: list[str]
    epochs: list[int]
    weights: list[list[float]]  # [epoch][task]
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "epochs": self.epochs, "weights": self.weights, "table": SOURCE_TABLE}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> EpochWeights:
        return cls(list(data["tasks"]), [int(e) for e in data["epochs"]],
                   [[float(w) for w in row] for row in data["weights"]], source)


def epoch_weights(run_dir: str | Path) -> EpochWeights:
    """Per-epoch mean effective weights of a run directory, from ``metrics.csv`` (every trained
    epoch). A missing run, table, column or epoch is a one-line UserError."""
    run_dir = Path(run_dir)
    summary = rundir.read_summary(run_dir)
    metrics = rundir.read_table(run_dir, rundir.METRICS)
    where = f"{rundir.METRICS} in {run_dir}"
    columns = [c for c in metrics.columns if str(c).startswith("weight_")]
    if "epoch" not in metrics.columns or not columns:
        raise UserError(f"{where} has no epoch and weight_<task> columns (the per-epoch mean weights)")
    tasks = [c[len("weight_"):] for c in columns]
    order = summary.get("tasks") if isinstance(summary, dict) else None
    if isinstance(order, list) and sorted(order) == sorted(tasks):
        tasks, columns = list(order), [f"weight_{t}" for t in order]
    try:
        frame = metrics[["epoch", *columns]].astype(float)
    except (TypeError, ValueError) as exc:
        raise UserError(f"corrupt {where}: {exc}") from None
    frame = frame[frame["epoch"] >= 1]  # epoch 0 is the untrained model: no weights
    if frame.empty:
        raise UserError(f"{where} has no trained epoch (epoch >= 1)")
    if not np.isfinite(frame.to_numpy()).all():
        raise UserError(f"corrupt {where}: non-finite epochs or weights in trained epochs")
    epochs = [int(e) for e in frame["epoch"]]
    if epochs != list(range(1, len(epochs) + 1)):
        missing = sorted(set(range(1, max(epochs) + 1)) - set(epochs))
        raise UserError(f"corrupt {where}: trained epochs must be 1..E once each (missing {missing or 'none'}, "
                        f"got {len(epochs)} rows)")
    means = frame.set_index("epoch")[columns]
    sums = means.sum(axis=1)
    if (sums <= 0).any():
        bad = int(sums[sums <= 0].index[0])
        raise UserError(f"{where}: the mean weights of epoch {bad} do not sum to a positive number")
    normalised = means.div(sums, axis=0)
    return EpochWeights(tasks, epochs, normalised.to_numpy().tolist(), str(run_dir))


def recorded_epoch_weights(record: dict[str, Any], label: str) -> EpochWeights:
    """A study rerun's per-epoch weights from its stored record (``epoch_weights``, read from its
    metrics.csv when it finished, or ``epoch_weights_error``). A record of an older version
    (steps.csv weights) is read again from its ``run_dir``. Missing: a UserError naming ``label``."""
    stored = record.get("epoch_weights")
    if stored and stored.get("table") == SOURCE_TABLE:
        return EpochWeights.from_dict(stored, record.get("run_dir", ""))
    if stored is None and record.get("epoch_weights_error"):
        raise UserError(f"{label}: {record['epoch_weights_error']}")
    try:
        return epoch_weights(record.get("run_dir") or "<no run_dir recorded>")
    except UserError as exc:
        raise UserError(f"{label}: {exc}") from None


@dataclass(frozen=True)
class ExtractedWeights:
    weights: list[float]
    tasks: list[str]
    ema: float
    sources: list[str]
    #: per-epoch weights averaged across runs (rows: epochs, columns: tasks)
    per_epoch: pd.DataFrame = field(repr=False)
    #: the EMA after each epoch (before the final renormalisation)
    trajectory: pd.DataFrame = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "weights": self.weights, "tasks": self.tasks, "ema": self.ema, "source_runs": self.sources,
            "method": "per-epoch mean effective weights (metrics.csv, every epoch >= 1), normalised to sum 1, "
                      "averaged across runs; EMA over epochs from the first (m_1 = w_1, "
                      "m_e = ema m_{e-1} + (1 - ema) w_e); last value renormalised (seed 003 §3.5; "
                      "Gama & Grassi's show_weights.py)",
            "epochs": [int(e) for e in self.per_epoch.index],
            "per_epoch": self.per_epoch.to_numpy().tolist(),
            "ema_trajectory": self.trajectory.to_numpy().tolist(),
        }

    def write(self, out: str | Path) -> Path:
        """``out/weights.json`` and ``out/weights.png``; returns the JSON path."""
        out = Path(out)
        rundir.write_json(out / WEIGHTS_JSON, self.to_dict())
        plot_weights(self, out / WEIGHTS_PNG)
        return out / WEIGHTS_JSON


def ema_extract(runs: list[EpochWeights], ema: float = 0.9) -> ExtractedWeights:
    """Average the runs' per-epoch weights (over the runs that reached each epoch), EMA over epochs."""
    if not runs:
        raise UserError("extract-weights: no runs given")
    if not (isinstance(ema, (int, float)) and 0.0 <= ema < 1.0):
        raise UserError(f"extract-weights: --ema must be in [0, 1), got {ema}")
    tasks = runs[0].tasks
    for run in runs[1:]:
        if run.tasks != tasks:
            raise UserError(f"extract-weights: runs have different tasks: {tasks} vs {run.tasks} ({run.source})")
    frames = [pd.DataFrame(r.weights, index=pd.Index(r.epochs, name="epoch"), columns=tasks) for r in runs]
    per_epoch = pd.concat(frames).groupby(level="epoch", sort=True).mean()
    values = per_epoch.to_numpy()
    trajectory = np.empty_like(values)
    trajectory[0] = values[0]
    for e in range(1, len(values)):
        trajectory[e] = ema * trajectory[e - 1] + (1.0 - ema) * values[e]
    last = trajectory[-1] / trajectory[-1].sum()
    weights = [float(w) for w in last]
    if not all(math.isfinite(w) and w >= 0 for w in weights):
        raise UserError(f"extract-weights: extracted weights are not a valid simplex point: {weights}")
    return ExtractedWeights(weights, list(tasks), float(ema), [r.source for r in runs], per_epoch,
                            pd.DataFrame(trajectory, index=per_epoch.index, columns=tasks))


def plot_weights(extracted: ExtractedWeights, path: Path) -> None:
    """Per-epoch weights (solid), their EMA (dashed) and the extracted values (horizontal lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    long = extracted.per_epoch.reset_index().melt(id_vars="epoch", var_name="task", value_name="weight")
    palette = dict(zip(extracted.tasks, sns.color_palette(n_colors=len(extracted.tasks))))
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(data=long, x="epoch", y="weight", hue="task", palette=palette, marker="o", ax=ax)
    for task, weight in zip(extracted.tasks, extracted.weights):
        ax.plot(extracted.trajectory.index, extracted.trajectory[task], linestyle="--", color=palette[task], alpha=0.7)
        ax.axhline(weight, color=palette[task], linestyle=":", linewidth=1.5)
    ax.set_title(f"effective weights per epoch (mean of {len(extracted.sources)} run(s)); "
                 f"dashed: EMA {extracted.ema}; dotted: extracted", fontsize=9)
    ax.set_ylabel("normalised weight")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def extract_weights(run_dirs: list[str | Path], ema: float = 0.9, out: str | Path | None = None) -> ExtractedWeights:
    """``balancebench extract-weights``: read the runs, extract, write ``weights.json``/``.png``."""
    runs = [epoch_weights(d) for d in run_dirs]
    extracted = ema_extract(runs, ema)
    extracted.write(default_out(run_dirs) if out is None else out)
    return extracted


def default_out(run_dirs: list[str | Path]) -> Path:
    """One run: its own directory; several: ``<common parent>/extracted_weights``."""
    paths = [Path(d).resolve() for d in run_dirs]
    if len(paths) == 1:
        return paths[0]
    import os

    return Path(os.path.commonpath([str(p) for p in paths])) / "extracted_weights"
