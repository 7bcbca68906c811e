"""``balancebench study | results | extract-weights``: the studies command group (``demo`` is in
:mod:`balancebench.commands.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from experiments.config import SCALES
from experiments.studies.config import REFERENCES


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("study", help="fair Optuna study: same budget for every method, reruns over seeds, table")
    p.add_argument("--config", required=True, help="study YAML, e.g. configs/studies/demo.yaml")
    p.add_argument("--scale", choices=SCALES, default=None)
    p.add_argument("--storage", default=None,
                   help="journal file path or Optuna RDB URL (default: <out>/<study>/study.journal; "
                        "postgresql://user:pw@host/db to share one study between machines)")
    p.add_argument("--workers", type=int, default=None, help="worker processes on this machine (default 1)")
    p.add_argument("--n-trials", type=int, default=None, help="trial budget per method (all workers together)")
    p.add_argument("--methods", default=None, help="comma-separated, e.g. uniform,famo,fixed_from_famo")
    p.add_argument("--out", default=None, help="parent directory of study results (default: results/)")
    add_reference_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-trial lines")
    p.set_defaults(func=study_command)

    p = sub.add_parser("results", help="results and budget tables of a study, from its storage")
    p.add_argument("--storage", required=True, help="journal file path or Optuna RDB URL")
    p.add_argument("--study", default=None, help="study name (needed when the storage holds several)")
    p.add_argument("--format", choices=("md", "csv", "latex"), default="md")
    p.add_argument("--out", default=None, help="also write results.{md,csv,tex} and budget.csv here")
    p.set_defaults(func=results_command)

    p = sub.add_parser("extract-weights", help="fixed weights by EMA over epochs from runs' logged weights")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--ema", type=float, default=0.9, help="EMA momentum (seed 003: 0.9)")
    p.add_argument("--out", default=None, help="directory for weights.json and weights.png "
                                               "(default: the run directory, or <common parent>/extracted_weights)")
    p.set_defaults(func=extract_command)


def add_reference_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", choices=REFERENCES, default=None,
                   help="what Δm%% is measured against (default: the study YAML's, else stl: single-task runs of "
                        "the same setting, trained once; untrained: the untrained model; literature: the papers' "
                        "full-scale STL values)")


def study_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    for key in ("scale", "storage", "workers", "out", "reference"):
        if getattr(args, key, None) is not None:
            overrides[key] = getattr(args, key)
    if getattr(args, "n_trials", None) is not None:
        overrides["n_trials"] = args.n_trials
    if getattr(args, "methods", None):
        overrides["methods"] = [m.strip() for m in args.methods.split(",") if m.strip()]
    return overrides


def print_outcome(outcome: Any) -> None:
    from experiments.studies.results import render

    print(render(outcome.results, "md"))
    for kind, path in outcome.files.items():
        print(f"{kind}: {path}")
    print(f"storage: {outcome.storage}  (optuna-dashboard {outcome.storage})")
    print(f"finished in {outcome.seconds / 60:.1f} min")


def study_command(args: argparse.Namespace) -> int:
    from experiments.studies.driver import run_study
    from experiments.studies.config import load_study_config

    cfg = load_study_config(args.config, study_overrides(args))
    outcome = run_study(cfg, progress=not args.quiet)
    print_outcome(outcome)
    return 0


def results_command(args: argparse.Namespace) -> int:
    from experiments.studies.results import render, results_table, write_results

    table = results_table(args.storage, args.study)
    print(render(table, args.format), end="")
    if args.out:
        for kind, path in write_results(table, Path(args.out)).items():
            print(f"{kind}: {path}")
    return 0


def extract_command(args: argparse.Namespace) -> int:
    from experiments.studies.extract import default_out, extract_weights

    out = Path(args.out) if args.out else default_out(args.run_dirs)
    extracted = extract_weights(args.run_dirs, ema=args.ema, out=out)
    print("weights: " + ", ".join(f"{t}={w:.4f}" for t, w in zip(extracted.tasks, extracted.weights)))
    print(out / "weights.json")
    return 0

