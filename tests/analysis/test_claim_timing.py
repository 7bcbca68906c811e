"""F7's epoch times measured interleaved in one process: the order of the blocks (with a fake
clock: no timing assertion), real trainers built from run directories, and the per-seed cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from analysis.claim_timing import cached_epoch_seconds, interleave, interleaved_epoch_seconds
from experiments.config import CONFIG_DIR, load_run_config
from experiments.training.trainer import train


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeRunner:
    """Each step advances the shared clock by its own cost; records the order of the blocks."""

    def __init__(self, name: str, cost: float, clock: FakeClock, log: list[str]) -> None:
        self.name, self.cost, self.clock, self.log = name, cost, clock, log

    def run(self, n: int) -> None:
        self.log.append(self.name)
        self.clock.now += n * self.cost

    def sync(self) -> None:
        pass


def test_blocks_alternate_and_times_are_per_step() -> None:
    clock, log = FakeClock(), []
    a, b = FakeRunner("A", 0.5, clock, log), FakeRunner("B", 2.0, clock, log)
    times = interleave([a, b], repeats=4, steps_per_block=3, clock=clock)
    assert log == ["A", "B", "B", "A", "A", "B", "B", "A"]  # ABBA: neither always goes first
    assert times == [[0.5] * 4, [2.0] * 4]
    log.clear()
    interleave([a, b, FakeRunner("C", 1.0, clock, log)], repeats=3, steps_per_block=1, clock=clock)
    assert log == ["A", "B", "C", "B", "C", "A", "C", "A", "B"]  # three: the order rotates
    with pytest.raises(ValueError, match="repeats"):
        interleave([a], repeats=0)


def tiny_run(tmp_path: Path, balancer: str) -> Path:
    cfg = load_run_config(CONFIG_DIR / "synthetic.yaml", "tiny", {
        "balancer": {"name": balancer}, "seed": 1,
        "train": {"progress": False, "epochs": 1, "max_steps_per_epoch": 3}})
    return train(cfg, tmp_path / balancer / "seed_1").run_dir


def test_real_trainers_from_run_directories_and_the_cache(tmp_path: Path) -> None:
    dirs = [tiny_run(tmp_path / "runs" / "synthetic", b) for b in ("famo", "marigold")]
    seconds = interleaved_epoch_seconds(dirs, repeats=2, steps_per_block=1, warmup=1)
    assert len(seconds) == 2 and all(s is not None and math.isfinite(s) and s > 0 for s in seconds)
    first = cached_epoch_seconds(tmp_path, dirs, measure=lambda d: [1.5, 0.5])
    cached = tmp_path / "timing" / "synthetic-famo__marigold-seed_1.json"
    assert first == [1.5, 0.5] and json.loads(cached.read_text())["epoch_seconds"] == [1.5, 0.5]

    def never(_: object) -> list[float]:
        raise AssertionError("a cached seed is not timed again")
    assert cached_epoch_seconds(tmp_path, dirs, measure=never) == [1.5, 0.5]
