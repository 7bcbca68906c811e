"""Result tables: Δm%, mean rank, per-task metrics as mean ± standard error over seeds, written as
Markdown, LaTeX and CSV, from run directories or from a study storage's rerun directories.

Definitions (the same as the trainer's objective and the study results):

* Δm% of a run: seed 003 Eq. 1 via :func:`experiments.training.evaluation.delta_m` — per metric
  ``(-1)^{higher is better} (M − M_ref) / |M_ref|``, averaged over a task's metrics first, then over
  tasks, times 100 (lower is better). The reference is the run's own (see
  :func:`analysis.runs.reference_for`).
* Mean ± stderr: over the seeds (runs) of a method; stderr = sample std (ddof 1) / √n, undefined
  (shown as no ± part, NaN in CSV) for a single seed.
* Mean rank (MR): for every metric, the methods are ranked by their seed-mean (1 = best, ties
  share the average rank); MR is the mean of a method's ranks over all metrics (seeds 000/004).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.runs import RunRecord, run_frame
from analysis.storage import StorageRuns, runs_from_storage  # noqa: F401  (re-exported: analysis.tables.runs_from_storage)
from experiments.training import rundir
from experiments.benchmarks import MetricSpec

PM = "\u00b1"


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error) of the finite values; stderr is NaN below two values."""
    arr = np.array([v for v in values if v is not None and math.isfinite(float(v))], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return float(arr.mean()), se


def mean_rank(means: pd.DataFrame, specs: Sequence[MetricSpec]) -> pd.Series:
    """Mean over metrics of each method's rank (rows of ``means``: methods; columns: metric names)."""
    ranks = []
    for s in specs:
        ranks.append(means[s.name].rank(ascending=not s.higher_is_better, method="average"))
    return pd.concat(ranks, axis=1).mean(axis=1)


def summary_table(frame: pd.DataFrame, specs: Sequence[MetricSpec]) -> pd.DataFrame:
    """One setting's per-run frame (see :func:`analysis.runs.run_frame`) → one row per method:
    ``seeds``, ``delta_m_mean/_se``, ``mean_rank``, ``<metric>_mean/_se``, per-task
    ``change_<task>_mean/_se``, ``epoch_seconds_mean/_se`` and ``time_vs_uniform`` (ratio of
    mean epoch times, when uniform is present). Methods are sorted by Δm%."""
    rows = []
    change_cols = [c for c in frame.columns if c.startswith("change_")]
    for method, runs in frame.groupby("method", sort=False):
        row: dict[str, Any] = {"method": method, "seeds": len(runs), "reference": "; ".join(sorted(set(runs["reference"])))}
        for col in ["delta_m", *[s.name for s in specs], *change_cols, "epoch_seconds"]:
            row[f"{col}_mean"], row[f"{col}_se"] = mean_se(list(runs[col].astype(float)))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("method")
    means = table[[f"{s.name}_mean" for s in specs]].rename(columns=lambda c: c[: -len("_mean")])
    table.insert(4, "mean_rank", mean_rank(means, specs))
    if "uniform" in table.index and table.loc["uniform", "epoch_seconds_mean"] > 0:
        table["time_vs_uniform"] = table["epoch_seconds_mean"] / table.loc["uniform", "epoch_seconds_mean"]
    else:
        table["time_vs_uniform"] = math.nan
    return table.sort_values("delta_m_mean", kind="stable").reset_index()


def format_pm(mean: float, se: float) -> str:
    """``mean ± se`` with the mean rounded to the stderr's second significant digit."""
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if se is None or not math.isfinite(se):
        return f"{mean:.4g}"
    if se == 0:
        return f"{mean:.4g} {PM} 0"
    decimals = min(8, max(0, 1 - int(math.floor(math.log10(abs(se))))))
    return f"{mean:.{decimals}f} {PM} {se:.{decimals}f}"


def display_table(table: pd.DataFrame, specs: Sequence[MetricSpec]) -> pd.DataFrame:
    """The readable version: ``mean ± se`` strings, arrows for the better direction."""
    out = pd.DataFrame({"method": table["method"], "seeds": table["seeds"]})
    out["Δm% ↓"] = [format_pm(m, s) for m, s in zip(table["delta_m_mean"], table["delta_m_se"])]
    out["MR ↓"] = [f"{v:.2f}" for v in table["mean_rank"]]
    for s in specs:
        arrow = "↑" if s.higher_is_better else "↓"
        out[f"{s.name} {arrow}"] = [format_pm(m, e) for m, e in zip(table[f"{s.name}_mean"], table[f"{s.name}_se"])]
    out["s/epoch"] = [format_pm(m, e) for m, e in zip(table["epoch_seconds_mean"], table["epoch_seconds_se"])]
    if table["time_vs_uniform"].notna().any():
        out["time vs uniform"] = [f"{v:.2f}×" if math.isfinite(v) else "n/a" for v in table["time_vs_uniform"]]
    return out


def to_latex(shown: pd.DataFrame, caption: str = "") -> str:
    """A booktabs tabular (no jinja2 needed); ``±``, ``Δ`` and arrows become math."""
    def tex(value: Any) -> str:
        text = str(value)
        for char, repl in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                           ("$", r"\$"), ("{", r"\{"), ("}", r"\}")):
            text = text.replace(char, repl)
        for char, repl in ((PM, r"$\pm$"), ("Δ", r"$\Delta$"), ("↓", r"$\downarrow$"), ("↑", r"$\uparrow$"),
                           ("×", r"$\times$")):
            text = text.replace(char, repl)
        return text

    lines = [r"\begin{table}[t]", r"\centering"] + ([rf"\caption{{{tex(caption)}}}"] if caption else [])
    lines += [r"\begin{tabular}{l" + "r" * (shown.shape[1] - 1) + "}", r"\toprule",
              " & ".join(tex(c) for c in shown.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(tex(v) for v in row) + r" \\" for row in shown.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def slug(setting: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", setting).strip("_") or "runs"


def setting_tables(records: Sequence[RunRecord], reference: str = "auto") -> dict[str, tuple[pd.DataFrame, pd.DataFrame, list[MetricSpec]]]:
    """Per setting (``benchmark[/variant]``): (per-run frame, summary table, metric specs)."""
    frame = run_frame(records, reference)
    specs_of = {r.setting: r.specs for r in records}
    out = {}
    for setting, runs in frame.groupby("setting", sort=True):
        specs = specs_of[setting]
        runs = runs.dropna(axis=1, how="all")
        out[setting] = (runs, summary_table(runs, specs), specs)
    return out


def write_tables(tables: dict[str, tuple[pd.DataFrame, pd.DataFrame, list[MetricSpec]]], out: str | Path) -> dict[str, dict[str, Path]]:
    """``out/tables/<setting>.{md,tex,csv}`` (summary; CSV numeric) and ``<setting>_runs.csv``."""
    folder = Path(out) / "tables"
    written: dict[str, dict[str, Path]] = {}
    for setting, (runs, table, specs) in tables.items():
        name = slug(setting)
        shown = display_table(table, specs)
        files = {"md": folder / f"{name}.md", "tex": folder / f"{name}.tex", "csv": folder / f"{name}.csv",
                 "runs": folder / f"{name}_runs.csv"}
        rundir.atomic_write_text(files["md"], shown.to_markdown(index=False) + "\n")
        rundir.atomic_write_text(files["tex"], to_latex(shown, caption=f"{setting}: mean {PM} standard error over seeds"))
        rundir.write_table(files["csv"], table)
        rundir.write_table(files["runs"], runs)
        written[setting] = files
    return written
