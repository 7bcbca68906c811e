"""Uncertainty weighting: learnable homoscedastic log-variances."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from balancers.base import Balancer, LossClosure
from balancers.registry import register

#: the learning rate of the log-variances in the Nash-MTL and FAMO reference code
#: (``--method-params-lr``, default 0.025, in both repositories' ``experiments/utils.py``)
REFERENCE_W_LR = 0.025


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
    ``named_learnables()`` to it as a param group of their own with learning rate
    ``learnables_lr = w_lr`` (metadata ``has_parameters``). ``w_lr`` defaults to 0.025, the
    reference's: the Nash-MTL and FAMO code trains these parameters in a second Adam param group
    at ``--method-params-lr`` (default 0.025), whatever the model's learning rate (1e-3 on QM9).

    The ``1/K`` keeps the project's convention that the starting point equals uniform loss (the
    mean); the reference code sums ``0.5 (exp(-s_i) ℓ_i + s_i)`` instead, which scales every
    gradient by ``K/2``: with Adam (what the references use) that changes only the effect of Adam's
    epsilon. Effective weights are ``exp(-s_i)/K``: non-negative, not on the simplex.
    """

    weights_sum_to_one = False

    def __init__(self, n_tasks: int, w_lr: float = REFERENCE_W_LR) -> None:
        super().__init__(n_tasks)
        if isinstance(w_lr, bool) or not isinstance(w_lr, (int, float)) or not 0 < w_lr < math.inf:
            raise ValueError(f"uw: w_lr must be a finite number > 0, got {w_lr=}")
        self.w_lr = float(w_lr)
        self.log_vars = torch.nn.Parameter(torch.zeros(n_tasks))

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        s = self.log_vars.to(losses.dtype)
        precision = torch.exp(-s)
        self._record(precision / self.n_tasks)
        return (precision * losses + s).mean()

    def named_learnables(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        yield "log_vars", self.log_vars

    @property
    def learnables_lr(self) -> float:
        return self.w_lr

    def hparams(self) -> dict[str, Any]:
        return {"w_lr": self.w_lr}

    def reset(self) -> None:
        super().reset()
        with torch.no_grad():
            self.log_vars.zero_()
