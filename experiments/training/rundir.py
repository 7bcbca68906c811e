"""Run directories: atomic file writes, tables, checkpoints and the summary."""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from experiments.errors import UserError

CONFIG = "config.yaml"
METRICS = "metrics.csv"
STEPS = "steps.csv"
SUMMARY = "summary.json"
BEST = "best.pt"
LAST = "last.pt"
COSINE = "cosine.csv"


def create_run_dir(parent: Path, name: str, unique: bool = True) -> Path:
    """Create ``parent/name`` and return it; it belongs to this run alone.

    ``os.mkdir`` is atomic and fails when the directory exists, so two runs started at the same
    second with the same name never share a directory: with ``unique`` the later one gets
    ``name-2``, ``name-3``, ...; without it (a name the user chose) an existing directory is a
    one-line error.
    """
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = parent / (name if n == 1 else f"{name}-{n}")
        try:
            path.mkdir()
        except FileExistsError:
            if unique:
                continue
            raise UserError(f"run directory {path} already exists (choose another name, "
                            f"or continue it with --resume {path})") from None
        return path
    raise AssertionError("unreachable")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and ``os.replace`` (never half-written)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_table(path: Path, frame: pd.DataFrame) -> None:
    atomic_write_text(path, frame.to_csv(index=False))


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{Path(path).name}.", dir=Path(path).parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with ``weights_only=True`` (no arbitrary code from a checkpoint file)."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint not found: {path}") from None
    except Exception as exc:  # corrupt or foreign file
        raise UserError(f"cannot read checkpoint {path}: {type(exc).__name__}: {exc}") from None


def read_summary(run_dir: Path) -> dict[str, Any]:
    """A run directory's summary; a missing or corrupt one is a one-line UserError."""
    path = Path(run_dir) / SUMMARY
    if not Path(run_dir).is_dir():
        raise UserError(f"not a run directory (missing): {run_dir}")
    if not path.is_file():
        raise UserError(f"not a complete run directory (no {SUMMARY}): {run_dir}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"corrupt {SUMMARY} in {run_dir}: {exc}") from None


def read_table(run_dir: Path, name: str) -> pd.DataFrame:
    path = Path(run_dir) / name
    if not path.is_file():
        raise UserError(f"run directory {run_dir} has no {name}")
    try:
        return pd.read_csv(path)
    except Exception as exc:
        raise UserError(f"corrupt {name} in {run_dir}: {exc}") from None
