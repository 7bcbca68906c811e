"""Uncertainty weighting: learnable homoscedastic log-variances."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from balancers.base import Balancer, LossClosure
from balancers.registry import register


@register(
    "uw",
    description="Uncertainty weighting: learnable log-variances s_i, loss mean(exp(-s_i) ℓ_i + s_i)",
    paper="Kendall, Gal & Cipolla 2018, Multi-Task Learning Using Uncertainty to Weigh Losses",
    has_parameters=True,
    stateful=True,
)
class UncertaintyWeighting(Balancer):
    """``loss = (1/K) Σ_i (exp(-s_i) ℓ_i + s_i)`` with learnable ``s_i = log σ_i²`` (start at 0).

    The log-variances are trained by the *model's* optimizer: a trainer adds
    ``named_learnables()`` to it (metadata ``has_parameters``). The ``1/K`` keeps the project's
    convention that the starting point equals uniform loss (the mean). Effective weights are
    ``exp(-s_i)/K``: non-negative, not on the simplex.
    """

    weights_sum_to_one = False

    def __init__(self, n_tasks: int) -> None:
        super().__init__(n_tasks)
        self.log_vars = torch.nn.Parameter(torch.zeros(n_tasks))

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        s = self.log_vars.to(losses.dtype)
        precision = torch.exp(-s)
        self._record(precision / self.n_tasks)
        return (precision * losses + s).mean()

    def named_learnables(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        yield "log_vars", self.log_vars

    def reset(self) -> None:
        super().reset()
        with torch.no_grad():
            self.log_vars.zero_()
