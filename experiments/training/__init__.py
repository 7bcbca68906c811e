"""Training: one run of one balancer on one benchmark, from config to run directory.

The trainer (``trainer``) and what it is built from (``parts``), its step-by-step record
(``runlog``), the run directory on disk (``rundir``), evaluation and Δm% (``evaluation``), the
task-gradient cosine probe (``gradients``), resuming (``resume``), the progress bar
(``progress``), and batches of runs: single-task references (``stl``) and FAMO's toy runs
(``toy_runs``). ``train(cfg)`` is the entry point.
"""

from typing import Any

__all__ = ["RunResult", "Trainer", "train"]


def __getattr__(name: str) -> Any:
    """``from experiments.training import train`` without loading the trainer for modules that
    only need the run directory helpers (``from experiments.training import rundir``)."""
    if name in __all__:
        from experiments.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
