"""Data-parallel training equals 1-process training (CPU, gloo, 2 real processes).

One spawn of 2 processes runs every balancer configuration below through the real trainer
(``Trainer.train_step`` on each rank's half of every global batch, the epoch hooks, evaluation);
the same configurations run once in this process with the whole batch. After every step the two
ranks' balancer states are compared bit for bit (all-gathered), and at the end the parameters,
the weights of every step and the metrics must match the 1-process run.

Tolerance: the run is in float64 (model, data) except the task losses, which the trainer casts to
float32 for the balancer in both runs. A 2-process global loss is a mean of two half-batch means
instead of one mean, so float32 rounding can differ by about one ulp (6e-8 relative) on a
loss, hence on the weights; after 6 Adam steps at lr 1e-3 the parameters differ by orders of
magnitude less than the tolerance used (rtol 1e-5, atol 1e-8), while one wrong factor of 2 in a
gradient or weight (the bugs this test exists for) moves them by ~1e-3.
The synthetic benchmark's model has no dropout and no BatchNorm: neither is shard-consistent
(see experiments/training/distributed.py).
"""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from experiments.training import distributed
from experiments.config import load_run_config
from experiments.errors import ConfigError
from experiments.training.trainer import Trainer

CASES: dict[str, dict[str, Any]] = {
    "uniform": {"name": "uniform"},
    "famo_same_batch": {"name": "famo", "hparams": {"update": "same_batch", "w_lr": 0.05}},
    "famo_lagged": {"name": "famo", "hparams": {"update": "lagged", "w_lr": 0.05}},
    "marigold_faithful": {"name": "marigold", "hparams": {"variant": "faithful", "w_lr": 0.01}},
    "marigold_fused": {"name": "marigold", "hparams": {"variant": "fused", "w_lr": 0.01}},
    "uw": {"name": "uw"},
    "dwa": {"name": "dwa"},
    "rlw": {"name": "rlw"},
}
BATCH, STEPS, EPOCHS = 32, 3, 2


def _config(balancer: dict[str, Any], out: str):
    return load_run_config(overrides={
        "benchmark": {"name": "synthetic", "options": {"n_tasks": 3, "input_dim": 8, "n_train": 256, "n_val": 64,
                                                       "n_test": 64}},
        "model": {"hidden": 16, "depth": 2}, "balancer": balancer, "out": out,
        "train": {"epochs": EPOCHS, "batch_size": BATCH, "max_steps_per_epoch": STEPS, "device": "cpu",
                  "progress": False, "num_threads": 1, "lr": 1e-3}})


def _balancer_state(trainer: Trainer) -> torch.Tensor:
    tensors = [v.reshape(-1).double() for v in trainer.balancer.state_dict().values() if isinstance(v, torch.Tensor)]
    extra = trainer.balancer._extra_state()
    for value in extra.values():  # optimizer moments of FAMO's / MARIGOLD's logits, generator state
        if isinstance(value, dict):
            tensors += [t.reshape(-1).double() for s in value.get("state", {}).values()
                        for t in s.values() if isinstance(t, torch.Tensor)]
        elif isinstance(value, torch.Tensor):
            tensors.append(value.reshape(-1).double())
    return torch.cat(tensors) if tensors else torch.zeros(1, dtype=torch.float64)


def run_case(balancer: dict[str, Any], replica: distributed.Replica) -> dict[str, Any]:
    """Train through the real Trainer; returns parameters, per-step weights, metrics, and whether
    every rank's balancer state matched after every step."""
    with tempfile.TemporaryDirectory() as out:
        cfg = _config(balancer, out)
        trainer = Trainer(cfg, Path(out) / "run")
        _, trainer.val_loader, trainer.test_loader = trainer.bench.loaders(BATCH, cfg.seed)
        weights, states_agree = [], True
        for epoch in range(EPOCHS):
            loader, _, _ = trainer.bench.loaders(BATCH, cfg.seed * 100_003 + epoch)
            for i, batch in enumerate(loader):
                if i >= STEPS:
                    break
                trainer.train_step(replica.shard(batch), trainer.bench.batch_size(batch))
                weights.append(trainer.balancer.weights.clone())
                states_agree &= _same_everywhere(_balancer_state(trainer), replica)
            trainer.balancer.epoch_end()
            trainer.epoch += 1
        metrics = trainer.evaluate_splits()
        params = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
        return {"params": params, "weights": torch.stack(weights), "metrics": metrics, "states_agree": states_agree}


def _same_everywhere(state: torch.Tensor, replica: distributed.Replica) -> bool:
    if not replica.active:
        return True
    gathered = [torch.empty_like(state) for _ in range(replica.world)]
    dist.all_gather(gathered, state)
    return all(torch.equal(g, gathered[0]) for g in gathered)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_default_dtype(torch.float64)
    with distributed.session("cpu") as replica:
        results = {name: run_case(balancer, replica) for name, balancer in CASES.items()}
    torch.save(results, Path(out) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        single = {name: run_case(balancer, distributed.Replica()) for name, balancer in CASES.items()}
    finally:
        torch.set_default_dtype(default)
    return {"single": single, "ranks": [torch.load(out / f"rank{r}.pt") for r in range(2)]}


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_equal_one(runs: dict[str, Any], case: str) -> None:
    one = runs["single"][case]
    for rank, results in enumerate(runs["ranks"]):
        two = results[case]
        assert two["states_agree"], f"{case}: the ranks' balancer states differed after some step"
        torch.testing.assert_close(two["weights"], one["weights"], rtol=1e-5, atol=1e-8, msg=f"{case} rank {rank}")
        torch.testing.assert_close(two["params"], one["params"], rtol=1e-5, atol=1e-8, msg=f"{case} rank {rank}")
        assert two["metrics"].keys() == one["metrics"].keys()
        for key, value in one["metrics"].items():
            assert two["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-8), f"{case} rank {rank}: {key}"
    # the balancers that adapt within 6 steps did adapt (the comparison is not of constants)
    if case in ("famo_same_batch", "famo_lagged", "marigold_faithful", "marigold_fused", "rlw"):
        assert not torch.equal(one["weights"][0], one["weights"][-1])


def test_shards_are_contiguous_halves_of_the_global_batch() -> None:
    x, y = torch.arange(8.0).reshape(8, 1), torch.arange(8)
    first = distributed._slice((x, y), 0, 2)
    second = distributed._slice((x, y), 1, 2)
    assert torch.equal(torch.cat([first[0], second[0]]), x) and torch.equal(second[1], torch.arange(4, 8))


def test_refusals_are_one_line() -> None:
    replica = distributed.Replica(rank=0, world=2, launched=True)
    with pytest.raises(ConfigError, match="divisible"):
        replica.check_batch_size(33)
    with pytest.raises(ConfigError, match="per-task gradients"):
        replica.check_balancer("pcgrad", needs_task_grads=True)
    replica.check_balancer("famo", needs_task_grads=False)
