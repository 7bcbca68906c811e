"""EMA extraction of fixed weights from run directories (seed 003 §3.5)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from balancebench.main import main
from experiments.errors import UserError
from experiments.studies.extract import EpochWeights, ema_extract, epoch_weights, extract_weights


def make_run(path: Path, rows: list[tuple[int, float, float]], tasks: tuple[str, str] = ("a", "b")) -> Path:
    """A run directory with a summary and a steps.csv of (epoch, weight_a, weight_b) rows."""
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({"status": "complete", "tasks": list(tasks)}))
    frame = pd.DataFrame([{"step": i + 1, "epoch": e, f"loss_{tasks[0]}": 1.0, f"loss_{tasks[1]}": 1.0,
                           f"weight_{tasks[0]}": wa, f"weight_{tasks[1]}": wb} for i, (e, wa, wb) in enumerate(rows)])
    frame.to_csv(path / "steps.csv", index=False)
    return path


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    # run A, per epoch: e0 mean (2, 1) -> (2/3, 1/3); e1 (1, 3) -> (1/4, 3/4); e2 (1, 1) -> (1/2, 1/2)
    a = make_run(tmp_path / "a", [(0, 1.0, 1.0), (0, 3.0, 1.0), (1, 1.0, 3.0), (2, 1.0, 1.0)])
    # run B: e0 (1, 1) -> (1/2, 1/2); e1 (3, 1) -> (3/4, 1/4); e2 (2, 2) -> (1/2, 1/2)
    b = make_run(tmp_path / "b", [(0, 1.0, 1.0), (1, 3.0, 1.0), (2, 2.0, 2.0)])
    return [a, b]


def test_ema_extraction_matches_hand_computation(two_runs, tmp_path):
    # across runs: w0 = (7/12, 5/12), w1 = (1/2, 1/2), w2 = (1/2, 1/2)
    # EMA 0.9: m0 = w0; m1 = 0.9 m0 + 0.1 w1 = (0.575, 0.425); m2 = 0.9 m1 + 0.1 w2 = (0.5675, 0.4325)
    extracted = extract_weights(two_runs, ema=0.9, out=tmp_path / "out")
    assert extracted.tasks == ["a", "b"]
    assert extracted.weights == pytest.approx([0.5675, 0.4325], abs=1e-12)
    assert extracted.per_epoch.to_numpy().ravel().tolist() == pytest.approx([7 / 12, 5 / 12, 0.5, 0.5, 0.5, 0.5])
    assert extracted.trajectory.to_numpy()[1].tolist() == pytest.approx([0.575, 0.425])
    data = json.loads((tmp_path / "out" / "weights.json").read_text())
    assert data["weights"] == pytest.approx([0.5675, 0.4325], abs=1e-12)
    assert data["tasks"] == ["a", "b"] and data["ema"] == 0.9
    assert data["source_runs"] == [str(p) for p in two_runs]
    assert (tmp_path / "out" / "weights.png").stat().st_size > 1000


def test_ema_zero_is_last_epoch_and_renormalised():
    # unnormalised trajectories are renormalised at the end; ema = 0 keeps only the last epoch
    run = EpochWeights(["a", "b", "c"], [0, 1], [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    assert ema_extract([run], ema=0.0).weights == pytest.approx([0.6, 0.2, 0.2])
    assert sum(ema_extract([run], ema=0.5).weights) == pytest.approx(1.0)
    assert ema_extract([run], ema=0.5).weights == pytest.approx([0.4, 0.25, 0.35])


def test_runs_of_different_length_average_what_exists(tmp_path):
    long = make_run(tmp_path / "long", [(0, 1.0, 1.0), (1, 1.0, 3.0)])
    short = make_run(tmp_path / "short", [(0, 3.0, 1.0)])
    extracted = ema_extract([epoch_weights(long), epoch_weights(short)], ema=0.5)
    # e0: mean of (1/2, 1/2) and (3/4, 1/4) = (5/8, 3/8); e1: only the long run, (1/4, 3/4)
    assert extracted.weights == pytest.approx([0.5 * 5 / 8 + 0.5 * 0.25, 0.5 * 3 / 8 + 0.5 * 0.75])


def test_column_order_follows_the_summary_tasks(tmp_path):
    run = make_run(tmp_path / "r", [(0, 1.0, 3.0)], tasks=("z", "y"))
    assert epoch_weights(run).tasks == ["z", "y"]
    assert epoch_weights(run).weights == [[0.25, 0.75]]


def test_bad_inputs_are_user_errors(tmp_path, two_runs):
    with pytest.raises(UserError, match="missing"):
        epoch_weights(tmp_path / "nope")
    bare = tmp_path / "bare"
    bare.mkdir()
    with pytest.raises(UserError, match="summary.json"):
        epoch_weights(bare)
    (two_runs[0] / "summary.json").write_text("{not json")
    with pytest.raises(UserError, match="corrupt summary.json"):
        epoch_weights(two_runs[0])
    (two_runs[1] / "steps.csv").write_text("step,epoch,loss_a\n1,0,1.0\n")
    with pytest.raises(UserError, match="weight_<task>"):
        epoch_weights(two_runs[1])
    other = make_run(tmp_path / "other", [(0, 1.0, 1.0)], tasks=("x", "y"))
    good = make_run(tmp_path / "good", [(0, 1.0, 1.0)])
    with pytest.raises(UserError, match="different tasks"):
        ema_extract([epoch_weights(good), epoch_weights(other)])
    with pytest.raises(UserError, match="ema"):
        ema_extract([epoch_weights(good)], ema=1.0)


def test_cli_extract_weights(two_runs, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["extract-weights", *map(str, two_runs), "--ema", "0.9", "--out", str(out)]) == 0
    assert "a=0.5675" in capsys.readouterr().out
    assert json.loads((out / "weights.json").read_text())["weights"] == pytest.approx([0.5675, 0.4325])
    assert main(["extract-weights", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("balancebench: error:") and "missing" in err[0]
