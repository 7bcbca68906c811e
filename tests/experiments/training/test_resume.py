"""Resume tells the truth: a changed config is refused naming its fields, a finished run is left
untouched, and the Ctrl-C line names the exact command that continues the work."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pandas as pd
import pytest

from experiments.training import rundir
from balancebench.main import main
from experiments.config import CONFIG_DIR, load_run_config
from experiments.errors import ConfigError, RunInterrupted
from experiments.training.trainer import Trainer, train

SYNTHETIC = str(CONFIG_DIR / "synthetic.yaml")
SMALL = ["--set", "train.epochs=2", "--set", "train.max_steps_per_epoch=3"]


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time (ns) under ``folder``."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def finished_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    code = main(["train", "--config", SYNTHETIC, "--scale", "tiny", "--out", str(tmp_path / "runs"), "--quiet", *SMALL])
    out = capsys.readouterr().out
    assert code == 0
    return Path(out.strip().splitlines()[-1])


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


def test_resuming_a_finished_run_leaves_it_untouched(tmp_path: Path, capsys) -> None:
    run = finished_run(tmp_path, capsys)
    before = snapshot(run)
    wall = json.loads((run / rundir.SUMMARY).read_text())["wall_seconds"]
    assert main(["train", "--resume", str(run)]) == 0
    captured = capsys.readouterr()
    assert "already finished" in one_line(captured.err) and str(run) in captured.out
    assert snapshot(run) == before  # same bytes, same modification times: wall_seconds stays {wall}
    assert json.loads((run / rundir.SUMMARY).read_text())["wall_seconds"] == wall


def test_resume_refuses_a_config_yaml_edited_to_another_balancer(tmp_path: Path, capsys) -> None:
    run = finished_run(tmp_path, capsys)
    config = run / rundir.CONFIG
    config.write_text(config.read_text().replace("name: uniform", "name: famo", 1))
    before = snapshot(run)
    assert main(["train", "--resume", str(run)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "cannot resume" in line and "balancer.name: 'uniform' -> 'famo'" in line
    assert snapshot(run) == before


def test_resume_refuses_changed_settings_and_accepts_runtime_ones(tmp_path: Path, capsys) -> None:
    run = finished_run(tmp_path, capsys)
    before = snapshot(run)
    assert main(["train", "--resume", str(run), "--set", "train.lr=0.1", "--set", "train.epochs=5"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "train.epochs: 2 -> 5" in line and "train.lr: 0.001 -> 0.1" in line
    assert main(["train", "--resume", str(run), "--quiet", "--device", "cpu", "--set", "train.num_threads=1"]) == 0
    assert "already finished" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--config", SYNTHETIC]) == 2
    assert "leave out --config" in one_line(capsys.readouterr().err)
    assert snapshot(run) == before


def test_the_python_api_refuses_a_changed_config_on_resume(tmp_path: Path) -> None:
    base = {"train": {"progress": False, "epochs": 1, "max_steps_per_epoch": 2}}
    cfg = load_run_config(SYNTHETIC, "tiny", base)
    train(cfg, tmp_path / "run")
    changed = load_run_config(SYNTHETIC, "tiny", {**base, "balancer": {"name": "famo"}})
    with pytest.raises(ConfigError, match="balancer.name: 'uniform' -> 'famo'"):
        train(changed, tmp_path / "run", resume=True)
    assert train(cfg, tmp_path / "run", resume=True).already_finished


def interrupt_at_epoch(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Ctrl-C as training epoch ``epoch`` starts (the first time only)."""
    real = Trainer._run_epoch
    fired: list[bool] = []

    def run_epoch(self: Trainer, bar) -> bool:
        if self.epoch == epoch - 1 and not fired:
            fired.append(True)
            raise KeyboardInterrupt
        return real(self, bar)

    monkeypatch.setattr(Trainer, "_run_epoch", run_epoch)


def test_ctrl_c_names_the_train_command_that_continues_the_run(tmp_path: Path, capsys, monkeypatch) -> None:
    full = finished_run(tmp_path / "full", capsys)
    interrupt_at_epoch(monkeypatch, 2)
    args = ["train", "--config", SYNTHETIC, "--scale", "tiny", "--out", str(tmp_path / "cut"), "--quiet", *SMALL]
    assert main(args) == 130
    line = one_line(capsys.readouterr().err)
    command = line.split("continue with: ", 1)[1].rstrip(")")
    assert command.startswith("balancebench train --resume ")
    run = Path(shlex.split(command)[-1])
    assert json.loads((run / rundir.SUMMARY).read_text())["status"] == "interrupted"
    assert main(shlex.split(command)[1:]) == 0  # exactly the printed command
    a, b = pd.read_csv(full / rundir.METRICS), pd.read_csv(run / rundir.METRICS)
    assert list(b["epoch"]) == [0, 1, 2]
    pd.testing.assert_series_equal(a["val_objective"], b["val_objective"], rtol=1e-5)


def test_ctrl_c_before_anything_is_saved_leaves_no_folder(tmp_path: Path, monkeypatch) -> None:
    def interrupted(self: Trainer, resume: bool = False) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "run", interrupted)
    cfg = load_run_config(SYNTHETIC, "tiny", {"train": {"progress": False}})
    with pytest.raises(RunInterrupted) as info:
        train(cfg, tmp_path / "run")
    assert info.value.run_dir is None and not (tmp_path / "run").exists()


def test_ctrl_c_in_stl_says_the_same_command_continues_and_it_does(tmp_path: Path, capsys, monkeypatch) -> None:
    interrupt_at_epoch(monkeypatch, 2)
    args = ["stl", "--config", SYNTHETIC, "--scale", "tiny", "--out", str(tmp_path / "stl"), "--quiet",
            "--set", "benchmark.options.n_tasks=2", *SMALL]
    assert main(args) == 130
    assert "run the same command to continue" in one_line(capsys.readouterr().err)
    first = tmp_path / "stl" / "task_task0"
    assert json.loads((first / rundir.SUMMARY).read_text())["epochs_trained"] == 1
    assert main(args) == 0
    assert list(pd.read_csv(first / rundir.METRICS)["epoch"]) == [0, 1, 2]
    assert json.loads((first / rundir.SUMMARY).read_text())["status"] == "complete"
    before = snapshot(tmp_path / "stl" / "task_task0")
    assert main(args) == 0  # a third time: every task finished, nothing retrained or rewritten
    assert snapshot(tmp_path / "stl" / "task_task0") == before
