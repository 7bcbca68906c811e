"""``balancebench demo``: the main job on the embedded default storage, end to end.

A small fair study of the default methods (uniform, si, rlw, famo, marigold, fixed_from_famo) on
Multi-MNIST CL_RR at small scale (``configs/studies/demo.yaml``): the two single-task reference
runs (one per task, seed 0; trained once, reused on every later call), the search with the same
budget for every method, the reruns over 3 seeds, and the results table with Δm% vs STL (printed as
Markdown, written as CSV / Markdown / LaTeX next to the study's storage). ``--reference untrained``
measures against the untrained model instead, and every header says so.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from balancebench.commands.studies import add_reference_option, print_outcome, study_overrides
from experiments.config import CONFIG_DIR

DEMO_CONFIG = CONFIG_DIR / "studies" / "demo.yaml"


def run_demo(overrides: dict[str, Any] | None = None, progress: bool = True) -> Any:
    from experiments.studies.driver import run_study
    from experiments.studies.config import load_study_config

    outcome = run_study(load_study_config(DEMO_CONFIG, overrides), progress=progress)
    report = report_hook(outcome)
    if getattr(report, "path", None) is not None:
        outcome.files["report"] = Path(report.path)
    return outcome


def report_hook(outcome: Any) -> Any:
    """The study's report (:func:`analysis.report.report`) from its storage URL, study name and
    results directory; returns its result (``.path``: the report file)."""
    from analysis.report import report

    return report(storage=outcome.storage_url, study=outcome.group, out=outcome.out_dir)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("demo", help="a small fair study of the default methods on Multi-MNIST CL_RR (≤ 10 min)")
    p.add_argument("--storage", default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--out", default=None, help="parent directory of study results (default: results/)")
    add_reference_option(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    outcome = run_demo(study_overrides(args), progress=not args.quiet)
    print_outcome(outcome)
    return 0
