"""Uniform loss: the plain mean of the task losses."""

from __future__ import annotations

from balancers.fixed import FixedWeights
from balancers.registry import register


@register(
    "uniform",
    description="Uniform loss: the mean of the task losses (fixed equal weights 1/K)",
    paper="FAMO (Liu et al. 2023) Eq. (1); Gama & Grassi 2025",
)
class Uniform(FixedWeights):
    """``loss = (1/K) Σ_i ℓ_i``: fixed weights with equal values (composition, not a new rule)."""

    def __init__(self, n_tasks: int) -> None:
        super().__init__(n_tasks, weights=[1.0] * n_tasks)

    def hparams(self) -> dict[str, object]:
        return {}
