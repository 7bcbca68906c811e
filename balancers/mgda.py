"""MGDA: the min-norm point of the convex hull of the task gradients (Sener & Koltun 2018)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from balancers._task_grads import GradientBalancer, gram
from balancers.registry import register

_NORMALIZATIONS = ("none", "l2", "loss", "loss+")


@register(
    "mgda",
    description="MGDA: min-norm convex combination of the K task gradients (O(K) backward passes)",
    paper="Sener & Koltun 2018, Multi-Task Learning as Multi-Objective Optimization (MGDA-UB without the "
          "representation bound); Désidéri 2012; FAMO App. A",
    needs_model=True,
    needs_task_grads=True,
)
class MGDA(GradientBalancer):
    r"""MGDA: ``w = argmin_{w in simplex} || sum_i w_i g_i ||^2`` on the shared parameters.

    ``g_i`` are the per-task gradients of the shared trunk (see :mod:`balancers._task_grads`),
    computed from the graph of the trainer's forward; the returned loss is ``sum_i w_i losses_i``,
    so ``weights`` are ``w`` (non-negative, summing to one). The problem is solved on the Gram
    matrix ``M = G G^T`` (K x K, float64):

    * K = 2: the closed form ``w_1 = clip((M_22 - M_12) / (M_11 + M_22 - 2 M_12), 0, 1)``
      (``1/2`` when the two gradients are equal), on the device, without a host sync.
    * K > 2: Frank-Wolfe with away steps and exact line search on the simplex (Lacoste-Julien &
      Jaggi 2015; Sener & Koltun use plain Frank-Wolfe, which converges sublinearly when the
      solution lies on a face of the simplex; the away steps make it linear), started at the
      uniform weights, on the host in float64. It stops when the Frank-Wolfe duality gap, an upper
      bound of the suboptimality, is at most ``tol * max_i M_ii`` or after ``max_iter`` iterations.

    ``normalization`` divides each gradient by a normaliser ``n_i`` before the min-norm problem,
    exactly as ``gradient_normalizers`` in Sener & Koltun's code (isl-org/MultiObjectiveOptimization,
    ``multi_task/min_norm_solvers.py``): ``"none"`` (default) ``n_i = 1``; ``"l2"``
    ``n_i = ||g_i||``; ``"loss"`` ``n_i = loss_i``; ``"loss+"`` ``n_i = loss_i ||g_i||``. Here that
    is ``M_ij / (n_i n_j)`` on the Gram matrix. The weights are then applied to the *unnormalised*
    losses, as there (``scale[t] = sol[t]`` times the raw loss). Sener & Koltun's example
    configuration uses ``"loss+"``; the Nash-MTL and FAMO code, whose MGDA numbers the FAMO paper
    reports, runs it with ``"none"`` (its MGDA default; the normalisation is not passed from the
    command line), hence our default. The paper's text does not normalise ("optional and not
    included in the paper", their code comment). ``"loss"`` and ``"loss+"`` need positive losses
    (as a loss's value divides its gradient); a non-positive one gives NaN weights, and a ValueError
    when ``check_values`` is on. Differences from their solver, where ours is exact: for K = 2
    they clamp the weight to [0.001, 0.999] when one gradient dominates, we to [0, 1]; and their
    weights times K in the Nash-MTL code (ours sum to one, as in Sener & Koltun's).
    """

    def __init__(self, n_tasks: int, normalization: str = "none", tol: float = 1e-12, max_iter: int = 10_000) -> None:
        super().__init__(n_tasks)
        if normalization not in _NORMALIZATIONS:
            raise ValueError(f"mgda: normalization must be one of {_NORMALIZATIONS}, got {normalization=}")
        if not tol > 0:
            raise ValueError(f"mgda: tol must be > 0, got {tol=}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"mgda: max_iter must be an integer >= 1, got {max_iter=}")
        self.normalization, self.tol, self.max_iter = normalization, float(tol), max_iter

    def hparams(self) -> dict[str, Any]:
        return {"normalization": self.normalization, "tol": self.tol, "max_iter": self.max_iter}

    def solve(self, grads: Tensor, losses: Tensor) -> Tensor:
        m = gram(grads)
        if self.normalization != "none":
            n = gradient_normalizers(m, losses, self.normalization)
            m = m / (n[:, None] * n[None, :])
        return min_norm_weights(m, self.tol, self.max_iter)

    def _check_range(self, losses: Tensor) -> None:
        if self.normalization in ("loss", "loss+") and not bool((losses > 0).all()):
            raise ValueError(f"{self}: normalization {self.normalization!r} divides each task gradient by its "
                             f"loss, so every loss must be > 0; got {losses.tolist()}")


def gradient_normalizers(m: Tensor, losses: Tensor, normalization: str) -> Tensor:
    """Sener & Koltun's normaliser ``n_i`` of each task gradient, from the Gram matrix ``m`` (float64).

    ``"l2"``: ``||g_i||``; ``"loss"``: ``loss_i``; ``"loss+"``: ``loss_i ||g_i||``; ``"none"``: 1. A
    zero gradient keeps a zero row (its norm is floored at 1e-154); a non-positive loss gives NaN.
    """
    norms = m.diagonal().clamp_min(0).sqrt().clamp_min(torch.finfo(torch.float64).tiny ** 0.5)
    if normalization == "none":
        return torch.ones_like(norms)
    if normalization == "l2":
        return norms
    value = losses.to(device=m.device, dtype=torch.float64)
    value = torch.where(value > 0, value, torch.full_like(value, float("nan")))  # no silent clamping
    return value if normalization == "loss" else value * norms


def min_norm_weights(m: Tensor, tol: float = 1e-12, max_iter: int = 10_000) -> Tensor:
    """The weights ``w`` on the simplex minimising ``w^T m w`` for a PSD Gram matrix ``m`` (K x K)."""
    k = m.shape[0]
    if k == 2:
        denom = m[0, 0] + m[1, 1] - 2 * m[0, 1]
        w0 = torch.where(denom > 0, (m[1, 1] - m[0, 1]) / denom.clamp_min(torch.finfo(m.dtype).tiny),
                         torch.full_like(denom, 0.5)).clamp(0.0, 1.0)
        w0 = torch.where(torch.isnan(denom), denom, w0)  # NaN in (a normaliser), NaN out: never silent
        return torch.stack([w0, 1 - w0])
    w = frank_wolfe(m.detach().cpu().numpy().astype(np.float64), tol, max_iter)
    return torch.from_numpy(w).to(m.device)


def frank_wolfe(m: np.ndarray, tol: float = 1e-12, max_iter: int = 10_000) -> np.ndarray:
    """Away-step Frank-Wolfe for ``min_{w in simplex} 1/2 w^T m w`` (``m`` PSD, float64).

    Products by ``einsum`` (plain loops), not BLAS: numpy's OpenBLAS threads can stall for hundreds
    of ms on busy cores (e.g. next to torch's own threads), far longer than these K-sized products.
    """
    k = m.shape[0]
    if not np.isfinite(m).all():  # NaN in (a normaliser), NaN out: never silent
        return np.full(k, np.nan)
    w = np.full(k, 1.0 / k)
    mw = np.einsum("ij,j->i", m, w)
    threshold = tol * max(float(np.max(np.diag(m))), np.finfo(np.float64).tiny)
    for it in range(max_iter):
        if it % 64 == 63:  # the incremental updates of m @ w accumulate rounding
            mw = np.einsum("ij,j->i", m, w)
        wmw = float(np.einsum("i,i->", w, mw))
        s = int(np.argmin(mw))
        gap_fw = wmw - mw[s]
        if gap_fw <= threshold:
            break
        v = int(np.argmax(np.where(w > 0, mw, -np.inf)))
        gap_away = mw[v] - wmw
        if gap_fw >= gap_away:  # towards vertex s
            slope, curvature, step_max = -gap_fw, m[s, s] - 2 * mw[s] + wmw, 1.0
            md = m[:, s] - mw
        else:  # away from vertex v
            slope, curvature = -gap_away, wmw - 2 * mw[v] + m[v, v]
            step_max = w[v] / (1.0 - w[v]) if w[v] < 1.0 else np.inf
            md = mw - m[:, v]
        step = step_max if curvature <= 0 else min(-slope / curvature, step_max)
        if gap_fw >= gap_away:
            w *= 1.0 - step
            w[s] += step
        else:
            w *= 1.0 + step
            w[v] -= step
            if step == step_max:
                w[v] = 0.0  # the away vertex leaves the support exactly
        np.maximum(w, 0.0, out=w)
        mw = mw + step * md
    return w / w.sum()
