"""The one trainer: a golden step, run directories, NaN handling, resume, closures, config errors."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from experiments.training import rundir
from experiments.config import CONFIG_DIR, load_run_config
from experiments.errors import ConfigError, NonFiniteLossError, UserError
from experiments.training.precision import Precision
from experiments.training.trainer import LossClosureFactory, Trainer, train


def synthetic_cfg(tmp_path: Path, **overrides):
    base = {"benchmark": {"options": {"n_tasks": 3}}, "train": {"progress": False, "epochs": 2, "max_steps_per_epoch": 5},
            "out": str(tmp_path)}
    from experiments.config import deep_merge

    return load_run_config(CONFIG_DIR / "synthetic.yaml", "tiny", deep_merge(base, overrides))


def test_golden_trainer_step_matches_a_hand_written_step(tmp_path: Path) -> None:
    """One trainer step with FAMO equals model forward + FAMO loss + Adam step written by hand."""
    cfg = synthetic_cfg(tmp_path, balancer={"name": "famo", "hparams": {"gamma": 0.01}})
    trainer = Trainer(cfg, tmp_path / "run")
    loader, _, _ = trainer.bench.loaders(cfg.train.batch_size, 123)
    batch = next(iter(loader))
    x, y = batch
    # by hand: z = softmax(0) = 1/K, c = Σ z/ℓ, loss = Σ z log ℓ / c, then one Adam step (lr 1e-3)
    model_copy = copy.deepcopy(trainer.model)
    opt = torch.optim.Adam(model_copy.parameters(), lr=cfg.train.lr)
    losses = ((model_copy(x) - y) ** 2).mean(0)
    z = torch.full((3,), 1 / 3)
    c = (z / losses.detach()).sum()
    ((losses.log() * z).sum() / c).backward()
    opt.step()
    trainer.train_step(batch)
    for name, value in model_copy.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[name], value, rtol=1e-6, atol=1e-7)
    # and the balancer's logits moved by FAMO's update, on the same batch
    assert not torch.equal(trainer.balancer.logits.detach(), torch.zeros(3))


def test_run_directory_is_complete(tmp_path: Path) -> None:
    result = train(synthetic_cfg(tmp_path, balancer={"name": "famo"}, train={"log_every": 2, "max_steps_per_epoch": 3}), tmp_path / "run")
    d = result.run_dir
    for name in (rundir.CONFIG, rundir.METRICS, rundir.STEPS, rundir.SUMMARY, rundir.BEST, rundir.LAST):
        assert (d / name).is_file(), name
    metrics = pd.read_csv(d / rundir.METRICS)
    assert list(metrics["epoch"]) == [0, 1, 2]
    assert {"val_task0_mse", "test_task2_mse", "train_loss_task1", "val_objective", "step_seconds"} <= set(metrics.columns)
    steps = pd.read_csv(d / rundir.STEPS)
    weights = steps[[f"weight_task{i}" for i in range(3)]].to_numpy()
    assert weights.sum(1) == pytest.approx(1.0, abs=1e-5)
    assert list(steps["step"]) == [2, 4, 6]
    epoch_weights = metrics.loc[metrics["epoch"] > 0, [f"weight_task{i}" for i in range(3)]].to_numpy()
    assert epoch_weights.sum(1) == pytest.approx(1.0, abs=1e-5)  # exact per-epoch means of every step
    summary = json.loads((d / rundir.SUMMARY).read_text())
    assert summary["status"] == "complete" and summary["steps"] == 6
    best = metrics.loc[metrics["val_objective"].idxmin()]
    assert summary["best_epoch"] == int(best["epoch"])
    assert summary["test_metrics"]["task0_mse"] == pytest.approx(best["test_task0_mse"])
    checkpoint = torch.load(d / rundir.BEST, weights_only=True)
    assert set(checkpoint) >= {"model", "optimizer", "balancer"}
    assert "famo" in (d / rundir.CONFIG).read_text()


def test_nan_loss_raises_a_dedicated_error_naming_step_and_task(tmp_path: Path) -> None:
    cfg = synthetic_cfg(tmp_path, train={"lr": 1e6, "optimizer": "sgd", "momentum": 0.0, "check_every": 1,
                                         "epochs": 3, "max_steps_per_epoch": 20})
    with pytest.raises(NonFiniteLossError) as info:
        train(cfg, tmp_path / "run")
    assert info.value.step >= 1 and info.value.task.startswith("task")
    assert "non-finite loss at training step" in str(info.value)
    summary = json.loads((tmp_path / "run" / rundir.SUMMARY).read_text())
    assert summary["status"] == "diverged"


def test_resume_continues_exactly(tmp_path: Path) -> None:
    full = train(synthetic_cfg(tmp_path, balancer={"name": "famo"}, train={"epochs": 3}), tmp_path / "full")

    class Stop(Exception):
        pass

    def stop_after_two(epoch: int, objective: float) -> None:
        if epoch == 2:
            raise Stop

    cfg = synthetic_cfg(tmp_path, balancer={"name": "famo"}, train={"epochs": 3})
    with pytest.raises(Stop):
        train(cfg, tmp_path / "cut", on_epoch=stop_after_two)
    resumed = train(cfg, tmp_path / "cut", resume=True)
    a = pd.read_csv(full.run_dir / rundir.METRICS)
    b = pd.read_csv(resumed.run_dir / rundir.METRICS)
    assert list(b["epoch"]) == [0, 1, 2, 3]
    pd.testing.assert_series_equal(a["val_objective"], b["val_objective"], rtol=1e-5)
    assert resumed.summary["steps"] == full.summary["steps"]


def test_closure_replays_dropout_and_keeps_batchnorm_statistics() -> None:
    torch.manual_seed(0)

    class Bench:
        def inputs(self, batch):
            return batch

        def losses(self, outputs, batch):
            return outputs.mean(0)

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    model.train()
    factory = LossClosureFactory(model, Bench(), torch.device("cpu"), Precision(torch.device("cpu")))
    x = torch.randn(16, 4)
    rng = factory.capture()
    first = model(x).mean(0).detach()
    stats = model[1].running_mean.clone()
    closure = factory.make(x, rng)
    again = closure()
    torch.testing.assert_close(again, first)  # same dropout mask, same batch statistics
    torch.testing.assert_close(model[1].running_mean, stats)  # not updated a second time
    params = {k: v + 1.0 for k, v in model.named_parameters()}
    assert not torch.allclose(closure(params), first)  # evaluated at the given parameters


def test_unknown_config_key_is_rejected_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match="train.lrr"):
        load_run_config(bad)


def test_malformed_yaml_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_run_config(bad)
    assert "malformed YAML" in str(info.value) and "\n" not in str(info.value)


def test_non_positive_learning_rate_and_cuda_without_gpu_are_user_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="lr must be > 0"):
        train(synthetic_cfg(tmp_path, train={"lr": 0.0}), tmp_path / "a")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA is not available"):
            train(synthetic_cfg(tmp_path, train={"device": "cuda"}), tmp_path / "b")


def test_min_losses_from_benchmark_bounds_reach_famo(tmp_path: Path) -> None:
    cfg = load_run_config(CONFIG_DIR / "toy.yaml", "tiny", {"train": {"epochs": 1, "progress": False},
                                                            "benchmark": {"options": {"steps_per_epoch": 10}}})
    trainer = Trainer(cfg, tmp_path / "toy")
    # the official toy: the reference trainer's FAMO bounds [-0.1 * 21, -21], not the infima
    assert trainer.balancer.min_losses.tolist() == pytest.approx([-2.1, -21.0], abs=1e-6)
    assert trainer.balancer.update == "lagged" and trainer.balancer.gamma == 0.0 and trainer.balancer.w_lr == 0.025
    assert not trainer.uses_closure


def test_stl_reference_trains_one_model_per_task(tmp_path: Path) -> None:
    from experiments.training.stl import train_stl_references

    cfg = synthetic_cfg(tmp_path, train={"epochs": 1, "max_steps_per_epoch": 3})
    path = train_stl_references(cfg, tmp_path / "stl")
    data = json.loads(path.read_text())
    assert set(data["metrics"]) == {"task0_mse", "task1_mse", "task2_mse"}
    import yaml

    config = yaml.safe_load((tmp_path / "stl" / "task_task1" / rundir.CONFIG).read_text())
    assert config["balancer"] == {"name": "fixed", "hparams": {"weights": [0.0, 1.0, 0.0]}}  # one-hot
    assert config["objective_tasks"] == ["task1"]
    assert all(math.isfinite(v) for v in data["metrics"].values())


def test_stochastic_balancers_draw_from_the_run_seed(tmp_path: Path) -> None:
    seeds = []
    for seed in (0, 1):
        trainer = Trainer(synthetic_cfg(tmp_path, balancer={"name": "rlw"}, seed=seed), tmp_path / f"s{seed}")
        seeds.append(trainer.balancer.seed)
    assert seeds == [0, 1]
    pinned = Trainer(synthetic_cfg(tmp_path, balancer={"name": "rlw", "hparams": {"seed": 7}}, seed=1), tmp_path / "p")
    assert pinned.balancer.seed == 7  # an explicit balancer seed wins
