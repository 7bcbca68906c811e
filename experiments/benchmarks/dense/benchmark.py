"""The dense-prediction benchmark shared by NYU-v2 and CityScapes: MTAN data, SegNet, reference losses and metrics.

Splits. The MTAN release has a ``train`` and a ``val`` folder, and the reference codes train on all
of ``train`` and report on ``val`` with no validation split (the papers average the *test* metrics
of the last 10 epochs). Here ``val/`` is the **test** split. ``val_size=n`` holds out ``n`` training
images (drawn with ``split_seed``, never augmented) as the validation split used for model
selection, early stopping and tuning; ``val_size=0`` (the reference recipe, the ``full`` scale)
has no held-out images and evaluates the validation objective on the test split itself — fine for
reproducing the papers' tables, not for tuning. ``n_train`` keeps the first ``n`` of the remaining
training images (in ``split_seed`` order), ``n_test`` the first ``n`` test images (reduced scales).

A batch is ``(image (B,3,H,W) float32, label (B,H,W) int64[, depth (B,1,H,W)][, normal (B,3,H,W)])``
in the order of the benchmark's fields. Metric accumulation: see :mod:`.metrics` (confusion matrix
over the split; depth and normal errors averaged over batches, as the reference does).

Δm%. Seeds 000 and 004 (and the FAMO / Nash-MTL code's ``delta_fn``) average the relative changes of
all metrics with equal weight — on NYU-v2 the five normal metrics weigh 5/9. balancebench's default
(seed 003 Eq. 1) averages within a task first. ``delta_m="metrics"`` (the default here) gives every
metric its own Δm% group, so the papers' numbers come out (FAMO's NYU-v2 row of seed 000 Table 1:
−4.10 this way, −6.79 averaged per task); ``delta_m="tasks"`` gives seed 003's. On CityScapes (two
metrics per task) both are the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from experiments.benchmarks.base import Benchmark, MetricSpec, MultiTaskModel
from experiments.benchmarks.dense import metrics as M
from experiments.benchmarks.dense.data import SPLIT_DIRS, Field, MTANSplit, layout_text, scan_split
from experiments.benchmarks.dense.segnet import REFERENCE_FILTERS, build_segnet
from experiments.benchmarks.localdata import OneLineErrors, malformed, resolve_root

#: task name of each field kind, and its metrics (name suffix, higher is better)
TASK_OF_KIND = {"label": "segmentation", "depth": "depth", "normal": "normal"}
METRICS_OF_KIND: dict[str, tuple[tuple[str, bool], ...]] = {
    "label": (("miou", True), ("pix_acc", True)),
    "depth": (("abs_err", False), ("rel_err", False)),
    "normal": (("angle_mean", False), ("angle_median", False), ("within_11_25", True), ("within_22_5", True),
               ("within_30", True)),
}
_PREFIX = {"label": "seg", "depth": "depth", "normal": "normal"}


class MTANDenseBenchmark(Benchmark):
    """Base of :class:`NYUv2Benchmark` and :class:`CityscapesBenchmark` (subclasses set the fields)."""

    #: per variant: the layout's folders, image first
    FIELDS: dict[str, tuple[Field, ...]] = {}
    #: per variant: number of segmentation classes
    N_CLASSES: dict[str, int] = {}
    #: per variant: literature STL value of each metric (absent: no literature reference)
    STL: dict[str, dict[str, float]] = {}

    def __init__(self, variant: str | None = None, *, root: str | None = None, val_size: int = 0,
                 n_train: int | None = None, n_test: int | None = None, augment: bool = True,
                 resize: list[int] | None = None, split_seed: int = 0, num_workers: int = 0,
                 delta_m: str = "metrics", **options: Any) -> None:
        super().__init__(variant)
        if options:
            raise TypeError(f"unknown options for benchmark {self.name!r}: {', '.join(sorted(options))}")
        if delta_m not in ("metrics", "tasks"):
            raise ValueError(f"delta_m must be 'metrics' or 'tasks', got {delta_m!r}")
        #: Δm% averaging: "metrics" (equal weight per metric: seeds 000 / 004 and the FAMO / Nash-MTL
        #: code's delta_fn) or "tasks" (metrics averaged within a task first: seed 003 Eq. 1)
        self.delta_m = delta_m
        self.fields = self.FIELDS[self.variant]
        self.n_classes = self.N_CLASSES[self.variant]
        self.augment, self.num_workers = bool(augment), int(num_workers)
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.resize = _check_resize(resize)
        layout = layout_text(self.fields)
        self.root = resolve_root(self.name, root, layout)
        sizes = {}
        for split in SPLIT_DIRS:
            sizes[split], hw = scan_split(self.name, self.root, split, self.fields)
            if split == "train":
                self.hw = hw
            elif hw != self.hw:
                raise malformed(self.name, self.root / split / self.fields[0].folder / "0.npy",
                                f"image size {hw} differs from the training images' {self.hw}", layout)
        size = self.resize or self.hw
        if size[0] % 32 or size[1] % 32:
            raise ValueError(f"{self.name}: images are {size[0]}x{size[1]}; the SegNet needs multiples of 32 "
                             f"(set benchmark.options.resize=[h, w])")
        self.splits = {s: MTANSplit(self.name, self.root, s, self.fields, self.hw, self.n_classes, self.resize)
                       for s in SPLIT_DIRS}
        self._make_indices(sizes, int(val_size), n_train, n_test, int(split_seed))

    def _make_indices(self, sizes: dict[str, int], val_size: int, n_train: int | None, n_test: int | None,
                      split_seed: int) -> None:
        if not 0 <= val_size < sizes["train"]:
            raise ValueError(f"val_size must be in [0, {sizes['train'] - 1}] (training images: {sizes['train']}), "
                             f"got {val_size}")
        order = torch.randperm(sizes["train"], generator=torch.Generator().manual_seed(split_seed))
        rest = order[val_size:]
        if n_train is not None:
            if not 1 <= int(n_train) <= len(rest):
                raise ValueError(f"n_train must be in [1, {len(rest)}], got {n_train}")
            rest = rest[: int(n_train)]
        n_test = sizes["val"] if n_test is None else int(n_test)
        if not 1 <= n_test <= sizes["val"]:
            raise ValueError(f"n_test must be in [1, {sizes['val']}], got {n_test}")
        #: training-folder indices of the training and validation splits; test-folder indices of the test split
        self.indices = {"train": rest.sort().values, "val": order[:val_size].sort().values,
                        "test": torch.arange(n_test)}

    # ------------------------------------------------------------------ description
    @property
    def kinds(self) -> list[str]:
        return [f.kind for f in self.fields[1:]]

    @property
    def task_names(self) -> list[str]:
        return [TASK_OF_KIND[k] for k in self.kinds]

    @property
    def metrics(self) -> list[MetricSpec]:
        stl = self.STL.get(self.variant, {})
        specs = []
        for t, kind in enumerate(self.kinds):
            for suffix, higher in METRICS_OF_KIND[kind]:
                name = f"{_PREFIX[kind]}_{suffix}"
                group = len(specs) if self.delta_m == "metrics" else None
                specs.append(MetricSpec(name, t, higher_is_better=higher, stl=stl.get(name), group=group))
        return specs

    # ------------------------------------------------------------------ data and model
    def _loader(self, split: str, keys: list[tuple[int, int]], batch_size: int) -> OneLineErrors:
        return OneLineErrors(DataLoader(self.splits[split], batch_size=batch_size, sampler=keys,
                                        num_workers=self.num_workers, pin_memory=torch.cuda.is_available()))

    def loaders(self, batch_size: int, seed: int) -> tuple[Iterable, Iterable, Iterable]:
        batch_size = int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        gen = torch.Generator().manual_seed(int(seed))
        train = self.indices["train"]
        order = train[torch.randperm(len(train), generator=gen)].tolist()
        if self.augment:
            seeds = torch.randint(0, 2**62, (len(order),), generator=gen).tolist()
        else:
            seeds = [-1] * len(order)
        train_loader = self._loader("train", list(zip(order, seeds)), batch_size)
        test_loader = self._loader("val", [(i, -1) for i in self.indices["test"].tolist()], batch_size)
        if len(self.indices["val"]):
            val_loader = self._loader("train", [(i, -1) for i in self.indices["val"].tolist()], batch_size)
        else:  # the reference recipe: no held-out images (see the module docstring)
            val_loader = test_loader
        return train_loader, val_loader, test_loader

    def build_model(self, arch: str = "mtan", filters: list[int] | None = None) -> MultiTaskModel:
        """The MTAN (default, the reference codes' default) or split SegNet; ``filters`` default (64,128,256,512,512)."""
        outputs = {"label": (self.n_classes, False), "depth": (1, False), "normal": (3, True)}
        return build_segnet([outputs[k] for k in self.kinds], arch=arch,
                            filters=REFERENCE_FILTERS if filters is None else filters)

    # ------------------------------------------------------------------ objectives
    def losses(self, outputs: list[Tensor], batch: Any) -> Tensor:
        fn = {"label": M.segmentation_loss, "depth": M.depth_loss, "normal": M.normal_loss}
        return torch.stack([fn[k](out, target) for k, out, target in zip(self.kinds, outputs, batch[1:])])

    @torch.no_grad()
    def metric_sums(self, outputs: list[Tensor], batch: Any) -> Tensor:
        """Accumulator: [confusion matrix (C·C) | 1 (batches) | per-batch depth errors (2) | normal errors (5)]."""
        parts: list[Tensor] = []
        per_batch: list[Tensor] = []
        for kind, out, target in zip(self.kinds, outputs, batch[1:]):
            if kind == "label":
                parts.append(M.confusion_counts(out.detach(), target).to(torch.float64))
            elif kind == "depth":
                per_batch.append(M.depth_errors(out.detach(), target))
            else:
                per_batch.append(M.normal_errors(out.detach(), target))
        ones = parts[0].new_ones(1)
        return torch.cat([*parts, ones, *(p.to(torch.float64) for p in per_batch)])

    def metric_values(self, sums: Tensor, count: int) -> Tensor:
        c2 = self.n_classes ** 2
        seg = M.miou_and_pixel_accuracy(sums[:c2].reshape(self.n_classes, self.n_classes))
        batches = sums[c2].clamp(min=1)
        return torch.cat([seg, sums[c2 + 1:] / batches])


def _check_resize(resize: list[int] | None) -> tuple[int, int] | None:
    if resize is None:
        return None
    if (not isinstance(resize, (list, tuple)) or len(resize) != 2
            or not all(isinstance(v, int) and v >= 32 for v in resize)):
        raise ValueError(f"resize must be [height, width] (integers >= 32) or null, got {resize!r}")
    return int(resize[0]), int(resize[1])
