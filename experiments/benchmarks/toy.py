"""The two-task toy objective of FAMO (Liu et al. 2023), Appendix D and Fig. 1."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor, nn

from experiments.benchmarks.base import Benchmark, MetricSpec, MultiTaskModel

#: the five starting points of the FAMO reference code's toy experiment
STARTS: tuple[tuple[float, float], ...] = ((-8.5, 7.5), (0.0, 0.0), (9.0, 9.0), (-7.5, -0.5), (9.0, -1.0))


def toy_losses(theta: Tensor) -> Tensor:
    """(..., 2) parameters → (..., 2) task losses (L1, L2) of FAMO Appendix D."""
    x, y = theta[..., 0], theta[..., 1]
    f1 = torch.log(torch.clamp((0.5 * (-x - 7) - torch.tanh(-y)).abs(), min=5e-6)) + 6
    f2 = torch.log(torch.clamp((0.5 * (-x + 3) - torch.tanh(-y) + 2).abs(), min=5e-6)) + 6
    g1 = ((-x + 7) ** 2 + 0.1 * (-y - 8) ** 2) / 10 - 20
    g2 = ((-x - 7) ** 2 + 0.1 * (-y - 8) ** 2) / 10 - 20
    c1 = torch.clamp(torch.tanh(0.5 * y), min=0)
    c2 = torch.clamp(torch.tanh(-0.5 * y), min=0)
    return torch.stack([0.1 * (c1 * f1 + c2 * g1), c1 * f2 + c2 * g2], dim=-1)


@functools.lru_cache(maxsize=1)
def pareto_front(resolution: int = 801, extent: float = 10.0) -> Tensor:
    """(P, 2) non-dominated loss pairs over a ``resolution``² grid of θ ∈ [-extent, extent]²."""
    axis = torch.linspace(-extent, extent, resolution, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)
    pts = toy_losses(grid)
    order = torch.argsort(pts[:, 0])  # sweep by L1; keep points that strictly improve L2
    pts = pts[order]
    best_l2 = torch.cummin(pts[:, 1], dim=0).values
    keep = torch.ones(len(pts), dtype=torch.bool)
    keep[1:] = pts[1:, 1] < best_l2[:-1]
    return pts[keep]


def pareto_distance(loss_pair: Tensor) -> float:
    """Distance of a (L1, L2) point to the numerical Pareto front, each axis divided by the
    front's range (so the two tasks' different scales count equally); 0 means on the front.
    Points that dominate the grid front (closer than grid resolution) count as distance 0."""
    front = pareto_front()
    span = (front.max(0).values - front.min(0).values).clamp_min(1e-12)
    diff = (loss_pair.to(front.dtype) - front) / span
    return float(diff.norm(dim=1).min())


class ToyParameters(nn.Module):
    """The 'trunk' of the toy: the two coordinates θ themselves."""

    def __init__(self, start: tuple[float, float]) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(start, dtype=torch.float32))

    def forward(self, x: Any) -> Tensor:
        return self.theta


class ToyBenchmark(Benchmark):
    """FAMO's 2-D two-task problem: θ ∈ R², losses L1 (scaled by 0.1) and L2 (Appendix D).

    There is no data: every 'batch' is the same deterministic objective; an epoch is
    ``steps_per_epoch`` optimizer steps. The losses go negative, so ``loss_lower_bounds`` (the
    infima over the plane) are declared; a trainer passes them as ``min_losses`` to balancers that
    take that hyperparameter (FAMO). Metrics are the two losses (lower is better); their
    single-task references are the infima, so Δm% is defined at every scale.
    """

    name = "toy"
    variants = ("default",)
    reference_at_any_scale = True

    def __init__(self, variant: str | None = None, start: list[float] | tuple[float, float] = STARTS[2],
                 steps_per_epoch: int = 1000) -> None:
        super().__init__(variant)
        if len(start) != 2:
            raise ValueError(f"toy: start must be two numbers, got {start=}")
        self.start = (float(start[0]), float(start[1]))
        self.steps_per_epoch = int(steps_per_epoch)

    @property
    def task_names(self) -> list[str]:
        return ["L1", "L2"]

    @property
    def metrics(self) -> list[MetricSpec]:
        # each task's single-task optimum is its infimum (see loss_lower_bounds): an exact STL value
        return [MetricSpec("L1", 0, False, stl=-2.0), MetricSpec("L2", 1, False, stl=-20.0)]

    @property
    def loss_lower_bounds(self) -> list[float]:
        # c1 and c2 are never both positive and lie in [0, 1); f_i >= log(5e-6) + 6 > -6.2 and
        # g_i >= -20, so L1 > 0.1 * -20 = -2 and L2 > -20: exact infima, approached as c2 -> 1.
        return [-2.0, -20.0]

    def loaders(self, batch_size: int, seed: int):
        dummy = torch.zeros(1)
        return [dummy] * self.steps_per_epoch, [dummy], [dummy]

    def build_model(self) -> MultiTaskModel:
        return MultiTaskModel(ToyParameters(self.start), [nn.Identity(), nn.Identity()])

    def to_device(self, batch: Any, device: torch.device) -> Any:
        return batch

    def inputs(self, batch: Any) -> Any:
        return batch

    def batch_size(self, batch: Any) -> int:
        return 1

    def losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        return toy_losses(outputs[0])

    def metric_sums(self, outputs: list[Tensor], batch: Any) -> Tensor:
        return toy_losses(outputs[0]).detach()
