"""The design the claims' paired tests rely on: at one seed, every method starts from the same
initial model, sees the same batches in the same order and draws the same dropout masks — the
balancer (stochastic, closure-using or stateful) changes nothing of that."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from experiments.config import CONFIG_DIR, load_run_config
from experiments.training.trainer import Trainer

#: uniform; FAMO (learnable logits); RLW (stochastic, own generator); MARIGOLD (closure forwards)
BALANCERS = ["uniform", "famo", "rlw", "marigold"]
STEPS = 3


def trace(config: str, balancer: str, seed: int, tmp_path: Path) -> dict[str, object]:
    """The initial parameters, and per training step the batch and the global RNG state the
    training forward draws its dropout masks from."""
    cfg = load_run_config(CONFIG_DIR / f"{config}.yaml", "tiny", {
        "balancer": {"name": balancer}, "seed": seed,
        "train": {"progress": False, "epochs": 2, "max_steps_per_epoch": STEPS},  # two epochs: two shuffles
        **({"benchmark": {"options": {"n_train": 256, "n_val": 64, "n_test": 64}}} if config == "multimnist" else {})})
    trainer = Trainer(cfg, tmp_path / balancer)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    seen: list[tuple[list[torch.Tensor], torch.Tensor]] = []
    original = trainer.train_step

    def recording_step(batch: object, *args: object) -> None:
        seen.append(([t.clone() for t in batch], torch.get_rng_state()))
        original(batch, *args)

    trainer.train_step = recording_step  # type: ignore[method-assign]
    trainer.run()
    return {"initial": initial, "steps": seen, "final": {k: v.clone() for k, v in trainer.model.state_dict().items()}}


@pytest.mark.parametrize("config", ["multimnist", "synthetic"])
def test_methods_at_one_seed_share_init_batches_and_dropout_masks(config: str, tmp_path: Path) -> None:
    traces = {b: trace(config, b, 3, tmp_path) for b in BALANCERS}
    ref = traces["uniform"]
    assert len(ref["steps"]) == 2 * STEPS
    for balancer, other in traces.items():
        for name, value in ref["initial"].items():
            assert torch.equal(value, other["initial"][name]), (balancer, name)
        for step, ((batch_a, rng_a), (batch_b, rng_b)) in enumerate(zip(ref["steps"], other["steps"])):
            assert all(torch.equal(x, y) for x, y in zip(batch_a, batch_b)), (balancer, step)
            assert torch.equal(rng_a, rng_b), (balancer, step)  # same state → same dropout masks
    # ... and the methods do train differently (the comparison is not trivially equal)
    assert any(not torch.equal(v, traces["famo"]["final"][k]) for k, v in ref["final"].items())


def test_another_seed_changes_init_batches_and_masks(tmp_path: Path) -> None:
    a, b = trace("multimnist", "uniform", 3, tmp_path / "a"), trace("multimnist", "uniform", 4, tmp_path / "b")
    assert any(not torch.equal(v, b["initial"][k]) for k, v in a["initial"].items())
    assert not torch.equal(a["steps"][0][0][0], b["steps"][0][0][0])
    assert not torch.equal(a["steps"][0][1], b["steps"][0][1])
