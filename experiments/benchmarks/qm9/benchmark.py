"""The QM9 benchmark class: variants, split, target standardisation, loaders, losses and metrics.

Variants (``benchmark.variant``):

``reference`` (default)
    As the Nash-MTL / FAMO ``quantum_chemistry`` code builds it: PyG's QM9 node and edge features
    (feature set ``pyg``: Kekulé bonds, aromatic / sp / sp2 / sp3 zero) and the shared ``lin1``
    with one Linear(64, 1) head per task. The literature STL MAEs (``STL_MAE``) are its Δm%
    reference at full scale.
``rich``
    This project's earlier model: RDKit-sanitised features (feature set ``rdkit``: aromaticity and
    hybridisation) and a per-task Linear(128, 64) + ReLU + Linear(64, 1) head. No literature STL
    values exist for it, so its metrics carry none and ``reference: auto`` falls back to the
    untrained model at every scale (recorded as ``initial_model``); measured STL references
    (``balancebench stl``) work as for any benchmark.

Split: ``torch.randperm`` of all 130,831 molecules with ``torch.Generator().manual_seed(split_seed)``
(default 0): test = first 10,000, val = next 10,000, train = the remaining 110,831.
``subset=n`` keeps the first ``n`` training molecules of that permutation and the first
``max(200, round(10_000 * n / 110_831))`` (at most 10,000) val and test molecules, so subsets are
nested in the full split and val/test shrink with the training set. ``eval_size=m`` (1 to 10,000)
overrides that rule: val and test keep their first ``m`` molecules each (used by the ``tiny``
scale).

The model predicts targets standardised with the TRAINING split's mean / std; the per-task loss is
the MSE on standardised targets. Metrics are MAEs after de-standardisation, energies (homo, lumo,
zpve, u0, u, h, g) in meV and the others in their PyG units.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from experiments.benchmarks.base import Benchmark, MetricSpec, MultiTaskModel
from experiments.benchmarks.qm9.batching import QM9Batch, QM9Collate, Rows
from experiments.benchmarks.qm9.cache import QM9Store, cache_path, load_store
from experiments.benchmarks.qm9.data import (MIN_EVAL_SUBSET, N_MOLECULES, N_TEST, N_VAL, REPORT_SCALE, STL_MAE,
                                             TASKS, qm9pack_data_dir)
from experiments.benchmarks.qm9.model import build_qm9_model
from experiments.schema import PositiveInt


@dataclass(frozen=True)
class QM9Variant:
    """What a variant fixes: the feature set, the head style, and whether literature STL values apply."""

    features: str
    heads: str
    literature_stl: bool


VARIANTS = {
    "reference": QM9Variant(features="pyg", heads="shared_lin1", literature_stl=True),
    "rich": QM9Variant(features="rdkit", heads="per_task_mlp", literature_stl=False),
}


class QM9Benchmark(Benchmark):
    """QM9, 11 regression tasks; reference = the papers' features and model, rich = RDKit features + MLP heads.

    Options: ``subset``, ``eval_size``, ``split_seed`` (see the module docstring).
    """

    name = "qm9"
    variants = tuple(VARIANTS)

    def __init__(self, variant: str | None = None, *, subset: int | None = None, eval_size: int | None = None,
                 split_seed: int = 0, **options: Any) -> None:
        super().__init__(variant)
        if options:
            raise TypeError(f"unknown option(s) for benchmark 'qm9': {', '.join(sorted(options))}; valid: subset, eval_size, split_seed")
        n_train_full = N_MOLECULES - N_TEST - N_VAL
        if subset is not None and not (1 <= int(subset) <= n_train_full):
            raise ValueError(f"qm9 subset must be between 1 and {n_train_full} training molecules, got {subset}")
        if eval_size is not None and not (1 <= int(eval_size) <= min(N_VAL, N_TEST)):
            raise ValueError(f"qm9 eval_size must be between 1 and {min(N_VAL, N_TEST)} molecules, got {eval_size}")
        self.spec = VARIANTS[self.variant]
        self.subset = None if subset is None else int(subset)
        self.eval_size = None if eval_size is None else int(eval_size)
        self.split_seed = int(split_seed)
        self._store: QM9Store | None = None
        self._splits: dict[str, Tensor] | None = None
        self._mean: Tensor | None = None
        self._std: Tensor | None = None
        self._scale = torch.tensor([REPORT_SCALE[t] for t in TASKS], dtype=torch.float32)
        if not cache_path(self.spec.features).is_file():
            qm9pack_data_dir()  # fail early (one line, with the install hint) when the raw data is missing

    # ------------------------------------------------------------------ description
    @property
    def task_names(self) -> list[str]:
        return list(TASKS)

    @property
    def metrics(self) -> list[MetricSpec]:
        """One MAE per task; literature STL values only where they were measured (``reference``)."""
        return [MetricSpec(f"{t}_mae", k, higher_is_better=False, stl=STL_MAE[t] if self.spec.literature_stl else None)
                for k, t in enumerate(TASKS)]

    # ------------------------------------------------------------------ data
    @property
    def store(self) -> QM9Store:
        if self._store is None:
            self._store = load_store(self.spec.features)
        return self._store

    @property
    def splits(self) -> dict[str, Tensor]:
        """Store rows of the ``train`` / ``val`` / ``test`` molecules."""
        if self._splits is None:
            n = len(self.store)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed))
            test, val, train = perm[:N_TEST], perm[N_TEST : N_TEST + N_VAL], perm[N_TEST + N_VAL :]
            n_eval = self.eval_size
            if self.subset is not None:
                if n_eval is None:
                    n_eval = min(N_TEST, max(MIN_EVAL_SUBSET, round(N_TEST * self.subset / len(train))))
                train = train[: self.subset]
            if n_eval is not None:
                val, test = val[:n_eval], test[:n_eval]
            self._splits = {"train": train, "val": val, "test": test}
            y_train = self.store.y[train]
            self._mean = y_train.mean(0)
            std = y_train.std(0) if len(train) > 1 else torch.ones(len(TASKS), dtype=y_train.dtype)
            self._std = torch.where(std > 0, std, torch.ones_like(std))
        return self._splits

    @property
    def target_mean(self) -> Tensor:
        """Training-split mean of each target (PyG units, float64)."""
        self.splits
        assert self._mean is not None
        return self._mean

    @property
    def target_std(self) -> Tensor:
        """Training-split standard deviation of each target (PyG units, float64)."""
        self.splits
        assert self._std is not None
        return self._std

    def collate(self) -> QM9Collate:
        return QM9Collate(self.store, self.target_mean, self.target_std)

    def get_data(self, row: int) -> Any:
        """One molecule as a ``torch_geometric.data.Data`` (complete graph; ``y`` in PyG units)."""
        from torch_geometric.data import Data

        b = self.collate()([row])
        return Data(x=b.x, pos=b.pos, edge_index=b.edge_index, edge_attr=b.edge_attr, y=self.store.y[row : row + 1].float(), gdb_index=int(self.store.gdb_index[row]))

    def loaders(self, batch_size: int, seed: int) -> tuple[Iterable, Iterable, Iterable]:
        collate = self.collate()
        splits = self.splits
        train = DataLoader(Rows(splits["train"]), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed), collate_fn=collate)
        val = DataLoader(Rows(splits["val"]), batch_size=batch_size, shuffle=False, collate_fn=collate)
        test = DataLoader(Rows(splits["test"]), batch_size=batch_size, shuffle=False, collate_fn=collate)
        return train, val, test

    # ------------------------------------------------------------------ model
    def build_model(self, dim: PositiveInt = 64, **model_options: Any) -> MultiTaskModel:
        """The variant's model: MPNN + Set2Set and its head style (see ``model.build_qm9_model``)."""
        if model_options:
            raise TypeError(f"unknown model option(s) for benchmark 'qm9': {', '.join(sorted(model_options))}; valid: dim")
        return build_qm9_model(len(TASKS), dim, heads=self.spec.heads)

    def to_device(self, batch: QM9Batch, device: torch.device) -> QM9Batch:
        return batch.to(device, non_blocking=True)

    def inputs(self, batch: QM9Batch) -> QM9Batch:
        return batch

    def batch_size(self, batch: QM9Batch) -> int:
        return int(batch.num_graphs)

    # ------------------------------------------------------------------ objectives
    @staticmethod
    def _pred(outputs: list[Tensor]) -> Tensor:
        return torch.cat([o.reshape(-1, 1) for o in outputs], dim=1)

    def losses(self, outputs: list[Tensor], batch: QM9Batch) -> Tensor:
        return ((self._pred(outputs) - batch.y) ** 2).mean(0)

    def metric_sums(self, outputs: list[Tensor], batch: QM9Batch) -> Tensor:
        pred = self._pred(outputs).detach()
        factor = (self.target_std.to(pred.device, torch.float32) * self._scale.to(pred.device))
        return ((pred - batch.y).abs() * factor).sum(0)
