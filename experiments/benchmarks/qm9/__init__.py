"""QM9: 11-task molecular property regression (the FAMO / Nash-MTL multi-task QM9 benchmark).

The rooms, in the order data flows through them:

- :mod:`~experiments.benchmarks.qm9.data`: the raw database inside ``qm9pack`` (no download),
  targets in PyG's units, the literature STL MAEs;
- :mod:`~experiments.benchmarks.qm9.features`: bonds perceived from the xyz geometry with RDKit and
  the two feature sets, ``pyg`` (what PyG's ``QM9`` holds) and ``rdkit`` (sanitised, richer);
- :mod:`~experiments.benchmarks.qm9.cache`: one preprocessed store per feature set on disk;
- :mod:`~experiments.benchmarks.qm9.batching`: complete-graph batches built from the store;
- :mod:`~experiments.benchmarks.qm9.kernel`: a faster evaluation of PyG's mean-NNConv;
- :mod:`~experiments.benchmarks.qm9.model`: the MPNN and its two head styles;
- :mod:`~experiments.benchmarks.qm9.benchmark`: :class:`QM9Benchmark` and its variants
  ``reference`` (default; the papers' features and model) and ``rich``;
- :mod:`~experiments.benchmarks.qm9.smiles_check`: how close the perceived bonds are to the GDB
  SMILES qm9pack ships.
"""

from __future__ import annotations

from experiments.benchmarks.qm9.batching import QM9Batch, QM9Collate
from experiments.benchmarks.qm9.benchmark import VARIANTS, QM9Benchmark, QM9Variant
from experiments.benchmarks.qm9.cache import CACHE_VERSION, QM9Store, build_store, cache_dir, cache_path, load_store, save_store
from experiments.benchmarks.qm9.data import (ATOMREF_EV, HAR2EV, N_MOLECULES, N_TEST, N_VAL, REPORT_SCALE, STL_MAE, TASKS,
                                             QM9PackMissingError, qm9pack_data_dir, raw_to_targets)
from experiments.benchmarks.qm9.features import EDGE_DIM, FEATURE_SETS, NODE_DIM
from experiments.benchmarks.qm9.kernel import GroupedMeanNNConv
from experiments.benchmarks.qm9.model import HEAD_STYLES, MPNNTrunk, build_qm9_model

__all__ = [
    "ATOMREF_EV", "CACHE_VERSION", "EDGE_DIM", "FEATURE_SETS", "HAR2EV", "HEAD_STYLES", "N_MOLECULES", "N_TEST",
    "N_VAL", "NODE_DIM", "REPORT_SCALE", "STL_MAE", "TASKS", "VARIANTS", "GroupedMeanNNConv", "MPNNTrunk",
    "QM9Batch", "QM9Benchmark", "QM9Collate", "QM9PackMissingError", "QM9Store", "QM9Variant", "build_qm9_model",
    "build_store", "cache_dir", "cache_path", "load_store", "qm9pack_data_dir", "raw_to_targets", "save_store",
]  # fmt: skip
