"""Per-task gradients via torch.func against a plain per-task autograd loop; cosine identities."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from experiments.benchmarks.synthetic import SyntheticBenchmark
from experiments.training.gradients import cosine_matrix, mean_pairwise_cosine, task_gradients


class TinyModel(nn.Module):
    """Shared tanh(Linear) trunk, K linear heads: forward -> (B, K)."""

    def __init__(self, k: int, trunk: nn.Module | None = None) -> None:
        super().__init__()
        self.trunk = trunk or nn.Sequential(nn.Linear(5, 7), nn.Tanh())
        self.heads = nn.ModuleList(nn.Linear(7, 1) for _ in range(k))

    def forward(self, x: Tensor) -> Tensor:
        z = self.trunk(x)
        return torch.cat([h(z) for h in self.heads], dim=1)


class StubBench:
    """The slice of the Benchmark interface task_gradients uses; ``signs`` negate task losses."""

    def __init__(self, k: int, same_target: bool = False, signs: list[float] | None = None) -> None:
        gen = torch.Generator().manual_seed(1)
        self.k = k
        self.x = torch.randn(16, 5, generator=gen)
        y = torch.randn(16, 1 if same_target else k, generator=gen)
        self.y = y.expand(16, k) if same_target else y
        self.signs = torch.tensor(signs if signs is not None else [1.0] * k)

    @property
    def task_names(self) -> list[str]:
        return [f"t{i}" for i in range(self.k)]

    def inputs(self, batch: Any) -> Tensor:
        return batch[0]

    def losses(self, outputs: Tensor, batch: Any) -> Tensor:
        return self.signs * ((outputs - batch[1]) ** 2).mean(dim=0)


def loop_reference(model: nn.Module, losses: Tensor) -> Tensor:
    """Per-task gradients of the trunk with K plain backward passes (the reference)."""
    rows = []
    params = list(model.trunk.parameters())
    for i in range(losses.shape[0]):
        grads = torch.autograd.grad(losses[i], params, retain_graph=True)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


def cosine_reference(grads: Tensor) -> Tensor:
    return nn.functional.cosine_similarity(grads.unsqueeze(1), grads.unsqueeze(0), dim=-1)


def test_torch_func_matches_a_per_task_autograd_loop_on_a_small_model() -> None:
    torch.manual_seed(0)
    model, bench = TinyModel(4), StubBench(4)
    batch = (bench.x, bench.y)
    reference = loop_reference(model, bench.losses(model(bench.x), batch))
    grads = task_gradients(model, bench, batch, method="vmap")
    torch.testing.assert_close(grads, reference, atol=1e-6, rtol=1e-5)
    cos = cosine_matrix(grads)
    torch.testing.assert_close(cos, cosine_reference(reference).double(), atol=1e-5, rtol=0)
    off = cos[~torch.eye(4, dtype=torch.bool)]
    assert mean_pairwise_cosine(grads) == pytest.approx(float(off.mean()), abs=1e-6)
    assert model.trunk[0].weight.grad is None  # the model's .grad is never touched


def test_torch_func_matches_the_loop_on_the_synthetic_benchmark_model() -> None:
    bench = SyntheticBenchmark(n_tasks=6, n_train=64, n_val=32, n_test=32)
    torch.manual_seed(0)
    model = bench.build_model(hidden=16, depth=2)
    batch = next(iter(bench.loaders(32, 0)[1]))
    reference = loop_reference(model, bench.losses(model(batch[0]), batch))
    grads = task_gradients(model, bench, batch)
    assert grads.shape == (6, sum(p.numel() for p in model.trunk.parameters()))
    torch.testing.assert_close(cosine_matrix(grads), cosine_reference(reference).double(), atol=1e-5, rtol=0)
    chunked = task_gradients(model, bench, batch, method="vmap", chunk=4)  # 4 + 2 tasks per pullback
    torch.testing.assert_close(chunked, grads, atol=1e-7, rtol=1e-6)


def test_identical_tasks_have_cosine_one_and_a_negated_task_minus_one() -> None:
    torch.manual_seed(0)
    base = TinyModel(1)
    model = TinyModel(3, trunk=base.trunk)
    for head in model.heads:  # three copies of one head, one target: identical task losses
        head.load_state_dict(base.heads[0].state_dict())
    bench = StubBench(3, same_target=True, signs=[1.0, 1.0, -1.0])
    cos = cosine_matrix(task_gradients(model, bench, (bench.x, bench.y)))
    assert cos[0, 1].item() == pytest.approx(1.0, abs=1e-6)
    assert cos[0, 2].item() == pytest.approx(-1.0, abs=1e-6) and cos[1, 2].item() == pytest.approx(-1.0, abs=1e-6)
    assert torch.diagonal(cos).tolist() == pytest.approx([1.0, 1.0, 1.0])


class NoVmap(torch.autograd.Function):
    """An op without a vmap rule (like some graph kernels): torch.func cannot batch through it."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x * 2.0

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad * 2.0


class NoVmapTrunk(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(5, 7)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(NoVmap.apply(self.lin(x)))


def test_ops_vmap_cannot_batch_fall_back_to_the_per_task_loop() -> None:
    torch.manual_seed(0)
    model, bench = TinyModel(3, trunk=NoVmapTrunk()), StubBench(3)
    batch = (bench.x, bench.y)
    with pytest.raises(Exception):
        task_gradients(model, bench, batch, method="vmap")
    with pytest.warns(RuntimeWarning, match="vmap failed"):
        grads = task_gradients(model, bench, batch, method="auto")
    torch.testing.assert_close(grads, loop_reference(model, bench.losses(model(bench.x), batch)), atol=1e-6, rtol=1e-5)


def test_mean_pairwise_cosine_without_the_matrix_and_zero_rows() -> None:
    gen = torch.Generator().manual_seed(3)
    grads = torch.randn(40, 100, generator=gen)
    cos = cosine_matrix(grads)
    off = cos[~torch.eye(40, dtype=torch.bool)]
    assert mean_pairwise_cosine(grads) == pytest.approx(float(off.mean()), abs=1e-6)
    grads[5] = 0.0  # a task with no gradient on the trunk: its cosines are undefined, left out
    cos = cosine_matrix(grads)
    assert math.isnan(cos[5, 0].item()) and math.isnan(cos[0, 5].item())
    keep = [i for i in range(40) if i != 5]
    sub = cosine_matrix(grads[keep])
    expected = float(sub[~torch.eye(39, dtype=torch.bool)].mean())
    assert mean_pairwise_cosine(grads) == pytest.approx(expected, abs=1e-6)
    assert math.isnan(mean_pairwise_cosine(torch.zeros(3, 4)))
