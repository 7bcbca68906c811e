"""CAGrad: the update that maximises the worst task's improvement near the mean gradient (Liu et al. 2021)."""

from __future__ import annotations

from typing import Any

from balancers._torchjd import GramianWeightingBalancer, torchjd_weighting
from balancers.registry import register


@register(
    "cagrad",
    description="CAGrad: g0 + (sqrt(φ)/|g_w|) g_w with w = argmin_simplex g_w·g0 + sqrt(φ)|g_w|, sqrt(φ) = c|g0|, "
                "rescaled by 1/(1+c²); TorchJD's CAGradWeighting on G G^T (O(K) backward passes)",
    paper="Liu et al. 2021, Conflict-Averse Gradient Descent for Multi-task Learning (NeurIPS), Alg. 1; "
          "Cranial-XIX/CAGrad (rescale=1); TorchJD 0.18 CAGradWeighting",
    needs_model=True,
    needs_task_grads=True,
)
class CAGrad(GramianWeightingBalancer):
    r"""CAGrad: with ``g0 = (1/K) Σ_i g_i`` and ``g_w = Σ_i w_i g_i``, solve on the simplex

    ``w* = argmin_w  g_wᵀ g0 + √φ ||g_w||``,  ``√φ = c ||g0||``,

    and update with ``d = (g0 + (√φ / ||g_w*||) g_w*) / (1 + c²)``: the direction within radius
    ``c ||g0||`` of the mean gradient that maximises the smallest task improvement.

    ``d = Σ_i a_i g_i`` with ``a = (1/K + (√φ/||g_w*||) w*) / (1 + c²)``, a function of the Gramian:
    TorchJD's ``CAGradWeighting(c)`` gives the bracket (it solves the problem with cvxpy/Clarabel
    on a factor of the trace-normalised Gramian; the authors use scipy's SLSQP on ``G Gᵀ``), and
    the ``1/(1 + c²)`` is the authors' default ``rescale=1``, which TorchJD leaves out. ``c = 0``
    is uniform loss. The returned loss is ``Σ_i a_i ℓ_i`` (heads receive ``a_i`` times their
    gradient, as for ``mgda``). Weights are non-negative, not on the simplex.

    Default ``c = 0.4``: the authors' NYU-v2 and CityScapes runs (``nyuv2/run.sh``); their
    function default is 0.5, and seed 003 searches ``c ∈ {0.2, 0.5, 0.8}``.
    """

    weights_sum_to_one = False

    def __init__(self, n_tasks: int, c: float = 0.4) -> None:
        super().__init__(n_tasks)
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 <= c < float("inf"):
            raise ValueError(f"cagrad: c must be >= 0, got {c=}")
        self.c = float(c)
        self.weighting = torchjd_weighting("CAGradWeighting", c=self.c)

    def hparams(self) -> dict[str, Any]:
        return {"c": self.c}

    def weight_scale(self) -> float:
        return 1.0 / (1.0 + self.c**2)
