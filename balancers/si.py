"""Scale-invariant loss: the mean of the log losses."""

from __future__ import annotations

from torch import Tensor

from balancers.base import Balancer, LossClosure
from balancers.registry import register


@register(
    "si",
    description="Scale-invariant: mean of log losses (weights ∝ 1/ℓ_i)",
    paper="FAMO (Liu et al. 2023) §2 baseline (3)",
)
class ScaleInvariant(Balancer):
    """``loss = (1/K) Σ_i log ℓ_i``; invariant to rescaling any task loss by a constant.

    Its gradient is ``(1/K) Σ_i ∇ℓ_i / ℓ_i``, so the effective weights are ``1/(K ℓ_i)``: they are
    non-negative but do not sum to one. Losses must be positive. Needs nothing from a trainer.
    """

    weights_sum_to_one = False

    def _check_range(self, losses: Tensor) -> None:
        if bool((losses <= 0).any()):
            raise ValueError(f"si: losses must be > 0 (log of the loss), got {losses.tolist()}")

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        self._record(1.0 / (self.n_tasks * losses.detach()))
        return losses.log().mean()
