"""The O(K) references computed by TorchJD's weightings of the Gramian ``G Gᵀ``.

TorchJD (Rey, Quinton et al., ``torchjd`` on PyPI) splits each gradient-aggregation method into a
*weighting*: a map from the K × K Gramian of the task gradients to K weights. The project's
shared per-task gradient engine (:mod:`balancers._task_grads`) computes ``G`` from the trainer's
forward graph and ``gram(G)`` (float64); each balancer here only names TorchJD's weighting and
how its weights are scaled into this project's convention (uniform loss is the *mean*).

TorchJD is imported when such a balancer is built, not when :mod:`balancers` is imported:
``torchjd.aggregation`` imports cvxpy and qpsolvers, seconds of start-up that every other
command would pay.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from balancers._task_grads import GradientBalancer, gram

#: the version the weightings were checked against (tests/balancers/test_torchjd_methods.py)
TORCHJD_PIN = "torchjd[quadprog-projector,cagrad]==0.18.0"


def torchjd_weighting(class_name: str, **kwargs: Any) -> torch.nn.Module:
    """An instance of ``torchjd.aggregation.<class_name>``; a missing torchjd is one clear error."""
    try:
        from torchjd import aggregation  # noqa: PLC0415  (lazy, see the module docstring)
    except ImportError as err:  # pragma: no cover - torchjd is a core dependency
        raise ImportError(f"{class_name} needs TorchJD: pip install \"{TORCHJD_PIN}\" ({err})") from err
    return getattr(aggregation, class_name)(**kwargs)


class GramianWeightingBalancer(GradientBalancer):
    """A :class:`GradientBalancer` whose weights are ``weight_scale() × weighting(G Gᵀ / tr(G Gᵀ))``.

    Subclasses build ``self.weighting`` (a TorchJD weighting) in ``__init__`` and may override
    ``weight_scale``. The weights are computed in float64 on the Gramian's device.

    Every weighting used here is invariant to the scale of ``G`` (PCGrad's projections, CAGrad's
    problem, UPGrad's dual-cone projections and Aligned-MTL's whitening all are); dividing the
    Gramian by its trace first is exact for them and keeps TorchJD's *absolute* thresholds
    (``norm_eps = 1e-4`` on the trace in CAGrad and UPGrad) from zeroing or regularising the
    weights whenever the task gradients are small (``Σ_i ||g_i||² < 1e-4``).
    """

    weighting: torch.nn.Module

    def weight_scale(self) -> float:
        """Factor applied to TorchJD's weights (1: already on the project's mean scale)."""
        return 1.0

    def solve(self, grads: Tensor, losses: Tensor) -> Tensor:
        return self.weigh(gram(grads))

    def weigh(self, gramian: Tensor) -> Tensor:
        """The weights from a K × K Gramian (float64): TorchJD's on the trace-normalised one, scaled."""
        trace = gramian.diagonal().sum()
        unit = gramian / torch.where(trace > 0, trace, torch.ones_like(trace))  # no host sync
        return self.weighting(unit) * self.weight_scale()
