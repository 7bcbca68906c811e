"""Comparison plots across methods and settings: Δm% with seed error bars, per-task change against
the reference (STL when available), cosine similarity against the balancer-vs-uniform gain
(seed 003 Fig. 7), and time per epoch relative to uniform (seed 000 Fig. 4)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.gradients import mean_cosine
from analysis.plotting import plt, save, sns
from analysis.runs import RunRecord
from analysis.tables import slug

#: per setting: (per-run frame, summary table, specs), as :func:`analysis.tables.setting_tables`
Tables = Mapping[str, tuple[pd.DataFrame, pd.DataFrame, list]]


def plot_delta_m(setting: str, runs: pd.DataFrame, table: pd.DataFrame, out: str | Path) -> Path:
    """Δm% per method: mean with ±1 stderr error bars over seeds, each seed as a dot."""
    order = list(table["method"])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(order) + 2), 4))
    x = np.arange(len(order))
    se = table["delta_m_se"].fillna(0.0).to_numpy()
    ax.bar(x, table["delta_m_mean"], yerr=se, capsize=4, color=sns.color_palette(n_colors=len(order)), alpha=0.8)
    for i, method in enumerate(order):
        values = runs.loc[runs["method"] == method, "delta_m"].to_numpy()
        ax.scatter(np.full(len(values), i) + np.linspace(-0.15, 0.15, len(values)), values, color="k", s=12, zorder=3)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, order, rotation=20)
    ax.set_ylabel(f"Δm% vs {runs['reference'].iloc[0]} (lower is better)")
    ax.set_title(f"Δm% per method (mean ± stderr over seeds) — {setting}", fontsize=10)
    return save(fig, out)


def plot_task_changes(setting: str, runs: pd.DataFrame, out: str | Path) -> Path:
    """Per task, each method's relative change against the reference (the Δm% of that task's
    metrics alone; negative = better than the reference), mean ± stderr over seeds."""
    cols = [c for c in runs.columns if c.startswith("change_")]
    long = runs.melt(id_vars=["method", "seed"], value_vars=cols, var_name="task", value_name="change")
    long["task"] = long["task"].str[len("change_"):]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(cols) * max(1, runs["method"].nunique()) / 2 + 3), 4))
    sns.barplot(data=long, x="task", y="change", hue="method", errorbar="se", capsize=0.1, ax=ax)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel(f"change vs {runs['reference'].iloc[0]} (%; lower is better)")
    ax.set_title(f"per-task change relative to the reference — {setting}", fontsize=10)
    if len(cols) > 4:
        ax.tick_params(axis="x", rotation=45)
    return save(fig, out)


def cosine_gain_points(records: Sequence[RunRecord], tables: Tables) -> pd.DataFrame:
    """Per setting: mean task-gradient cosine of its uniform runs (all runs when uniform has no
    cosine.csv) and the gain ``Δm%(uniform) − min_b Δm%(b)`` of the best other method (> 0: a
    balancer beats uniform). Settings without uniform or without any cosine are left out."""
    rows = []
    for setting, (_, table, _) in tables.items():
        if "uniform" not in set(table["method"]) or len(table) < 2:
            continue
        own = [r for r in records if r.setting == setting]
        uniform = [mean_cosine(r.run_dir) for r in own if r.method == "uniform"]
        values = [v for v in uniform if math.isfinite(v)] or [v for v in (mean_cosine(r.run_dir) for r in own) if math.isfinite(v)]
        if not values:
            continue
        base = float(table.loc[table["method"] == "uniform", "delta_m_mean"].iloc[0])
        others = table[table["method"] != "uniform"]
        best = others.loc[others["delta_m_mean"].idxmin()]
        rows.append({"setting": setting, "mean_cosine": float(np.mean(values)), "gain": base - float(best["delta_m_mean"]),
                     "best_method": best["method"], "uniform_delta_m": base, "best_delta_m": float(best["delta_m_mean"])})
    return pd.DataFrame(rows)


def plot_cosine_vs_gain(points: pd.DataFrame, out: str | Path) -> Path | None:
    """Seed 003 Fig. 7: mean cosine similarity (x) against the best balancer's gain over uniform
    (y), one labelled point per benchmark/variant."""
    if points.empty:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sns.scatterplot(data=points, x="mean_cosine", y="gain", hue="setting", s=80, ax=ax, legend=False)
    for _, p in points.iterrows():
        ax.annotate(p["setting"], (p["mean_cosine"], p["gain"]), fontsize=8, xytext=(4, 4), textcoords="offset points")
    if len(points) >= 2 and points["mean_cosine"].nunique() > 1:
        slope, intercept = np.polyfit(points["mean_cosine"], points["gain"], 1)
        xs = np.linspace(points["mean_cosine"].min(), points["mean_cosine"].max(), 10)
        ax.plot(xs, slope * xs + intercept, "k--", lw=0.8, label=f"least squares (slope {slope:.3g})")
        ax.legend(fontsize=8)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("mean pairwise task-gradient cosine (uniform runs)")
    ax.set_ylabel("Δm%(uniform) − Δm%(best balancer)")
    ax.set_title("cosine similarity vs. balancer gain over uniform (seed 003 Fig. 7)", fontsize=10)
    return save(fig, out)


def time_frame(tables: Tables) -> pd.DataFrame:
    """Per setting and method: mean epoch seconds and the ratio to uniform's (NaN without uniform)."""
    rows = []
    for setting, (_, table, _) in tables.items():
        for _, row in table.iterrows():
            rows.append({"setting": setting, "method": row["method"], "epoch_seconds": row["epoch_seconds_mean"],
                         "relative": row["time_vs_uniform"]})
    return pd.DataFrame(rows)


def plot_time_per_epoch(tables: Tables, out: str | Path) -> Path | None:
    """Seed 000 Fig. 4: training time per epoch relative to uniform's, per method and setting."""
    frame = time_frame(tables)
    frame = frame[frame["relative"].notna()] if not frame.empty else frame
    if frame.empty:
        return None
    fig, ax = plt.subplots(figsize=(max(5.0, 1.0 * frame["method"].nunique() + 3) + 3, 4))
    sns.barplot(data=frame, x="method", y="relative", hue="setting", ax=ax)
    ax.axhline(1.0, color="k", lw=0.8, ls="--")
    ax.set_ylabel("time per epoch / uniform's")
    ax.set_title("training time per epoch relative to uniform (seed 000 Fig. 4)", fontsize=10)
    ax.tick_params(axis="x", rotation=20)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="setting", title_fontsize=8)
    return save(fig, out)


def setting_plots(setting: str, runs: pd.DataFrame, table: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """The per-setting comparison plots: ``delta_m_<setting>.png`` and ``tasks_<setting>.png``."""
    name = slug(setting)
    return {"delta_m": plot_delta_m(setting, runs, table, Path(out_dir) / f"delta_m_{name}.png"),
            "tasks": plot_task_changes(setting, runs, Path(out_dir) / f"tasks_{name}.png")}
