"""Faults: a SIGKILLed study resumes with zero finished trials lost; four concurrent workers on a
real PostgreSQL and on the default journal storage run exactly the budget, without duplicates or
lost results."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from experiments.config import CONFIG_DIR
from experiments.studies.driver import run_study
from experiments.studies.config import study_config_from_dict
from experiments.studies.storage import open_storage

GROUP = "synthetic-default-tiny"


def study_dict(tmp_path: Path, **over) -> dict:
    base = {
        "benchmark_config": str(CONFIG_DIR / "synthetic.yaml"), "scale": "tiny",
        "overrides": {"train": {"epochs": 2, "max_steps_per_epoch": 3, "log_every": 1, "num_threads": 1}},
        "methods": ["uniform", "famo"],
        "shared_space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "weight_decay": [0.0, 1e-4]},
        "method_spaces": {"famo": {"gamma": [1e-4, 1e-3, 1e-2]}},
        "published_defaults": {"famo": {"gamma": 1e-3, "w_lr": 0.025}},
        "n_trials": 6, "rerun_seeds": [0], "out": str(tmp_path / "results"),
        "pruner": {"name": "none"},
    }
    base.update(over)
    return base


def assert_exact_budget_no_duplicates_no_loss(storage_url: str, budget: int) -> None:
    storage = open_storage(storage_url)
    for method in ("uniform", "famo"):
        trials = optuna.load_study(study_name=f"{GROUP}/{method}", storage=storage).trials
        counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   or (t.state == TrialState.FAIL and t.user_attrs.get("failure_kind") == "diverged")]
        assert len(counted) == budget, [(t.number, t.state) for t in trials]
        assert len({json.dumps(t.params, sort_keys=True) for t in counted}) == budget  # no duplicate draws
        for trial in counted:
            if trial.state != TrialState.COMPLETE:
                continue
            summary = json.loads((Path(trial.user_attrs["run_dir"]) / "summary.json").read_text())
            assert summary["status"] == "complete"
            assert summary["best_val_objective"] == pytest.approx(trial.value)  # no result lost


def test_four_workers_on_a_real_postgresql(tmp_path: Path, postgres_url: str) -> None:
    cfg = study_config_from_dict(study_dict(tmp_path, storage=postgres_url, workers=4))
    run_study(cfg, progress=False)
    assert_exact_budget_no_duplicates_no_loss(postgres_url, 6)
    storage = open_storage(postgres_url)
    pids = {t.user_attrs["worker"]["pid"] for m in ("uniform", "famo")
            for t in optuna.load_study(study_name=f"{GROUP}/{m}", storage=storage).trials}
    assert len(pids) >= 2  # the trials really were spread over several processes


def test_four_workers_on_the_default_storage(tmp_path: Path) -> None:
    cfg = study_config_from_dict(study_dict(tmp_path, workers=4))
    outcome = run_study(cfg, progress=False)
    assert_exact_budget_no_duplicates_no_loss(outcome.storage, 6)


def test_sigkilled_study_resumes_with_no_finished_trial_lost(tmp_path: Path) -> None:
    config = tmp_path / "study.yaml"
    slow = {"train": {"epochs": 4, "max_steps_per_epoch": 40, "log_every": 10, "num_threads": 1}}
    config.write_text(yaml.safe_dump(study_dict(tmp_path, overrides=slow, n_trials=4, workers=1)))
    journal = tmp_path / "results" / GROUP / "study.journal"
    command = [sys.executable, "-m", "balancebench.main", "study", "--config", str(config), "--quiet"]
    proc = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    before: list = []
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # wait until one trial finished and another is running
            time.sleep(0.2)
            if not journal.is_file():
                continue
            trials = optuna.load_study(study_name=f"{GROUP}/uniform", storage=open_storage(str(journal))).trials
            if any(t.state == TrialState.COMPLETE for t in trials) and any(t.state == TrialState.RUNNING for t in trials):
                before = trials
                os.killpg(proc.pid, signal.SIGKILL)  # mid-trial, no chance to clean up
                break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert before, "the study never had a finished and a running trial at once"
    assert proc.returncode == -signal.SIGKILL
    finished_before = {t.number: (t.value, t.params) for t in before if t.state == TrialState.COMPLETE}
    killed = [t.number for t in before if t.state == TrialState.RUNNING]

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    trials = optuna.load_study(study_name=f"{GROUP}/uniform", storage=open_storage(str(journal))).trials
    by_number = {t.number: t for t in trials}
    for number, (value, params) in finished_before.items():  # kept, not redone
        assert by_number[number].state == TrialState.COMPLETE
        assert by_number[number].value == value and by_number[number].params == params
    for number in killed:  # marked failed, never counted as complete
        assert by_number[number].state == TrialState.FAIL
        assert by_number[number].user_attrs.get("failure_kind") == "worker_died"
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4  # the budget is finished
