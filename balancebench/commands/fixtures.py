"""``balancebench fixture``: write a tiny stand-in dataset in a benchmark's exact on-disk layout (loaded by ``balancebench.main``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from experiments.errors import UserError


#: the benchmarks with a fixture (``experiments.benchmarks.fixtures.BENCHMARKS``; not imported here so that
#: building the parser stays free of numpy / torch imports)
BENCHMARKS = ("nyuv2", "cityscapes", "celeba")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("fixture", help="write a tiny random dataset in the exact layout of nyuv2, cityscapes or celeba "
                                       "(for tests and trying the commands; not data)")
    p.add_argument("benchmark", choices=BENCHMARKS)
    p.add_argument("--out", required=True, help="directory to write (created; must be empty if it exists)")
    p.add_argument("--counts", default=None,
                   help="images per split: TRAIN,VAL for nyuv2/cityscapes (default 6,3), TRAIN,VAL,TEST for celeba "
                        "(default 24,8,8)")
    p.add_argument("--shape", default=None, help="HEIGHTxWIDTH of nyuv2/cityscapes images (default: the release's, "
                                                "288x384 / 128x256)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=fixture_command)


def _ints(text: str | None, sep: str, what: str) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(v) for v in text.lower().split(sep))
    except ValueError:
        raise UserError(f"{what} must be integers separated by {sep!r}, got {text!r}") from None


def fixture_command(args: argparse.Namespace) -> int:
    from experiments.benchmarks.fixtures import write_fixture

    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"--out {out} exists and is not an empty directory")
    try:
        path = write_fixture(args.benchmark, out, counts=_ints(args.counts, ",", "--counts"),
                             shape=_ints(args.shape, "x", "--shape"), seed=args.seed)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc}") from None
    print(f"wrote a tiny random {args.benchmark} fixture (not real data) to {path}; train on it with:")
    print(f"  balancebench train --config configs/{args.benchmark}.yaml --scale tiny --set benchmark.options.root={path}")
    return 0
