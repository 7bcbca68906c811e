"""Fixed task weights (including weights extracted by EMA from a balancer's runs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from balancers.base import Balancer, LossClosure
from balancers.registry import register


@register(
    "fixed",
    description="Fixed task weights, normalised to sum 1 (e.g. extracted by EMA from FAMO runs)",
    paper="Gama & Grassi 2025, Uniform Loss vs. Specialized Optimization, §3.5",
)
class FixedWeights(Balancer):
    """Static linear scalarisation: ``loss = Σ_i w_i ℓ_i`` with ``w = weights / Σ weights``.

    The given weights are normalised to sum to one, so ``fixed`` with equal weights is exactly
    ``uniform`` (the mean of the losses). Needs nothing from a trainer.
    """

    def __init__(self, n_tasks: int, weights: Sequence[float] | Tensor | None = None) -> None:
        super().__init__(n_tasks)
        if weights is None:
            raise ValueError(f"fixed: weights are required (a list of {n_tasks} non-negative numbers)")
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()
        if w.numel() != n_tasks:
            raise ValueError(f"fixed: weights must have length n_tasks={n_tasks}, got {w.numel()}: {w.tolist()}")
        if not torch.isfinite(w).all() or (w < 0).any():
            raise ValueError(f"fixed: weights must be finite and >= 0, got {w.tolist()}")
        if w.sum() <= 0:
            raise ValueError(f"fixed: weights must not sum to zero, got {w.tolist()}")
        self._given = w.tolist()
        self.register_buffer("_fixed", (w / w.sum()).to(torch.get_default_dtype()))
        self._weights.copy_(self._fixed)

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        return (self._fixed.to(losses.dtype) * losses).sum()

    def reset(self) -> None:
        self._weights.copy_(self._fixed)

    def hparams(self) -> dict[str, Any]:
        return {"weights": self._given}
