"""``balancebench demo``: its study measures Δm% against single-task runs (two, K = 2 on Multi-MNIST),
says so in the printed table and the report, and passes ``--reference`` through. Shrunk to a few
steps per run (same code path as the real demo: its YAML, its command, its report)."""

from __future__ import annotations

from pathlib import Path

import pytest

import balancebench.commands.demo as demo
from balancebench.main import main

#: the demo's own study, cut to one method, one trial, one rerun seed and two steps per epoch
SHRUNK = {"methods": ["uniform"], "n_trials": 1, "rerun_seeds": [0], "workers": 1,
          "overrides": {"benchmark": {"options": {"n_train": 256, "n_val": 128, "n_test": 128}},
                        "train": {"epochs": 1, "max_steps_per_epoch": 2}}}


def test_demo_reports_delta_m_vs_stl(tmp_path: Path, monkeypatch, capsys) -> None:
    real = demo.run_demo
    monkeypatch.setattr(demo, "run_demo", lambda overrides, progress: real({**overrides, **SHRUNK}, progress))
    assert main(["demo", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| method"))
    assert out.startswith("Δm% vs STL.") and "test Δm% vs STL |" in header
    stl_row = next(line for line in out.splitlines() if line.startswith("| STL reference"))
    assert "2 single-task runs" in stl_row  # K = 2: left_cls, right_rec
    folder = tmp_path / "demo-multimnist-CL_RR-small"
    assert {p.name for p in (folder / "stl").iterdir()} >= {"task_left_cls", "task_right_rec", "stl_reference.json"}
    assert "Δm% vs STL" in (folder / "report.md").read_text()


def test_demo_passes_the_reference_choice_through(monkeypatch) -> None:
    seen: list = []

    class Stop(Exception):
        pass

    def fake(overrides, progress):
        seen.append(overrides)
        raise Stop

    monkeypatch.setattr(demo, "run_demo", fake)
    with pytest.raises(Stop):
        main(["demo", "--reference", "untrained", "--quiet"])
    with pytest.raises(Stop):
        main(["demo", "--quiet"])
    assert seen[0]["reference"] == "untrained" and "reference" not in seen[1]  # default: the YAML's (stl)
