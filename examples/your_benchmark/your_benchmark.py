"""Your own problem in balancebench: a benchmark and a balancer written outside the repository.

``ThreeTasks`` is a small multi-task problem on data it generates: three tasks on shared 8-D
inputs, a regression, a regression on a 10x larger scale and a binary classification, learnt by
one MLP trunk with a head per task. ``RelativeLoss`` is a small custom balancer. The package's
``pyproject.toml`` registers both as entry points, so once it is installed
(``pip install -e examples/your_benchmark``) they are ``three_tasks`` and ``relative_loss`` to
``balancebench list``, ``train``, ``study`` and ``check-balancer``; without installing, the dotted
paths ``your_benchmark:ThreeTasks`` / ``your_benchmark:RelativeLoss`` work the same from anywhere
this module is importable.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from balancers import Balancer, LossClosure, register
from experiments.benchmarks import Benchmark, MetricSpec, MultiTaskModel


class ThreeTasks(Benchmark):
    """Three tasks on generated 8-D inputs: two regressions of different scales and one classification.

    Inputs x ~ N(0, I_8); wave is the sine of a projection, bowl a quadratic form on a 10x larger
    scale, side which side of a hyperplane x lies on (binary). The losses differ in scale by about two orders of magnitude, which is what balancers are for.
    Options (``benchmark.options``): the split sizes, the label noise and the data seed.
    """

    name = "three_tasks"
    variants = ("default",)

    def __init__(self, variant: str | None = None, n_train: int = 2048, n_val: int = 512, n_test: int = 512,
                 noise: float = 0.1, data_seed: int = 0) -> None:
        super().__init__(variant)
        if min(n_train, n_val, n_test) < 1:
            raise ValueError(f"three_tasks: split sizes must be >= 1, got {n_train=}, {n_val=}, {n_test=}")
        if noise < 0:
            raise ValueError(f"three_tasks: noise must be >= 0, got {noise=}")
        gen = torch.Generator().manual_seed(data_seed)
        wave, side = torch.randn(8, generator=gen), torch.randn(8, generator=gen)
        bowl = torch.randn(8, 8, generator=gen) / 8**0.5

        def split(n: int) -> TensorDataset:
            x = torch.randn(n, 8, generator=gen)
            y = torch.stack([torch.sin(x @ wave), 10.0 * ((x @ bowl) ** 2).mean(dim=1), (x @ side > 0).float()], dim=1)
            y[:, :2] += noise * torch.randn(n, 2, generator=gen) * torch.tensor([1.0, 10.0])
            return TensorDataset(x, y)

        self.splits = {"train": split(n_train), "val": split(n_val), "test": split(n_test)}

    @property
    def task_names(self) -> list[str]:
        return ["wave", "bowl", "side"]

    @property
    def metrics(self) -> list[MetricSpec]:
        return [MetricSpec("wave_mse", 0, False), MetricSpec("bowl_mse", 1, False), MetricSpec("side_acc", 2, True)]

    def loaders(self, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader, DataLoader]:
        shuffle = torch.Generator().manual_seed(seed)
        train = DataLoader(self.splits["train"], batch_size=batch_size, shuffle=True, generator=shuffle, drop_last=True)
        return train, DataLoader(self.splits["val"], batch_size=512), DataLoader(self.splits["test"], batch_size=512)

    def build_model(self, hidden: int = 64, dropout: float = 0.0) -> MultiTaskModel:
        if hidden < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"three_tasks: need hidden >= 1 and 0 <= dropout < 1, got {hidden=}, {dropout=}")
        trunk = nn.Sequential(nn.Linear(8, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU())
        return MultiTaskModel(trunk, [nn.Linear(hidden, 1) for _ in range(3)])

    def losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        y = batch[1]
        wave, bowl, side = (o.squeeze(-1) for o in outputs)
        return torch.stack([nn.functional.mse_loss(wave, y[:, 0]), nn.functional.mse_loss(bowl, y[:, 1]),
                            nn.functional.binary_cross_entropy_with_logits(side, y[:, 2])])

    def metric_sums(self, outputs: list[Tensor], batch: Any) -> Tensor:
        y = batch[1]
        wave, bowl, side = (o.squeeze(-1).detach().float() for o in outputs)
        return torch.stack([((wave - y[:, 0]) ** 2).sum(), ((bowl - y[:, 1]) ** 2).sum(),
                            ((side > 0).float() == y[:, 2]).float().sum()])


@register(
    "relative_loss",
    description="Relative loss: weights ∝ (ℓ_i / ℓ_i at the first step)^alpha, normalised (an example plug-in)",
    paper="example for balancebench; the ratio is GradNorm's inverse training rate (Chen et al. 2018, Sec. 3.2)",
    stateful=True,
)
class RelativeLoss(Balancer):
    """``w_i ∝ (ℓ_i(t) / ℓ_i(0))^alpha``, normalised to sum to one; loss = Σ_i w_i ℓ_i with the
    weights detached (so ``weights`` is d loss / d ℓ_i). Tasks that have improved least, relative
    to where they started, get the most weight.

    Needs nothing from the trainer but the losses. The first losses are kept in a buffer (so the
    balancer is stateful, and ``state_dict`` resumes it) and set without a host sync.

    >>> b = RelativeLoss(2, alpha=1.0)
    >>> _ = b(torch.tensor([2.0, 4.0])); b.weights.tolist()
    [0.5, 0.5]
    >>> _ = b(torch.tensor([1.0, 4.0])); [round(w, 3) for w in b.weights.tolist()]
    [0.333, 0.667]
    """

    def __init__(self, n_tasks: int, alpha: float = 1.0) -> None:
        super().__init__(n_tasks)
        if not alpha >= 0:
            raise ValueError(f"relative_loss: alpha must be >= 0, got {alpha=}")
        self.alpha = float(alpha)
        self.register_buffer("first", torch.ones(n_tasks))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        current = losses.detach()
        first = torch.where(self.started, self.first.to(current.dtype), current)  # no host sync
        self.first.copy_(first)
        self.started.fill_(True)
        ratio = (current / first.clamp_min(torch.finfo(current.dtype).tiny)) ** self.alpha
        weights = ratio / ratio.sum()
        self._record(weights)
        return (weights * losses).sum()

    def reset(self) -> None:
        super().reset()
        self.first.fill_(1.0)
        self.started.fill_(False)

    def hparams(self) -> dict[str, Any]:
        return {"alpha": self.alpha}
