"""Evaluation never changes training: evaluation passes run on their own seeded random streams."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from experiments.training import rundir
from experiments.config import CONFIG_DIR, load_run_config
from experiments.training.evaluation import isolated_rng
from experiments.training.trainer import train

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _streams() -> tuple:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


def test_a_loader_iterator_draws_from_the_global_generator() -> None:
    """The mechanism behind the bug: starting an iterator of a loader without a generator (even
    sequential, no workers) advances torch's global generator."""
    loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=4)
    before = torch.get_rng_state()
    next(iter(loader))
    assert not torch.equal(before, torch.get_rng_state())


def test_isolated_rng_leaves_every_global_stream_untouched() -> None:
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    before = _streams()
    loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=4)
    with isolated_rng(7, torch.device("cpu")):
        inside = (torch.rand(3), random.random(), np.random.rand())
        for _ in loader:
            torch.nn.functional.dropout(torch.ones(10), 0.5, training=True)
    after = _streams()
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and np.array_equal(before[2], after[2])
    # the block's own streams are seeded: the same draws every time, whatever came before
    torch.rand(5), random.random(), np.random.rand()
    with isolated_rng(7, torch.device("cpu")):
        again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(inside[0], again[0]) and inside[1:] == again[1:]


def test_isolated_rng_restores_after_an_exception() -> None:
    before = _streams()
    with pytest.raises(RuntimeError):
        with isolated_rng(0, torch.device("cpu")):
            torch.rand(4), random.random(), np.random.rand()
            raise RuntimeError("boom")
    after = _streams()
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and np.array_equal(before[2], after[2])


def _run(tmp_path: Path, evaluate_test: bool, device: str) -> Path:
    """The issue's case: uniform, Multi-MNIST tiny (dropout 0.5), seed 1, two epochs."""
    out = tmp_path / f"test_{evaluate_test}"
    cfg = load_run_config(CONFIG_DIR / "multimnist.yaml", "tiny", {
        "seed": 1, "out": str(out),
        "train": {"epochs": 2, "progress": False, "evaluate_test": evaluate_test, "log_every": 1, "device": device}})
    return train(cfg, out / "run").run_dir


@pytest.mark.parametrize("device", DEVICES)
def test_training_is_identical_with_and_without_test_evaluation(tmp_path: Path, device: str) -> None:
    """Before the fix, epoch-2 validation Δm% was −64.2 with test evaluation vs −32.2 without."""
    with_test, without = _run(tmp_path, True, device), _run(tmp_path, False, device)
    a, b = rundir.read_table(with_test, rundir.METRICS), rundir.read_table(without, rundir.METRICS)
    assert "test_left_cls_acc" in a.columns and not any(c.startswith("test_") for c in b.columns)
    same = [c for c in b.columns if c.startswith(("val_", "train_loss_", "weight_")) or c in ("epoch", "lr")]
    assert len(same) >= 7  # val metrics + objective, train losses, weights, epoch, lr
    pd.testing.assert_frame_equal(a[same], b[same], check_exact=True)
    steps_a, steps_b = rundir.read_table(with_test, rundir.STEPS), rundir.read_table(without, rundir.STEPS)
    pd.testing.assert_frame_equal(steps_a, steps_b, check_exact=True)  # every step's losses and weights
    for name in (rundir.LAST, rundir.BEST):
        state_a = torch.load(with_test / name, map_location="cpu", weights_only=False)["model"]
        state_b = torch.load(without / name, map_location="cpu", weights_only=False)["model"]
        assert state_a.keys() == state_b.keys()
        for key in state_a:
            assert torch.equal(state_a[key], state_b[key]), f"{name}: {key} differs"
