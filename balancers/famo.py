"""FAMO: Fast Adaptive Multitask Optimization (Liu et al., NeurIPS 2023)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from balancers._functional_optim import adam_step_
from balancers.base import Balancer, LossClosure
from balancers.registry import register

_EPS = 1e-8
_UPDATES = ("same_batch", "lagged")


@register(
    "famo",
    description="FAMO: softmax task logits moved by the change in log losses (O(1) per step)",
    paper="Liu et al. 2023, FAMO: Fast Adaptive Multitask Optimization, Alg. 1 / App. C Alg. 2",
    needs_closure=True,
    stateful=True,
)
class FAMO(Balancer):
    """FAMO, exactly Algorithm 1 and its pseudocode (Appendix C, Algorithm 2).

    With logits ``ξ`` (start at 0), ``z = softmax(ξ)`` and ``D_i = ℓ_i − ℓ*_i + ε`` (``ε = 1e-8``,
    ``ℓ*`` = ``min_losses``, default 0)::

        loss = Σ_i z_i log D_i / c,   c = Σ_i z_i / D_i  (detached)
        ⇒ weights w_i = d loss / d ℓ_i = (z_i / D_i) / c,  Σ_i w_i = 1

    After the model step, with ``δ_i = log D_i(θ_t) − log D_i(θ_{t+1})``, the logits take one Adam
    step (``lr = w_lr``, ``weight_decay = gamma``: coupled L2, as ``torch.optim.Adam`` applies it in the
    pseudocode) on the gradient ``J_softmax(ξ)ᵀ δ``.

    ``update="same_batch"`` (the paper's): ``ℓ(θ_{t+1})`` is measured on the *same* batch by
    ``step(closure)`` — one extra forward without autograd per step (metadata ``needs_closure``).
    ``update="lagged"``: ``ℓ(θ_{t+1})`` is the next call's losses (the next batch), so the logit update
    happens at the start of the next call and there is no extra forward; ``step`` does nothing.

    Losses below ``min_losses`` make ``log D`` undefined: FAMO then raises ValueError (when
    ``check_values`` is on; the trainer reports the resulting non-finite loss otherwise). The bounds
    are kept in float64 whatever the module's dtype (a float64 buffer that ``.to()``/``.float()``
    leave in float64) and rounded once, from those exact values, to the losses' dtype, where both
    ``D`` and the check use them: a float64 loss 0.30000000592 passes the bound 0.3, and a float32
    loss passes exactly when it is not below the float32 rounding of the bound (the value that
    ``D`` subtracts), as in the official class given bounds in the losses' dtype.
    """

    def __init__(
        self,
        n_tasks: int,
        gamma: float = 1e-3,
        w_lr: float = 0.025,
        min_losses: float | Sequence[float] = 0.0,
        update: str = "same_batch",
    ) -> None:
        super().__init__(n_tasks)
        if not gamma >= 0:
            raise ValueError(f"famo: gamma must be >= 0, got {gamma=}")
        if not w_lr > 0:
            raise ValueError(f"famo: w_lr must be > 0, got {w_lr=}")
        if update not in _UPDATES:
            raise ValueError(f"famo: update must be one of {_UPDATES}, got {update=}")
        mins = torch.as_tensor(min_losses, dtype=torch.float64).flatten()
        if mins.numel() == 1:
            mins = mins.expand(n_tasks).clone()
        if mins.numel() != n_tasks or not torch.isfinite(mins).all():
            raise ValueError(f"famo: min_losses must be a finite number or {n_tasks} numbers, got {min_losses=}")
        self.gamma, self.w_lr, self.update = float(gamma), float(w_lr), update
        self._min_losses_arg = min_losses
        self.register_buffer("min_losses", mins)
        self.logits = torch.nn.Parameter(torch.zeros(n_tasks))
        self.register_buffer("_prev_losses", torch.zeros(n_tasks))
        self._has_prev = False  # a Python flag: reading a device flag would sync every step
        self._bounds_cache: tuple[tuple[Any, ...], Tensor] | None = None
        self._opt = self._new_optimizer()
        self._forget()

    def _new_optimizer(self) -> torch.optim.Adam:
        return torch.optim.Adam([self.logits], lr=self.w_lr, weight_decay=self.gamma)

    @property
    def uses_closure(self) -> bool:
        return self.update == "same_batch"

    # --------------------------------------------------------------------------------- method
    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        shifted = self._shifted(losses)
        log_shifted = shifted.log()
        if self.update == "lagged" and self._has_prev:  # log D(θ_{t+1}) is this call's, reused
            self._update_logits(self._prev_losses, log_shifted.detach())
        z_logits = torch.softmax(self.logits.detach(), dim=-1)
        z = z_logits.to(losses.dtype)
        ratio = z / shifted.detach()
        c = ratio.sum()
        self._record(ratio / c)
        self._prev_losses.copy_(losses.detach())
        self._has_prev = True
        # kept for the next logit update, which would recompute exactly these values: softmax(ξ)
        # (ξ does not change until then) and log D(ℓ_t) = log(_prev_losses - ℓ* + ε) (only when
        # _prev_losses holds ℓ_t exactly, i.e. has the losses' dtype); see _forget for when they go
        self._z_cache = z_logits
        exact = log_shifted.dtype == self._prev_losses.dtype and log_shifted.device == self._prev_losses.device
        self._prev_log_cache = log_shifted.detach() if exact else None
        return (log_shifted * z).sum() / c

    def step(self, closure: LossClosure | None = None) -> None:
        if self.update != "same_batch":
            return
        if closure is None:
            raise ValueError("famo: update='same_batch' needs step(closure) with the new losses on the same batch")
        with torch.no_grad():
            new_losses = closure()
        self._update_logits(self._prev_losses, self._shifted(new_losses.detach()).log())

    def _bounds(self, dtype: torch.dtype) -> Tensor:
        """``min_losses`` rounded once to ``dtype``; cached (keyed on the buffer's identity and
        version, so that ``load_state_dict`` and ``.to()`` invalidate it), as it is used every step."""
        key = (dtype, id(self.min_losses), self.min_losses._version, self.min_losses.device)
        if self._bounds_cache is None or self._bounds_cache[0] != key:
            self._bounds_cache = (key, self.min_losses.to(dtype))
        return self._bounds_cache[1]

    def _check_range(self, losses: Tensor) -> None:
        mins = self._bounds(losses.dtype)
        if bool((losses < mins).any()):
            raise ValueError(
                f"famo: losses {losses.tolist()} fall below min_losses {mins.tolist()}; FAMO takes "
                "log(loss - min_loss), so set min_losses to a lower bound of each task loss"
            )

    def _shifted(self, losses: Tensor) -> Tensor:
        if self.check_values:
            self._check_range(losses.detach())
        return losses - self._bounds(losses.dtype) + _EPS

    def _update_logits(self, prev: Tensor, new_log: Tensor) -> None:
        """One Adam step of the logits; ``new_log`` = log D(θ_{t+1}) (detached), ``prev`` = ℓ(θ_t)."""
        prev_log = self._prev_log_cache if self._prev_log_cache is not None else self._shifted(prev).log()
        delta = prev_log - new_log
        # J_softmax(ξ)ᵀ δ with the very kernel autograd's softmax backward runs (same values as
        # autograd.grad of softmax), then the Adam step; both without autograd's and
        # Optimizer.step's per-call Python overhead, which exceeds this K-sized arithmetic
        z = self._z_cache if self._z_cache is not None else torch.softmax(self.logits.detach(), dim=-1)
        grad = torch._softmax_backward_data(delta.to(z.dtype), z, -1, z.dtype)
        adam_step_(self._opt, [self.logits], [grad])
        self._forget()

    def _forget(self) -> None:
        """Drop the values kept from the last call (after a logit update, reset, load, ``.to()``)."""
        self._z_cache: Tensor | None = None
        self._prev_log_cache: Tensor | None = None

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "FAMO":  # .to(), .double(), .cuda(), ...
        self._forget()
        exact = self.min_losses
        out = super()._apply(fn, *args, **kwargs)
        # the device follows the module, the dtype stays float64 (see the class docstring)
        self.min_losses = exact.to(device=self.min_losses.device)
        self._bounds_cache = None
        return out

    # ------------------------------------------------------------------------------ lifecycle
    def reset(self) -> None:
        super().reset()
        with torch.no_grad():
            self.logits.zero_()
        self._prev_losses.zero_()
        self._has_prev = False
        self._opt = self._new_optimizer()
        self._forget()

    def hparams(self) -> dict[str, Any]:
        return {"gamma": self.gamma, "w_lr": self.w_lr, "min_losses": self._min_losses_arg, "update": self.update}

    def _extra_state(self) -> dict[str, Any]:
        return {"extra.optimizer": self._opt.state_dict(), "extra.has_prev": self._has_prev}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        if "extra.optimizer" in extra:
            # torch's Optimizer.load_state_dict keeps the given state tensors (no copy): without the
            # deepcopy, a balancer loaded from a live one's state_dict would share its Adam moments
            self._opt.load_state_dict(copy.deepcopy(extra["extra.optimizer"]))
        self._has_prev = bool(extra.get("extra.has_prev", self._has_prev))
        self._forget()
