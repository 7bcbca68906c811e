"""TensorBoard logging (``train.tensorboard`` / ``train --tensorboard``): event files appear in the
run directory with the losses, weights, metrics and cosine-probe tags, hold the same numbers as the
CSV files, are not written twice across a resume, and are absent unless asked for."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from balancebench.main import main
from experiments.config import CONFIG_DIR, deep_merge, load_run_config
from experiments.errors import UserError
from experiments.training import rundir
from experiments.training.trainer import train

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is not installed (pip install 'balancebench[tensorboard]')")

TASKS = ["task0", "task1", "task2"]


def cfg(tmp_path: Path, **over):
    base = {"benchmark": {"options": {"n_tasks": 3}}, "balancer": {"name": "famo"}, "out": str(tmp_path),
            "train": {"progress": False, "epochs": 2, "max_steps_per_epoch": 4, "num_threads": 1, "log_every": 2,
                      "cosine_every": 2, "tensorboard": True}}
    return load_run_config(CONFIG_DIR / "synthetic.yaml", "tiny", deep_merge(base, over))


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag of the run directory's event files (all of them, in order): [(step, value)]."""
    acc = event_accumulator.EventAccumulator(str(run_dir), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def event_files(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob("events.out.tfevents.*"))


def test_event_files_hold_the_tags_and_the_numbers_of_the_csv_files(tmp_path: Path) -> None:
    run_dir = train(cfg(tmp_path), tmp_path / "run").run_dir
    assert event_files(run_dir), sorted(p.name for p in run_dir.iterdir())
    found = scalars(run_dir)
    expected = {*(f"loss/{t}" for t in TASKS), *(f"weight/{t}" for t in TASKS),
                *(f"epoch/train_loss_{t}" for t in TASKS), *(f"epoch/weight_{t}" for t in TASKS),
                *(f"val/{t}_mse" for t in TASKS), *(f"test/{t}_mse" for t in TASKS), "val/objective", "epoch/lr",
                "cosine/mean", "cosine/task0__task1", "cosine/task1__task2"}
    assert expected <= set(found), sorted(expected - set(found))
    steps = pd.read_csv(run_dir / rundir.STEPS)
    assert [s for s, _ in found["loss/task1"]] == list(steps["step"]) == [2, 4, 6, 8]
    assert [v for _, v in found["weight/task2"]] == pytest.approx(list(steps["weight_task2"]), rel=1e-6)
    metrics = pd.read_csv(run_dir / rundir.METRICS)
    assert [s for s, _ in found["val/objective"]] == list(metrics["epoch"]) == [0, 1, 2]
    assert [v for _, v in found["val/task0_mse"]] == pytest.approx(list(metrics["val_task0_mse"]), rel=1e-6)
    cosine = pd.read_csv(run_dir / rundir.COSINE)
    assert [s for s, _ in found["cosine/mean"]] == list(cosine["step"]) == [0, 2, 4, 6, 8]


def test_a_resumed_run_writes_each_row_once(tmp_path: Path) -> None:
    part = tmp_path / "part"

    def stop_after_first(epoch: int, objective: float) -> None:
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path), part, on_epoch=stop_after_first)
    train(cfg(tmp_path), part, resume=True)
    assert len(event_files(part)) == 2  # one per session
    found = scalars(part)
    assert [s for s, _ in found["loss/task0"]] == [2, 4, 6, 8]
    assert [s for s, _ in found["val/objective"]] == [0, 1, 2]
    assert [s for s, _ in found["cosine/mean"]] == [0, 2, 4, 6, 8]


def test_off_unless_asked_and_the_flag_turns_it_on(tmp_path: Path, capsys) -> None:
    plain = train(cfg(tmp_path, train={"tensorboard": False}), tmp_path / "plain").run_dir
    assert not event_files(plain) and (plain / rundir.STEPS).is_file()
    args = ["train", "--config", str(CONFIG_DIR / "synthetic.yaml"), "--scale", "tiny", "--out", str(tmp_path / "cli"),
            "--quiet", "--set", "train.epochs=1", "--set", "train.max_steps_per_epoch=2", "--tensorboard"]
    assert main(args) == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert event_files(run_dir) and "val/objective" in scalars(run_dir)


def test_missing_tensorboard_is_one_user_error_before_training(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard -> ImportError
    with pytest.raises(UserError, match=r"balancebench\[tensorboard\]"):
        train(cfg(tmp_path), tmp_path / "missing")
    assert not (tmp_path / "missing").exists() or not any((tmp_path / "missing").iterdir())
