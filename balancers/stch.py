"""STCH: smooth Tchebycheff scalarisation of the (log, nadir-normalised) losses (Lin et al. 2024)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from balancers.base import Balancer, LossClosure
from balancers.registry import register


@register(
    "stch",
    description="Smooth Tchebycheff: μ log Σ_i exp(log(ℓ_i / n_i) / μ) after a log-loss warm-up that fixes the "
                "normaliser n (epoch-end hook)",
    paper="Lin et al. 2024, Smooth Tchebycheff Scalarization for Multi-Objective Optimization (ICML), Eq. 9; "
          "the multi-task recipe of the authors' code (Xi-L/STCH, STCH_MTL/LibMTL/weighting/STCH.py)",
    needs_epoch_end=True,
    stateful=True,
)
class SmoothTchebycheff(Balancer):
    r"""Smooth Tchebycheff scalarisation, as the authors run it for multi-task learning.

    The paper's scalarisation (Eq. 9) of objectives ``f_i`` with preferences ``λ`` and ideal point
    ``z*`` is ``μ log Σ_i exp(λ_i (f_i − z*_i) / μ)``, a smooth upper bound of the Tchebycheff
    ``max_i λ_i (f_i − z*_i)`` that tightens as ``μ → 0``. For deep multi-task learning the
    authors' code (commit 73898cc) takes ``f_i = log ℓ_i``, ``z*_i = log n_i`` (the normaliser,
    named ``nadir_vector`` there) and ``λ_i = 1``, after a warm-up:

    * epochs ``0 … warmup_epochs − 1``: ``loss = (1/K) Σ_i log ℓ_i`` (this project's ``si``);
    * epoch ``warmup_epochs``: the same loss, and ``n`` accumulates the mean of the losses seen;
    * afterwards: ``loss = μ log Σ_i exp(log(ℓ_i / n_i) / μ) = μ log Σ_i (ℓ_i / n_i)^{1/μ}``.

    Effective weights ``∂ loss / ∂ ℓ_i``: ``1 / (K ℓ_i)`` in the warm-up, then ``p_i / ℓ_i``
    with ``p = softmax(log(ℓ / n) / μ)``: the task furthest above its normaliser dominates as
    ``μ → 0``; equal normalised losses give ``p_i = 1/K``, the warm-up's weights, so the switch is
    continuous. Non-negative, not on the simplex. Losses must be positive. Needs ``epoch_end()``
    after each epoch (metadata ``needs_epoch_end``).

    Choices where the code is specific: the authors multiply every phase by ``K`` (sum of logs;
    ``K μ log Σ``); dropped here so that the warm-up is exactly ``si`` (a constant factor: same
    weights up to ``K``, the same steps under Adam up to its ``eps``). They add ``1e-20`` inside each
    ``log`` and subtract the (detached) largest term before ``exp``; ``torch.logsumexp`` is the
    stable form of the same value and gradient, and non-positive losses are rejected instead.
    Defaults are the code's (``mu=1``, ``warmup_epochs=4``). TorchJD's ``STCH`` scalarizer is the
    bare Eq. 9 without the warm-up and normaliser.

    >>> b = SmoothTchebycheff(n_tasks=2, warmup_epochs=0)
    >>> _ = b(torch.tensor([2.0, 4.0])); b.epoch_end()    # epoch 0 collects n = (2, 4)
    >>> round(float(b(torch.tensor([1.0, 4.0]))), 4)         # log(1/2 + 4/4) with mu = 1
    0.4055
    """

    weights_sum_to_one = False

    def __init__(self, n_tasks: int, mu: float = 1.0, warmup_epochs: int = 4) -> None:
        super().__init__(n_tasks)
        if not (isinstance(mu, (int, float)) and not isinstance(mu, bool) and 0 < mu < float("inf")):
            raise ValueError(f"stch: mu must be > 0, got {mu=}")
        if isinstance(warmup_epochs, bool) or not isinstance(warmup_epochs, int) or warmup_epochs < 0:
            raise ValueError(f"stch: warmup_epochs must be an integer >= 0, got {warmup_epochs=}")
        self.mu, self.warmup_epochs = float(mu), warmup_epochs
        # buffers, so that state_dict / load_state_dict / .to(device) carry them
        self.register_buffer("_loss_sum", torch.zeros(n_tasks, dtype=torch.float64))
        self.register_buffer("_loss_count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("_epoch", torch.zeros((), dtype=torch.int64))
        self._epoch_host = 0  # host copy of _epoch: the phase test must not sync with the device

    def hparams(self) -> dict[str, Any]:
        return {"mu": self.mu, "warmup_epochs": self.warmup_epochs}

    def _check_range(self, losses: Tensor) -> None:
        if bool((losses <= 0).any()):
            raise ValueError(f"stch: losses must be > 0 (log of the loss), got {losses.tolist()}")

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        if self._epoch_host <= self.warmup_epochs:
            if self._epoch_host == self.warmup_epochs:
                self._loss_sum += losses.detach().to(self._loss_sum.dtype)
                self._loss_count += 1
            self._record(1.0 / (self.n_tasks * losses.detach()))
            return losses.log().mean()
        # normaliser: the mean loss of epoch ``warmup_epochs`` (recomputed from the buffers, a K-sized
        # division, so that loading a state needs no bookkeeping); 1 if that epoch saw no step
        nadir = torch.where(self._loss_count > 0, self._loss_sum / self._loss_count.clamp_min(1),
                            torch.ones_like(self._loss_sum)).to(losses.dtype)
        scaled = (losses / nadir).log() / self.mu
        self._record(torch.softmax(scaled.detach(), dim=0) / losses.detach())
        return self.mu * torch.logsumexp(scaled, dim=0)

    def epoch_end(self) -> None:
        self._epoch += 1
        self._epoch_host += 1

    def reset(self) -> None:
        super().reset()
        self._loss_sum.zero_()
        self._loss_count.zero_()
        self._epoch.zero_()
        self._epoch_host = 0

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._epoch_host = int(self._epoch)  # once per load, not per step
