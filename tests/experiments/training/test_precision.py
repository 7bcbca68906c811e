"""train.precision: bf16 / fp16 autocast on CPU, fp16's scaler skips, and what the balancers do then."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from experiments.config import load_run_config
from experiments.errors import ConfigError
from experiments.training.precision import Precision
from experiments.training.trainer import Trainer


def _trainer(out: str, balancer: dict, precision: str) -> Trainer:
    cfg = load_run_config(overrides={
        "benchmark": {"name": "synthetic", "options": {"n_tasks": 3, "input_dim": 8, "n_train": 128, "n_val": 32,
                                                       "n_test": 32}},
        "model": {"hidden": 16, "depth": 2}, "balancer": balancer, "out": out,
        "train": {"batch_size": 32, "device": "cpu", "progress": False, "precision": precision}})
    return Trainer(cfg, Path(out) / "run")


@pytest.mark.parametrize("balancer", [{"name": "famo"}, {"name": "marigold", "hparams": {"variant": "fused"}}])
def test_a_skipped_fp16_step_leaves_model_and_balancer_untouched(balancer: dict) -> None:
    with tempfile.TemporaryDirectory() as out:
        trainer = _trainer(out, balancer, "fp16")
        assert trainer.precision.scaler is not None and trainer.precision.autocast_dtype is torch.float16
        batch = next(iter(trainer.bench.loaders(32, 0)[0]))
        trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**127)  # overflows: inf gradients
        params = [p.detach().clone() for p in trainer.model.parameters()]
        state = {k: v.clone() for k, v in trainer.balancer.state_dict().items() if isinstance(v, torch.Tensor)}
        trainer.train_step(batch)
        assert all(torch.equal(a, b) for a, b in zip(params, trainer.model.parameters()))
        after = {k: v for k, v in trainer.balancer.state_dict().items() if isinstance(v, torch.Tensor)}
        for key in ("logits", "u", "v"):  # FAMO's logits / MARIGOLD's u, v: no update from a step not taken
            if key in state:
                assert torch.equal(state[key], after[key]), key
        assert trainer.precision.scaler.get_scale() < 2.0**127  # the scaler backed off
        trainer.precision.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
        trainer.train_step(batch)  # a normal step moves both
        assert not all(torch.equal(a, b) for a, b in zip(params, trainer.model.parameters()))
        moved = {k: v for k, v in trainer.balancer.state_dict().items() if isinstance(v, torch.Tensor)}
        assert any(not torch.equal(state[k], moved[k]) for k in ("logits", "u", "v") if k in state)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_losses_reach_the_balancer_in_fp32(precision: str) -> None:
    with tempfile.TemporaryDirectory() as out:
        trainer = _trainer(out, {"name": "famo"}, precision)
        seen = []
        forward = trainer.balancer.forward
        trainer.balancer.forward = lambda losses, closure=None: (seen.append(losses.dtype), forward(losses, closure))[1]
        trainer.train_step(next(iter(trainer.bench.loaders(32, 0)[0])))
        assert seen == [torch.float32]
        assert trainer.balancer.weights.dtype == torch.float32


def test_legacy_bf16_flag() -> None:
    class T:
        bf16, precision = True, "fp32"
    assert Precision.of(T, torch.device("cpu")).autocast_dtype is None  # its old meaning: CUDA only
    assert Precision.of(T, torch.device("cuda")).autocast_dtype is torch.bfloat16
    T.precision = "fp16"
    with pytest.raises(ConfigError, match="legacy"):
        Precision.of(T, torch.device("cpu"))
