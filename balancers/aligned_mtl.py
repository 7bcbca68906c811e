"""Aligned-MTL: align the principal components of the task gradients (Senushkin et al. 2023)."""

from __future__ import annotations

from typing import Any

from balancers._torchjd import GramianWeightingBalancer, torchjd_weighting
from balancers.registry import register

_SCALE_MODES = ("min", "median", "rmse")


@register(
    "aligned_mtl",
    description="Aligned-MTL: w = sqrt(λ_min) V Λ^(-1/2) Vᵀ (1/K) from G G^T = V Λ Vᵀ (condition number 1); "
                "TorchJD's AlignedMTLWeighting (O(K) backward passes)",
    paper="Senushkin et al. 2023, Independent Component Alignment for Multi-Task Learning (CVPR), Alg. 1; "
          "TorchJD 0.18 AlignedMTLWeighting; LibMTL/weighting/Aligned_MTL.py",
    needs_model=True,
    needs_task_grads=True,
)
class AlignedMTL(GramianWeightingBalancer):
    r"""Aligned-MTL: replace ``G`` by the closest matrix with orthogonal rows of equal norm.

    From the eigendecomposition ``G Gᵀ = V Λ Vᵀ`` (eigenvalues above a relative tolerance, rank
    ``r``), the balance transformation is ``B = σ V Λ^{-1/2} Vᵀ`` with ``σ² = λ_min`` (``"min"``,
    the paper's Alg. 1), the median (``"median"``) or the mean (``"rmse"``) of the kept eigenvalues;
    the weights are ``w = B (1/K) 1`` (TorchJD's ``AlignedMTLWeighting``, uniform preference), so
    that the update ``Gᵀ w`` has a Gramian with condition number 1 and the scale ``σ``.

    Choices: LibMTL's version (adapted from the authors' code, which is no longer online) uses the
    preference ``1`` instead of ``1/K`` (weights ``K`` times ours: a constant factor). The weights
    may be negative and do not sum to one. The returned loss is ``Σ_i w_i ℓ_i`` (heads receive
    ``w_i`` times their gradient; the authors' heads receive their plain gradient).

    Orthogonal gradients of norms 1 and 2: each task then moves by ``λ_min^{1/2} / K``:

    >>> import torch
    >>> AlignedMTL(n_tasks=2).weigh(torch.diag(torch.tensor([1.0, 4.0], dtype=torch.float64))).tolist()
    [0.5, 0.25]
    """

    nonnegative_weights = False
    weights_sum_to_one = False

    def __init__(self, n_tasks: int, scale_mode: str = "min") -> None:
        super().__init__(n_tasks)
        if scale_mode not in _SCALE_MODES:
            raise ValueError(f"aligned_mtl: scale_mode must be one of {_SCALE_MODES}, got {scale_mode=}")
        self.scale_mode = scale_mode
        self.weighting = torchjd_weighting("AlignedMTLWeighting", scale_mode=scale_mode)

    def hparams(self) -> dict[str, Any]:
        return {"scale_mode": self.scale_mode}
