"""``balancebench`` command line: parses arguments and dispatches to importable functions.

This module is the composition root: commands that belong to ``analysis`` are looked up by
module path when they run, so the training code itself never imports analysis.
"""

from __future__ import annotations

import os

# Idle OpenMP threads spin by default; on small CPU machines that steals cycles from the threads
# doing work (QM9 steps ran 2-4x slower). Set before anything imports torch; users can override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import importlib  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from experiments.config import CONFIG_DIR, SCALES  # noqa: F401  (CONFIG_DIR re-exported)
from experiments.errors import UserError


def _command(path: str) -> Callable[[argparse.Namespace], Any]:
    """Import ``module:function`` lazily, so `balancebench list` stays fast."""

    def run(args: argparse.Namespace) -> Any:
        module, name = path.split(":")
        return getattr(importlib.import_module(module), name)(args)

    return run


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train one model with one balancer; prints the run directory last")
    p.add_argument("--config", help="benchmark YAML, e.g. configs/qm9.yaml (not needed with --resume)")
    p.add_argument("--scale", choices=SCALES, default=None)
    p.add_argument("--balancer", default=None, help="registered balancer name (see `balancebench list`)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=3e-4 --set balancer.hparams.gamma=0.01")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="parent directory of run directories (default: runs/)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue an interrupted run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_command("experiments.commands:train_command"))


def _add_stl(sub: Any) -> None:
    p = sub.add_parser("stl", help="train one single-task model per task (STL references for Δm%%)")
    p.add_argument("--config", required=True)
    p.add_argument("--scale", choices=SCALES, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="output directory (default: runs/stl_<benchmark>)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_command("experiments.commands:stl_command"))


def _add_toy(sub: Any) -> None:
    p = sub.add_parser("toy", help="FAMO Fig. 1: run balancers from the five toy starts, report Pareto distances")
    p.add_argument("--balancers", default="uniform,famo", help="comma-separated names")
    p.add_argument("--scale", choices=SCALES, default="small")
    p.add_argument("--variant", choices=("official", "appendix_d"), default=None,
                   help="official (default): the authors' code that drew Fig. 1; appendix_d: the objective as printed")
    p.add_argument("--dtype", choices=("float32", "float64"), default=None,
                   help="θ's dtype (default float64, configs/toy.yaml; the reference code runs float32)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", default="runs/toy")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (one run each)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_command("experiments.commands:toy_command"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="balancebench", description="Fair comparisons of multi-task loss balancers.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="registered balancers, benchmarks and variants")
    p.set_defaults(func=_command("experiments.commands:list_command"))
    _add_train(sub)
    _add_stl(sub)
    _add_toy(sub)
    for register in _EXTRA_PARSERS:
        register(sub)
    return parser


#: parsers added by later modules (studies, analysis, cost), each ``f(subparsers)``
_EXTRA_PARSERS: list[Callable[[Any], None]] = []


def _load_extra_parsers() -> None:
    for path in ("experiments.study_cli:add_parsers", "experiments.bench_cli:add_parsers", "analysis.cli:add_parsers"):
        module, name = path.split(":")
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:  # that part of the tool is not installed yet
                continue
            raise
        fn = getattr(mod, name)
        if fn not in _EXTRA_PARSERS:
            _EXTRA_PARSERS.append(fn)


def main(argv: Sequence[str] | None = None) -> int:
    _load_extra_parsers()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except BrokenPipeError:  # e.g. `balancebench list | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("balancebench: interrupted; finished work is saved (run the same command to continue)", file=sys.stderr)
        return 130
    except UserError as exc:
        if args.debug:
            raise
        print(f"balancebench: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
