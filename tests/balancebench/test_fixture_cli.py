"""The issue's "done when" path through the command line: ``balancebench list`` shows the papers' benchmarks;
``balancebench fixture <benchmark> --out DIR`` then ``balancebench train --config configs/<benchmark>.yaml --scale
tiny --set benchmark.options.root=DIR`` trains and writes a run directory; users' mistakes are one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.training import rundir
from experiments.benchmarks.localdata import DATA_ENV
from balancebench.main import main
from experiments.config import CONFIG_DIR


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)


def test_list_shows_the_three_benchmarks(capsys) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "variants: default" in lines["nyuv2"]
    assert "variants: seg7, seg19" in lines["cityscapes"] and "variants: f1, error" in lines["celeba"]


@pytest.mark.parametrize("name", ["nyuv2", "cityscapes", "celeba"])
def test_fixture_then_tiny_training(name: str, tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    assert main(["fixture", name, "--out", str(data)]) == 0  # the release's sizes
    assert f"benchmark.options.root={data}" in capsys.readouterr().out
    code = main(["train", "--config", str(CONFIG_DIR / f"{name}.yaml"), "--scale", "tiny",
                 "--set", f"benchmark.options.root={data}", "--out", str(tmp_path / "runs"), "--quiet"])
    assert code == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert run_dir.parent == tmp_path / "runs"
    summary = json.loads((run_dir / rundir.SUMMARY).read_text())
    assert summary["status"] == "complete" and summary["test_metrics"]


def test_training_without_data_is_one_line(tmp_path: Path, capsys) -> None:
    code = main(["train", "--config", str(CONFIG_DIR / "nyuv2.yaml"), "--scale", "tiny", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err.startswith("balancebench: error: nyuv2: no data directory") and DATA_ENV in err


@pytest.mark.parametrize("argv, message", [
    (["fixture", "celeba", "--counts", "3,x"], "--counts must be integers"),
    (["fixture", "nyuv2", "--counts", "3"], "counts must be 2 positive numbers"),
    (["fixture", "cityscapes", "--shape", "4x4"], "shape must be (height, width) with both >= 8"),
])  # fmt: skip
def test_fixture_argument_errors_are_one_line(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_fixture_refuses_a_non_empty_directory(tmp_path: Path, capsys) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["fixture", "nyuv2", "--out", str(tmp_path)]) == 2
    assert "not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"
