"""``balancebench report``: tables and plots of finished runs in one ``report.md``.

Sources: run directories (``--runs DIR...``; each a run directory or a folder holding them) or a
study storage (``--storage URL``: its rerun directories, see :mod:`analysis.storage`). Output under
``--out``: ``report.md`` (tables inline, PNGs by relative link), ``tables/`` (Markdown, LaTeX,
numeric CSV per setting, plus every run's row) and ``figures/``. Runs that did not complete
(diverged, failed) are left out of the means and listed in a "survivors only" note at the top.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import plots, trajectories
from analysis.runs import RunRecord, find_run_dirs, load_runs
from analysis.tables import PM, definition_note, display_table, setting_tables, slug, write_tables
from experiments.training import rundir
from experiments.errors import UserError


@dataclass
class Report:
    path: Path
    tables: dict[str, Any]
    figures: list[Path] = field(default_factory=list)


def report(*, storage: str | None = None, runs: Sequence[str | Path] | None = None, out: str | Path,
           study: str | None = None, reference: str = "auto", weights: str | Path | None = None) -> Report:
    """Build ``out/report.md`` from a study storage or run directories (exactly one of them)."""
    if (storage is None) == (not runs):
        raise UserError("give either --storage URL or --runs DIR... (one of them)")
    notes: list[str] = []
    if storage is not None:
        from analysis.storage import runs_from_storage

        found = runs_from_storage(storage, study)
        if not found.reruns:
            raise UserError(f"study {found.group!r} in {found.storage} has no finished rerun yet "
                            "(the report uses the best configurations' seed reruns)")
        records = load_runs(list(found.reruns), methods=found.reruns)
        notes += survivors_note(list(found.reruns))
        source = f"study `{found.group}` in storage `{found.storage}` — the seed reruns of each method's best configuration"
        if found.missing:
            notes.append(f"methods without a finished rerun (not in the tables): {', '.join(found.missing)}")
        if weights is None:  # fixed_from_X reruns keep the extracted weights next to their seed dirs
            extracted = [Path(d).parent / "weights.json" for d in found.reruns]
            weights = next((w for w in extracted if w.is_file()), None)
    else:
        records = load_runs(list(runs or []))
        notes += survivors_note(list(runs or []))
        source = f"{len(records)} run directories under " + ", ".join(f"`{p}`" for p in runs or [])
    return build_report(records, out, source=source, reference=reference, weights=weights, notes=notes)


def survivors_note(paths: Sequence[str | Path]) -> list[str]:
    """A note when some run directories did not complete: the tables average the others."""
    left_out = []
    for run_dir in find_run_dirs(paths):
        try:
            state = rundir.read_summary(run_dir).get("status")
        except UserError:
            state = "unreadable"
        if state != "complete":
            left_out.append(f"{run_dir.parent.name}/{run_dir.name} ({state})")
    if not left_out:
        return []
    return [f"survivors only: means, ± and seed counts are over the complete runs; left out: {', '.join(left_out)}"]


def build_report(records: Sequence[RunRecord], out: str | Path, source: str = "", reference: str = "auto",
                 weights: str | Path | None = None, notes: Sequence[str] = ()) -> Report:
    out = Path(out)
    figures_dir = out / "figures"
    tables = setting_tables(records, reference)
    write_tables(tables, out)
    lines = ["# balancebench report", "", f"Source: {source}.", ""]
    lines += [f"> {n}" for n in notes] + ([""] if notes else [])
    lines += [f"Numbers are mean {PM} standard error over seeds (runs); Δm% (lower is better) is on the test "
              "split at each run's best validation epoch, with the definition of the paper each setting is "
              "compared with (stated per setting). Tables as LaTeX and CSV: `tables/`.", ""]
    figures: list[Path] = []
    for setting, (runs, table, specs) in tables.items():
        lines += [f"## {setting}", "", f"Δm% vs {' + '.join(sorted(set(runs['reference'])))}; "
                  f"split: {', '.join(sorted(set(runs['split'])))}. "
                  + definition_note(table.attrs["definition"], table.attrs.get("benchmark")), "",
                  display_table(table, specs).to_markdown(index=False), ""]
        made = plots.setting_plots(setting, runs, table, figures_dir)
        lines += [_img(made["delta_m"], out, f"Δm% per method — {setting}"),
                  _img(made["tasks"], out, f"per-task change — {setting}"), ""]
        figures += list(made.values())
    own_weights = trajectories.plot_weight_trajectories(records, figures_dir, weights)
    cosine = trajectories.plot_cosine_over_training(records, figures_dir)
    if own_weights:
        lines += ["## Effective weights over training", "",
                  "Each balancer's effective weights d loss / d ℓ_i (normalised to sum 1): every run on the left, "
                  "the mean over seeds with a ±1 stderr band on the right"
                  + (f"; dashed: the EMA-extracted fixed weights of `{weights}`." if weights else "."), ""]
        lines += [_img(p, out, p.stem) for p in own_weights] + [""]
        figures += own_weights
    points = plots.cosine_gain_points(records, tables)
    fig7 = plots.plot_cosine_vs_gain(points, figures_dir / "cosine_vs_gain.png")
    if cosine or fig7:
        lines += ["## Task-gradient cosine similarity", "",
                  "Mean pairwise cosine of the per-task gradients of the shared trunk on a fixed probe batch "
                  "(`cosine.csv`, trainer option `train.cosine_every`).", ""]
        lines += [_img(p, out, p.stem) for p in cosine]
        if fig7:
            lines += ["", points.to_markdown(index=False, floatfmt=".4g"), "", _img(fig7, out, "cosine vs gain")]
        lines += [""]
        figures += cosine + ([fig7] if fig7 else [])
    fig4 = plots.plot_time_per_epoch(tables, figures_dir / "time_per_epoch.png")
    if fig4:
        lines += ["## Time per epoch relative to uniform", "", _img(fig4, out, "time per epoch"), ""]
        figures.append(fig4)
    toy = trajectories.plot_toy_trajectories(records, figures_dir / "toy_trajectories.png")
    if toy:
        lines += ["## Toy trajectories in loss space", "", _img(toy, out, "toy trajectories"), ""]
        figures.append(toy)
    path = out / "report.md"
    rundir.atomic_write_text(path, "\n".join(lines) + "\n")
    return Report(path, {k: v[1] for k, v in tables.items()}, figures)


def _img(path: Path, out: Path, alt: str) -> str:
    return f"![{alt}]({path.relative_to(out).as_posix()})"


def report_command(args: Any) -> int:
    result = report(storage=args.storage, runs=args.runs, out=args.out, study=args.study,
                    reference=args.reference, weights=args.weights)
    for setting, table in result.tables.items():
        print(f"{setting}: {len(table)} methods, {int(table['seeds'].sum())} runs")
    print(result.path)
    return 0


def read_report_tables(path: str | Path) -> dict[str, pd.DataFrame]:
    """The numeric summary CSVs next to a report (for checks and notebooks)."""
    folder = Path(path).parent / "tables" if Path(path).is_file() else Path(path) / "tables"
    return {p.stem: pd.read_csv(p) for p in sorted(folder.glob("*.csv")) if not p.stem.endswith("_runs")}


__all__ = ["Report", "build_report", "report", "report_command", "slug"]
