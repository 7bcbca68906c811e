"""Run directories of a study, found through its Optuna storage.

What it expects (written by ``balancebench study``, see ``experiments/studies/worker.py``): one
Optuna study per (group, method) with user attrs ``kind`` = ``search`` / ``rerun``, ``group`` and
``method``; every trial has the user attrs ``run_dir`` and ``method``. The search studies' trials
are the tuning runs (trained without test evaluation); the rerun studies' trials are the best
configuration of each method retrained on the rerun seeds — the runs tables and plots are made
from. Which rerun study belongs to a method's best trial *within its budget* is decided by
:func:`experiments.studies.results.collect`, so the report and ``balancebench results`` select the
same runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from optuna.trial import TrialState

from experiments.errors import UserError, mask_url


@dataclass
class StorageRuns:
    """The run directories of one study group: ``reruns`` and ``trials`` map a run directory to
    its method label; ``missing`` lists methods without a finished rerun."""

    group: str
    storage: str
    reruns: dict[str, str] = field(default_factory=dict)
    trials: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)


def runs_from_storage(url: str, study: str | None = None) -> StorageRuns:
    """The rerun and search-trial run directories of the study ``study`` (the only one when None)
    in the storage at ``url`` (a journal file path or an Optuna RDB URL)."""
    from experiments.studies.results import collect
    from experiments.studies.storage import open_storage

    label = mask_url(url)
    if "://" not in url and not Path(url).is_file():
        raise UserError(f"no study storage at {url} (a journal file path or an Optuna RDB URL)")
    group, methods, _ = collect(open_storage(url), study, label)
    found = StorageRuns(group, label)
    base = None if "://" in url else Path(url).resolve().parent
    for m in methods:
        for trial in m.search:
            if trial.state == TrialState.COMPLETE and trial.user_attrs.get("run_dir"):
                found.trials[_locate(trial.user_attrs["run_dir"], base)] = m.method
        done = [t for t in m.reruns if t.state == TrialState.COMPLETE and t.user_attrs.get("run_dir")]
        for trial in done:
            found.reruns[_locate(trial.user_attrs["run_dir"], base)] = m.method
        if not done:
            found.missing.append(m.method)
    return found


def _locate(run_dir: str, base: Path | None) -> str:
    """A stored run directory as it exists from here: as stored (absolute, or relative to the
    working directory the study ran in), else relative to a folder above the journal file."""
    path = Path(run_dir)
    if path.exists() or path.is_absolute() or base is None:
        return str(path)
    for parent in (base, *base.parents):
        if (parent / path).exists():
            return str(parent / path)
    return str(path)
