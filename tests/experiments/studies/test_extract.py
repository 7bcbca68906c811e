"""EMA extraction of fixed weights from run directories (seed 003 §3.5)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from balancebench.main import main
from experiments.errors import UserError
from experiments.studies.extract import EpochWeights, ema_extract, epoch_weights, extract_weights


def make_run(path: Path, rows: list[tuple[float, float]], tasks: tuple[str, str] = ("a", "b"),
             extra: dict | None = None) -> Path:
    """A run directory with a summary and a metrics.csv whose epoch e >= 1 has mean weights
    ``rows[e - 1]`` (epoch 0, the untrained model, has none)."""
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({"status": "complete", "tasks": list(tasks)}))
    records = [{"epoch": 0, "val_objective": 0.0}]
    records += [{"epoch": e, "val_objective": -1.0, f"weight_{tasks[0]}": wa, f"weight_{tasks[1]}": wb}
                for e, (wa, wb) in enumerate(rows, start=1)]
    pd.DataFrame(records).to_csv(path / "metrics.csv", index=False)
    return path


@pytest.fixture
def two_runs(tmp_path: Path) -> list[Path]:
    # run A, per epoch: e1 mean (2, 1) -> (2/3, 1/3); e2 (1, 3) -> (1/4, 3/4); e3 (1, 1) -> (1/2, 1/2)
    a = make_run(tmp_path / "a", [(2.0, 1.0), (1.0, 3.0), (1.0, 1.0)])
    # run B: e1 (1, 1) -> (1/2, 1/2); e2 (3, 1) -> (3/4, 1/4); e3 (2, 2) -> (1/2, 1/2)
    b = make_run(tmp_path / "b", [(1.0, 1.0), (3.0, 1.0), (2.0, 2.0)])
    return [a, b]


def test_ema_extraction_matches_hand_computation(two_runs, tmp_path):
    # across runs: w1 = (7/12, 5/12), w2 = (1/2, 1/2), w3 = (1/2, 1/2)
    # EMA 0.9: m1 = w1; m2 = 0.9 m1 + 0.1 w2 = (0.575, 0.425); m3 = 0.9 m2 + 0.1 w3 = (0.5675, 0.4325)
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
    run = EpochWeights(["a", "b", "c"], [1, 2], [[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]])
    assert ema_extract([run], ema=0.0).weights == pytest.approx([0.6, 0.2, 0.2])
    assert sum(ema_extract([run], ema=0.5).weights) == pytest.approx(1.0)
    assert ema_extract([run], ema=0.5).weights == pytest.approx([0.4, 0.25, 0.35])


def test_runs_of_different_length_average_what_exists(tmp_path):
    long = make_run(tmp_path / "long", [(1.0, 1.0), (1.0, 3.0)])
    short = make_run(tmp_path / "short", [(3.0, 1.0)])
    extracted = ema_extract([epoch_weights(long), epoch_weights(short)], ema=0.5)
    # e1: mean of (1/2, 1/2) and (3/4, 1/4) = (5/8, 3/8); e2: only the long run, (1/4, 3/4)
    assert extracted.weights == pytest.approx([0.5 * 5 / 8 + 0.5 * 0.25, 0.5 * 3 / 8 + 0.5 * 0.75])


def test_column_order_follows_the_summary_tasks(tmp_path):
    run = make_run(tmp_path / "r", [(1.0, 3.0)], tasks=("z", "y"))
    assert epoch_weights(run).tasks == ["z", "y"]
    assert epoch_weights(run).weights == [[0.25, 0.75]] and epoch_weights(run).epochs == [1]


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
    (two_runs[1] / "metrics.csv").write_text("epoch,val_objective\n0,0.0\n1,-1.0\n")
    with pytest.raises(UserError, match="weight_<task>"):
        epoch_weights(two_runs[1])
    (two_runs[1] / "metrics.csv").unlink()
    with pytest.raises(UserError, match="no metrics.csv"):
        epoch_weights(two_runs[1])
    untrained = tmp_path / "untrained"
    make_run(untrained, [])
    pd.DataFrame([{"epoch": 0, "weight_a": None, "weight_b": None}]).to_csv(untrained / "metrics.csv", index=False)
    with pytest.raises(UserError, match="no trained epoch"):
        epoch_weights(untrained)
    gap = make_run(tmp_path / "gap", [(1.0, 1.0), (1.0, 1.0), (1.0, 1.0)])
    frame = pd.read_csv(gap / "metrics.csv")
    frame[frame["epoch"] != 2].to_csv(gap / "metrics.csv", index=False)
    with pytest.raises(UserError, match=r"missing \[2\]"):
        epoch_weights(gap)
    nan = make_run(tmp_path / "nan", [(1.0, float("nan"))])
    with pytest.raises(UserError, match="non-finite"):
        epoch_weights(nan)
    other = make_run(tmp_path / "other", [(1.0, 1.0)], tasks=("x", "y"))
    good = make_run(tmp_path / "good", [(1.0, 1.0)])
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


def _train_rlw(out: Path, log_every: int) -> Path:
    """A real run: RLW (new random weights every step) on tiny synthetic, 4 steps per epoch, 6 epochs."""
    from experiments.config import CONFIG_DIR, load_run_config
    from experiments.training.trainer import train

    cfg = load_run_config(CONFIG_DIR / "synthetic.yaml", "tiny", {
        "seed": 0, "out": str(out), "balancer": {"name": "rlw"},
        "train": {"epochs": 6, "max_steps_per_epoch": 4, "log_every": log_every, "progress": False}})
    return train(cfg, out / f"log_every{log_every}").run_dir


def test_every_epoch_and_every_step_count_where_steps_csv_subsamples(tmp_path):
    """The issue's case: 4 steps per epoch, log_every 6. steps.csv then holds steps 6, 12, 18, 24
    only: epochs 1 and 4 have no logged step and the others one of four (the former extraction was
    off by 0.115 here). metrics.csv's exact epoch means give the hand-computed EMA of all 24 steps."""
    sparse, dense = _train_rlw(tmp_path, 6), _train_rlw(tmp_path, 1)  # same training, all steps logged in `dense`
    logged = pd.read_csv(sparse / "steps.csv")
    every = pd.read_csv(dense / "steps.csv")
    assert list(logged["step"]) == [6, 12, 18, 24] and len(every) == 24
    assert sorted(set(logged["epoch"] + 1)) == [2, 3, 5, 6]  # steps.csv counts finished epochs: 1 and 4 vanish
    columns = [c for c in every.columns if c.startswith("weight_")]
    pd.testing.assert_frame_equal(logged[columns].reset_index(drop=True),
                                  every[every["step"] % 6 == 0][columns].reset_index(drop=True))
    # by hand: epoch e (1-based) is steps 4(e-1)+1 .. 4e; mean, normalise, EMA from the first epoch
    w = every[columns].to_numpy(dtype=float).reshape(6, 4, len(columns)).mean(axis=1)
    w = w / w.sum(axis=1, keepdims=True)
    m = w[0]
    for e in range(1, 6):
        m = 0.9 * m + 0.1 * w[e]
    expected = m / m.sum()
    extracted = extract_weights([sparse], ema=0.9, out=tmp_path / "out")
    assert list(extracted.per_epoch.index) == [1, 2, 3, 4, 5, 6]
    assert extracted.per_epoch.to_numpy() == pytest.approx(w, abs=1e-6)
    assert extracted.weights == pytest.approx(list(expected), abs=1e-6)
