"""Raw QM9 from the ``qm9pack`` package: where its CSVs are, how they parse, targets in PyG's units.

The full QM9 database as shipped by ``qm9pack`` (``pip install qm9pack``) is read directly from its
CSV files with pandas (``qm9pack``'s own loader imports ``pkg_resources`` and fails on current
setuptools, so the package is never imported; its data folder is located with
:func:`importlib.util.find_spec`). Nothing is downloaded. The CSVs hold 130,831 molecules: the
133,885 GDB-9 indices minus the 3,054 molecules that failed the QM9 geometry-consistency check
(``qm9pack``'s own field documentation says so; the missing indices are exactly 3,054). That is the
same set of molecules as PyG's processed ``QM9`` (which skips the 3,054 ``uncharacterized.txt``
entries), in the same atom order (the xyz files' order, which the SDF PyG reads keeps).

Targets (PyG QM9 units; the 11 Nash-MTL / FAMO tasks): mu (D), alpha (a0^3), homo / lumo (eV),
r2 (a0^2), zpve (eV), u0 / u / h / g (eV, ATOMIZATION energies: total energy minus the per-atom
reference energies PyG ships as ``atomref`` for U0 / U / H / G), cv (cal/mol K).
Hartree -> eV with 1 Ha = 27.211386246 eV, PyG's factor.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

HAR2EV = 27.211386246  # eV per Hartree (the factor PyG's QM9 uses)

TASKS = ("mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u", "h", "g", "cv")

#: Literature single-task MAEs (reporting units: meV for energies) of the Nash-MTL / FAMO reference
#: (``BASE`` in their ``quantum_chemistry/utils.py``), measured with PyG's QM9 features at full scale.
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

_QM9PACK = "qm9pack"
_CSV_PARTS = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")


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


def _read_columns(data_dir: Path, columns: list[str], max_molecules: int | None):
    """The given CSV columns of the first ``max_molecules`` rows (all when None), sorted by QM9 index."""
    import pandas as pd

    frames = []
    remaining = max_molecules
    for part in _CSV_PARTS:
        frame = pd.read_csv(data_dir / part, usecols=["Index", *columns], nrows=remaining)
        frames.append(frame)
        if remaining is not None:
            remaining -= len(frame)
            if remaining <= 0:
                break
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values("Index", kind="stable").reset_index(drop=True)


def read_raw(data_dir: Path, max_molecules: int | None = None) -> dict[str, np.ndarray]:
    """Parse the qm9pack CSVs: gdb indices, atom counts, atomic numbers, positions, raw targets."""
    df = _read_columns(data_dir, ["N_atoms", "Elements", "XYZ_Ang", *RAW_COLUMNS.values()], max_molecules)
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


def read_smiles(data_dir: Path, max_molecules: int | None = None) -> tuple[np.ndarray, list[str]]:
    """(QM9 indices, SMILES) in index order. qm9pack's ``SMILES`` column is the GDB-17 SMILES of the
    xyz files (Kekulé, no stereo marks; the relaxed-geometry SMILES, with stereo, is not shipped)."""
    df = _read_columns(data_dir, ["SMILES"], max_molecules)
    return df["Index"].to_numpy(np.int64).copy(), df["SMILES"].tolist()


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
