"""``examples/your_benchmark`` end to end, the way a user runs it: the package is pip-installed (into
a temporary folder put on PYTHONPATH: offline, no build isolation, no dependencies), then
``balancebench list``, ``check-balancer``, a tiny ``study`` and its ``report`` run as separate
processes that find the benchmark and the balancer through the package's entry points alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "your_benchmark"


def _run(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """(a working folder holding a copy of the example, the environment that sees it installed)."""
    work = tmp_path_factory.mktemp("your_benchmark")
    source = work / "src"  # pip builds in the source folder: a copy keeps the repository clean
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = work / "site"
    env = {**os.environ, "PIP_ROOT_USER_ACTION": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "--quiet",
          "--target", str(site), str(source)], env, work)
    env.update(PYTHONPATH=os.pathsep.join([str(site), str(ROOT)]), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return work, env


def _balancebench(installed: tuple[Path, dict[str, str]], *args: str) -> str:
    work, env = installed
    return _run([sys.executable, "-m", "balancebench", *args], env, work).stdout


def test_list_shows_the_plugins_with_their_origin(installed) -> None:
    rows = {line.split()[0]: line for line in _balancebench(installed, "list").splitlines() if line.startswith("  ")}
    assert "[entry point (your-benchmark 0.1.0)]" in rows["three_tasks"] and "variants: default" in rows["three_tasks"]
    assert "[entry point (your-benchmark 0.1.0)]" in rows["relative_loss"]
    assert "[built-in]" in rows["famo"] and "[built-in]" in rows["synthetic"]


def test_check_balancer_runs_the_contract_on_the_plugin(installed) -> None:
    out = _balancebench(installed, "check-balancer", "relative_loss", "--hparam", "alpha=2.0")
    assert "| FAIL" not in out
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("relative_loss: ") and " 0 fail" in summary
    assert int(summary.split(": ")[1].split()[0]) >= 18  # checks that passed


def test_a_fair_study_of_the_plugins_then_its_report(installed) -> None:
    work, _ = installed
    out = _balancebench(installed, "study", "--config", str(work / "src" / "study.yaml"), "--scale", "tiny",
                        "--n-trials", "2", "--methods", "uniform,relative_loss", "--out", str(work / "results"),
                        "--quiet")
    table = [line for line in out.splitlines() if line.startswith("| uniform") or line.startswith("| relative_loss")]
    assert len(table) == 4, out  # results and budget rows of both methods
    journal = work / "results" / "your-problem" / "study.journal"
    assert journal.is_file()
    _balancebench(installed, "report", "--storage", str(journal), "--out", str(work / "report"))
    report = (work / "report" / "report.md").read_text()
    assert "## three_tasks" in report and "| relative_loss" in report and "| uniform" in report
    root = work / "results" / "your-problem"
    summaries = [json.loads(p.read_text()) for p in root.rglob("summary.json")]
    # the methods' trials and reruns, plus the single-task references (fixed one-hot weights) of Δm%
    stl = [json.loads(p.read_text()) for p in (root / "stl").rglob("summary.json")]
    assert {s["balancer"] for s in stl} == {"fixed"} and len(stl) == 3  # one run per task
    assert {s["balancer"] for s in summaries} == {"uniform", "relative_loss", "fixed"}
    assert {s["benchmark"] for s in summaries} == {"three_tasks"} and all(s["status"] == "complete" for s in summaries)
