"""The claims' plots: for every claim, the very numbers its tests decided on (one panel per tested
part, from :class:`analysis.verdicts.Panel`), and for F1 the toy's trajectories in loss space with
the Pareto front (seed 000 Fig. 1).

A panel of two groups shows every seed's value (joined across groups when the design pairs them
by seed), each group's mean with its 90 % t-interval, failed runs as red crosses above the values
(counted in the tick label), and for an equivalence part the mean difference with the interval that
decided it (1 − 2α of the look) against the ±margin. Nothing here computes a verdict: the panel's title carries the verdict the
test (after Holm, for a part of a claim) gave.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from analysis.plotting import plt, save, sns
from analysis.verdicts import NOT_SUPPORTED, SUPPORTED, Panel

COLOURS = {SUPPORTED: "#1b7837", NOT_SUPPORTED: "#b2182b"}
#: the intervals drawn: two-sided 90 % (the TOST interval at α = 0.05)
LEVEL = 0.90


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean and the two-sided ``level`` t-interval of the mean (NaN half-width below 2 values)."""
    mean = float(values.mean()) if len(values) else math.nan
    if len(values) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def _title(ax, panel: Panel) -> None:
    ax.set_title(f"{panel.title}\n[{panel.verdict or '—'}]", fontsize=8,
                 color=COLOURS.get(panel.verdict, "0.25"))


def _draw_groups(ax, panel: Panel) -> None:
    names = list(panel.groups)
    finite_all = _finite([v for vs in panel.groups.values() for v in vs])
    top = float(finite_all.max()) if len(finite_all) else 1.0
    span = float(np.ptp(finite_all)) if len(finite_all) > 1 else abs(top) or 1.0
    fail_y = top + 0.08 * span

    def place(i: int, values: Sequence[float | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x (seed k at the same offset in every group), y (failures at ``fail_y``), failed mask."""
        n = len(values)
        x = i + (np.linspace(-0.08, 0.08, n) if n > 1 else np.zeros(n))
        failed = np.array([v is None or not math.isfinite(v) for v in values], dtype=bool)
        y = np.array([fail_y if f else v for v, f in zip(values, failed)], dtype=float)
        return x, y, failed

    placed = {name: place(i, panel.groups[name]) for i, name in enumerate(names)}
    if panel.paired and len(names) == 2:
        (xa, ya, _), (xb, yb, _) = placed[names[0]], placed[names[1]]
        for k in range(min(len(xa), len(xb))):
            ax.plot([xa[k], xb[k]], [ya[k], yb[k]], color="0.75", lw=0.8, zorder=1)
    ticks = []
    for i, name in enumerate(names):
        values = panel.groups[name]
        x, y, failed_mask = placed[name]
        good, failed = y[~failed_mask], int(failed_mask.sum())
        ax.scatter(x[~failed_mask], good, s=14, color=sns.color_palette()[i % 10], zorder=3)
        if failed:
            ax.scatter(x[failed_mask], y[failed_mask], marker="x", color="red", s=30, zorder=4)
        mean, low, high = interval(good)
        if math.isfinite(mean):
            ax.errorbar([i + 0.22], [mean], yerr=[[mean - low], [high - mean]] if math.isfinite(low) else None,
                        fmt="D", color="k", ms=4, capsize=3, zorder=4)
        ticks.append(f"{name}\n(n={len(values)}" + (f", {failed} failed)" if failed else ")"))
    ax.set_xticks(range(len(names)), ticks, fontsize=7)
    ax.set_xlim(-0.5, len(names) - 0.3 + (1.1 if panel.margin is not None else 0.0))  # room for the inset
    ax.tick_params(axis="y", labelsize=7)
    if panel.margin is not None and len(names) == 2:
        _draw_difference(ax, panel, names)


def _draw_difference(ax, panel: Panel, names: list[str]) -> None:
    """An inset: per-seed differences (first − second; failures left out here, counted in the
    test), their mean and the t-interval at the level that decided the equivalence (``panel.level``,
    1 − 2α of the look), against the ±margin band."""
    a, b = (panel.groups[n] for n in names)
    diff = np.array([x - y for x, y in zip(a, b) if x is not None and y is not None
                     and math.isfinite(x) and math.isfinite(y)], dtype=float)
    inset = ax.inset_axes([0.74, 0.08, 0.24, 0.84])
    margin = float(panel.margin or 0.0)
    inset.axhspan(-margin, margin, color="0.88", zorder=0)
    inset.axhline(0, color="0.5", lw=0.6)
    if len(diff):
        inset.scatter(np.zeros(len(diff)), diff, s=8, color="0.3", zorder=2)
        mean, low, high = interval(diff, panel.level or LEVEL)
        if math.isfinite(low):
            inset.errorbar([0.5], [mean], yerr=[[mean - low], [high - mean]], fmt="D", color="k", ms=3, capsize=2)
    inset.set_xlim(-0.5, 1.0)
    inset.set_xticks([])
    inset.set_title(f"diff, ±{margin:g}\n{(panel.level or LEVEL):.1%} CI", fontsize=6)
    inset.tick_params(axis="y", labelsize=6)


def _draw_xy(ax, panel: Panel) -> None:
    (xname, xs), (yname, ys) = list(panel.groups.items())[:2]
    points = [(x, y, panel.labels[i] if i < len(panel.labels) else "") for i, (x, y) in enumerate(zip(xs, ys))
              if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    if points:
        x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        ax.scatter(x, y, s=20, color=sns.color_palette()[0], zorder=3)
        for px, py, label in points:
            if label:
                ax.annotate(label, (px, py), fontsize=6, xytext=(3, 3), textcoords="offset points")
        if len(points) >= 2 and np.ptp(x) > 0:
            slope, intercept = np.polyfit(x, y, 1)
            grid = np.linspace(x.min(), x.max(), 20)
            ax.plot(grid, slope * grid + intercept, color="0.4", lw=0.8, ls="--")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel(xname, fontsize=7)
    ax.set_ylabel(yname, fontsize=7)
    ax.tick_params(labelsize=7)


def _draw_threshold(ax, panel: Panel) -> None:
    name, values = next(iter(panel.groups.items()))
    good = _finite(values)
    ax.scatter(np.zeros(len(good)), good, s=24, color=sns.color_palette()[0], zorder=3)
    if panel.bound is not None:
        ax.axhline(panel.bound, color="k", ls="--", lw=0.8, label=f"bound {panel.bound:g}")
        ax.legend(fontsize=6)
    ax.set_xticks([0], [name], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)


DRAW = {"groups": _draw_groups, "xy": _draw_xy, "threshold": _draw_threshold}


def plot_claim(claim_id: str, claim: str, verdict: str, panels: Sequence[Panel], out: str | Path) -> Path | None:
    """One PNG with a panel per tested part of the claim; None when the claim has no panel."""
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows + 0.6), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        DRAW[panel.kind](ax, panel)
        _title(ax, panel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{claim_id}: {claim} — {verdict}", fontsize=9, color=COLOURS.get(verdict, "0.1"))
    return save(fig, out)


def plot_toy(toy_table: pd.DataFrame, out: str | Path, variant: str = "official") -> Path | None:
    """F1: each method's loss trajectories (L1, L2) from the five starts, their end points and the
    toy's Pareto front (the one ``pareto_distance`` measures against); ``toy_table`` is the
    toy runs' table (``toy_pareto.csv``: balancer, start, front, run_dir)."""
    from experiments.benchmarks.toy import pareto_front

    if toy_table is None or not len(toy_table):
        return None
    methods = list(dict.fromkeys(toy_table["balancer"]))
    front = pareto_front(variant).numpy()
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 4.2), squeeze=False, sharey=True)
    for ax, method in zip(axes.flat, methods):
        ax.plot(front[:, 0], front[:, 1], color="k", lw=2.0, alpha=0.35, label="Pareto front", zorder=1)
        rows = toy_table[toy_table["balancer"] == method]
        for i, (_, row) in enumerate(rows.iterrows()):
            colour = sns.color_palette()[i % 10]
            steps = Path(str(row["run_dir"])) / "steps.csv"
            if steps.is_file():
                path = pd.read_csv(steps, usecols=["loss_L1", "loss_L2"])
                ax.plot(path["loss_L1"], path["loss_L2"], color=colour, lw=0.9, zorder=2)
            marker = "o" if row["front"] == "on" else "x" if row["front"] == "off" else "s"
            ax.scatter([row["L1"]], [row["L2"]], color=colour, marker=marker, s=40, zorder=3,
                       label=f"start {row['start']}: {row['front']}")
        on = int((rows["front"] == "on").sum())
        ax.set_title(f"{method}: {on}/{len(rows)} starts end on the front", fontsize=9)
        ax.set_xlabel("L1")
        ax.legend(fontsize=6, loc="upper right")
    axes.flat[0].set_ylabel("L2")
    fig.suptitle("F1: the toy (official objective), loss trajectories from the five starts", fontsize=9)
    return save(fig, out)
