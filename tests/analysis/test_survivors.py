"""Survivors-only averages are marked as such: the report's note and the study results table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from analysis.report import report, survivors_note
from experiments.studies.results import display_table
from tests.analysis.helpers import make_runs


def test_report_names_the_runs_its_means_leave_out(tmp_path: Path) -> None:
    make_runs(tmp_path / "runs")
    assert survivors_note([tmp_path / "runs"]) == []
    summary = tmp_path / "runs" / "famo_seed1" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "status": "diverged"}))
    text = report(runs=[tmp_path / "runs"], out=tmp_path / "out").path.read_text()
    assert "survivors only: means, ± and seed counts are over the complete runs; left out: runs/famo_seed1 (diverged)" in text
    assert "| famo     |       1 |" in text  # famo's row: its one complete run


def test_study_results_mark_a_method_with_a_failed_rerun() -> None:
    rows = [{"method": m, "best_trial": 0, "best_params": "{}", "best_val_delta_m": -1.0, "seeds": seeds,
             "test_delta_m_mean": mean, "test_delta_m_se": math.nan, "note": ""}
            for m, seeds, mean in (("uniform", "3/3", -2.0), ("famo", "2/3", -3.0))]
    shown = display_table(pd.DataFrame(rows)).set_index("method")
    assert shown.loc["uniform", "seeds"] == "3/3" and shown.loc["famo", "seeds"] == "2/3 (survivors only)"
