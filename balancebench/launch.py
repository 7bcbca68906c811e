"""``balancebench train --nproc N``: N local data-parallel processes through torch's elastic launcher.

The same thing ``torchrun --nproc_per_node N -m balancebench.main train …`` does, without leaving the
command: every worker runs the ordinary ``train`` command with the environment torchrun sets
(RANK, WORLD_SIZE, MASTER_ADDR, …), which :mod:`experiments.training.distributed` reads. Rank 0 speaks for
the run (its output, its one-line errors, its exit code); the other ranks' output is silenced, as
they run the same code on the same config and would only repeat it.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Sequence

from experiments.errors import UserError


def _worker(entry: Callable[[list[str]], int], argv: list[str]) -> int:
    """One rank: the ordinary command line (``entry``: the CLI's main, handed down so that this module
    does not import the layer that imports it), quiet unless rank 0."""
    if os.environ.get("RANK", "0") != "0":
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
            return entry(argv)
    return entry(argv)


def without_nproc(argv: Sequence[str]) -> list[str]:
    """The command line each worker runs: the same one minus ``--nproc N`` / ``--nproc=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(nproc: int, argv: Sequence[str], entry: Callable[[list[str]], int]) -> int:
    """Run ``entry(<argv>)`` (``balancebench <argv>``) in ``nproc`` local processes; rank 0's exit code."""
    if nproc < 1:
        raise UserError(f"--nproc must be >= 1, got {nproc}")
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        raise UserError("--nproc inside a torchrun worker: use one of torchrun or --nproc, not both")
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"balancebench-{uuid.uuid4().hex[:8]}",
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    try:
        results = elastic_launch(config, _worker)(entry, without_nproc(argv))
    except ChildFailedError as exc:  # a worker crashed (a bug, not a user error: keep its cause visible)
        print(f"balancebench: error: a training process failed: {exc.get_first_failure()[1].message}", file=sys.stderr)
        return 1
    return int(results.get(0, 1) or 0)
