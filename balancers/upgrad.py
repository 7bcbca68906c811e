"""UPGrad: average of each task gradient projected onto the dual cone of all of them (Quinton & Rey 2024)."""

from __future__ import annotations

from balancers._torchjd import GramianWeightingBalancer, torchjd_weighting
from balancers.registry import register


@register(
    "upgrad",
    description="UPGrad: mean of the projections of each g_i onto the dual cone {d : g_j·d >= 0 for all j}; "
                "TorchJD's UPGradWeighting on G G^T (O(K) backward passes)",
    paper="Quinton & Rey 2024, Jacobian Descent for Multi-Objective Optimization (arXiv 2406.16232), "
          "Sec. 3, Eq. 3 and Prop. 1; TorchJD 0.18 UPGradWeighting",
    needs_model=True,
    needs_task_grads=True,
)
class UPGrad(GramianWeightingBalancer):
    r"""UPGrad: ``d = (1/K) Σ_i π(g_i)`` with ``π`` the projection onto the dual cone of the task
    gradients, ``{d : g_jᵀ d ≥ 0 for all j}``, so ``d`` conflicts with no task.

    By the paper's Prop. 1, ``π(Gᵀ u) = Gᵀ v`` with ``v = argmin_{v ≥ u} vᵀ (G Gᵀ) v``: the weights
    are ``Σ_i v^{(i)}`` for ``u = e_i / K``, K quadratic programs on the Gramian, which TorchJD's
    ``UPGradWeighting`` solves with quadprog (after its own trace normalisation and a ``1e-4``
    ridge on the diagonal, its defaults). Without conflicts the projections are the identity and
    this is uniform loss (the mean); the weights are non-negative (``v ≥ u ≥ 0``), not on the
    simplex. The returned loss is ``Σ_i w_i ℓ_i`` (heads receive ``w_i`` times their gradient).
    No hyperparameter: the paper's preference vector is uniform, as here.
    """

    weights_sum_to_one = False

    def __init__(self, n_tasks: int) -> None:
        super().__init__(n_tasks)
        self.weighting = torchjd_weighting("UPGradWeighting")
