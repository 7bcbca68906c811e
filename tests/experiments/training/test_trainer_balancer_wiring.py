"""How the trainer wires a balancer's own needs: the param group of its learnables (UW's
log-variances at their own learning rate), the ``after_backward`` hook (Nash-MTL's clipping of the
shared gradient) and the refusal of gradient clipping for balancers that model the optimizer step
(MARIGOLD)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from balancebench.main import main
from experiments.config import CONFIG_DIR, deep_merge, load_run_config
from experiments.errors import ConfigError
from experiments.training.trainer import Trainer


def synthetic_cfg(tmp_path: Path, **overrides):
    base = {"benchmark": {"options": {"n_tasks": 3}}, "train": {"progress": False, "epochs": 1, "max_steps_per_epoch": 3},
            "out": str(tmp_path)}
    return load_run_config(CONFIG_DIR / "synthetic.yaml", "tiny", deep_merge(base, overrides))


@pytest.mark.parametrize("hparams, expected", [({}, 0.025), ({"w_lr": 0.1}, 0.1)])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_uw_log_variances_get_their_own_learning_rate(tmp_path: Path, hparams: dict, expected: float,
                                                      optimizer: str) -> None:
    cfg = synthetic_cfg(tmp_path, balancer={"name": "uw", "hparams": hparams}, train={"optimizer": optimizer, "lr": 3e-3})
    trainer = Trainer(cfg, tmp_path / "run")
    model_group, uw_group = trainer.optimizer.param_groups
    assert model_group["lr"] == 3e-3 and len(model_group["params"]) == len(list(trainer.model.parameters()))
    assert uw_group["lr"] == expected and uw_group["weight_decay"] == 0.0
    assert uw_group["params"] == [trainer.balancer.log_vars]
    # and the step uses it: with SGD the first update of s is exactly -lr * d loss / d s
    loader, _, _ = trainer.bench.loaders(cfg.train.batch_size, 1)
    batch = next(iter(loader))
    trainer.train_step(batch)
    grad = trainer.balancer.log_vars.grad
    if optimizer == "sgd":  # momentum buffer starts at the gradient: the first step is -lr * grad
        torch.testing.assert_close(trainer.balancer.log_vars.detach(), -expected * grad, rtol=1e-6, atol=0)
    else:  # Adam's first step moves every coordinate by lr (sign of the gradient)
        torch.testing.assert_close(trainer.balancer.log_vars.detach().abs(), torch.full((3,), expected),
                                   rtol=1e-4, atol=0)


def test_balancers_without_learnables_keep_one_group(tmp_path: Path) -> None:
    trainer = Trainer(synthetic_cfg(tmp_path, balancer={"name": "famo"}), tmp_path / "run")
    assert len(trainer.optimizer.param_groups) == 1


@pytest.mark.parametrize("max_norm, expected", [(0.0, 3**0.5), (1.0, 1.0), (0.25, 0.25)])
def test_nashmtl_shared_gradient_is_clipped_after_backward(tmp_path: Path, max_norm: float, expected: float) -> None:
    """Through the trainer: the trunk's gradient is G^T a with |G^T a| = sqrt(K) (the unnormalised
    system), clipped to max_norm by the balancer's after_backward hook before the optimizer step."""
    cfg = synthetic_cfg(tmp_path, balancer={"name": "nashmtl", "hparams": {"max_norm": max_norm}})
    trainer = Trainer(cfg, tmp_path / "run")
    loader, _, _ = trainer.bench.loaders(cfg.train.batch_size, 1)
    trainer.train_step(next(iter(loader)))
    trunk = torch.cat([p.grad.reshape(-1) for p in trainer.model.trunk.parameters()])
    assert abs(float(trunk.norm()) / expected - 1) < 1e-4


def test_marigold_refuses_gradient_clipping(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for variant in ("faithful", "fused"):
        cfg = synthetic_cfg(tmp_path, balancer={"name": "marigold", "hparams": {"variant": variant}},
                            train={"grad_clip": 1.0})
        with pytest.raises(ConfigError, match=r"train.grad_clip must be null for 'marigold'") as err:
            Trainer(cfg, tmp_path / f"run_{variant}")
        assert "\n" not in str(err.value)
    Trainer(synthetic_cfg(tmp_path, balancer={"name": "marigold"}), tmp_path / "ok")  # unclipped: fine
    code = main(["train", "--config", str(CONFIG_DIR / "synthetic.yaml"), "--scale", "tiny", "--out", str(tmp_path),
                 "--quiet", "--balancer", "marigold", "--set", "train.grad_clip=1.0"])
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err_lines) == 1 and "train.grad_clip must be null" in err_lines[0]
    assert not [f for f in tmp_path.rglob("*") if f.is_file()]  # refused before anything was written
