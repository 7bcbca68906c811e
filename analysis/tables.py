"""Result tables: Δm%, mean rank, per-task metrics as mean ± standard error over seeds, written as
Markdown, LaTeX and CSV, from run directories or from a study storage's rerun directories.

Definitions:

* Δm% of a run: :func:`experiments.training.evaluation.delta_m` — per metric
  ``(-1)^{higher is better} (M − M_ref) / |M_ref|`` times 100 (lower is better), averaged either
  ``per_task`` (a task's metrics first, then over tasks: seed 003 Eq. 1, the trainer's objective)
  or ``per_metric`` (over all metrics at once: seeds 000 and 004). The reference is the run's own
  (see :func:`analysis.runs.reference_for`).
* Mean rank (MR): for every metric, the methods are ranked by their seed-mean (1 = best, ties
  share the average rank); ``per_metric``: the mean of a method's ranks over all metrics (seeds
  000 and 004; reproduces seed 000 Table 1), ``per_task``: the mean within each task first, then
  over tasks (seed 003 Eq. 2).
* Which one a table uses (``definition="auto"``): the definition of the paper its numbers are set
  beside (:data:`PAPER_OF_BENCHMARK`), else seed 003's (the objective's); every table says which.
* Mean ± stderr: over the seeds (runs) of a method; stderr = sample std (ddof 1) / √n, undefined
  (shown as no ± part, NaN in CSV) for a single seed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.runs import PAPER_OF_BENCHMARK, RunRecord, definition_for, run_frame  # noqa: F401 (re-exported)
from analysis.storage import StorageRuns, runs_from_storage  # noqa: F401  (re-exported: analysis.tables.runs_from_storage)
from experiments.training import rundir
from experiments.benchmarks import MetricSpec
from experiments.training.evaluation import DELTA_M_DEFINITIONS, PER_METRIC, PER_TASK, check_definition

PM = "\u00b1"
#: how each mean-rank definition is cited in tables
MEAN_RANK_DEFINITIONS: dict[str, str] = {
    PER_METRIC: "mean rank over all metrics (seeds 000 and 004)",
    PER_TASK: "mean rank within each task first, then over tasks (seed 003 Eq. 2)",
}


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error) of the finite values; stderr is NaN below two values."""
    arr = np.array([v for v in values if v is not None and math.isfinite(float(v))], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    se = float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan
    return float(arr.mean()), se


def mean_rank(means: pd.DataFrame, specs: Sequence[MetricSpec], definition: str = PER_METRIC) -> pd.Series:
    """Each method's mean rank (rows of ``means``: methods; columns: metric names): the mean of
    its per-metric ranks over all metrics (``per_metric``, seeds 000/004) or within each task
    first, then over tasks (``per_task``, seed 003 Eq. 2)."""
    check_definition(definition)
    ranks = pd.concat([means[s.name].rank(ascending=not s.higher_is_better, method="average") for s in specs],
                      axis=1, keys=[s.name for s in specs])
    if definition == PER_METRIC:
        return ranks.mean(axis=1)
    tasks = sorted({s.task for s in specs})
    within = [ranks[[s.name for s in specs if s.task == t]].mean(axis=1) for t in tasks]
    return pd.concat(within, axis=1).mean(axis=1)


def summary_table(frame: pd.DataFrame, specs: Sequence[MetricSpec], definition: str = PER_TASK) -> pd.DataFrame:
    """One setting's per-run frame (see :func:`analysis.runs.run_frame`, whose Δm% used
    ``definition``) → one row per method: ``seeds``, ``delta_m_mean/_se``, ``mean_rank`` (the
    same ``definition``), ``<metric>_mean/_se``, per-task ``change_<task>_mean/_se``,
    ``epoch_seconds_mean/_se`` and ``time_vs_uniform`` (ratio of mean epoch times, when uniform
    is present). Methods are sorted by Δm%; ``attrs["definition"]`` is the definition used."""
    rows = []
    change_cols = [c for c in frame.columns if c.startswith("change_")]
    for method, runs in frame.groupby("method", sort=False):
        row: dict[str, Any] = {"method": method, "seeds": len(runs), "reference": "; ".join(sorted(set(runs["reference"])))}
        for col in ["delta_m", *[s.name for s in specs], *change_cols, "epoch_seconds"]:
            row[f"{col}_mean"], row[f"{col}_se"] = mean_se(list(runs[col].astype(float)))
        rows.append(row)
    table = pd.DataFrame(rows).set_index("method")
    means = table[[f"{s.name}_mean" for s in specs]].rename(columns=lambda c: c[: -len("_mean")])
    table.insert(4, "mean_rank", mean_rank(means, specs, definition))
    if "uniform" in table.index and table.loc["uniform", "epoch_seconds_mean"] > 0:
        table["time_vs_uniform"] = table["epoch_seconds_mean"] / table.loc["uniform", "epoch_seconds_mean"]
    else:
        table["time_vs_uniform"] = math.nan
    table = table.sort_values("delta_m_mean", kind="stable").reset_index()
    table["definition"] = definition
    table.attrs["definition"] = definition
    return table


def definition_note(definition: str, benchmark: str | None = None) -> str:
    """One line saying which Δm% and MR definitions a table uses, and why."""
    paper = PAPER_OF_BENCHMARK.get(benchmark or "")
    why = (f"as in {paper[0]}, which the {benchmark} numbers are compared with" if paper and paper[1] == definition
           else "chosen explicitly" if paper else "balancebench's validation objective")
    return (f"Δm%: {DELTA_M_DEFINITIONS[definition]}; MR: {MEAN_RANK_DEFINITIONS[definition]} "
            f"[definition {definition!r}, {why}].")


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


def setting_tables(records: Sequence[RunRecord], reference: str = "auto", definition: str = "auto"
                   ) -> dict[str, tuple[pd.DataFrame, pd.DataFrame, list[MetricSpec]]]:
    """Per setting (``benchmark[/variant]``): (per-run frame, summary table, metric specs).
    ``definition``: ``auto`` (per benchmark, :func:`analysis.runs.definition_for`), ``per_task``
    or ``per_metric``; the summary's ``attrs`` hold it and the benchmark."""
    frame = run_frame(records, reference, definition=definition)
    specs_of = {r.setting: r.specs for r in records}
    out = {}
    for setting, runs in frame.groupby("setting", sort=True):
        specs = specs_of[setting]
        runs = runs.dropna(axis=1, how="all")
        table = summary_table(runs, specs, str(runs["delta_m_definition"].iloc[0]))
        table.attrs["benchmark"] = str(runs["benchmark"].iloc[0])
        out[setting] = (runs, table, specs)
    return out


def write_tables(tables: dict[str, tuple[pd.DataFrame, pd.DataFrame, list[MetricSpec]]], out: str | Path) -> dict[str, dict[str, Path]]:
    """``out/tables/<setting>.{md,tex,csv}`` (summary; CSV numeric) and ``<setting>_runs.csv``."""
    folder = Path(out) / "tables"
    written: dict[str, dict[str, Path]] = {}
    for setting, (runs, table, specs) in tables.items():
        name = slug(setting)
        shown = display_table(table, specs)
        note = definition_note(table.attrs.get("definition", PER_TASK), table.attrs.get("benchmark"))
        files = {"md": folder / f"{name}.md", "tex": folder / f"{name}.tex", "csv": folder / f"{name}.csv",
                 "runs": folder / f"{name}_runs.csv"}
        rundir.atomic_write_text(files["md"], f"{note}\n\n" + shown.to_markdown(index=False) + "\n")
        rundir.atomic_write_text(files["tex"], to_latex(shown, caption=f"{setting}: mean {PM} standard error over seeds. {note}"))
        rundir.write_table(files["csv"], table)
        rundir.write_table(files["runs"], runs)
        written[setting] = files
    return written
