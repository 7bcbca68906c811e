"""The trainer's ``train.cosine_every`` probe: cosine.csv, no effect on training, resume, and the
same numbers measured afterwards on the saved checkpoint."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.gradients import cosine_from_checkpoint, mean_cosine, probe_overhead, read_cosine
from analysis.runs import epoch_seconds, load_run
from experiments.training import rundir
from experiments.config import CONFIG_DIR, deep_merge, load_run_config
from experiments.errors import ConfigError, UserError
from experiments.training.trainer import train


def cfg(tmp_path: Path, **over):
    base = {"benchmark": {"options": {"n_tasks": 3}}, "balancer": {"name": "famo"},
            "train": {"progress": False, "epochs": 2, "max_steps_per_epoch": 4, "num_threads": 1}, "out": str(tmp_path)}
    return load_run_config(CONFIG_DIR / "synthetic.yaml", "tiny", deep_merge(base, over))


def test_cosine_every_writes_cosine_csv_and_leaves_training_unchanged(tmp_path: Path) -> None:
    plain = train(cfg(tmp_path), tmp_path / "plain").run_dir
    probed = train(cfg(tmp_path, train={"cosine_every": 3}), tmp_path / "probed").run_dir
    assert not (plain / rundir.COSINE).exists()
    table = pd.read_csv(probed / rundir.COSINE)
    assert list(table["step"]) == [0, 3, 6]  # before training, then every 3 of the 2 x 4 steps
    assert list(table["epoch"]) == [0, 0, 1]
    pairs = ["cos_task0__task1", "cos_task0__task2", "cos_task1__task2"]
    assert set(pairs) <= set(table.columns)
    assert table[pairs].abs().le(1.0).all().all()
    assert table["mean_cosine"].to_numpy() == pytest.approx(table[pairs].mean(axis=1).to_numpy(), abs=1e-6)
    assert set(table["method"]) <= {"vmap", "loop"} and (table["seconds"] > 0).all()
    # the probe runs in eval mode on its own RNG fork: training is bit-for-bit the same
    a, b = pd.read_csv(plain / rundir.METRICS), pd.read_csv(probed / rundir.METRICS)
    cols = [c for c in a.columns if c.startswith(("val_", "test_", "train_loss_", "weight_"))]
    pd.testing.assert_frame_equal(a[cols], b[cols])
    assert mean_cosine(probed) == pytest.approx(table["mean_cosine"].mean())
    cost = probe_overhead(probed)
    assert cost["probes"] == 3 and cost["overhead"] > 0
    # time comparisons leave the probe out: epoch 1 held the step-3 probe, epoch 2 the step-6 one
    seconds = epoch_seconds(load_run(probed))
    raw = b.set_index("epoch")["epoch_seconds"]
    assert seconds[1] == pytest.approx(raw[1] - table.loc[table["step"] == 3, "seconds"].item())
    assert seconds[2] == pytest.approx(raw[2] - table.loc[table["step"] == 6, "seconds"].item())


def test_checkpoint_measurement_equals_the_probe_at_the_same_step(tmp_path: Path) -> None:
    run_dir = train(cfg(tmp_path, train={"cosine_every": 4}), tmp_path / "run").run_dir
    last = read_cosine(run_dir).iloc[-1]
    assert last["step"] == 8  # the final step: last.pt holds exactly this model
    measured = cosine_from_checkpoint(run_dir, rundir.LAST)
    assert measured.step == 8 and measured.tasks == ["task0", "task1", "task2"]
    assert measured.matrix[0, 1].item() == pytest.approx(last["cos_task0__task1"], abs=1e-6)
    assert measured.matrix[1, 2].item() == pytest.approx(last["cos_task1__task2"], abs=1e-6)
    assert measured.mean == pytest.approx(last["mean_cosine"], abs=1e-6)
    assert measured.frame().shape == (3, 3)


def test_resumed_run_keeps_the_probe_rows_of_finished_epochs(tmp_path: Path) -> None:
    full = train(cfg(tmp_path, train={"cosine_every": 2}), tmp_path / "full").run_dir
    part = tmp_path / "part"

    def stop_after_first(epoch: int, objective: float) -> None:
        if epoch == 1:
            raise KeyboardInterrupt  # as Ctrl-C after the first epoch (resuming refuses a changed config)

    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path, train={"cosine_every": 2}), part, on_epoch=stop_after_first)
    train(cfg(tmp_path, train={"cosine_every": 2}), part, resume=True)
    a, b = pd.read_csv(full / rundir.COSINE), pd.read_csv(part / rundir.COSINE)
    assert list(a["step"]) == list(b["step"]) == [0, 2, 4, 6, 8]
    assert a["mean_cosine"].to_numpy() == pytest.approx(b["mean_cosine"].to_numpy(), abs=1e-6)


def test_bad_cadence_and_missing_probe_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cosine_every"):
        train(cfg(tmp_path, train={"cosine_every": -1}), tmp_path / "bad")
    run_dir = train(cfg(tmp_path), tmp_path / "plain").run_dir
    with pytest.raises(UserError, match="no cosine.csv"):
        read_cosine(run_dir)
