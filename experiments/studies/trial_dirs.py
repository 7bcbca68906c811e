"""Run directories of study trials: a fresh directory per trial, summaries read back and recorded
on the trial, finished runs reused only when their config is the one asked for, and the test
reference of a rerun."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from optuna.trial import Trial

from experiments.benchmarks.base import MetricSpec
from experiments.config import RunConfig
from experiments.errors import UserError
from experiments.training import rundir
from experiments.training.resume import load_run_dir_config


def fresh_dir(path: Path) -> Path:
    """A search trial's directory; leftovers from another storage are moved aside, never deleted."""
    if path.exists() and any(path.iterdir()):
        stamp, n = time.strftime("%Y%m%d-%H%M%S"), 0
        while (aside := path.with_name(f"{path.name}.stale-{stamp}" + (f"-{n}" if n else ""))).exists():
            n += 1
        path.rename(aside)
    return path


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(run_dir) / rundir.SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def record_summary(trial: Trial, summary: dict[str, Any]) -> None:
    for key in ("status", "epochs_trained", "best_epoch", "wall_seconds", "val_metrics", "test_metrics",
                "reference", "reason"):
        trial.set_user_attr(key, summary.get(key))


def reusable_summary(run_dir: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """A finished rerun of the same config is re-used; a different config is moved aside."""
    if not (run_dir / rundir.CONFIG).is_file():
        return None
    try:
        same = load_run_dir_config(run_dir) == cfg
    except UserError:
        same = False
    if not same:
        fresh_dir(run_dir)
        return None
    summary = read_summary(run_dir)
    return summary if summary is not None and summary.get("status") == "complete" else None


def test_split_reference(kind: str, initial: dict[str, float], specs: list[MetricSpec]) -> dict[str, float] | None:
    """The test-split counterpart of the validation objective's reference."""
    if kind == "initial_model":
        return initial or None
    if kind == "literature_stl":
        return {s.name: float(s.stl) for s in specs if s.stl is not None} or None
    if kind.startswith("stl:"):
        path = Path(kind[4:])
        path = path / "stl_reference.json" if path.is_dir() else path
        try:
            return {k: float(v) for k, v in json.loads(path.read_text())["metrics"].items()}
        except (OSError, ValueError, KeyError):
            return None
    return None
