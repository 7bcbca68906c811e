"""Random loss weighting: fresh random simplex weights at every step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from balancers.base import Balancer, LossClosure
from balancers.registry import register

_DISTRIBUTIONS = ("normal", "dirichlet")


@register(
    "rlw",
    description="Random loss weighting: random simplex weights drawn every step (seeded)",
    paper="Lin et al. 2022, Reasonable Effectiveness of Random Weighting (RLW)",
    stochastic=True,
    stateful=True,
)
class RandomLossWeighting(Balancer):
    """``loss = Σ_i w_i ℓ_i`` with ``w`` drawn afresh at every call.

    ``distribution="normal"``: ``w = softmax(g)``, ``g ~ N(0, I_K)`` (RLW's default);
    ``"dirichlet"``: ``w ~ Dirichlet(1, …, 1)``, drawn as normalised Exp(1) variables.
    Draws come from the balancer's own ``torch.Generator`` (CPU, seeded by ``seed``) and are copied
    to the losses' device, so a run is reproducible on any device. Needs nothing from a trainer.
    """

    def __init__(self, n_tasks: int, distribution: str = "normal", seed: int = 0) -> None:
        super().__init__(n_tasks)
        if distribution not in _DISTRIBUTIONS:
            raise ValueError(f"rlw: distribution must be one of {_DISTRIBUTIONS}, got {distribution=}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"rlw: seed must be a non-negative integer, got {seed=}")
        self.distribution = distribution
        self.seed = seed
        self._gen = torch.Generator().manual_seed(seed)

    def _draw(self) -> Tensor:
        if self.distribution == "normal":
            return torch.softmax(torch.randn(self.n_tasks, generator=self._gen), dim=0)
        exp1 = torch.empty(self.n_tasks).exponential_(1.0, generator=self._gen)
        return exp1 / exp1.sum()

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        w = self._draw().to(device=losses.device, dtype=losses.dtype, non_blocking=True)
        self._record(w)
        return (w * losses).sum()

    def reset(self) -> None:
        super().reset()
        self._gen.manual_seed(self.seed)

    def hparams(self) -> dict[str, Any]:
        return {"distribution": self.distribution, "seed": self.seed}

    def _extra_state(self) -> dict[str, Any]:
        return {"extra.generator": self._gen.get_state()}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        if "extra.generator" in extra:
            self._gen.set_state(extra["extra.generator"])
