"""``balancebench report``: report.md with tables that match the stored results, and the PNGs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from analysis.report import read_report_tables, report
from analysis.runs import load_runs
from analysis.trajectories import plot_toy_trajectories, plot_weight_trajectories, weight_frame
from balancebench.main import main
from experiments.config import CONFIG_DIR, load_run_config
from experiments.training.trainer import train
from tests.analysis.helpers import DELTA_M, make_runs


def images(report_md: Path) -> list[Path]:
    return [report_md.parent / m for m in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report_md.read_text())]


def test_report_from_run_directories_writes_tables_and_plots(tmp_path: Path) -> None:
    make_runs(tmp_path / "runs")
    weights = tmp_path / "weights.json"
    weights.write_text(json.dumps({"weights": [0.3, 0.7], "tasks": ["left_cls", "right_rec"], "ema": 0.9,
                                   "runs": [str(tmp_path / "runs" / "famo_seed0")]}))
    result = report(runs=[tmp_path / "runs"], out=tmp_path / "out", weights=weights)
    text = result.path.read_text()
    # the Markdown table holds the stored (hand-computed) numbers
    assert "| famo     |       2 | -275 ± 12" in text and "| uniform  |       2 | -272 ± 48" in text
    assert "| rlw      |       1 | -25 " in text
    assert "Δm% vs untrained model" in text
    figures = images(result.path)
    names = {p.name for p in figures}
    assert {"delta_m_multimnist_CL_RR.png", "tasks_multimnist_CL_RR.png", "weights_multimnist_CL_RR.png",
            "time_per_epoch.png"} <= names
    for png in figures:
        assert png.is_file() and png.stat().st_size > 1000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    csv = read_report_tables(result.path)["multimnist_CL_RR"].set_index("method")
    assert csv.loc["famo", "delta_m_mean"] == pytest.approx((DELTA_M[("famo", 0)] + DELTA_M[("famo", 1)]) / 2)
    assert (tmp_path / "out" / "tables" / "multimnist_CL_RR.tex").is_file()


def test_weight_frame_is_normalised_and_prefers_steps(tmp_path: Path) -> None:
    make_runs(tmp_path / "runs")
    frame = weight_frame(load_runs([tmp_path / "runs"]))
    assert set(frame["unit"]) == {"step"}
    sums = frame.groupby(["method", "seed", "x"])["weight"].sum()
    assert sums.to_numpy() == pytest.approx(1.0)
    famo = frame[(frame["method"] == "famo") & (frame["seed"] == 0) & (frame["task"] == "left_cls")]
    assert list(famo["weight"]) == pytest.approx([0.31, 0.32, 0.33, 0.34])
    for run in (tmp_path / "runs").iterdir():
        (run / "steps.csv").unlink()
    frame = weight_frame(load_runs([tmp_path / "runs"]))
    assert set(frame["unit"]) == {"epoch"} and sorted(set(frame["x"])) == [1, 2]
    paths = plot_weight_trajectories(load_runs([tmp_path / "runs"]), tmp_path / "figs")
    assert len(paths) == 1 and paths[0].stat().st_size > 1000


def test_toy_trajectories_against_the_pareto_front(tmp_path: Path) -> None:
    for name, start in (("uniform", [9.0, 9.0]), ("famo", [-8.5, 7.5])):
        cfg = load_run_config(CONFIG_DIR / "toy.yaml", "tiny", {
            "balancer": {"name": name}, "benchmark": {"options": {"start": start, "steps_per_epoch": 50}},
            "train": {"epochs": 2, "log_every": 10, "progress": False}})
        train(cfg, tmp_path / "toy" / name)
    records = load_runs([tmp_path / "toy"])
    path = plot_toy_trajectories(records, tmp_path / "toy.png")
    assert path is not None and path.stat().st_size > 1000
    assert plot_toy_trajectories([r for r in records if r.benchmark != "toy"], tmp_path / "none.png") is None
    result = report(runs=[tmp_path / "toy"], out=tmp_path / "out")
    assert "figures/toy_trajectories.png" in result.path.read_text()
    # the toy evaluates no test split: its table uses validation metrics, and says so
    assert "split: val" in result.path.read_text()


def test_report_cli_and_its_user_errors(tmp_path: Path, capsys) -> None:
    make_runs(tmp_path / "runs")
    assert main(["report", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(tmp_path / "out" / "report.md") and "3 methods, 5 runs" in out[0]
    (tmp_path / "empty").mkdir()
    assert main(["report", "--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("balancebench: error: no complete run directories") and "\n" not in err
    assert main(["report", "--storage", str(tmp_path / "missing.journal"), "--out", str(tmp_path / "o3")]) == 2
    assert "no study storage" in capsys.readouterr().err


def test_report_on_a_finished_study_matches_the_stored_results(tmp_path: Path) -> None:
    from experiments.studies.driver import run_study
    from experiments.studies.config import study_config_from_dict
    from experiments.studies.results import results_table

    cfg = study_config_from_dict({
        "benchmark_config": str(CONFIG_DIR / "synthetic.yaml"), "scale": "tiny",
        "overrides": {"train": {"epochs": 2, "max_steps_per_epoch": 3, "log_every": 1, "num_threads": 1}},
        "methods": ["uniform", "famo", "fixed_from_famo"],
        "shared_space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
        "method_spaces": {"famo": {"gamma": [1e-4, 1e-3, 1e-2]}},
        "published_defaults": {"famo": {"gamma": 1e-3, "w_lr": 0.025}},
        "n_trials": 2, "rerun_seeds": [0, 1], "out": str(tmp_path / "results"),
    })
    outcome = run_study(cfg, progress=False)
    storage = outcome.storage_url
    result = report(storage=storage, study=outcome.group, out=tmp_path / "report")  # as the demo calls it
    stored = results_table(storage).set_index("method")
    ours = read_report_tables(result.path)
    (table,) = ours.values()
    table = table.set_index("method")
    assert set(table.index) == {"uniform", "famo", "fixed_from_famo"}
    for method in table.index:
        assert table.loc[method, "seeds"] == 2
        assert table.loc[method, "delta_m_mean"] == pytest.approx(stored.loc[method, "test_delta_m_mean"], rel=1e-9)
        assert table.loc[method, "delta_m_se"] == pytest.approx(stored.loc[method, "test_delta_m_se"], rel=1e-9)
        for metric in ("task0_mse", "task3_mse"):
            assert table.loc[method, f"{metric}_mean"] == pytest.approx(stored.loc[method, f"test_{metric}_mean"], rel=1e-9)
    text = result.path.read_text()
    assert f"study `{outcome.group}`" in text and "fixed_from_famo" in text
    assert "weights.json" in text  # the fixed_from_famo weights are drawn on the weight plots
    assert all(p.is_file() for p in images(result.path))
    assert isinstance(pd.read_csv(next((tmp_path / "report" / "tables").glob("*_runs.csv"))), pd.DataFrame)
