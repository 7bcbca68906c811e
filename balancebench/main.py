"""``balancebench`` command line: parses arguments and dispatches to importable functions.

This module is the composition root, at the top of the house: it imports the command groups in
``balancebench.commands`` (which import ``analysis`` and ``experiments``) with plain imports, and
nothing imports it. ``main`` is the one place where errors meet the user.
"""

from __future__ import annotations

import os

# Idle OpenMP threads spin by default; on small CPU machines that steals cycles from the threads
# doing work (QM9 steps ran 2-4x slower). Set before anything imports torch; users can override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from experiments.config import CONFIG_DIR, SCALES  # noqa: F401  (CONFIG_DIR re-exported)
from balancebench.commands import analysis, cost, demo, fixtures, registry, runs, studies  # noqa: E402  (cheap: heavy imports are inside the commands)
from experiments.errors import UserError, os_error_line, protect_output, redact

#: what Ctrl-C leaves behind, for the commands whose work is saved as it goes and continued by
#: running them again (``train`` names its own ``--resume`` command line instead)
_CONTINUED_BY_RERUN = {"study", "demo", "stl", "toy", "claims"}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (exit 2), like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"balancebench: error: {redact(message)} (see {self.prog} --help)\n")


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
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue an interrupted run directory with the config it was trained with "
                        "(a finished run is left as it is)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files into the run directory (train.tensorboard)")
    p.add_argument("--nproc", type=int, default=1, metavar="N",
                   help="data-parallel processes on this machine (torch's elastic launcher, as torchrun); "
                        "train.batch_size stays the global batch")
    p.set_defaults(func=runs.train_command)


def _add_stl(sub: Any) -> None:
    p = sub.add_parser("stl", help="train one single-task model per task (STL references for Δm%%)")
    p.add_argument("--config", required=True)
    p.add_argument("--scale", choices=SCALES, default=None)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default=None, help="output directory (default: runs/stl_<benchmark>)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=runs.stl_command)


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
    p.set_defaults(func=runs.toy_command)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="balancebench", description="Fair comparisons of multi-task loss balancers.")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    registry.add_parsers(sub)
    _add_train(sub)
    _add_stl(sub)
    _add_toy(sub)
    for register in _EXTRA_PARSERS:
        register(sub)
    return parser


#: parsers added by later modules (studies, analysis, cost), each ``f(subparsers)``
_EXTRA_PARSERS: list[Callable[[Any], None]] = []


def _load_extra_parsers() -> None:
    # one entry per command group module; a new group is a plain import above and a line here
    # (e.g. a fixtures group: ``from balancebench.commands import fixtures`` + ``fixtures.add_parsers``)
    for fn in (studies.add_parsers, demo.add_parsers, cost.add_parsers, analysis.add_parsers,
               fixtures.add_parsers):
        if fn not in _EXTRA_PARSERS:
            _EXTRA_PARSERS.append(fn)


def interrupted_line(command: str, exc: KeyboardInterrupt) -> str:
    """What to tell the user after Ctrl-C: how to continue, exactly."""
    continue_with = getattr(exc, "continue_with", None)
    if continue_with:
        return f"interrupted; finished epochs are saved (continue with: {continue_with})"
    if command in _CONTINUED_BY_RERUN:
        return "interrupted; finished work is saved (run the same command to continue)"
    return "interrupted; nothing to continue (run the command again)"


def main(argv: Sequence[str] | None = None) -> int:
    """The ``balancebench`` entry point. The one place where errors meet the user: a UserError or
    an OS error (a path that cannot be created, written or read) is one line and exit code 2;
    ``--debug`` re-raises it with its traceback. Anything else is a bug and keeps its traceback."""
    protect_output(sys.argv[1:] if argv is None else argv)  # no password in any output or traceback
    _load_extra_parsers()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # what `train --nproc` hands its workers
        args.entry = main  # ... and the entry point they run it with
    except SystemExit as exc:  # --help (0), or a usage error already printed as one line (2)
        return exc.code if isinstance(exc.code, int) else 2
    try:
        result = args.func(args)
    except BrokenPipeError:  # e.g. `balancebench list | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as exc:
        print(f"balancebench: {interrupted_line(args.command, exc)}", file=sys.stderr)
        return 130
    except (UserError, OSError) as exc:
        if args.debug:
            raise
        line = os_error_line(exc) if isinstance(exc, OSError) else str(exc)
        print(f"balancebench: error: {redact(' '.join(line.splitlines()))}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
