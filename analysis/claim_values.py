"""Numbers the claims read from run directories, failed runs kept: a run that did not complete
(diverged, failed, interrupted, missing) gives ``None`` in its seed's place — never a silently
shorter list — and the tests of :mod:`analysis.verdicts` count it as that method's failure.
Means shown beside a failure are over the finished runs only and say so ("survivors only")."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.runs import load_run, run_frame
from analysis.tables import format_pm, mean_se
from experiments.training import rundir
from experiments.errors import UserError

Value = float | None


def status(run_dir: Path) -> str:
    """The run's summary status (``complete``, ``diverged``, ...), or ``missing``."""
    path = Path(run_dir) / rundir.SUMMARY
    if not path.is_file():
        return "missing"
    try:
        return str(json.loads(path.read_text()).get("status") or "unknown")
    except json.JSONDecodeError:
        return "corrupt"


def finished(run_dir: Path) -> bool:
    return status(run_dir) == "complete"


def delta_ms(dirs: Sequence[Path]) -> list[Value]:
    """Test Δm% of each run (its own reference; see analysis.runs.reference_for); None for a run
    that did not complete."""
    return [float(run_frame([load_run(d)])["delta_m"].iloc[0]) if finished(d) else None for d in dirs]


def reference_kind(dirs: Sequence[Path]) -> str:
    done = [load_run(d) for d in dirs if finished(d)]
    return ", ".join(sorted(set(run_frame(done)["reference"]))) if done else "?"


def pm(values: Sequence[Value]) -> str:
    """``mean ± se`` of the finite values; marked "survivors only" when some are missing."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    shown = format_pm(*mean_se(finite))
    failed = len(values) - len(finite)
    return f"{shown} (survivors only: {len(finite)}/{len(values)} seeds, {failed} failed)" if failed else shown


def failures(dirs: Sequence[Path]) -> list[str]:
    """``<method> seed_<s>: <status>`` for each run that did not complete."""
    return [f"{Path(d).parent.name} {Path(d).name}: {status(d)}" for d in dirs if not finished(d)]


def failure_text(dirs: Sequence[Path]) -> str:
    failed = failures(dirs)
    return f"; failed runs (counted as failures): {', '.join(failed)}" if failed else ""


def normalised_weights(run_dir: Path, source: str) -> pd.DataFrame:
    """The run's weights (``source`` = steps or epochs (epoch >= 1)), rows normalised to sum 1."""
    record = load_run(run_dir)
    table = rundir.read_table(run_dir, rundir.STEPS) if source == "steps" else record.metrics().query("epoch > 0")
    w = table[[f"weight_{t}" for t in record.tasks]].astype(float)
    return w.div(w.sum(axis=1), axis=0)


def max_weight_deviation(run_dir: Path) -> float:
    """max over logged epochs of |normalised weight of task 0 − 0.5|; for a run that did not
    complete, over the epochs it logged, and +inf when it logged none (it counts as failing)."""
    try:
        dev = (normalised_weights(run_dir, "epochs").iloc[:, 0] - 0.5).abs().max()
    except (UserError, OSError, KeyError, ValueError):  # a failed run may lack files: it then fails the bound
        if finished(run_dir):
            raise
        return math.inf
    return float(dev) if np.isfinite(dev) else math.inf


def famo_weight_std(run_dir: Path) -> Value:
    """Standard deviation over logged steps of FAMO's normalised weight of task 0 (None when the
    run did not complete)."""
    if not finished(run_dir):
        return None
    return float(normalised_weights(run_dir, "steps").iloc[:, 0].std(ddof=1))
