"""Nash-MTL: the Nash bargaining solution of the tasks' gradients (Navon et al. 2022)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from balancers._task_grads import GradientBalancer, gram
from balancers.registry import register


@register(
    "nashmtl",
    description="Nash-MTL: weights a > 0 with (G G^T) a = 1/a, the Nash bargaining solution (O(K) backward passes)",
    paper="Navon et al. 2022, Multi-Task Learning as a Bargaining Game (ICML), Sec. 3, Alg. 1; FAMO App. A",
    needs_model=True,
    needs_task_grads=True,
)
class NashMTL(GradientBalancer):
    r"""Nash-MTL: the weights ``a > 0`` solving ``(G G^T) a = 1 / a`` (element-wise), the first-order
    condition of ``max_{||d|| <= 1} sum_i log(g_i^T d)`` with ``d ∝ G^T a`` (Navon et al., Thm 3.1).

    As the reference implementation does, the Gram matrix is first divided by its Frobenius norm:
    ``M = G G^T / ||G G^T||_F`` and ``a`` solves ``M a = 1/a``. Scaling of the weights: if ``a*``
    solves the unnormalised system, ``a = ||G G^T||_F^{1/2} a*``. With the update ``d = G^T a``,
    each task's directional derivative is ``g_i^T d = (G G^T a)_i``, i.e. ``a_i g_i^T d`` is the same
    for every task (the bargaining solution; ``= ||G G^T||_F`` in these units). The size of ``d``
    is not normalised, so the weights do not sum to one (``weights_sum_to_one`` is False); they are
    positive.

    Solver (no cvxpy): ``a`` is the unique minimiser of the strictly convex
    ``f(a) = 1/2 a^T M a - sum_i log a_i`` (its gradient is ``M a - 1/a``). With
    ``a_i = b_i / sqrt(M_ii)`` this becomes the same problem on the cosine matrix
    ``C_ij = M_ij / sqrt(M_ii M_jj)`` (unit diagonal, scale-free), which damped Newton's method
    (``f`` is self-concordant) solves on the host in float64 (torch) to a Newton decrement below ``tol``,
    from ``b = s 1`` with the best scale ``s``. The reference instead runs up to 20 steps of a
    sequential convex approximation with cvxpy, warm-started from the previous step's weights
    (then this would be stateful); the fixed point is the same. When no solution exists (the
    gradients are Pareto-stationary: a non-negative combination of them is zero, e.g. two opposite
    gradients) ``f`` is unbounded below; a ridge ``1e-8 I`` on ``C`` keeps the weights finite.
    Not included: the reference's gradient-norm clipping of the shared parameters (``max_norm``;
    use the trainer's ``grad_clip``) and its ``update_weights_every`` (reuse of old weights).
    """

    weights_sum_to_one = False
    _RIDGE = 1e-8

    def __init__(self, n_tasks: int, tol: float = 1e-20, max_iter: int = 100) -> None:
        super().__init__(n_tasks)
        if not tol > 0:
            raise ValueError(f"nashmtl: tol must be > 0, got {tol=}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"nashmtl: max_iter must be an integer >= 1, got {max_iter=}")
        self.tol, self.max_iter = float(tol), max_iter

    def hparams(self) -> dict[str, Any]:
        return {"tol": self.tol, "max_iter": self.max_iter}

    def solve(self, grads: Tensor, losses: Tensor) -> Tensor:
        m = gram(grads)
        return nash_weights(m.detach().cpu(), self.tol, self.max_iter).to(m.device)


def nash_weights(m: Tensor | np.ndarray, tol: float = 1e-20, max_iter: int = 100, normalize: bool = True,
                 ridge: float = NashMTL._RIDGE) -> Tensor:
    """``a > 0`` with ``M a = 1/a`` for ``M = m / ||m||_F`` (``normalize``) or ``M = m``.

    Float64 on the CPU with torch's linear algebra (numpy's OpenBLAS threads stall for hundreds of
    ms when the cores are busy, e.g. next to torch's own threads).
    """
    m = torch.as_tensor(m, dtype=torch.float64).cpu()
    k = m.shape[0]
    tiny = torch.finfo(torch.float64).tiny
    if normalize:
        m = m / torch.linalg.norm(m).clamp_min(tiny)
    d = m.diagonal().clamp_min(tiny).sqrt()
    c = m / (d[:, None] * d[None, :]) + ridge * torch.eye(k, dtype=torch.float64)
    b = torch.full((k,), float(k / max(float(c.sum()), tiny)) ** 0.5, dtype=torch.float64)

    def f(x: Tensor) -> float:
        return float(0.5 * (x @ (c @ x)) - x.log().sum())

    for _ in range(max_iter):
        grad = c @ b - 1.0 / b
        hess = c + torch.diag(1.0 / b**2)
        step = -torch.linalg.solve(hess, grad)
        decrement = float(-(grad @ step))  # lambda^2
        if decrement <= tol:
            break
        # damped Newton (self-concordance keeps b + t step > 0), then Armijo backtracking from 1
        t = 1.0 / (1.0 + decrement**0.5) if decrement > 0.25 else 1.0
        negative = step < 0
        if bool(negative.any()):
            t = min(t, 0.99 * float((-b[negative] / step[negative]).min()))
        fb = f(b)
        while f(b + t * step) > fb - 0.25 * t * decrement and t > 1e-12:
            t *= 0.5
        b = b + t * step
    return b / d
