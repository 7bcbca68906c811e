"""Nash-MTL: the Nash bargaining solution of the tasks' gradients (Navon et al. 2022)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from balancers._task_grads import GradientBalancer, gram
from balancers.base import LossClosure
from balancers.registry import register


@register(
    "nashmtl",
    description="Nash-MTL: weights a > 0 with (G G^T) a = 1/a, the Nash bargaining solution; shared gradient "
                "clipped to max_norm (O(K) backward passes)",
    paper="Navon et al. 2022, Multi-Task Learning as a Bargaining Game (ICML), Sec. 3, Alg. 1; FAMO App. A",
    needs_model=True,
    needs_task_grads=True,
)
class NashMTL(GradientBalancer):
    r"""Nash-MTL: the weights ``a > 0`` solving ``(G G^T) a = 1 / a`` (element-wise), the first-order
    condition of ``max_{||d|| <= 1} sum_i log(g_i^T d)`` with ``d ∝ G^T a`` (Navon et al., Thm 3.1),
    then the shared parameters' gradient clipped to norm ``max_norm`` — as the authors' code does.

    The system is the *unnormalised* one, as in the reference implementation (AvivNavon/nash-mtl,
    ``methods/weight_methods.py``): it divides ``G G^T`` by its Frobenius norm ``F`` for its solver
    but multiplies ``F`` back into the constraints ``a_i F (G G^T / F a)_i >= 1``, so its ``a``
    solves ``(G G^T) a = 1/a``. Consequences, for any ``G`` with a solution: every task gets the same
    directional derivative ``a_i g_i^T d = 1`` along ``d = G^T a``, and
    ``||d||^2 = a^T G G^T a = sum_i a_i (G G^T a)_i = K``, so the balanced shared gradient has norm
    exactly ``sqrt(K)`` (orthogonal gradients: ``a_i = 1 / ||g_i||``). ``weights`` are ``a``
    (positive, not summing to one: ``weights_sum_to_one`` is False); the returned loss is
    ``sum_i a_i losses_i``, so task heads receive ``a_i`` times their own gradient.

    ``max_norm`` (default 1.0 as in the reference; 0: off): ``after_backward`` clips the gradient
    of the shared parameters (see :mod:`balancers._task_grads`) to this norm with
    ``torch.nn.utils.clip_grad_norm_``, after the trainer's backward and before its optimizer step,
    where the reference clips them (``NashMTL.backward``; task heads are not clipped). With the
    default, the shared update is ``G^T a / (sqrt(K) + 1e-6)``: a unit-norm direction. A trainer's
    own ``train.grad_clip`` (all parameters) comes after it. (FAMO's copy of this class clips before
    its backward, which clips nothing; Nash-MTL's authors' code is followed here.)

    ``update_weights_every`` (default 1): the weights are recomputed at calls 0, n, 2n, ... and the
    calls in between reuse the last weights without computing the task gradients (no extra
    backward passes), as the reference does with its previous ``alpha``; clipping still runs every
    step. With n > 1 the balancer is stateful (call counter and weights, both in ``state_dict``).

    Solver (no cvxpy): ``a`` is the unique minimiser of the strictly convex
    ``f(a) = 1/2 a^T M a - sum_i log a_i`` with ``M = G G^T`` (its gradient is ``M a - 1/a``). For
    the conditioning, ``a_i = b_i / ||g_i||`` turns it into the same problem on the cosine matrix
    ``C_ij = M_ij / (||g_i|| ||g_j||)`` (unit diagonal, scale-free), which damped Newton's method
    (``f`` is self-concordant) solves on the host in float64 (torch) to a Newton decrement below
    ``tol``, from ``b = s 1`` with the best scale ``s``; ``a`` is then mapped back, so it is the
    unnormalised system's solution. The Newton iteration runs on ``C + 1e-8 I``: when no solution
    exists (the gradients are Pareto-stationary: a non-negative combination of them is zero, e.g.
    two opposite gradients) ``f`` is unbounded below and this ridge keeps the weights finite; when
    one exists, a few Newton steps on the unridged system then remove the ridge's ~1e-8 bias
    (:func:`_polish`), so ``a_i (M a)_i = 1`` holds to machine precision. The reference instead runs
    up to 20 steps of a sequential convex approximation with cvxpy (ECOS), warm-started from the
    previous step's weights, stopping when its iterates move less than 1e-6: the fixed point is the
    same, its residual ~1e-8 relative (measured, see ``tests/balancers/test_nashmtl.py``).
    """

    weights_sum_to_one = False
    _RIDGE = 1e-8

    def __init__(self, n_tasks: int, max_norm: float = 1.0, update_weights_every: int = 1, tol: float = 1e-20,
                 max_iter: int = 100) -> None:
        super().__init__(n_tasks)
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not 0 <= max_norm < math.inf:
            raise ValueError(f"nashmtl: max_norm must be a finite number >= 0 (0: no clipping), got {max_norm=}")
        if isinstance(update_weights_every, bool) or not isinstance(update_weights_every, int) or update_weights_every < 1:
            raise ValueError(f"nashmtl: update_weights_every must be an integer >= 1, got {update_weights_every=}")
        if not tol > 0:
            raise ValueError(f"nashmtl: tol must be > 0, got {tol=}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"nashmtl: max_iter must be an integer >= 1, got {max_iter=}")
        self.max_norm, self.update_weights_every = float(max_norm), update_weights_every
        self.tol, self.max_iter = float(tol), max_iter
        self._calls = 0  # a Python counter: which calls recompute the weights

    def hparams(self) -> dict[str, Any]:
        return {"max_norm": self.max_norm, "update_weights_every": self.update_weights_every, "tol": self.tol,
                "max_iter": self.max_iter}

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        recompute = self._calls % self.update_weights_every == 0
        if recompute:
            loss = super().combine(losses, closure)
        elif self._shared is None:
            raise RuntimeError(f"{self}: call attach(model, optimizer) before training")
        else:  # the weights of the last recomputation, exactly as recorded then
            loss = (self._weights.to(losses.dtype) * losses).sum()
        self._calls += 1
        return loss

    def solve(self, grads: Tensor, losses: Tensor) -> Tensor:
        m = gram(grads)
        return nash_weights(m.detach().cpu(), self.tol, self.max_iter).to(m.device)

    def after_backward(self) -> None:
        if self.max_norm > 0 and self._shared is not None:
            torch.nn.utils.clip_grad_norm_(self._shared, self.max_norm)

    def reset(self) -> None:
        super().reset()
        self._calls = 0

    def _extra_state(self) -> dict[str, Any]:
        return {"extra.calls": self._calls}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        self._calls = int(extra.get("extra.calls", 0))


def nash_weights(m: Tensor | np.ndarray, tol: float = 1e-20, max_iter: int = 100, normalize: bool = False,
                 ridge: float = NashMTL._RIDGE) -> Tensor:
    """``a > 0`` with ``M a = 1/a`` for ``M = m`` (what Nash-MTL uses) or ``M = m / ||m||_F``
    (``normalize``; then ``a`` is ``||m||_F^{1/2}`` times larger).

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
    if ridge > 0:
        b = _polish(c - ridge * torch.eye(k, dtype=torch.float64), b)
    return b / d


def _polish(c: Tensor, b: Tensor, steps: int = 3) -> Tensor:
    """Remove the ridge's bias (about ``ridge``, relative): plain Newton steps on the unridged
    system from the ridged solution, each kept only if it cuts ``max_i |b_i (C b)_i - 1|`` by 100x.
    Where a solution exists that is quadratic convergence (1e-8 to 1e-16 in one step); where none
    exists (Pareto-stationary gradients) a step runs along the unbounded direction and only halves
    the error, so the ridged, finite solution is kept."""
    err = float((b * (c @ b) - 1).abs().max())
    for _ in range(steps):
        new = b - torch.linalg.solve(c + torch.diag(1.0 / b**2), c @ b - 1.0 / b)
        new_err = float((new * (c @ new) - 1).abs().max()) if bool((new > 0).all()) else math.inf
        if not new_err <= err / 100:
            break
        b, err = new, new_err
    return b
