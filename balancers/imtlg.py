"""IMTL-G: the update with equal projections on every task's unit gradient (Liu et al. 2021)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from balancers._task_grads import GradientBalancer, gram
from balancers.registry import register


@register(
    "imtlg",
    description="IMTL-G: combination of the task gradients with equal projections on each (O(K) backward passes)",
    paper="Liu et al. 2021, Towards Impartial Multi-task Learning (ICLR), Sec. 3.2 (IMTL-G); FAMO App. A",
    needs_model=True,
    needs_task_grads=True,
)
class IMTLG(GradientBalancer):
    r"""IMTL-G: weights ``a`` with ``sum_i a_i = 1`` such that ``d = sum_j a_j g_j`` has the same
    projection on every unit gradient ``u_i = g_i / ||g_i||`` (shared parameters).

    The paper's closed form (IMTL eq. for IMTL-G), with ``D = [g_1 - g_2, ..., g_1 - g_K]`` and
    ``U = [u_1 - u_2, ..., u_1 - u_K]`` (rows), is ``a_{2..K} = g_1 U^T (D U^T)^{-1}``,
    ``a_1 = 1 - sum_{i>1} a_i``. That is the unique solution of the linear conditions
    ``d^T (u_1 - u_i) = 0`` and ``sum a = 1``, solved here in a form symmetric in the tasks and
    scale-free: with ``C_ij = u_i^T u_j`` (cosines), ``n_i = ||g_i||`` and ``a_j = b_j n_min / n_j``,
    the conditions ``d^T u_i = c`` for all i and ``sum a = 1`` read::

        [ C        -1 ] [b]   [0]
        [ n_min/n^T 0 ] [c] = [1]

    a (K+1) x (K+1) system solved with the pseudo-inverse (float64, on the device, no host sync;
    singular values below ``rcond`` x the largest count as zero). When ``D U^T`` is invertible this
    is exactly the paper's ``a``; when it is not (e.g. identical or linearly dependent gradients),
    the minimum-norm solution is taken (identical gradients: uniform weights).

    ``weights`` are ``a``: they sum to one but may be negative when gradients conflict strongly
    (``nonnegative_weights`` is False). The returned loss is ``sum_i a_i losses_i``, so the task
    heads also receive ``a_i`` times their gradient (the paper trains heads on the raw losses
    and pairs IMTL-G with loss scaling, IMTL-L; this is IMTL-G alone).
    """

    nonnegative_weights = False

    def __init__(self, n_tasks: int, rcond: float = 1e-10) -> None:
        super().__init__(n_tasks)
        if not 0 < rcond < 1:
            raise ValueError(f"imtlg: rcond must be in (0, 1), got {rcond=}")
        self.rcond = float(rcond)

    def hparams(self) -> dict[str, Any]:
        return {"rcond": self.rcond}

    def solve(self, grads: Tensor, losses: Tensor) -> Tensor:
        return imtlg_weights(gram(grads), self.rcond)


def imtlg_weights(m: Tensor, rcond: float = 1e-10) -> Tensor:
    """IMTL-G weights from the Gram matrix ``m = G G^T`` (K x K, float64)."""
    k = m.shape[0]
    tiny = torch.finfo(m.dtype).tiny
    norms = m.diagonal().clamp_min(0).sqrt().clamp_min(tiny ** 0.5)
    cos = m / (norms[:, None] * norms[None, :])
    ratio = norms.min() / norms  # in (0, 1]
    system = torch.zeros(k + 1, k + 1, dtype=m.dtype, device=m.device)
    system[:k, :k] = cos
    system[:k, k] = -1.0
    system[k, :k] = ratio
    rhs = torch.zeros(k + 1, dtype=m.dtype, device=m.device)
    rhs[k] = 1.0
    solution = torch.linalg.pinv(system, rtol=rcond) @ rhs
    a = solution[:k] * ratio
    return a / a.sum()
