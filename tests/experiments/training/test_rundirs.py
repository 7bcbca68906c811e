"""Run directories never collide: concurrent ``balancebench train`` processes with the same seed
and the same ``--out`` each get their own directory, complete and intact, and print that one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from experiments.training import rundir
from experiments.config import CONFIG_DIR, load_run_config
from experiments.errors import UserError
from experiments.training.trainer import default_run_dir

ROOT = Path(__file__).resolve().parents[3]
LRS = ["0.001", "0.002", "0.003", "0.004"]


def _train_command(out: Path, lr: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "balancebench.main", "train", "--config", str(CONFIG_DIR / "synthetic.yaml"),
            "--scale", "tiny", "--seed", "0", "--out", str(out), "--quiet", "--set", f"train.lr={lr}",
            "--set", "train.max_steps_per_epoch=3", "--set", "train.log_every=1", "--set", "train.num_threads=1",
            *extra]


def _start_all(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for c in commands]
    done = []
    for proc, command in zip(procs, commands):
        out, err = proc.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return done


def test_concurrent_train_runs_get_distinct_complete_run_directories(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    results = _start_all([_train_command(out, lr) for lr in LRS])
    printed = []
    for lr, result in zip(LRS, results):
        assert result.returncode == 0, result.stderr
        run_dir = Path(result.stdout.strip().splitlines()[-1])  # the last line is the run directory
        printed.append(run_dir)
        config = yaml.safe_load((run_dir / rundir.CONFIG).read_text())
        assert config["train"]["lr"] == float(lr) and config["seed"] == 0  # its own config, not another's
        summary = rundir.read_summary(run_dir)
        assert summary["status"] == "complete"
        for name in (rundir.METRICS, rundir.STEPS, rundir.BEST, rundir.LAST):
            assert (run_dir / name).is_file(), (run_dir, name)
        assert list(rundir.read_table(run_dir, rundir.METRICS)["epoch"]) == [0, 1, 2]
    assert len(set(printed)) == len(LRS)
    assert sorted(p.resolve() for p in printed) == sorted(p.resolve() for p in out.iterdir())  # nothing else written


def test_concurrent_runs_with_one_chosen_name_one_wins_the_others_get_one_line(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    results = _start_all([_train_command(out, lr, "--set", "name=sweep") for lr in LRS[:3]])
    winners = [(lr, r) for lr, r in zip(LRS, results) if r.returncode == 0]
    assert len(winners) == 1, [(r.returncode, r.stderr[-300:]) for r in results]
    for result in results:
        if result.returncode != 0:
            assert result.returncode == 2
            lines = result.stderr.strip().splitlines()
            assert len(lines) == 1 and "already exists" in lines[0] and "Traceback" not in result.stderr
    (lr, winner), = winners
    assert Path(winner.stdout.strip().splitlines()[-1]) == out / "sweep"
    assert yaml.safe_load((out / "sweep" / rundir.CONFIG).read_text())["train"]["lr"] == float(lr)
    assert rundir.read_summary(out / "sweep")["status"] == "complete"


def test_same_second_same_name_threads_get_distinct_directories(tmp_path: Path, monkeypatch) -> None:
    """The stamp frozen, so every caller asks for the same name at once: each gets its own."""
    monkeypatch.setattr(time, "strftime", lambda fmt, *a: "20240101-000000")
    cfg = load_run_config(CONFIG_DIR / "synthetic.yaml", "tiny", {"out": str(tmp_path), "seed": 0})
    got: list[Path] = []
    barrier = threading.Barrier(8)

    def claim() -> None:
        barrier.wait()
        got.append(default_run_dir(cfg))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 8 and all(p.is_dir() and not any(p.iterdir()) for p in got)
    base = "synthetic_uniform_seed0_20240101-000000"
    assert sorted(p.name for p in got) == sorted([base] + [f"{base}-{n}" for n in range(2, 9)])


def test_a_chosen_name_that_exists_is_refused(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    with pytest.raises(UserError, match="already exists.*--resume"):
        rundir.create_run_dir(tmp_path, "mine", unique=False)
