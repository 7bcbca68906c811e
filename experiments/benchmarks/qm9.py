"""QM9: 11-task molecular property regression (the FAMO / Nash-MTL multi-task QM9 benchmark).

Data
    The full QM9 database as shipped by the ``qm9pack`` package (``pip install qm9pack``), read
    directly from its CSV files with pandas (``qm9pack``'s own loader imports ``pkg_resources`` and
    fails on current setuptools, so the package is never imported; its data folder is located with
    :func:`importlib.util.find_spec`). The CSVs hold 130,831 molecules: the 133,885 GDB-9 indices
    minus the 3,054 molecules that failed the QM9 geometry-consistency check (``qm9pack``'s own field
    documentation says so; the missing indices are exactly 3,054). That is the same set of molecules
    as PyG's processed ``QM9`` (which skips the 3,054 ``uncharacterized.txt`` entries).

Graphs
    Bonds are perceived from the DFT (B3LYP/6-31G(2df,p)) coordinates with RDKit
    (:func:`rdkit.Chem.rdDetermineBonds.DetermineBonds`, total charge 0). Fallback chain per molecule:
    (0) default van-der-Waals connectivity + bond orders; (1) extended-Hückel connectivity + bond
    orders (needed by ~5 % of molecules, mostly strained polycyclics whose long bonds the distance rule
    misses);
    (2) connectivity only (all bonds single). The cache records which step each molecule needed.

    Node features (11, PyG's QM9 order): one-hot H, C, N, O, F (5), atomic number, aromatic, sp, sp2,
    sp3, number of bonded hydrogens. Hybridisation and aromaticity come from the RDKit-sanitised
    molecule (hydrogens have all three hybridisation flags 0).

    Edges: the COMPLETE directed graph (every ordered atom pair ``i != j``, no self loops), as in the
    Nash-MTL QM9 reference (PyG ``Complete`` + ``Distance(norm=False)``). ``edge_attr`` has 5 dims:
    bond-type one-hot (single, double, triple, aromatic; all zero for non-bonded pairs) followed by
    the interatomic distance in Å. Positions (Å) are kept in ``pos``. Edges are built lazily per
    batch in the collate function; only the bond list is stored.

Targets (PyG QM9 units; the 11 Nash-MTL/FAMO tasks)
    mu (D), alpha (a0^3), homo / lumo (eV), r2 (a0^2), zpve (eV), u0 / u / h / g (eV, ATOMIZATION
    energies: total energy minus the per-atom reference energies PyG ships as ``atomref`` for
    U0 / U / H / G), cv (cal/mol K). Hartree -> eV with 1 Ha = 27.211386246 eV.
    The model predicts targets standardised with the TRAINING split's mean / std; the per-task loss
    is the MSE on standardised targets. Metrics are MAEs after de-standardisation, with energies
    (homo, lumo, zpve, u0, u, h, g) reported in meV and the others in their units above.

Split
    ``torch.randperm`` of all 130,831 molecules with ``torch.Generator().manual_seed(split_seed)``
    (default 0): test = first 10,000, val = next 10,000, train = the remaining 110,831.
    ``subset=n`` keeps the first ``n`` training molecules of that permutation and the first
    ``max(200, round(10_000 * n / 110_831))`` (at most 10,000) val and test molecules, so subsets
    are nested in the full split and val/test shrink proportionally to the training set.
    ``eval_size=m`` (1 to 10,000) overrides that rule: val and test keep their first ``m``
    molecules each (still nested; used by the ``tiny`` scale). Without either option the split is
    the full one above.

Cache
    Preprocessing runs once and is stored as one ``torch.save`` file of concatenated tensors under
    ``$BALANCEBENCH_CACHE`` (default ``~/.cache/balancebench``), written atomically (temporary
    file + :func:`os.replace`) and loaded with ``torch.load(weights_only=True)``.

Model (``build_model(dim=64)``)
    Trunk: Linear(11, dim) + ReLU, then 3 iterations of a shared
    ``NNConv(dim, dim, nn=Sequential(Linear(5, 128), ReLU, Linear(128, dim*dim)), aggr="mean")``
    + ReLU + GRU update, then ``Set2Set(dim, processing_steps=3)`` -> graph embedding (2*dim).
    Heads (one per task): Linear(2*dim, dim) + ReLU + Linear(dim, 1). Runs on plain PyTorch
    (no torch-scatter / torch-sparse needed). The NNConv is PyG's module (parameters, initialisation,
    state-dict names), but the forward evaluates it with :class:`GroupedMeanNNConv`: the same
    function with the edge network's last Linear applied after the mean aggregation and the
    edge-only work done once for the 3 shared iterations, about 10x cheaper than PyG's per-edge
    (dim x dim) weights (``MPNNTrunk.fast_conv = False`` runs PyG's message passing instead).
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from experiments.benchmarks.base import Benchmark, MetricSpec, MultiTaskModel
from experiments.schema import PositiveInt

HAR2EV = 27.211386246  # eV per Hartree (the factor PyG's QM9 uses)

TASKS = ("mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u", "h", "g", "cv")

#: Literature single-task MAEs (reporting units: meV for energies), used as MetricSpec.stl.
STL_MAE = {
    "mu": 0.0671, "alpha": 0.1814, "homo": 60.576, "lumo": 53.915, "r2": 0.5027, "zpve": 4.539,
    "u0": 58.838, "u": 64.244, "h": 63.852, "g": 66.223, "cv": 0.07212,
}  # fmt: skip

#: Factor from the target unit (eV for energies) to the reporting unit (meV for energies).
REPORT_SCALE = {t: (1000.0 if t in ("homo", "lumo", "zpve", "u0", "u", "h", "g") else 1.0) for t in TASKS}

#: PyG's QM9 single-atom reference energies (eV) for U0, U, H, G; keyed by atomic number.
ATOMREF_EV = {
    "u0": {1: -13.61312172, 6: -1029.86312267, 7: -1485.30251237, 8: -2042.61123593, 9: -2713.48485589},
    "u": {1: -13.57459040, 6: -1029.82456413, 7: -1485.26398105, 8: -2042.57270460, 9: -2713.44632457},
    "h": {1: -13.54887564, 6: -1029.79887659, 7: -1485.23829350, 8: -2042.54701705, 9: -2713.42063702},
    "g": {1: -13.90303183, 6: -1030.25891228, 7: -1485.71166277, 8: -2043.01812778, 9: -2713.88796536},
}

#: qm9pack CSV column of each task (raw units: D, a0^3, Ha, Ha, a0^2, Ha, Ha, Ha, Ha, Ha, cal/mol K).
RAW_COLUMNS = {
    "mu": "Dipole_debye", "alpha": "Polarizability_bohr3", "homo": "HOMO_au", "lumo": "LUMO_au",
    "r2": "R2_bohr2", "zpve": "ZPVE_au", "u0": "InternalEnergy_0K_au", "u": "InternalEnergy_298K_au",
    "h": "Enthalphy_298K_au", "g": "GibbsFreeEnergy_298K_au", "cv": "Heatcapacity_Cv_cal_mol_K",
}  # fmt: skip

N_MOLECULES = 130_831  # 133,885 GDB-9 molecules minus the 3,054 that failed the consistency check
N_TEST = 10_000
N_VAL = 10_000
MIN_EVAL_SUBSET = 200

ELEMENTS = ("H", "C", "N", "O", "F")
ATOMIC_NUMBERS = (1, 6, 7, 8, 9)
NODE_DIM = 11
EDGE_DIM = 5  # bond one-hot (4) + distance

CACHE_VERSION = 1
_QM9PACK = "qm9pack"
_CSV_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


# ====================================================================== locating the raw data
class QM9PackMissingError(ModuleNotFoundError, ValueError):
    """``qm9pack`` (the raw QM9 data) is not installed; an ImportError and a ValueError (one line)."""


def qm9pack_data_dir() -> Path:
    """The ``data`` folder of the installed ``qm9pack`` package (without importing the package)."""
    spec = importlib.util.find_spec(_QM9PACK)
    if spec is None or not spec.submodule_search_locations:
        raise QM9PackMissingError(f"the QM9 benchmark needs the {_QM9PACK} data package: pip install {_QM9PACK}")
    data_dir = Path(next(iter(spec.submodule_search_locations))) / "data"
    missing = [p for p in _CSV_PARTS if not (data_dir / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{_QM9PACK} is installed but lacks {', '.join(missing)} in {data_dir}; reinstall: pip install --force-reinstall {_QM9PACK}")
    return data_dir


def cache_dir() -> Path:
    return Path(os.environ.get("BALANCEBENCH_CACHE") or Path.home() / ".cache" / "balancebench").expanduser()


def cache_path() -> Path:
    return cache_dir() / f"qm9_graphs_v{CACHE_VERSION}.pt"


# ====================================================================== preprocessing
def _read_raw(data_dir: Path, max_molecules: int | None = None) -> dict[str, np.ndarray]:
    """Parse the qm9pack CSVs: gdb indices, atom counts, atomic numbers, positions, raw targets."""
    import pandas as pd

    cols = ["Index", "N_atoms", "Elements", "XYZ_Ang", *RAW_COLUMNS.values()]
    frames = []
    remaining = max_molecules
    for part in _CSV_PARTS:
        frame = pd.read_csv(data_dir / part, usecols=cols, nrows=remaining)
        frames.append(frame)
        if remaining is not None:
            remaining -= len(frame)
            if remaining <= 0:
                break
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values("Index", kind="stable").reset_index(drop=True)

    n_atoms = df["N_atoms"].to_numpy(np.int64).copy()  # pandas may hand out read-only views
    # Elements look like "['C','H','H']": every symbol of QM9 (H, C, N, O, F) is one character.
    symbols = np.frombuffer("".join(df["Elements"].str.replace(r"[\[\]', ]", "", regex=True)).encode("ascii"), dtype=np.uint8)
    lut = np.zeros(256, dtype=np.uint8)
    for sym, z in zip(ELEMENTS, ATOMIC_NUMBERS):
        lut[ord(sym)] = z
    z = lut[symbols]
    if len(z) != n_atoms.sum() or (z == 0).any():
        raise ValueError("unexpected element symbols in the qm9pack data")
    coords = np.array(",".join(df["XYZ_Ang"].str.replace("[", "", regex=False).str.replace("]", "", regex=False)).split(","), dtype=np.float64)
    if coords.size != 3 * n_atoms.sum():
        raise ValueError("coordinate count does not match the atom counts in the qm9pack data")
    raw = np.stack([df[c].to_numpy(np.float64) for c in RAW_COLUMNS.values()], axis=1)
    return {"gdb_index": df["Index"].to_numpy(np.int64).copy(), "n_atoms": n_atoms, "z": z, "pos": coords.reshape(-1, 3), "raw": raw}


def raw_to_targets(raw: np.ndarray, z: np.ndarray, n_atoms: np.ndarray) -> np.ndarray:
    """Raw qm9pack columns (RAW_COLUMNS order) -> targets in PyG units (TASKS order)."""
    y = raw.astype(np.float64).copy()
    for t in ("homo", "lumo", "zpve"):
        y[:, TASKS.index(t)] *= HAR2EV
    mol_of_atom = np.repeat(np.arange(len(n_atoms)), n_atoms)
    for t in ("u0", "u", "h", "g"):
        ref = np.zeros(10)
        for zz, e in ATOMREF_EV[t].items():
            ref[zz] = e
        atom_sum = np.bincount(mol_of_atom, weights=ref[z], minlength=len(n_atoms))
        k = TASKS.index(t)
        y[:, k] = y[:, k] * HAR2EV - atom_sum
    return y


@contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence C-level writes to file descriptor 2 (stderr) for the duration of the block."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _perceive_chunk(args: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[np.ndarray, ...]:
    """Bond perception for a chunk of molecules (runs in a worker process).

    Returns per atom (aromatic, hybridisation code 0 none / 1 sp / 2 sp2 / 3 sp3), per bond (local
    atom indices, type 1 single / 2 double / 3 triple / 4 aromatic), per molecule (bond count,
    fallback step used).
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds
    from rdkit.Geometry import Point3D

    RDLogger.DisableLog("rdApp.*")
    hyb_code = {Chem.HybridizationType.SP: 1, Chem.HybridizationType.SP2: 2, Chem.HybridizationType.SP3: 3}
    bond_code = {Chem.BondType.SINGLE: 1, Chem.BondType.DOUBLE: 2, Chem.BondType.TRIPLE: 3, Chem.BondType.AROMATIC: 4}

    z, pos, n_atoms = args
    aromatic = np.zeros(len(z), dtype=np.uint8)
    hyb = np.zeros(len(z), dtype=np.uint8)
    bonds: list[tuple[int, int, int]] = []
    n_bonds = np.zeros(len(n_atoms), dtype=np.int64)
    step = np.zeros(len(n_atoms), dtype=np.uint8)

    def make(zs: np.ndarray, xyz: np.ndarray) -> Chem.RWMol:
        mol = Chem.RWMol()
        for a in zs.tolist():
            mol.AddAtom(Chem.Atom(a))
        conf = Chem.Conformer(len(zs))
        for k, (x, y, w) in enumerate(xyz.tolist()):
            conf.SetAtomPosition(k, Point3D(x, y, w))
        mol.AddConformer(conf, assignId=True)
        return mol

    start = 0
    for m, n in enumerate(n_atoms.tolist()):
        zs, xyz = z[start : start + n], pos[start : start + n]
        mol = None
        for s, hueckel in ((0, False), (1, True)):
            cand = make(zs, xyz)
            try:
                if hueckel:  # YAeHMOP writes "suspicious distance" warnings straight to fd 2
                    with _quiet_fd2():
                        rdDetermineBonds.DetermineBonds(cand, charge=0, useHueckel=True)
                else:
                    rdDetermineBonds.DetermineBonds(cand, charge=0)
            except Exception:  # noqa: BLE001 -- RDKit raises ValueError / RuntimeError variants
                continue
            mol, step[m] = cand, s
            break
        if mol is None:  # connectivity only: all bonds single, hybridisation from the partial valence model
            mol = make(zs, xyz)
            rdDetermineBonds.DetermineConnectivity(mol)
            mol.UpdatePropertyCache(strict=False)
            Chem.SetHybridization(mol)
            step[m] = 2
        for atom in mol.GetAtoms():
            i = start + atom.GetIdx()
            aromatic[i] = atom.GetIsAromatic()
            hyb[i] = hyb_code.get(atom.GetHybridization(), 0)
        for bond in mol.GetBonds():
            bonds.append((bond.GetBeginAtomIdx(), bond.GetEndAtomIdx(), bond_code.get(bond.GetBondType(), 1)))
        n_bonds[m] = mol.GetNumBonds()
        start += n
    bond_arr = np.asarray(bonds, dtype=np.uint8).reshape(-1, 3)
    return aromatic, hyb, bond_arr[:, :2].copy(), bond_arr[:, 2].copy(), n_bonds, step


def build_store(data_dir: Path | None = None, max_molecules: int | None = None, workers: int | None = None) -> dict[str, Any]:
    """Preprocess the raw QM9 CSVs into a dict of concatenated tensors (see :class:`QM9Store`)."""
    t0 = time.perf_counter()
    data_dir = data_dir or qm9pack_data_dir()
    raw = _read_raw(data_dir, max_molecules)
    n_atoms, z, pos = raw["n_atoms"], raw["z"], raw["pos"]
    n_mol = len(n_atoms)
    atom_ptr = np.concatenate([[0], np.cumsum(n_atoms)])

    n_chunks = max(1, min(64, -(-n_mol // 100)))  # ~2,000 molecules a chunk for the full set
    cuts = np.linspace(0, n_mol, n_chunks + 1).round().astype(np.int64)
    jobs = [(z[atom_ptr[a] : atom_ptr[b]], pos[atom_ptr[a] : atom_ptr[b]], n_atoms[a:b]) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    # fork only (Linux): spawn would re-run an unguarded __main__ script; the workers use RDKit/NumPy only
    if workers > 1 and len(jobs) > 1 and sys.platform.startswith("linux"):
        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.map(_perceive_chunk, jobs, chunksize=1)
    else:
        results = [_perceive_chunk(job) for job in jobs]
    aromatic, hyb, bond_atoms, bond_type, n_bonds, step = (np.concatenate(parts) for parts in zip(*results))

    # node features: one-hot H,C,N,O,F | atomic number | aromatic | sp | sp2 | sp3 | num_hs
    x = np.zeros((len(z), NODE_DIM), dtype=np.uint8)
    type_idx = np.zeros(10, dtype=np.int64)
    type_idx[list(ATOMIC_NUMBERS)] = np.arange(len(ATOMIC_NUMBERS))
    x[np.arange(len(z)), type_idx[z]] = 1
    x[:, 5] = z
    x[:, 6] = aromatic
    x[:, 7] = hyb == 1
    x[:, 8] = hyb == 2
    x[:, 9] = hyb == 3
    mol_of_bond = np.repeat(np.arange(n_mol), n_bonds)
    a = atom_ptr[mol_of_bond] + bond_atoms[:, 0]
    b = atom_ptr[mol_of_bond] + bond_atoms[:, 1]
    num_hs = np.zeros(len(z), dtype=np.int64)
    np.add.at(num_hs, a, z[b] == 1)
    np.add.at(num_hs, b, z[a] == 1)
    x[:, 10] = num_hs

    y = raw_to_targets(raw["raw"], z, n_atoms)
    return {
        "version": CACHE_VERSION,
        "gdb_index": torch.from_numpy(raw["gdb_index"]),
        "n_atoms": torch.from_numpy(n_atoms),
        "x": torch.from_numpy(x),
        "pos": torch.from_numpy(pos.astype(np.float32)),
        "n_bonds": torch.from_numpy(n_bonds),
        "bond_atoms": torch.from_numpy(bond_atoms),
        "bond_type": torch.from_numpy(bond_type),
        "y": torch.from_numpy(y),
        "bond_step": torch.from_numpy(step),
        "build_seconds": time.perf_counter() - t0,
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


_LOADED: dict[tuple[str, int], QM9Store] = {}


def load_store(rebuild: bool = False) -> QM9Store:
    """The preprocessed dataset: from the on-disk cache, building it first when missing."""
    path = cache_path()
    if rebuild or not path.is_file():
        save_store(build_store(), path)
    key = (str(path), path.stat().st_mtime_ns)
    if key not in _LOADED:
        data = torch.load(path, weights_only=True)
        if data.get("version") != CACHE_VERSION:  # stale format: rebuild once
            save_store(build_store(), path)
            return load_store()
        _LOADED.clear()
        _LOADED[key] = QM9Store(data)
    return _LOADED[key]


class QM9Store:
    """All molecules as concatenated tensors, plus pointers into them."""

    def __init__(self, data: dict[str, Any]) -> None:
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


# ====================================================================== batching (pure torch)
@dataclass
class QM9Batch:
    """A batch of complete molecular graphs (PyG naming; ``y`` holds STANDARDISED targets)."""

    x: Tensor  # (N, 11) float
    pos: Tensor  # (N, 3)
    edge_index: Tensor  # (2, E) long, complete graph within each molecule
    edge_attr: Tensor  # (E, 5): bond one-hot (4) + distance
    batch: Tensor  # (N,) graph of each node
    y: Tensor  # (B, 11) standardised targets
    idx: Tensor  # (B,) rows of the molecules in the store
    num_graphs: int

    def to(self, device: torch.device | str, non_blocking: bool = False) -> QM9Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in moved.items():
            if isinstance(v, Tensor):
                moved[k] = v.to(device, non_blocking=non_blocking)
        return QM9Batch(**moved)


def _segments(counts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """For segment lengths ``counts``: (segment of each element, position within it, exclusive starts)."""
    starts = torch.zeros_like(counts)
    starts[1:] = counts.cumsum(0)[:-1]
    total = int(counts.sum())
    seg = torch.repeat_interleave(torch.arange(len(counts)), counts, output_size=total)
    local = torch.arange(total) - starts[seg]
    return seg, local, starts


class QM9Collate:
    """Builds a :class:`QM9Batch` from a list of store rows (complete-graph edges made here)."""

    def __init__(self, store: QM9Store, mean: Tensor, std: Tensor) -> None:
        self.store, self.mean, self.std = store, mean, std

    def __call__(self, rows: list[int] | Tensor) -> QM9Batch:
        s = self.store
        idx = torch.as_tensor(rows, dtype=torch.long)
        n = s.n_atoms[idx]
        node_graph, node_local, node_start = _segments(n)
        atom = s.atom_ptr[idx][node_graph] + node_local
        x = s.x[atom].float()
        pos = s.pos[atom]

        # complete graph: edge l of a graph with n atoms is (i, j), i = l // (n-1), j skips i
        edge_graph, l, _ = _segments(n * (n - 1))
        ng = n[edge_graph]
        i = torch.div(l, ng - 1, rounding_mode="floor")
        jj = l - i * (ng - 1)
        j = jj + (jj >= i).long()
        src = node_start[edge_graph] + i
        dst = node_start[edge_graph] + j

        # bond type of every pair via a dense per-molecule (n x n) lookup table
        bond_graph, bond_local, _ = _segments(s.n_bonds[idx])
        bond = s.bond_ptr[idx][bond_graph] + bond_local
        ba = s.bond_atoms[bond].long()
        btype = s.bond_type[bond].long()
        _, _, dense_start = _segments(n * n)
        table = torch.zeros(int((n * n).sum()), dtype=torch.long)
        nb = n[bond_graph]
        table[dense_start[bond_graph] + ba[:, 0] * nb + ba[:, 1]] = btype
        table[dense_start[bond_graph] + ba[:, 1] * nb + ba[:, 0]] = btype
        pair_type = table[dense_start[edge_graph] + i * ng + j]
        onehot = torch.eye(5)[pair_type][:, 1:]
        dist = (pos[src] - pos[dst]).norm(dim=1, keepdim=True)

        y = ((s.y[idx] - self.mean) / self.std).float()
        return QM9Batch(
            x=x,
            pos=pos,
            edge_index=torch.stack([src, dst]),
            edge_attr=torch.cat([onehot, dist], dim=1),
            batch=node_graph,
            y=y,
            idx=idx,
            num_graphs=len(idx),
        )


class _Rows(Dataset):
    def __init__(self, rows: Tensor) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int:
        return int(self.rows[i])


# ====================================================================== model
class GroupedMeanNNConv:
    """PyG's ``NNConv(aggr="mean")`` on one batch of small graphs, for any number of node inputs.

    Same function as ``conv(x, edge_index, edge_attr)`` (root weight and bias included), with the
    conv's own parameters, but evaluated in another order. PyG builds a (d_in x d_out) weight per
    EDGE in every call, ``W_e = nn(edge_attr).view(E, d_in, d_out)`` (E * K * d_in * d_out
    multiply-adds for an edge network whose last layer is ``Linear(K, d_in * d_out)``), then
    ``m_e = x_src W_e`` and the mean over each node's incoming edges.

    Split the edge network as ``h_e = nn[:-1](edge_attr)`` (K features) and its last Linear
    (weight W, bias b), and let ``h~_e = (h_e, 1)`` and ``A[i, k, o] = (W | b)[i * d_out + o, k]``.
    Then ``m_e[o] = sum_{i,k} x_src[i] h~_e[k] A[i, k, o]``: the last Linear commutes with the
    aggregation. With ``P_j = x_j A`` (a (K+1) x d_out matrix per NODE) and, per graph g with n_g
    nodes, the block ``H_g[t, s, :] = sum of h~_e over the edges s -> t`` (n_g x n_g x (K+1),
    local node numbers), the summed messages of graph g are one matrix product
    ``H_g (n_g x n_g(K+1)) @ P_g (n_g(K+1) x d_out)``. Graphs with the same node count are
    stacked into one ``bmm`` (no padding); the mean divides by the in-degree (at least 1, as PyG).

    ``H`` depends only on the edges, so it is built once (construction) and reused by every call,
    as the trunk's 3 iterations share the conv. Per call this costs N (K+1) d_in d_out +
    sum_g n_g^2 (K+1) d_out multiply-adds instead of E K d_in d_out (E ~ 17 N for QM9's complete
    graphs) and holds N (K+1) d_out floats instead of E d_in d_out.

    Every edge must join two nodes of the same graph (``ValueError`` otherwise). Built inside the
    model's forward, it reads the parameters there (``torch.func.functional_call`` works).
    """

    def __init__(self, conv: nn.Module, edge_index: Tensor, edge_attr: Tensor, batch: Tensor, num_graphs: int) -> None:
        edge_net = conv.nn
        if getattr(conv, "aggr", None) != "mean":
            raise ValueError(f"GroupedMeanNNConv needs NNConv(aggr='mean'), got aggr={getattr(conv, 'aggr', None)!r}")
        if not (isinstance(edge_net, nn.Sequential) and isinstance(edge_net[-1], nn.Linear)):
            raise TypeError("GroupedMeanNNConv needs the NNConv edge network to be an nn.Sequential ending in nn.Linear")
        self.conv = conv
        d_in, d_out = conv.in_channels_l, conv.out_channels
        last: nn.Linear = edge_net[-1]
        device, n_nodes = batch.device, batch.numel()
        src, dst = edge_index[0], edge_index[1]

        # Graphs sorted by node count (ties: graph id), nodes in that graph order (ties: given order).
        sizes = torch.bincount(batch, minlength=num_graphs)
        key = sizes * num_graphs + torch.arange(num_graphs, device=device)
        order = torch.argsort(key)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(num_graphs, device=device)
        self.perm = torch.argsort(key[batch], stable=True)  # sorted position -> node
        self.pos = torch.empty_like(self.perm)  # node -> sorted position
        self.pos[self.perm] = torch.arange(n_nodes, device=device)
        sorted_sizes = sizes[order]
        first = sorted_sizes.cumsum(0) - sorted_sizes
        block = sorted_sizes * sorted_sizes
        block_first = block.cumsum(0) - block
        local = self.pos - first[rank[batch]]  # node number inside its graph
        g = batch[dst]
        row = block_first[rank[g]] + local[dst] * sizes[g] + local[src]  # row of H for each edge

        uniq, count = torch.unique_consecutive(sorted_sizes, return_counts=True)
        crossing = (batch[src] != g).any().view(1).long()
        host = torch.cat([uniq, count, crossing]).tolist()  # the one host sync
        n_groups = len(uniq)
        if host[-1]:
            raise ValueError("GroupedMeanNNConv: an edge joins nodes of two different graphs")
        #: (graphs, nodes per graph) of each size group with nodes
        self.groups = [(c, s) for s, c in zip(host[:n_groups], host[n_groups : 2 * n_groups]) if s > 0]

        hidden = edge_net[:-1](edge_attr)  # (E, K): the edge network up to its last Linear
        weight = last.weight
        if last.bias is not None:
            hidden = torch.cat([hidden, hidden.new_ones(hidden.size(0), 1)], dim=1)
            weight = torch.cat([weight, last.bias.unsqueeze(1)], dim=1)
        self.k = hidden.size(1)
        n_rows = sum(c * s * s for c, s in self.groups)
        H = hidden.new_zeros(n_rows, self.k).index_add(0, row, hidden)
        self.blocks = [h.view(c, s, s * self.k) for h, (c, s) in zip(H.split([c * s * s for c, s in self.groups]), self.groups)]
        # A[i, (k, o)] = weight[i * d_out + o, k]
        self.A = weight.view(d_in, d_out, self.k).transpose(1, 2).reshape(d_in, self.k * d_out)
        self.d_out = d_out
        # 1 / in-degree in the input's precision (hidden may be bf16 under autocast)
        self.inv_deg = 1.0 / torch.bincount(dst, minlength=n_nodes).clamp(min=1).to(edge_attr.dtype).unsqueeze(1)

    def __call__(self, x: Tensor) -> Tensor:
        conv, k, d = self.conv, self.k, self.d_out
        if self.groups:
            xs = x[self.perm].split([c * s for c, s in self.groups])
            parts = [torch.bmm(Hg, (xg @ self.A).view(c, s * k, d)).view(c * s, d) for Hg, xg, (c, s) in zip(self.blocks, xs, self.groups)]
            out = torch.cat(parts)[self.pos] * self.inv_deg
        else:
            out = x.new_zeros(x.size(0), d)
        if conv.root_weight:
            out = out + conv.lin(x)
        if conv.bias is not None:
            out = out + conv.bias
        return out


class MPNNTrunk(nn.Module):
    """Gilmer et al.'s MPNN as in the PyG QM9 example / Nash-MTL: NNConv + GRU, Set2Set readout.

    ``self.conv`` is PyG's ``NNConv`` (parameters, initialisation and state-dict names as in the
    reference); the forward evaluates it with :class:`GroupedMeanNNConv` (same function, ~10x
    cheaper) unless ``fast_conv`` is set to False (PyG's own message passing, the reference).
    """

    #: evaluate the shared NNConv with GroupedMeanNNConv (True) or with PyG's message passing (False)
    fast_conv: bool = True

    def __init__(self, dim: int = 64, steps: int = 3, edge_hidden: int = 128) -> None:
        super().__init__()
        from torch_geometric.nn import NNConv
        from torch_geometric.nn.aggr import Set2Set

        self.steps = steps
        self.lin0 = nn.Linear(NODE_DIM, dim)
        edge_net = nn.Sequential(nn.Linear(EDGE_DIM, edge_hidden), nn.ReLU(), nn.Linear(edge_hidden, dim * dim))
        self.conv = NNConv(dim, dim, nn=edge_net, aggr="mean")
        self.gru = nn.GRU(dim, dim)
        self.set2set = Set2Set(dim, processing_steps=3)
        self.out_dim = 2 * dim

    def forward(self, batch: QM9Batch) -> Tensor:
        out = torch.relu(self.lin0(batch.x))
        h = out.unsqueeze(0)
        if self.fast_conv:  # the edge-only work (edge network hidden layer, H blocks) once for all steps
            conv = GroupedMeanNNConv(self.conv, batch.edge_index, batch.edge_attr, batch.batch, batch.num_graphs)
        else:
            def conv(x: Tensor) -> Tensor:
                return self.conv(x, batch.edge_index, batch.edge_attr)
        for _ in range(self.steps):
            m = torch.relu(conv(out))
            out, h = self.gru(m.unsqueeze(0), h)
            out = out.squeeze(0)
        return self.set2set(out, batch.batch, dim_size=batch.num_graphs)


# ====================================================================== benchmark
class QM9Benchmark(Benchmark):
    """QM9, 11 regression tasks (see the module docstring). Options: ``subset``, ``eval_size``, ``split_seed``."""

    name = "qm9"
    variants = ("default",)

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
        self.subset = None if subset is None else int(subset)
        self.eval_size = None if eval_size is None else int(eval_size)
        self.split_seed = int(split_seed)
        self._store: QM9Store | None = None
        self._splits: dict[str, Tensor] | None = None
        self._mean: Tensor | None = None
        self._std: Tensor | None = None
        self._scale = torch.tensor([REPORT_SCALE[t] for t in TASKS], dtype=torch.float32)
        if not cache_path().is_file():
            qm9pack_data_dir()  # fail early (one line, with the install hint) when the raw data is missing

    # ------------------------------------------------------------------ description
    @property
    def task_names(self) -> list[str]:
        return list(TASKS)

    @property
    def metrics(self) -> list[MetricSpec]:
        return [MetricSpec(f"{t}_mae", k, higher_is_better=False, stl=STL_MAE[t]) for k, t in enumerate(TASKS)]

    # ------------------------------------------------------------------ data
    @property
    def store(self) -> QM9Store:
        if self._store is None:
            self._store = load_store()
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
        train = DataLoader(_Rows(splits["train"]), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed), collate_fn=collate)
        val = DataLoader(_Rows(splits["val"]), batch_size=batch_size, shuffle=False, collate_fn=collate)
        test = DataLoader(_Rows(splits["test"]), batch_size=batch_size, shuffle=False, collate_fn=collate)
        return train, val, test

    # ------------------------------------------------------------------ model
    def build_model(self, dim: PositiveInt = 64, **model_options: Any) -> MultiTaskModel:
        if model_options:
            raise TypeError(f"unknown model option(s) for benchmark 'qm9': {', '.join(sorted(model_options))}; valid: dim")
        trunk = MPNNTrunk(dim)
        heads = [nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, 1)) for _ in TASKS]
        return MultiTaskModel(trunk, heads)

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
