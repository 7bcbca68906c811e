"""Time per training epoch of several runs' configurations, measured *interleaved in one process*
(claim F7), as ``balancebench bench`` measures its time ratios (:mod:`experiments.cost.timing`).

Epoch times read from run directories were measured at different times on a shared machine, so
a method that happened to train while other jobs ran looks slower. Here, for one seed, a real
:class:`experiments.training.trainer.Trainer` is built from each run's own ``config.yaml`` (same seed:
same initial model and batches), all in this process; after ``warmup`` steps each, they take
turns running blocks of ``steps_per_block`` real training steps on the same pre-loaded batches,
``repeats`` rounds, the order alternating between rounds (A B, B A, ...: neither position's
cache state biases the comparison; with more than two the order rotates). A method's step time
is the median over rounds of its block time / steps; its epoch time is that × the run's steps
per epoch. Drifts of the machine's load hit every method alike within a round.

Results are cached per seed under ``<claims root>/timing/`` (reused when present, so a resumed
``claims`` measures only new seeds). A trainer whose loss becomes non-finite while being timed
gets no time (``None``): the check counts it as that method's failure.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from experiments.training import rundir
from experiments.errors import NonFiniteLossError

REPEATS = 10
STEPS_PER_BLOCK = 2
WARMUP = 2
N_BATCHES = 4


class StepRunner(Protocol):
    """What the interleaving needs: run ``n`` training steps; wait for the device."""

    def run(self, n: int) -> None: ...

    def sync(self) -> None: ...


def interleave(runners: Sequence[StepRunner], *, repeats: int = REPEATS, steps_per_block: int = STEPS_PER_BLOCK,
               clock: Callable[[], float] = time.perf_counter) -> list[list[float]]:
    """Per runner, the seconds per step of each of its ``repeats`` blocks, timed in turns."""
    if repeats < 1 or steps_per_block < 1:
        raise ValueError(f"repeats and steps_per_block must be >= 1, got {repeats=}, {steps_per_block=}")
    per_step: list[list[float]] = [[] for _ in runners]
    order = list(range(len(runners)))
    for rep in range(repeats):
        shift = rep % len(order)  # rotate: with two runners A B, B A, A B, ...
        turn = order[shift:] + order[:shift]
        for i in turn:
            runners[i].sync()
            start = clock()
            runners[i].run(steps_per_block)
            runners[i].sync()
            per_step[i].append((clock() - start) / steps_per_block)
    return per_step


class TrainerRunner:
    """A real trainer built from a run directory's config, stepping over pre-loaded batches."""

    def __init__(self, run_dir: Path, n_batches: int = N_BATCHES) -> None:
        from experiments.training.trainer import Trainer, load_run_dir_config

        cfg = load_run_dir_config(run_dir)
        self.trainer = Trainer(cfg, Path(tempfile.gettempdir()) / "balancebench-timing-unused")
        self.trainer.model.train()
        bench, size = self.trainer.bench, cfg.train.batch_size
        loader, _, _ = bench.loaders(size, cfg.seed * 100_003)  # epoch 0's order, as the trainer uses
        self.batches: list[Any] = []
        for batch in loader:
            self.batches.append(bench.to_device(batch, self.trainer.device))
            if len(self.batches) == n_batches:
                break
        cap = cfg.train.max_steps_per_epoch
        self.steps_per_epoch = len(loader) if cap is None else min(len(loader), cap)
        self.i = 0

    def run(self, n: int) -> None:
        for _ in range(n):
            self.trainer.train_step(self.batches[self.i % len(self.batches)])
            self.i += 1

    def sync(self) -> None:
        import torch

        if self.trainer.device.type == "cuda":
            torch.cuda.synchronize(self.trainer.device)


def interleaved_epoch_seconds(run_dirs: Sequence[Path], *, repeats: int = REPEATS, steps_per_block: int = STEPS_PER_BLOCK,
                              warmup: int = WARMUP) -> list[float | None]:
    """Seconds per training epoch of each run's configuration, timed interleaved (module doc);
    ``None`` for a configuration whose loss became non-finite while being timed."""
    runners = [TrainerRunner(Path(d)) for d in run_dirs]
    alive = []
    for r in runners:
        try:
            r.run(warmup)
            alive.append(r)
        except NonFiniteLossError:
            pass
    try:
        times = dict(zip(map(id, alive), interleave(alive, repeats=repeats, steps_per_block=steps_per_block)))
    except NonFiniteLossError:  # rare: a loss turns non-finite after warm-up; time them one by one
        return [_alone(r, repeats, steps_per_block) if r in alive else None for r in runners]
    return [statistics.median(times[id(r)]) * r.steps_per_epoch if id(r) in times else None for r in runners]


def _alone(runner: TrainerRunner, repeats: int, steps_per_block: int) -> float | None:
    try:
        return statistics.median(interleave([runner], repeats=repeats, steps_per_block=steps_per_block)[0]) \
            * runner.steps_per_epoch
    except NonFiniteLossError:
        return None


def cached_epoch_seconds(root: Path, run_dirs: Sequence[Path], measure: Callable[..., list[float | None]] = interleaved_epoch_seconds
                         ) -> list[float | None]:
    """``measure(run_dirs)``, cached in ``root/timing/<setting>-<methods>-<seed>.json``."""
    dirs = [Path(d) for d in run_dirs]
    name = f"{dirs[0].parent.parent.name}-{'__'.join(d.parent.name for d in dirs)}-{dirs[0].name}.json"
    path = Path(root) / "timing" / name
    if path.is_file():
        return list(json.loads(path.read_text())["epoch_seconds"])
    seconds = measure(dirs)
    rundir.write_json(path, {"runs": [str(d) for d in dirs], "epoch_seconds": seconds, "repeats": REPEATS,
                             "steps_per_block": STEPS_PER_BLOCK, "warmup": WARMUP, "clock": "wall (perf_counter)"})
    return seconds
