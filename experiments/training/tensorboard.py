"""Optional TensorBoard event files of a run (``train.tensorboard: true`` or ``train --tensorboard``).

The run log (:mod:`experiments.training.runlog`) hands this writer the same rows it writes to
``steps.csv``, ``metrics.csv`` and ``cosine.csv``, when it writes them (once per epoch), so logging
to TensorBoard adds no host synchronisation to the training steps. The event files go into the run
directory beside the CSV files; ``tensorboard --logdir runs/`` then shows one run per directory.
Only rank 0 writes (the trainer makes no writer elsewhere).

Tags, with the x-axis they are drawn against:

=============================  =============  ==========================================
tag                            step           from
=============================  =============  ==========================================
``loss/<task>``                training step  steps.csv (every ``train.log_every`` steps)
``weight/<task>``              training step  steps.csv: the balancer's effective weights
``epoch/train_loss_<task>``    epoch          metrics.csv: epoch means of the losses
``epoch/weight_<task>``        epoch          metrics.csv: epoch means of the weights
``val/<metric>``               epoch          metrics.csv (``val/objective``: Δm%)
``test/<metric>``              epoch          metrics.csv (when ``train.evaluate_test``)
``epoch/lr``, ``time/...``     epoch          metrics.csv
``cosine/mean``, ``cosine/..`` training step  cosine.csv (``train.cosine_every`` > 0)
=============================  =============  ==========================================
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from experiments.errors import UserError

INSTALL_HINT = "pip install 'balancebench[tensorboard]'"


def check_available() -> None:
    """A UserError (before training starts) when the ``tensorboard`` package is missing."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError as exc:
        raise UserError(f"train.tensorboard needs the tensorboard package ({exc}); {INSTALL_HINT}") from None


def _epoch_tag(key: str) -> str | None:
    if key.startswith("val_"):
        return "val/" + key[4:]
    if key.startswith("test_"):
        return "test/" + key[5:]
    if key.startswith(("train_loss_", "weight_")) or key == "lr":
        return "epoch/" + key
    if key.endswith("_seconds"):
        return "time/" + key
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


class TensorBoardLog:
    """Appends a run's rows to TensorBoard event files in ``run_dir``; rows already written (e.g.
    before a resume) are skipped by count. The writer is opened on the first rows, so a run that
    stops before writing anything leaves no event file behind."""

    def __init__(self, run_dir: Path, tasks: list[str]) -> None:
        check_available()
        self.run_dir, self.tasks = Path(run_dir), list(tasks)
        self.written = {"steps": 0, "epochs": 0, "cosine": 0}
        self._writer: Any = None

    def skip_existing(self, steps: int, epochs: int, cosine: int) -> None:
        """On resume: the rows loaded from the CSV files were written by the earlier session."""
        self.written = {"steps": steps, "epochs": epochs, "cosine": cosine}

    @property
    def writer(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.run_dir))
        return self._writer

    def _new(self, kind: str, rows: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        start, self.written[kind] = self.written[kind], len(rows)
        return rows[start:]

    def write(self, steps: list[dict[str, Any]], epochs: list[dict[str, Any]],
              cosine: list[dict[str, Any]] | None = None) -> None:
        """Write the rows not written yet (the run log's full lists), then flush to disk."""
        wrote = False
        for row in self._new("steps", steps):
            for t in self.tasks:
                for tag, key in ((f"loss/{t}", f"loss_{t}"), (f"weight/{t}", f"weight_{t}")):
                    wrote |= self._scalar(tag, row.get(key), row["step"])
        for row in self._new("epochs", epochs):
            for key, value in row.items():
                tag = _epoch_tag(key)
                if tag is not None:
                    wrote |= self._scalar(tag, value, row["epoch"])
        for row in self._new("cosine", cosine or []):
            for key, value in row.items():
                if key == "mean_cosine" or key.startswith("cos_"):
                    tag = "cosine/mean" if key == "mean_cosine" else "cosine/" + key[4:]
                    wrote |= self._scalar(tag, value, row["step"])
        if wrote:
            self.writer.flush()

    def _scalar(self, tag: str, value: Any, step: Any) -> bool:
        number = _number(value)
        if number is None:
            return False
        self.writer.add_scalar(tag, number, int(step))
        return True

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
