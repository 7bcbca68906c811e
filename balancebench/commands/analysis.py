"""The analysis subcommands of ``balancebench`` (loaded by ``balancebench.main``): ``report`` and
``claims``. Parsing only; the work is done by importable functions."""

from __future__ import annotations

import argparse
from typing import Any

from experiments.config import SCALES


def _report_command(args: argparse.Namespace) -> int:
    from analysis.report import report_command

    return report_command(args)


def _claims_command(args: argparse.Namespace) -> int:
    from analysis.claims import claims_command

    return claims_command(args)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("report", help="tables (Δm%%, mean rank, metrics ± stderr) and plots of finished runs -> report.md")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--storage", help="a study storage (journal file path or Optuna RDB URL): its seed reruns")
    source.add_argument("--runs", nargs="+", metavar="DIR", help="run directories, or folders holding them")
    p.add_argument("--study", default=None, help="the study name when the storage holds several")
    p.add_argument("--out", required=True, help="output directory (report.md, tables/, figures/)")
    p.add_argument("--reference", default="auto",
                   help="Δm%% reference: auto (each run's own), literature, initial, or an STL reference file")
    p.add_argument("--weights", default=None, metavar="WEIGHTS_JSON",
                   help="extracted fixed weights (balancebench extract-weights) drawn on the weight plots")
    p.set_defaults(func=_report_command)

    p = sub.add_parser("claims", help="run (or reuse) what each published claim needs and print a verdict table")
    p.add_argument("--scale", choices=SCALES, default="tiny")
    p.add_argument("--only", default=None, metavar="ID", help="comma-separated claim ids, e.g. F1,F6")
    p.add_argument("--out", default="results/claims", help="where runs and the verdict table go (reused when present)")
    p.add_argument("--toy-dir", default=None, help="reuse finished toy runs (balancebench toy --out DIR) for F1")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_claims_command)
