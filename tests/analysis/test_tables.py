"""Tables from hand-made run directories against hand-computed Δm%, mean rank and stderr."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.runs import find_run_dirs, load_runs, run_frame
from analysis.tables import display_table, format_pm, mean_se, setting_tables, to_latex, write_tables
from experiments.errors import UserError
from tests.analysis.helpers import DELTA_M, MEAN_RANK, make_run, make_runs


@pytest.fixture
def runs_root(tmp_path: Path) -> Path:
    make_runs(tmp_path / "runs")
    return tmp_path / "runs"


def test_per_run_delta_m_matches_seed_003_eq_1_by_hand(runs_root: Path) -> None:
    frame = run_frame(load_runs([runs_root]))
    assert len(frame) == len(DELTA_M)
    for _, row in frame.iterrows():
        assert row["delta_m"] == pytest.approx(DELTA_M[(row["method"], row["seed"])], abs=1e-9)
        assert row["reference"] == "untrained model" and row["split"] == "test"
    # per-task changes average to Δm%: uniform seed 0 has acc -400 %, mse -50 %
    first = frame[(frame["method"] == "uniform") & (frame["seed"] == 0)].iloc[0]
    assert first["change_left_cls"] == pytest.approx(-400.0) and first["change_right_rec"] == pytest.approx(-50.0)


def test_summary_mean_stderr_and_mean_rank_by_hand(runs_root: Path) -> None:
    ((setting, (runs, table, specs)),) = setting_tables(load_runs([runs_root])).items()
    assert setting == "multimnist/CL_RR"
    table = table.set_index("method")
    assert list(table.index) == ["famo", "uniform", "rlw"]  # sorted by Δm% (lower is better)
    assert table.loc["uniform", "delta_m_mean"] == pytest.approx(-272.5)
    assert table.loc["uniform", "delta_m_se"] == pytest.approx(47.5)  # |−225 − (−320)| / 2 for two seeds
    assert table.loc["famo", "delta_m_mean"] == pytest.approx(-275.0)
    assert table.loc["famo", "delta_m_se"] == pytest.approx(12.5)
    assert math.isnan(table.loc["rlw", "delta_m_se"]) and table.loc["rlw", "seeds"] == 1
    for method, rank in MEAN_RANK.items():
        assert table.loc[method, "mean_rank"] == pytest.approx(rank)
    assert table.loc["uniform", "left_cls_acc_mean"] == pytest.approx(0.6)
    assert table.loc["uniform", "left_cls_acc_se"] == pytest.approx(0.1)
    assert table.loc["famo", "time_vs_uniform"] == pytest.approx(2.2 / 1.1)


def test_markdown_latex_and_csv_files_hold_the_same_numbers(runs_root: Path, tmp_path: Path) -> None:
    tables = setting_tables(load_runs([runs_root]))
    files = write_tables(tables, tmp_path / "out")["multimnist/CL_RR"]
    md = files["md"].read_text()
    assert "-272 ± 48" in md and "-275 ± 12" in md  # rounded to the stderr's 2nd significant digit
    assert "0.60 ± 0.10" in md
    tex = files["tex"].read_text()
    assert r"\pm" in tex and r"left\_cls\_acc" in tex and r"$\Delta$m\%" in tex and "±" not in tex
    csv = pd.read_csv(files["csv"]).set_index("method")
    assert csv.loc["uniform", "delta_m_mean"] == pytest.approx(-272.5)
    runs = pd.read_csv(files["runs"])
    assert sorted(runs["delta_m"]) == pytest.approx(sorted(DELTA_M.values()))


def test_format_and_mean_se_edge_cases() -> None:
    assert format_pm(-272.5, 47.5) == "-272 ± 48"
    assert format_pm(0.123456, float("nan")) == "0.1235"
    assert format_pm(float("nan"), 1.0) == "n/a"
    mean, se = mean_se([1.0, 2.0, float("nan"), 3.0])
    assert mean == pytest.approx(2.0) and se == pytest.approx(1.0 / math.sqrt(3))
    assert math.isnan(mean_se([4.0])[1])
    shown = to_latex(pd.DataFrame({"a_b": ["50%"], "c": ["1 ± 2"]}))
    assert r"a\_b" in shown and r"50\%" in shown and r"1 $\pm$ 2" in shown


def test_runs_with_different_hyperparameters_are_different_methods(tmp_path: Path) -> None:
    make_run(tmp_path, "uniform", 0, 0.5, 0.1, 1.0)
    make_run(tmp_path / "g1", "famo", 0, 0.5, 0.1, 1.0, hparams={"gamma": 0.001, "w_lr": 0.025})
    make_run(tmp_path / "g2", "famo", 0, 0.6, 0.1, 1.0, hparams={"gamma": 0.01, "w_lr": 0.025})
    methods = sorted(r.method for r in load_runs([tmp_path]))
    assert methods == ["famo[gamma=0.001]", "famo[gamma=0.01]", "uniform"]


def test_display_table_marks_directions(runs_root: Path) -> None:
    ((_, (_, table, specs)),) = setting_tables(load_runs([runs_root])).items()
    shown = display_table(table, specs)
    assert "left_cls_acc ↑" in shown.columns and "right_rec_mse ↓" in shown.columns
    assert shown.loc[shown["method"] == "famo", "time vs uniform"].item() == "2.00×"


def test_missing_or_corrupt_run_directories_are_one_line_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such run directory"):
        find_run_dirs([tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no complete run directories"):
        load_runs([tmp_path / "empty"])
    bad = make_run(tmp_path / "bad", "uniform", 0, 0.5, 0.1, 1.0)
    (bad / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt summary.json"):
        load_runs([bad])
    failed = make_run(tmp_path / "failed", "famo", 0, 0.5, 0.1, 1.0)
    summary = json.loads((failed / "summary.json").read_text())
    (failed / "summary.json").write_text(json.dumps({**summary, "status": "failed"}))
    with pytest.raises(UserError, match="no complete run"):
        load_runs([failed])  # failed runs never enter a table


def test_reference_can_be_forced_to_an_stl_file_or_is_refused_when_missing(runs_root: Path, tmp_path: Path) -> None:
    stl = tmp_path / "stl_reference.json"
    stl.write_text(json.dumps({"metrics": {"left_cls_acc": 0.5, "right_rec_mse": 0.1},
                               "val_metrics": {"left_cls_acc": 0.4, "right_rec_mse": 0.2}}))
    frame = run_frame(load_runs([runs_root]), reference=str(stl)).set_index(["method", "seed"])
    # uniform seed 0 (acc 0.5, mse 0.10) equals the STL reference: Δm% 0
    assert frame.loc[("uniform", 0), "delta_m"] == pytest.approx(0.0)
    # famo seed 1 (acc 0.6, mse 0.05): acc -20 %, mse -50 % -> -35 %
    assert frame.loc[("famo", 1), "delta_m"] == pytest.approx(-35.0)
    assert frame.loc[("famo", 1), "reference"].startswith("STL")
    with pytest.raises(UserError, match="no literature STL values"):
        run_frame(load_runs([runs_root]), reference="literature")
