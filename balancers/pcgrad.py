"""PCGrad: project each task gradient off the others it conflicts with (Yu et al. 2020), via TorchJD."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from balancers._torchjd import GramianWeightingBalancer, torchjd_weighting
from balancers.registry import register


@register(
    "pcgrad",
    description="PCGrad: each g_i projected off every g_j it conflicts with (random order), then averaged; "
                "TorchJD's PCGradWeighting on G G^T (O(K) backward passes)",
    paper="Yu et al. 2020, Gradient Surgery for Multi-Task Learning (NeurIPS), Alg. 1; "
          "TorchJD 0.18 PCGradWeighting",
    needs_model=True,
    needs_task_grads=True,
    stochastic=True,
    stateful=True,
)
class PCGrad(GramianWeightingBalancer):
    r"""PCGrad: for every task ``i``, ``g_i^PC`` starts at ``g_i`` and, over the other tasks ``j`` in
    a random order, ``g_i^PC ← g_i^PC − min(0, g_i^PC·g_j / ||g_j||²) g_j``; the update is
    ``(1/K) Σ_i g_i^PC`` on the shared parameters.

    Every ``g_i^PC`` is a combination of the task gradients, so the update is ``Σ_j w_j g_j`` with
    weights computed from the Gramian alone: TorchJD's ``PCGradWeighting`` (on ``gram(G)``, the
    shared engine's float64 Gramian). Its weights sum to ``K`` without conflicts; they are divided
    by ``K`` here (the project's mean convention: no conflicting pair gives uniform loss). The
    returned loss is ``Σ_j w_j ℓ_j``, so head ``j`` receives ``w_j`` times its gradient (the
    authors' heads receive their plain task gradient; as for ``mgda``/``imtlg``). Weights are
    non-negative, not on the simplex.

    Randomness is owned: TorchJD draws the orders from torch's global CPU generator, so each call
    runs inside ``torch.random.fork_rng`` with the balancer's own generator state swapped in
    (seeded by ``seed``) and taken back out; the global generator is left as it was.

    Choices: the authors' TensorFlow code shuffles once per step and also projects ``g_i^PC`` on
    ``g_i`` itself; TorchJD draws an order per task and skips ``j = i`` (a projection on ``g_i``
    only acts once ``g_i^PC`` conflicts with ``g_i``, which the others' projections rarely cause).

    On a Gramian (g1 = (1, 0), g2 = (-1, 1) conflict): g1 + g2/2 and g2 + g1, averaged:

    >>> PCGrad(n_tasks=2).weigh(torch.tensor([[1.0, -1.0], [-1.0, 2.0]], dtype=torch.float64)).tolist()
    [1.0, 0.75]
    """

    weights_sum_to_one = False

    def weight_scale(self) -> float:
        return 1.0 / self.n_tasks

    def __init__(self, n_tasks: int, seed: int = 0) -> None:
        super().__init__(n_tasks)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"pcgrad: seed must be a non-negative integer, got {seed=}")
        self.seed = seed
        self._gen = torch.Generator().manual_seed(seed)
        self.weighting = torchjd_weighting("PCGradWeighting")

    def hparams(self) -> dict[str, Any]:
        return {"seed": self.seed}

    def weigh(self, gramian: Tensor) -> Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._gen.get_state())
            w = super().weigh(gramian)
            self._gen.set_state(torch.get_rng_state())
        return w

    def reset(self) -> None:
        super().reset()
        self._gen.manual_seed(self.seed)

    def _extra_state(self) -> dict[str, Any]:
        return {"extra.generator": self._gen.get_state()}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        if "extra.generator" in extra:
            self._gen.set_state(extra["extra.generator"])
