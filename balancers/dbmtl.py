"""DB-MTL: log-transformed losses plus max-norm balancing of EMA task gradients (Lin et al. 2023)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from balancers._task_grads import GradientBalancer, task_gradients
from balancers.base import LossClosure
from balancers.registry import register

#: added to the losses inside the log and to the gradient norms, as in the authors' code
EPS = 1e-8


@register(
    "dbmtl",
    description="DB-MTL: log losses; shared update Σ_i (max_j |ĝ_j| / |ĝ_i|) ĝ_i with ĝ_i an EMA of the "
                "task gradients of log ℓ_i (O(K) backward passes)",
    paper="Lin et al. 2023, Dual-Balancing for Multi-Task Learning (arXiv 2308.12029), Sec. 3, Alg. 1; "
          "LibMTL/weighting/DB_MTL.py (the authors' library)",
    needs_model=True,
    needs_task_grads=True,
    stateful=True,
)
class DBMTL(GradientBalancer):
    r"""DB-MTL: loss-scale balancing by ``log`` and gradient-magnitude balancing by the largest norm.

    With ``g_i = ∇_θ log(ℓ_i + ε)`` the per-task gradients of the shared parameters θ (computed
    by the shared engine, :mod:`balancers._task_grads`, from the trainer's forward graph), step
    ``t`` (from 1) does::

        β_t = β / t^σ
        ĝ_i ← g_i + β_t (ĝ_i − g_i)                      (ĝ_i = 0 before the first step)
        α_i = max_j ||ĝ_j|| / (||ĝ_i|| + ε)
        shared update:         (1/K) Σ_i α_i ĝ_i
        task-specific update:  (1/K) ∇ log(ℓ_i + ε)      (heads get their log-loss gradient)

    so every EMA task gradient is rescaled to the largest one's norm. This is an O(K) method: the
    balancing needs the K per-task gradients of the shared parameters (like ``mgda``), although
    its loss part (the log) is O(1) (that part alone is ``si``).

    The update is not a weighting of the *current* losses (``ĝ`` carries past gradients), so the
    returned scalar is ``(1/K) Σ_i log(ℓ_i + ε) + Σ_p <p − p.detach(), c_p>`` with the detached
    correction ``c = (1/K)(Σ_i α_i ĝ_i − Σ_i g_i)`` on the shared parameters ``p``: the second
    term is exactly zero in value and its gradient turns the trainer's single backward into the
    update above, for every parameter. ``weights`` (``∂ loss / ∂ ℓ_i``) are therefore
    ``1 / (K (ℓ_i + ε))``, the log transform: what the heads receive; ``alpha`` holds the last
    ``α`` (the trunk's balancing factors). Non-negative, not on the simplex.

    Choices: the authors' LibMTL code sums over tasks; the ``1/K`` keeps this project's mean
    convention (a constant factor; the same steps under Adam up to its ``eps``). Defaults are the
    code's (``beta=0.9``, ``beta_sigma=0``). The EMA ``ĝ`` (K × P) is part of the state.
    """

    weights_sum_to_one = False

    def __init__(self, n_tasks: int, beta: float = 0.9, beta_sigma: float = 0.0) -> None:
        super().__init__(n_tasks)
        if not 0 <= beta < 1:
            raise ValueError(f"dbmtl: beta must be in [0, 1), got {beta=}")
        if not 0 <= beta_sigma < float("inf"):
            raise ValueError(f"dbmtl: beta_sigma must be >= 0, got {beta_sigma=}")
        self.beta, self.beta_sigma = float(beta), float(beta_sigma)
        self._ema: Tensor | None = None  # (K, P), created at the first step
        self._steps = 0
        self.register_buffer("alpha", torch.ones(n_tasks))

    def hparams(self) -> dict[str, Any]:
        return {"beta": self.beta, "beta_sigma": self.beta_sigma}

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        if self._shared is None:
            raise RuntimeError(f"{self}: call attach(model, optimizer) before training")
        if not losses.requires_grad:
            raise RuntimeError(f"{self}: losses must carry the model's autograd graph")
        log_losses = (losses + EPS).log()
        grads = task_gradients(log_losses, self._shared, batched=self._batched)  # (K, P), detached; graph retained
        self._steps += 1
        beta_t = self.beta / self._steps ** self.beta_sigma
        if self._ema is None:  # ĝ = 0 before the first step
            self._ema = grads * (1.0 - beta_t)
        else:  # ĝ ← g + β_t (ĝ − g) = ĝ + (1 − β_t)(g − ĝ), in place: no K × P temporary
            self._ema.lerp_(grads, 1.0 - beta_t)
        ema = self._ema
        norms = ema.norm(dim=1)
        alpha = norms.max() / (norms + EPS)
        self.alpha.copy_(alpha.detach())
        correction = (alpha.to(ema.dtype) @ ema - grads.sum(dim=0)) / self.n_tasks
        self._record(1.0 / (self.n_tasks * (losses.detach() + EPS)))
        sizes = [p.numel() for p in self._shared]
        zero = sum(((p - p.detach()) * c.view_as(p)).sum() for p, c in zip(self._shared, correction.split(sizes)))
        return log_losses.mean() + zero.to(losses.dtype)

    def reset(self) -> None:
        super().reset()
        self._ema, self._steps = None, 0
        self.alpha.fill_(1.0)

    def _extra_state(self) -> dict[str, Any]:
        return {"extra.ema": self._ema, "extra.steps": self._steps}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        ema = extra.get("extra.ema")
        self._ema = None if ema is None else ema.detach().clone()  # never share a live balancer's tensor
        self._steps = int(extra.get("extra.steps", 0))
