"""CelebA, 40 binary attributes as 40 tasks (seed 000 Table 3), from the user's copy of the aligned release.

Data: :mod:`experiments.benchmarks.celeba_data` (official train / val / test partition, 64 × 64
inputs). ``n_train`` / ``n_val`` / ``n_test`` keep the first ``n`` images of a split (reduced scales).

Model (FAMO's ``experiments/celeba/models.py``, written anew): a plain convolutional encoder — not a
ResNet: Conv3×3(3→64) BN ReLU, MaxPool; [Conv3×3 BN ReLU]×2 at 128, MaxPool; ×2 at 256, MaxPool;
×2 at 512; global average pool; [Linear(512→512, no bias) BN1d ReLU]×2 — all convolutions without
bias. Heads: 40 × Linear(512→1). ``channels`` / ``hidden`` shrink it for tiny runs only.

Loss: binary cross-entropy per attribute. The reference applies ``BCELoss`` to sigmoid outputs;
here the heads output logits and the loss is ``binary_cross_entropy_with_logits`` — the same
function, without the reference's log clamp at -100 for saturated sigmoids (and usable under bf16
autocast, which refuses ``BCELoss``). A prediction is positive when sigmoid > 0.5 (logit > 0).

Metrics (variant):

* ``f1`` (default; FAMO's ``CelebaMetrics``, what its CelebA Δm% and model selection use): per
  attribute ``F1 = 2PR / (P + R + 1e-8)`` with ``P = TP / (TP + FP + 1e-8)``, ``R = TP / (TP + FN +
  1e-8)``, TP / FP / FN counted over the whole split;
* ``error``: per-attribute classification error rate (fraction of misclassified images).

No literature STL values exist per attribute (seed 000 reports only MR and Δm% for CelebA), so Δm%
uses a measured STL reference (``balancebench stl``) or the untrained model.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader

from experiments.benchmarks.base import Benchmark, MetricSpec, MultiTaskModel
from experiments.benchmarks.celeba_data import ATTRIBUTES, LAYOUT, SPLIT_CODES, CelebASplit, read_index
from experiments.benchmarks.localdata import OneLineErrors, resolve_root

REFERENCE_CHANNELS = (64, 128, 256, 512)
EPS = 1e-8  # the reference's F1 epsilons


def celeba_trunk(channels: Sequence[int] = REFERENCE_CHANNELS, hidden: int = 512) -> nn.Sequential:
    """FAMO's shared CelebA encoder: (B,3,S,S) → (B, hidden)."""
    c = [int(v) for v in channels]
    if len(c) != 4 or min(c) < 1 or int(hidden) < 1:
        raise ValueError(f"channels must be 4 positive numbers and hidden positive, got {list(channels)}, {hidden}")

    def conv(a: int, b: int) -> list[nn.Module]:
        return [nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]

    layers: list[nn.Module] = [*conv(3, c[0]), nn.MaxPool2d(2)]
    for i in range(1, 4):
        layers += [*conv(c[i - 1], c[i]), *conv(c[i], c[i])]
        layers.append(nn.MaxPool2d(2) if i < 3 else nn.AdaptiveAvgPool2d(1))
    layers += [nn.Flatten(), nn.Linear(c[3], hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
               nn.Linear(hidden, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class CelebABenchmark(Benchmark):
    """CelebA: 40 binary attributes (aligned release, user's copy); per-attribute F1 or error."""

    name = "celeba"
    variants = ("f1", "error")

    def __init__(self, variant: str | None = None, *, root: str | None = None, image_size: int = 64,
                 n_train: int | None = None, n_val: int | None = None, n_test: int | None = None,
                 num_workers: int = 0, **options: Any) -> None:
        super().__init__(variant)
        if options:
            raise TypeError(f"unknown options for benchmark 'celeba': {', '.join(sorted(options))}")
        self.image_size, self.num_workers = int(image_size), int(num_workers)
        if self.image_size < 8:
            raise ValueError(f"image_size must be >= 8 (three 2x2 poolings), got {image_size}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.root = resolve_root(self.name, root, LAYOUT)
        index = read_index(self.root)
        limits = {"train": n_train, "val": n_val, "test": n_test}
        self.splits: dict[str, CelebASplit] = {}
        for split, code in SPLIT_CODES.items():
            rows = np.flatnonzero(index.partition == code)
            if len(rows) == 0:
                raise ValueError(f"celeba: {self.root / 'Eval'} lists no {split} images (code {code})")
            limit = limits[split]
            if limit is not None:
                if not 1 <= int(limit) <= len(rows):
                    raise ValueError(f"n_{split} must be in [1, {len(rows)}], got {limit}")
                rows = rows[: int(limit)]
            self.splits[split] = CelebASplit(self.root, index, rows, self.image_size)

    # ------------------------------------------------------------------ description
    @property
    def task_names(self) -> list[str]:
        return list(ATTRIBUTES)

    @property
    def metrics(self) -> list[MetricSpec]:
        if self.variant == "f1":
            return [MetricSpec(f"{a}_f1", k, higher_is_better=True) for k, a in enumerate(ATTRIBUTES)]
        return [MetricSpec(f"{a}_err", k, higher_is_better=False) for k, a in enumerate(ATTRIBUTES)]

    # ------------------------------------------------------------------ data and model
    def loaders(self, batch_size: int, seed: int) -> tuple[Iterable, Iterable, Iterable]:
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        pin = torch.cuda.is_available()
        train = self.splits["train"]
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(int(seed))).tolist()
        out = [DataLoader(train, batch_size=batch_size, sampler=order, num_workers=self.num_workers, pin_memory=pin)]
        for split in ("val", "test"):
            out.append(DataLoader(self.splits[split], batch_size=batch_size, shuffle=False,
                                  num_workers=self.num_workers, pin_memory=pin))
        return OneLineErrors(out[0]), OneLineErrors(out[1]), OneLineErrors(out[2])

    def build_model(self, channels: list[int] | None = None, hidden: int = 512) -> MultiTaskModel:
        """FAMO's CelebA network (``channels`` default (64, 128, 256, 512), ``hidden`` 512) with 40 heads."""
        trunk = celeba_trunk(REFERENCE_CHANNELS if channels is None else channels, hidden)
        return MultiTaskModel(trunk, [nn.Linear(int(hidden), 1) for _ in ATTRIBUTES])

    # ------------------------------------------------------------------ objectives
    @staticmethod
    def _logits(outputs: list[Tensor]) -> Tensor:
        return torch.cat(outputs, dim=1).float()  # (B, 40)

    def losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        per_element = F.binary_cross_entropy_with_logits(self._logits(outputs), batch[1], reduction="none")
        return per_element.mean(dim=0)

    @torch.no_grad()
    def metric_sums(self, outputs: list[Tensor], batch: Any) -> Tensor:
        """``f1``: (3·40,) TP, FP, FN counts; ``error``: (40,) misclassified counts."""
        pred = (self._logits(outputs) > 0).float()
        y = batch[1]
        if self.variant == "error":
            return (pred != y).float().sum(dim=0)
        return torch.cat([(pred * y).sum(0), (pred * (1 - y)).sum(0), ((1 - pred) * y).sum(0)])

    def metric_values(self, sums: Tensor, count: int) -> Tensor:
        if self.variant == "error":
            return sums / max(count, 1)
        return f1_scores(*sums.reshape(3, len(ATTRIBUTES)))


def f1_scores(tp: Tensor, fp: Tensor, fn: Tensor) -> Tensor:
    """Per-attribute F1 from split totals, with the reference's 1e-8 epsilons."""
    precision = tp / (tp + fp + EPS)
    recall = tp / (tp + fn + EPS)
    return 2 * precision * recall / (precision + recall + EPS)
