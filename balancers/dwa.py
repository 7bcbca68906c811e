"""Dynamic weight average: weights from the rate of change of epoch-mean losses."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from balancers.base import Balancer, LossClosure
from balancers.registry import register


@register(
    "dwa",
    description="Dynamic weight average: softmax of last two epochs' loss ratios / T (T=2)",
    paper="Liu, Johns & Davison 2019, End-to-End Multi-Task Learning with Attention (MTAN), Eq. 7",
    needs_epoch_end=True,
    stateful=True,
)
class DynamicWeightAverage(Balancer):
    """``w_i(t) = softmax_i(r(t-1) / T)`` with ``r_i(t-1) = L_i(t-1) / L_i(t-2)``.

    ``L_i(e)`` is the mean training loss of task i over epoch ``e``, accumulated on the device from
    the losses passed to ``__call__`` and closed by ``epoch_end()`` (metadata ``needs_epoch_end``).
    Weights are uniform until two epochs have ended. MTAN multiplies by K so the weights sum to K;
    here they sum to one, so that uniform loss is the mean (the project's convention) — the same
    direction, scaled by 1/K.
    """

    def __init__(self, n_tasks: int, temperature: float = 2.0) -> None:
        super().__init__(n_tasks)
        if not temperature > 0:
            raise ValueError(f"dwa: temperature must be > 0, got {temperature=}")
        self.temperature = float(temperature)
        self.register_buffer("_epoch_sum", torch.zeros(n_tasks))
        self.register_buffer("_epoch_count", torch.zeros(()))
        self.register_buffer("_history", torch.zeros(2, n_tasks))  # [L(t-2), L(t-1)]
        self.register_buffer("_epochs_seen", torch.zeros((), dtype=torch.long))
        self.register_buffer("_current", torch.full((n_tasks,), 1.0 / n_tasks))

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        self._epoch_sum += losses.detach().to(self._epoch_sum.dtype)
        self._epoch_count += 1
        self._record(self._current)
        return (self._current.to(losses.dtype) * losses).sum()

    def epoch_end(self) -> None:
        if self._epoch_count == 0:  # once an epoch: the sync is negligible
            return
        mean = self._epoch_sum / self._epoch_count
        self._history = torch.stack([self._history[1], mean])
        self._epochs_seen += 1
        self._epoch_sum.zero_()
        self._epoch_count.zero_()
        if self._epochs_seen >= 2:
            ratio = self._history[1] / self._history[0].clamp_min(torch.finfo(mean.dtype).tiny)
            self._current = torch.softmax(ratio / self.temperature, dim=0)

    def reset(self) -> None:
        super().reset()
        for name in ("_epoch_sum", "_epoch_count", "_history", "_epochs_seen"):
            getattr(self, name).zero_()
        self._current.fill_(1.0 / self.n_tasks)

    def hparams(self) -> dict[str, Any]:
        return {"temperature": self.temperature}
