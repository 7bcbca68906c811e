"""Resuming a run directory truthfully: the config it was trained with, or a refusal.

A run's last checkpoint stores the config its state was trained under (``config.yaml`` beside it
is for people and may be edited). Resuming compares the config asked for now with that one and
refuses any difference outside the :class:`~experiments.schema.Runtime` fields, naming each field
old -> new, because the restored model, optimizer and balancer states belong to the old config
(an edited learning rate would be overwritten by the optimizer state, an edited balancer would not
load). A finished run (``status: complete``) is never touched again.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from experiments.training import rundir
from experiments.config import RunConfig, config_diff, dump_yaml, load_yaml, run_config_from_dict, to_dict
from experiments.errors import ConfigError, UserError

#: checkpoint entry holding the YAML of the config the state was trained with
CONFIG_KEY = "config"
#: at most this many differing fields are named in the refusal
SHOWN = 6


def load_run_dir_config(run_dir: Path) -> RunConfig:
    """The resolved config a run directory records in its ``config.yaml`` (for resuming it)."""
    path = Path(run_dir) / rundir.CONFIG
    if not path.is_file():
        raise UserError(f"not a run directory (no {rundir.CONFIG}): {run_dir}")
    data = load_yaml(path)
    data.pop("resolved", None)
    return run_config_from_dict(data)


def config_entry(cfg: RunConfig) -> str:
    """What a checkpoint stores under :data:`CONFIG_KEY`."""
    return dump_yaml(to_dict(cfg))


def trained_config(run_dir: Path) -> RunConfig | None:
    """The config the run's last checkpoint was trained with; None without a checkpoint. A
    checkpoint from before configs were stored falls back to ``config.yaml``."""
    path = Path(run_dir) / rundir.LAST
    if not path.is_file():
        return None
    state = rundir.load_checkpoint(path)
    if CONFIG_KEY not in state:
        return load_run_dir_config(run_dir)
    try:
        return run_config_from_dict(yaml.safe_load(state[CONFIG_KEY]))
    except (yaml.YAMLError, ConfigError) as exc:
        raise UserError(f"cannot read the config stored in {path}: {exc}") from None


def finished_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary when it finished (status complete), else None."""
    path = Path(run_dir) / rundir.SUMMARY
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):  # missing or torn: not finished
        return None
    return summary if isinstance(summary, dict) and summary.get("status") == "complete" else None


def check_resume(cfg: RunConfig, run_dir: Path) -> dict[str, Any] | None:
    """Before resuming ``run_dir`` with ``cfg``: a ConfigError naming every field that differs from
    the trained config; the summary when the run is already finished (leave it as it is), else None."""
    trained = trained_config(run_dir)
    if trained is not None:
        diff = config_diff(trained, cfg)
        if diff:
            shown = "; ".join(diff[:SHOWN]) + (f"; and {len(diff) - SHOWN} more" if len(diff) > SHOWN else "")
            raise ConfigError(f"cannot resume {run_dir}: its config differs from the one it was trained with "
                              f"({shown}); put it back, or start a new run")
    return finished_summary(run_dir)


def prepare_run_dir(cfg: RunConfig, run_dir: Path | None, resume: bool, make_default: Callable[[RunConfig], Path]
                    ) -> tuple[Path, bool, dict[str, Any] | None]:
    """(run directory, whether this run created it, the summary of a finished run being resumed);
    refuses a non-empty directory unless resuming. ``make_default`` creates a fresh directory."""
    fresh = run_dir is None  # make_default creates the (empty) directory for this run alone
    run_dir = Path(run_dir) if run_dir is not None else make_default(cfg)
    if resume and (finished := check_resume(cfg, run_dir)) is not None:
        return run_dir, False, finished
    if run_dir.exists() and not resume and any(run_dir.iterdir()):
        raise UserError(f"run directory {run_dir} already exists and is not empty (use --resume to continue it)")
    created = fresh or not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, created, None
