"""A K-task regression benchmark with controllable loss scales and gradient conflict."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from experiments.benchmarks.base import Benchmark, MetricSpec, MultiTaskModel
from experiments.schema import PositiveInt


class LinearHeads(nn.Module):
    """K linear heads stored as one (hidden → K) layer: one matmul instead of K modules."""

    def __init__(self, hidden: int, n_tasks: int) -> None:
        super().__init__()
        self.layer = nn.Linear(hidden, n_tasks)

    def forward(self, z: Tensor) -> Tensor:
        return self.layer(z)


class SyntheticModel(MultiTaskModel):
    """Shared MLP trunk + K linear heads; ``forward`` returns a (B, K) prediction matrix."""

    def __init__(self, trunk: nn.Module, heads: LinearHeads) -> None:
        nn.Module.__init__(self)
        self.trunk = trunk
        self.heads = heads

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        return self.heads(self.trunk(x))


class SyntheticBenchmark(Benchmark):
    """K regression tasks ``y_k = s_k · tanh(a_kᵀ x) + noise`` sharing inputs ``x ~ N(0, I_d)``.

    Task directions ``a_k = √ρ · a_shared + √(1−ρ) · a_k'`` (unit-normalised, Gaussian ``a``) have
    pairwise cosine ≈ ``correlation`` = ρ ∈ [0, 1]: ρ = 1 makes all tasks the same (no conflict),
    ρ = 0 makes them independent, and ``conflict`` ∈ [0, 1] flips the sign of that fraction of the
    tasks' targets, so their gradients on the shared trunk point against the others'.
    ``scale_spread`` sets the loss scales: ``s_k`` log-spaced over ``10^±scale_spread/2``.
    """

    name = "synthetic"
    variants = ("default",)

    def __init__(
        self, variant: str | None = None, n_tasks: int = 8, input_dim: int = 32, n_train: int = 4096,
        n_val: int = 1024, n_test: int = 1024, correlation: float = 0.5, conflict: float = 0.25,
        scale_spread: float = 2.0, noise: float = 0.1, data_seed: int = 0,
    ) -> None:
        super().__init__(variant)
        if n_tasks < 2:
            raise ValueError(f"synthetic: n_tasks must be >= 2, got {n_tasks=}")
        if not 0.0 <= correlation <= 1.0 or not 0.0 <= conflict <= 1.0:
            raise ValueError(f"synthetic: correlation and conflict must be in [0, 1], got {correlation=}, {conflict=}")
        self.k, self.input_dim = int(n_tasks), int(input_dim)
        gen = torch.Generator().manual_seed(data_seed)
        shared = torch.randn(input_dim, generator=gen)
        own = torch.randn(self.k, input_dim, generator=gen)
        directions = correlation**0.5 * shared / shared.norm() + (1 - correlation) ** 0.5 * own / own.norm(dim=1, keepdim=True)
        directions = directions / directions.norm(dim=1, keepdim=True)
        signs = torch.ones(self.k)
        signs[: int(round(conflict * self.k))] = -1.0
        scales = torch.logspace(-scale_spread / 2, scale_spread / 2, self.k)
        self.scales = scales

        def make(n: int) -> TensorDataset:
            x = torch.randn(n, input_dim, generator=gen)
            y = signs * scales * torch.tanh(x @ directions.T * 2.0) + noise * scales * torch.randn(n, self.k, generator=gen)
            return TensorDataset(x, y)

        self.splits = {"train": make(n_train), "val": make(n_val), "test": make(n_test)}

    @property
    def task_names(self) -> list[str]:
        return [f"task{i}" for i in range(self.k)]

    @property
    def metrics(self) -> list[MetricSpec]:
        return [MetricSpec(f"task{i}_mse", i, False) for i in range(self.k)]

    def loaders(self, batch_size: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        train = DataLoader(self.splits["train"], batch_size=batch_size, shuffle=True, generator=gen, drop_last=True)
        val = DataLoader(self.splits["val"], batch_size=1024)
        test = DataLoader(self.splits["test"], batch_size=1024)
        return train, val, test

    def build_model(self, hidden: PositiveInt = 64, depth: PositiveInt = 2) -> SyntheticModel:
        layers: list[nn.Module] = []
        width = self.input_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        return SyntheticModel(nn.Sequential(*layers), LinearHeads(hidden, self.k))

    def losses(self, outputs: Any, batch: Any) -> Tensor:
        return ((outputs - batch[1]) ** 2).mean(dim=0)

    def metric_sums(self, outputs: Any, batch: Any) -> Tensor:
        return ((outputs - batch[1]) ** 2).sum(dim=0).detach()
