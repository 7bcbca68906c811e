"""IMTL-L: loss balancing with learnable per-task scales (Liu et al. 2021, the loss half of IMTL)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from balancers.base import Balancer, LossClosure
from balancers.registry import register


@register(
    "imtl_l",
    description="IMTL-L: learnable scales s_i, loss mean(exp(s_i) ℓ_i - s_i); e^{s_i} ℓ_i is driven to 1",
    paper="Liu et al. 2021, Towards Impartial Multi-task Learning (ICLR), Sec. 3.1 (IMTL-L)",
    has_parameters=True,
    stateful=True,
)
class IMTLL(Balancer):
    r"""``loss = (1/K) Σ_i (e^{s_i} ℓ_i − s_i)`` with learnable scales ``s_i`` (start at 0).

    The paper scales each raw loss by ``e^{s_i}`` and adds ``−s_i`` so that the scale cannot
    collapse: ``∂/∂s_i = e^{s_i} ℓ_i − 1`` vanishes when the scaled loss is 1, i.e. every scaled
    loss is driven to the same value. The ``s_i`` are trained jointly with the network by the
    *model's* optimizer (metadata ``has_parameters``: a trainer adds ``named_learnables()``),
    as in the paper and in LibMTL's and TorchJD's ``IMTLL``. Effective weights are
    ``e^{s_i} / K``: non-negative, not on the simplex.

    Choices: the paper, LibMTL and TorchJD *sum* over tasks; the ``1/K`` here keeps the project's
    convention that the starting point is uniform loss (the mean), as ``uw`` does. That scales
    every gradient (network and ``s``) by ``1/K``: the same fixed points; under Adam the same
    steps up to its ``eps``. With ``s ↦ −s`` this is exactly this project's ``uw``
    (``mean(e^{-s_i} ℓ_i + s_i)``), and since Adam's update is odd in the gradient the two give
    identical weight trajectories (pinned by a test). IMTL-G (the gradient half) is ``imtlg``.

    >>> b = IMTLL(n_tasks=2)
    >>> float(b(torch.tensor([1.0, 3.0])).detach())
    2.0
    >>> b.weights.tolist()
    [0.5, 0.5]
    """

    weights_sum_to_one = False

    def __init__(self, n_tasks: int) -> None:
        super().__init__(n_tasks)
        self.log_scales = torch.nn.Parameter(torch.zeros(n_tasks))

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        s = self.log_scales.to(losses.dtype)
        scale = torch.exp(s)
        self._record(scale / self.n_tasks)
        return (scale * losses - s).mean()

    def named_learnables(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        yield "log_scales", self.log_scales

    def reset(self) -> None:
        super().reset()
        with torch.no_grad():
            self.log_scales.zero_()
