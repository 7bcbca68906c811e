"""The preprocessed QM9 store: built once per feature set from the raw CSVs, kept on disk, loaded fast.

One ``torch.save`` file of concatenated tensors per feature set, under ``$BALANCEBENCH_CACHE``
(default ``~/.cache/balancebench``): ``qm9_<features>_v<CACHE_VERSION>.pt``. The file also records
its feature set and format version, and a file whose record does not match what is asked for is
rebuilt, so a cache made for other features (or by older code, ``qm9_graphs_v1.pt``) is never
reused. Writes are atomic (temporary file + :func:`os.replace`); loads use
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from experiments.benchmarks.qm9.data import qm9pack_data_dir, raw_to_targets, read_raw
from experiments.benchmarks.qm9.features import check_feature_set, node_features, perceive_chunk

#: format version of the cache files; part of the file name and of the stored record
CACHE_VERSION = 2


def cache_dir() -> Path:
    return Path(os.environ.get("BALANCEBENCH_CACHE") or Path.home() / ".cache" / "balancebench").expanduser()


def cache_path(features: str = "pyg") -> Path:
    """The cache file of one feature set (see :mod:`experiments.benchmarks.qm9.features`)."""
    return cache_dir() / f"qm9_{check_feature_set(features)}_v{CACHE_VERSION}.pt"


def build_store(features: str = "pyg", data_dir: Path | None = None, max_molecules: int | None = None,
                workers: int | None = None) -> dict[str, Any]:
    """Preprocess the raw QM9 CSVs into a dict of concatenated tensors (see :class:`QM9Store`).

    ``workers`` perception processes (default min(2, CPUs)); 1 runs in this process.
    """
    check_feature_set(features)
    t0 = time.perf_counter()
    raw = read_raw(data_dir or qm9pack_data_dir(), max_molecules)
    n_atoms, z, pos = raw["n_atoms"], raw["z"], raw["pos"]
    n_mol = len(n_atoms)
    atom_ptr = np.concatenate([[0], np.cumsum(n_atoms)])

    n_chunks = max(1, min(64, -(-n_mol // 100)))  # ~2,000 molecules a chunk for the full set
    cuts = np.linspace(0, n_mol, n_chunks + 1).round().astype(np.int64)
    jobs = [(z[atom_ptr[a] : atom_ptr[b]], pos[atom_ptr[a] : atom_ptr[b]], n_atoms[a:b], features)
            for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    # fork only (Linux): spawn would re-run an unguarded __main__ script; the workers use RDKit/NumPy only
    if workers > 1 and len(jobs) > 1 and sys.platform.startswith("linux"):
        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.map(perceive_chunk, jobs, chunksize=1)
    else:
        results = [perceive_chunk(job) for job in jobs]
    aromatic, hyb, bond_atoms, bond_type, n_bonds, step = (np.concatenate(parts) for parts in zip(*results))

    mol_of_bond = np.repeat(np.arange(n_mol), n_bonds)
    src = atom_ptr[mol_of_bond] + bond_atoms[:, 0]
    dst = atom_ptr[mol_of_bond] + bond_atoms[:, 1]
    return {
        "version": CACHE_VERSION,
        "features": features,
        "gdb_index": torch.from_numpy(raw["gdb_index"]),
        "n_atoms": torch.from_numpy(n_atoms),
        "x": torch.from_numpy(node_features(z, aromatic, hyb, src, dst)),
        "pos": torch.from_numpy(pos.astype(np.float32)),
        "n_bonds": torch.from_numpy(n_bonds),
        "bond_atoms": torch.from_numpy(bond_atoms),
        "bond_type": torch.from_numpy(bond_type),
        "y": torch.from_numpy(raw_to_targets(raw["raw"], z, n_atoms)),
        "bond_step": torch.from_numpy(step),
        "build_seconds": time.perf_counter() - t0,
        "build_workers": workers,
    }


def save_store(store: dict[str, Any], path: Path) -> None:
    """Atomic write: a temporary file in the same folder, then :func:`os.replace`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(store, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


#: loaded stores by cache path, with the file's modification time they were read at
_LOADED: dict[str, tuple[int, QM9Store]] = {}


def load_store(features: str = "pyg", rebuild: bool = False) -> QM9Store:
    """The preprocessed dataset of one feature set: from the on-disk cache, building it first when
    missing, of another format version or made for other features."""
    path = cache_path(features)
    if rebuild or not path.is_file():
        save_store(build_store(features), path)
    mtime = path.stat().st_mtime_ns
    hit = _LOADED.get(str(path))
    if hit is not None and hit[0] == mtime:
        return hit[1]
    data = torch.load(path, weights_only=True)
    if data.get("version") != CACHE_VERSION or data.get("features") != features:  # stale: rebuild once
        save_store(build_store(features), path)
        data = torch.load(path, weights_only=True)
        mtime = path.stat().st_mtime_ns
    store = QM9Store(data)
    _LOADED[str(path)] = (mtime, store)
    return store


class QM9Store:
    """All molecules of one feature set as concatenated tensors, plus pointers into them."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.features: str = str(data.get("features", "rdkit"))  # version-1 files held RDKit features
        self.gdb_index: Tensor = data["gdb_index"]
        self.n_atoms: Tensor = data["n_atoms"].long()
        self.x: Tensor = data["x"]  # uint8 (A, 11)
        self.pos: Tensor = data["pos"]  # float32 (A, 3), Å
        self.n_bonds: Tensor = data["n_bonds"].long()
        self.bond_atoms: Tensor = data["bond_atoms"]  # uint8 (Bd, 2), local atom indices
        self.bond_type: Tensor = data["bond_type"]  # uint8 (Bd,), 1..4
        self.y: Tensor = data["y"]  # float64 (N, 11), PyG units
        self.bond_step: Tensor = data["bond_step"]
        self.build_seconds: float = float(data.get("build_seconds", float("nan")))
        self.atom_ptr = torch.cat([torch.zeros(1, dtype=torch.long), self.n_atoms.cumsum(0)])
        self.bond_ptr = torch.cat([torch.zeros(1, dtype=torch.long), self.n_bonds.cumsum(0)])

    def __len__(self) -> int:
        return len(self.n_atoms)

    def position_of(self, gdb_index: int) -> int:
        """Row of the molecule with QM9 (GDB-9) index ``gdb_index``."""
        hit = (self.gdb_index == gdb_index).nonzero()
        if hit.numel() == 0:
            raise KeyError(f"QM9 index {gdb_index} is not in the data (uncharacterized?)")
        return int(hit[0, 0])
