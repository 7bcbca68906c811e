"""The small interface every benchmark implements, so that one trainer runs them all."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class MetricSpec:
    """One evaluation metric of one task.

    ``task`` is the index of the task the metric belongs to (Δm% averages metrics within a task
    first). ``stl`` is a single-task-learning reference value for Δm%, when the literature has one.
    ``group`` overrides the Δm% grouping: metrics with the same group are averaged first (None:
    the metric's task). Seeds 000 / 004 average NYU-v2's 9 metrics with equal weights, which a
    benchmark expresses by giving every metric its own group.
    """

    name: str
    task: int
    higher_is_better: bool
    stl: float | None = None
    group: int | None = None


class MultiTaskModel(nn.Module):
    """A shared trunk and one head per task: ``forward(x) -> list of K head outputs``.

    ``trunk`` is the shared part; analysis computes task-gradient cosine similarity on its
    parameters. ``batched_task_gradients`` (default True) tells the O(K) gradient balancers
    (:mod:`balancers._task_grads`) whether to take the K per-task backward passes batched (vmap)
    or one by one; a benchmark whose backward batches slowly sets it False on its model.
    """

    batched_task_gradients: bool = True

    def __init__(self, trunk: nn.Module, heads: Iterable[nn.Module]) -> None:
        super().__init__()
        self.trunk = trunk
        self.heads = nn.ModuleList(heads)

    def forward(self, x: Any) -> list[Tensor]:
        z = self.trunk(x)
        return [head(z) for head in self.heads]


class Benchmark(ABC):
    """Data, model, per-task losses and metrics of one multi-task problem.

    A batch is whatever the loaders yield; the benchmark alone knows its structure
    (``inputs(batch)``, ``losses``, ``metric_sums``, ``batch_size``, ``to_device``).
    Metrics are accumulated as sums over samples and divided by the sample count at the end
    (``metric_values``; benchmarks with split-level metrics such as mIoU or F1 override it).
    """

    #: registry name, e.g. "qm9"
    name: str = ""
    #: the allowed variants; the first one is the default
    variants: tuple[str, ...] = ("default",)
    #: True when the metrics' ``stl`` values hold at every scale (e.g. exact single-task optima),
    #: not only at the full scale the literature measured them at
    reference_at_any_scale: bool = False

    def __init__(self, variant: str | None = None, **options: Any) -> None:
        variant = variant or self.variants[0]
        if variant not in self.variants:
            raise ValueError(f"unknown variant {variant!r} for benchmark {self.name!r}; valid: {', '.join(self.variants)}")
        self.variant = variant

    # ------------------------------------------------------------------ description
    @property
    @abstractmethod
    def task_names(self) -> list[str]:
        """The K task names, in loss order."""

    @property
    @abstractmethod
    def metrics(self) -> list[MetricSpec]:
        """All evaluation metrics, in the order ``metric_sums`` returns them."""

    @property
    def n_tasks(self) -> int:
        return len(self.task_names)

    # ------------------------------------------------------------------ data and model
    @abstractmethod
    def loaders(self, batch_size: int, seed: int) -> tuple[Iterable, Iterable, Iterable]:
        """(train, val, test) iterables of batches; train is shuffled with ``seed``."""

    @abstractmethod
    def build_model(self, **model_options: Any) -> MultiTaskModel:
        """A fresh model (initialised from the global torch seed, which the trainer sets)."""

    def to_device(self, batch: Any, device: torch.device) -> Any:
        """Move a batch to ``device`` (tuples/lists of tensors by default)."""
        if isinstance(batch, (tuple, list)):
            return type(batch)(b.to(device, non_blocking=True) for b in batch)
        return batch.to(device, non_blocking=True)

    def inputs(self, batch: Any) -> Any:
        """The model input of a batch (the first element by default)."""
        return batch[0]

    def batch_size(self, batch: Any) -> int:
        return int(batch[0].shape[0])

    # ------------------------------------------------------------------ objectives
    @abstractmethod
    def losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        """(K,) mean training loss of each task on the batch."""

    @abstractmethod
    def metric_sums(self, outputs: list[Tensor], batch: Any) -> Tensor:
        """(M,) per-metric sums over the batch's samples (divided by the count afterwards).

        Benchmarks whose metrics are not sample means return any fixed-length accumulator here
        (summed over a split's batches) and override :meth:`metric_values`.
        """

    def metric_values(self, sums: Tensor, count: int) -> Tensor:
        """(M,) metric values of a split from its summed ``metric_sums`` and its sample count.

        The default divides by the count. A benchmark whose metrics are ratios of split totals
        (mIoU from a confusion matrix accumulated over the split, F1 from true/false positives)
        accumulates those totals in ``metric_sums`` and turns them into values here.
        """
        return sums / max(count, 1)
