"""``fixed_from_famo`` never vanishes from a study's results: it is trained on weights extracted
from the exact per-epoch means of FAMO's reruns, or listed with the reason it could not be
(tiny synthetic studies, one trial and one rerun seed per method)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from balancebench.main import main
from experiments.config import CONFIG_DIR, deep_merge
from experiments.errors import NonFiniteLossError
from experiments.studies.driver import run_study
from experiments.studies.config import StudyConfig, study_config_from_dict
from experiments.studies.results import display_table, results_table

GROUP = "synthetic-default-tiny"


def tiny_study(tmp_path: Path, **over: Any) -> StudyConfig:
    # 2 epochs x 3 steps with the benchmark's log_every (20): no step is ever logged to steps.csv
    base = {"benchmark_config": str(CONFIG_DIR / "synthetic.yaml"), "scale": "tiny",
            "overrides": {"train": {"epochs": 2, "max_steps_per_epoch": 3, "num_threads": 1}},
            "methods": ["uniform", "famo", "fixed_from_famo"],
            "shared_space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
            "n_trials": 1, "rerun_seeds": [0], "out": str(tmp_path / "results"), "workers": 1}
    return study_config_from_dict(deep_merge(base, over))


def journal(cfg: StudyConfig) -> str:
    return str(Path(cfg.out) / GROUP / "study.journal")


def test_fixed_from_famo_is_trained_when_no_step_was_logged(tmp_path: Path, capsys) -> None:
    """The reported case: log_every larger than the whole run left no steps.csv, the extraction
    found no weights and fixed_from_famo vanished from the results with exit code 0."""
    cfg = tiny_study(tmp_path)
    outcome = run_study(cfg, progress=False, verbose=False)
    famo_rerun = Path(cfg.out) / GROUP / "famo" / "rerun_t0" / "seed_0"
    assert not (famo_rerun / "steps.csv").exists() and (famo_rerun / "metrics.csv").is_file()
    table = outcome.results.set_index("method")
    assert list(table.index) == ["uniform", "famo", "fixed_from_famo"]
    assert table.loc["fixed_from_famo", "seeds"] == "1/1"
    assert pd.notna(table.loc["fixed_from_famo", "test_delta_m_mean"])
    assert "why no number" not in display_table(outcome.results).columns
    assert main(["results", "--storage", journal(cfg)]) == 0
    assert "| fixed_from_famo" in capsys.readouterr().out


def _famo_reruns(real_train: Any, action: Any) -> Any:
    """A ``train`` that applies ``action(run_dir)`` to FAMO's reruns (those evaluate the test split)."""
    def train(run_cfg, run_dir, *, resume=False, on_epoch=None):
        if run_cfg.balancer.name == "famo" and run_cfg.train.evaluate_test:
            return action(real_train, run_cfg, run_dir, resume, on_epoch)
        return real_train(run_cfg, run_dir, resume=resume, on_epoch=on_epoch)
    return train


def _diverge(real_train, run_cfg, run_dir, resume, on_epoch):
    raise NonFiniteLossError(3, "task0", float("nan"), 0)


def _drop_weight_columns(real_train, run_cfg, run_dir, resume, on_epoch):
    result = real_train(run_cfg, run_dir, resume=resume, on_epoch=on_epoch)
    metrics = pd.read_csv(Path(run_dir) / "metrics.csv")
    metrics.drop(columns=[c for c in metrics.columns if c.startswith("weight_")]).to_csv(
        Path(run_dir) / "metrics.csv", index=False)
    return result


@pytest.mark.parametrize("action, reason", [
    (_diverge, "no completed rerun of famo trial 0 to extract weights from (seed 0: diverged)"),
    (_drop_weight_columns, "cannot extract weights from famo's reruns: seed 0: metrics.csv in"),
])
def test_a_missing_input_is_one_line_and_a_row_with_the_reason(tmp_path: Path, monkeypatch, capsys,
                                                               action: Any, reason: str) -> None:
    import experiments.training.trainer as trainer

    monkeypatch.setattr(trainer, "train", _famo_reruns(trainer.train, action))
    cfg = tiny_study(tmp_path, methods=["famo", "fixed_from_famo"])
    outcome = run_study(cfg, progress=False, verbose=True)
    said = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[fixed_from_famo]")]
    assert len(said) == 1 and "not trained" in said[0] and reason in said[0]
    for table in (outcome.results, results_table(journal(cfg))):  # the storage alone tells the same
        row = table.set_index("method").loc["fixed_from_famo"]
        assert row["seeds"] == "0/1" and pd.isna(row["test_delta_m_mean"]) and reason in row["note"]
    shown = display_table(outcome.results).set_index("method")
    assert reason in shown.loc["fixed_from_famo", "why no number"]


def test_no_completed_famo_trial_is_a_row_with_the_reason(tmp_path: Path, monkeypatch) -> None:
    import experiments.training.trainer as trainer

    real_train = trainer.train

    def famo_always_diverges(run_cfg, run_dir, *, resume=False, on_epoch=None):
        if run_cfg.balancer.name == "famo":
            raise NonFiniteLossError(1, "task0", float("inf"), 0)
        return real_train(run_cfg, run_dir, resume=resume, on_epoch=on_epoch)

    monkeypatch.setattr(trainer, "train", famo_always_diverges)
    cfg = tiny_study(tmp_path)
    table = run_study(cfg, progress=False, verbose=False).results.set_index("method")
    assert list(table.index) == ["uniform", "famo", "fixed_from_famo"]
    assert "no completed search trial of famo" in table.loc["fixed_from_famo", "note"]
    assert table.loc["famo", "failed"] == 1 and pd.isna(table.loc["famo", "test_delta_m_mean"])
    text = (Path(cfg.out) / GROUP / "results.md").read_text()
    assert "fixed_from_famo" in text and "no completed search trial of famo" in text
