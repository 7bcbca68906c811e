"""GLS: the geometric mean of the task losses (Chennupati et al. 2019, geometric loss strategy)."""

from __future__ import annotations

import torch
from torch import Tensor

from balancers.base import Balancer, LossClosure
from balancers.registry import register


@register(
    "gls",
    description="Geometric loss strategy: (Π_i ℓ_i)^(1/K), the geometric mean of the losses",
    paper="Chennupati et al. 2019, MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss "
          "Strategy for Multi-Task Learning (CVPR Workshops), Eq. for L_GLS",
)
class GeometricLoss(Balancer):
    r"""``loss = (Π_i ℓ_i)^{1/K} = exp((1/K) Σ_i log ℓ_i)``.

    Its gradient is ``Σ_i (L / (K ℓ_i)) ∇ℓ_i`` with ``L`` the loss itself, so the effective
    weights are ``L / (K ℓ_i)``: proportional to ``1/ℓ_i`` like ``si`` (which is ``log L``), but
    scaled by the current geometric mean; equal losses give ``1/K`` each. Non-negative, not on the
    simplex. Losses must be positive. Needs nothing from a trainer; stateless.

    Choices: computed as ``exp(mean(log ℓ))`` rather than LibMTL's ``prod(ℓ) ** (1/K)``, which
    under- or overflows for many tasks (e.g. 11 QM9 losses of 1e-4 give 1e-44, below float32's
    range); the two are equal in exact arithmetic. LibMTL reports ``ℓ_i / (K Π ℓ)`` as GLS's
    weights, which is not the gradient; ``weights`` here are the true ``∂ loss / ∂ ℓ_i``.

    >>> b = GeometricLoss(n_tasks=2)
    >>> float(b(torch.tensor([1.0, 4.0])))
    2.0
    >>> b.weights.tolist()
    [1.0, 0.25]
    """

    weights_sum_to_one = False

    def _check_range(self, losses: Tensor) -> None:
        if bool((losses <= 0).any()):
            raise ValueError(f"gls: losses must be > 0 (geometric mean of the losses), got {losses.tolist()}")

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        loss = torch.exp(losses.log().mean())
        self._record(loss.detach() / (self.n_tasks * losses.detach()))
        return loss
