"""Plots over training: effective-weight trajectories (with EMA-extracted fixed weights on top),
task-gradient cosine over training, and the toy's trajectories in loss space (seed 000 Fig. 1)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.plotting import plt, save, sns
from analysis.runs import RunRecord
from experiments.training import rundir
from experiments.errors import UserError


def weight_frame(records: Sequence[RunRecord]) -> pd.DataFrame:
    """Long frame of effective weights: setting, method, seed, x, unit (step/epoch), task, weight.

    From steps.csv (every ``log_every`` steps) when the run has one, else from the exact
    per-epoch means in metrics.csv. Weights are normalised to sum 1 per row, so balancers whose
    effective weights are not on the simplex (e.g. SI's 1/(K ℓ_i)) share the axis with the rest
    and with extracted fixed weights."""
    parts = []
    for r in records:
        tasks = r.tasks
        cols = [f"weight_{t}" for t in tasks]
        if (r.run_dir / rundir.STEPS).is_file():
            table, x, unit = rundir.read_table(r.run_dir, rundir.STEPS), "step", "step"
        else:
            table = r.metrics()
            table, x, unit = table[table["epoch"] > 0], "epoch", "epoch"
        if not tasks or not set(cols) <= set(table.columns) or table.empty:
            continue
        w = table[cols].astype(float)
        w = w.div(w.sum(axis=1).where(lambda s: s != 0), axis=0)
        w.columns = tasks
        w.insert(0, "x", table[x].to_numpy())
        long = w.melt(id_vars="x", var_name="task", value_name="weight")
        long.insert(0, "unit", unit)
        long.insert(0, "seed", r.seed)
        long.insert(0, "method", r.method)
        long.insert(0, "setting", r.setting)
        parts.append(long)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def read_weights_json(path: str | Path) -> dict[str, Any]:
    """An extracted-weights file (``balancebench extract-weights``): keys ``weights``, ``tasks``,
    ``ema`` and ``runs`` or ``source_runs``."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"weights file not found: {path}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"corrupt weights file {path}: {exc}") from None
    if not isinstance(data, dict) or "weights" not in data or "tasks" not in data:
        raise UserError(f"{path}: a weights file needs 'weights' and 'tasks'")
    if len(data["weights"]) != len(data["tasks"]):
        raise UserError(f"{path}: {len(data['weights'])} weights for {len(data['tasks'])} tasks")
    data.setdefault("runs", data.get("source_runs", []))
    return data


def plot_weight_trajectories(records: Sequence[RunRecord], out_dir: str | Path,
                             weights_json: str | Path | None = None) -> list[Path]:
    """Per setting, ``weights_<setting>.png``: one row per method; left every run (one line per
    seed), right the mean over seeds with a ±1 stderr band; extracted fixed weights dashed."""
    frame = weight_frame(records)
    if frame.empty:
        return []
    extracted = read_weights_json(weights_json) if weights_json else None
    sources = {str(Path(p).resolve()) for p in (extracted or {}).get("runs", [])}
    source_methods = {r.method for r in records if str(Path(r.run_dir).resolve()) in sources}
    paths = []
    for setting, data in frame.groupby("setting", sort=True):
        methods = list(dict.fromkeys(data["method"]))
        palette = dict(zip(sorted(set(data["task"])), sns.color_palette(n_colors=data["task"].nunique())))
        fig, axes = plt.subplots(len(methods), 2, figsize=(11, 2.6 * len(methods)), squeeze=False, sharey=True)
        for row, method in enumerate(methods):
            own = data[data["method"] == method]
            unit = own["unit"].iloc[0]
            sns.lineplot(data=own, x="x", y="weight", hue="task", units="seed", estimator=None, palette=palette,
                         lw=0.8, alpha=0.8, ax=axes[row, 0], legend=row == 0)
            sns.lineplot(data=own, x="x", y="weight", hue="task", errorbar="se", palette=palette, ax=axes[row, 1],
                         legend=False)
            axes[row, 0].set_title(f"{method}: each run ({own['seed'].nunique()} seeds)", fontsize=9)
            axes[row, 1].set_title(f"{method}: mean ± stderr over seeds", fontsize=9)
            for ax in axes[row]:
                ax.set_xlabel(unit)
                ax.set_ylabel("normalised weight")
                if extracted and (not source_methods or method in source_methods):
                    for task, value in zip(extracted["tasks"], extracted["weights"]):
                        ax.axhline(value, ls="--", lw=1.2, color=palette.get(task, "k"),
                                   label=f"EMA {extracted.get('ema', '')} fixed: {task}")
        note = f"; dashed: fixed weights extracted by EMA {extracted.get('ema', '')}" if extracted else ""
        fig.suptitle(f"effective task weights — {setting}{note}", fontsize=11)
        paths.append(save(fig, Path(out_dir) / f"weights_{_slug(setting)}.png"))
    return paths


def plot_cosine_over_training(records: Sequence[RunRecord], out_dir: str | Path) -> list[Path]:
    """Per setting, ``cosine_<setting>.png``: mean pairwise task-gradient cosine on the probe batch
    against the training step, mean ± stderr over seeds per method (runs with cosine.csv only)."""
    parts = []
    for r in records:
        if (r.run_dir / rundir.COSINE).is_file():
            table = rundir.read_table(r.run_dir, rundir.COSINE)[["step", "mean_cosine"]]
            parts.append(table.assign(setting=r.setting, method=r.method, seed=r.seed))
    if not parts:
        return []
    frame = pd.concat(parts, ignore_index=True)
    paths = []
    for setting, data in frame.groupby("setting", sort=True):
        fig, ax = plt.subplots(figsize=(7, 4))
        sns.lineplot(data=data, x="step", y="mean_cosine", hue="method", errorbar="se", marker="o", ax=ax)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_ylabel("mean pairwise cosine (probe batch)")
        ax.set_title(f"task-gradient cosine over training — {setting}", fontsize=10)
        paths.append(save(fig, Path(out_dir) / f"cosine_{_slug(setting)}.png"))
    return paths


def plot_toy_trajectories(records: Sequence[RunRecord], out: str | Path) -> Path | None:
    """Seed 000 Fig. 1: every toy run's (L1, L2) path from its start (circle) to its end (star)
    against the numerical Pareto front, one panel per method. None when there are no toy runs."""
    import torch

    from experiments.benchmarks.toy import pareto_front, toy_losses

    toy = [r for r in records if r.benchmark == "toy" and (r.run_dir / rundir.STEPS).is_file()]
    if not toy:
        return None
    methods = list(dict.fromkeys(r.method for r in toy))
    front = pareto_front().numpy()
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4.5), squeeze=False, sharey=True)
    colors = sns.color_palette(n_colors=max(len(toy), 1))
    for ax, method in zip(axes[0], methods):
        ax.plot(front[:, 0], front[:, 1], color="k", lw=2, label="Pareto front")
        for i, r in enumerate(rr for rr in toy if rr.method == method):
            steps = rundir.read_table(r.run_dir, rundir.STEPS)
            start = r.config.get("benchmark", {}).get("options", {}).get("start")
            xs, ys = list(steps["loss_L1"]), list(steps["loss_L2"])
            if start is not None:
                first = toy_losses(torch.tensor(start, dtype=torch.float64))
                xs, ys = [float(first[0])] + xs, [float(first[1])] + ys
                label = f"start ({start[0]:g}, {start[1]:g})"
            else:
                label = r.run_dir.name
            ax.plot(xs, ys, color=colors[i % len(colors)], lw=1.2, label=label)
            ax.scatter([xs[0]], [ys[0]], color=colors[i % len(colors)], marker="o", s=30, zorder=3)
            ax.scatter([xs[-1]], [ys[-1]], color=colors[i % len(colors)], marker="*", s=120, zorder=3,
                       edgecolor="k", linewidths=0.5)
        ax.set_title(method)
        ax.set_xlabel("L1")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("L2")
    fig.suptitle("toy (seed 000 Fig. 1): trajectories in loss space; ○ start, ★ end", fontsize=11)
    return save(fig, Path(out))


def _slug(text: str) -> str:
    from analysis.tables import slug

    return slug(text)
