"""How close the bonds perceived from the xyz geometry are to the GDB SMILES that qm9pack ships.

PyG's bonds come from ``gdb9.sdf``, Open Babel's perception of the same xyz files; qm9pack ships no
SDF and nothing may be downloaded, so the perceived bonds cannot be compared with the SDF here.
What can be compared is the molecule each geometry was computed for: qm9pack's ``SMILES`` column
(GDB-17's Kekulé SMILES, hydrogens implicit). For every molecule of a ``pyg`` store:

- ``connectivity``: the perceived bond graph (hydrogens included, orders and charges ignored) is
  the SMILES graph (equal canonical SMILES of the all-single-bond skeletons);
- ``kekule``: additionally, the multiset of Kekulé bonds, counted by (element pair, bond order),
  equals that of the SMILES as written (GDB writes one Kekulé form; another Kekulé form of the
  same ring system can count differently, e.g. C=N + N-N against C-N + N=N);
- ``resonance``: connectivity equal and the bond multisets equal once RDKit's aromaticity model
  has turned both molecules' aromatic rings into aromatic bonds (so the choice of Kekulé form no
  longer counts, while a neutral form against GDB's zwitterion, or a tautomer, still does).

Run it with ``python -m experiments.benchmarks.qm9.smiles_check [max_molecules]``.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from experiments.benchmarks.qm9.cache import QM9Store, build_store, load_store
from experiments.benchmarks.qm9.data import qm9pack_data_dir, read_smiles


def _skeleton_smiles(mol: Any) -> str:
    """Canonical SMILES of the bond graph alone: every bond single, no charges, no implicit H."""
    from rdkit import Chem

    skeleton = Chem.RWMol(mol)
    for bond in skeleton.GetBonds():
        bond.SetBondType(Chem.BondType.SINGLE)
        bond.SetIsAromatic(False)
    for atom in skeleton.GetAtoms():
        atom.SetFormalCharge(0)
        atom.SetNoImplicit(True)
        atom.SetIsAromatic(False)
    skeleton.UpdatePropertyCache(strict=False)
    return Chem.MolToSmiles(skeleton)


def _bond_multiset(mol: Any) -> Counter:
    """Kekulé bonds counted by (sorted element pair, bond order)."""
    return Counter((tuple(sorted((b.GetBeginAtom().GetSymbol(), b.GetEndAtom().GetSymbol()))), b.GetBondTypeAsDouble())
                   for b in mol.GetBonds())


def _aromatic_multiset(mol: Any) -> Counter:
    """Bond multiset after RDKit's aromaticity perception (aromatic bonds count as order 1.5)."""
    from rdkit import Chem

    mol = Chem.RWMol(mol)
    mol.UpdatePropertyCache(strict=False)
    Chem.GetSymmSSSR(mol)
    Chem.SetAromaticity(mol)
    return _bond_multiset(mol)


def _stored_mol(store: QM9Store, row: int) -> Any:
    """The stored molecule of ``row`` (atoms and typed bonds, no coordinates) as an RDKit molecule."""
    from rdkit import Chem

    types = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}
    a0, b0, b1 = int(store.atom_ptr[row]), int(store.bond_ptr[row]), int(store.bond_ptr[row + 1])
    mol = Chem.RWMol()
    for z in store.x[a0 : a0 + int(store.n_atoms[row]), 5].tolist():
        mol.AddAtom(Chem.Atom(int(z)))
    for (i, j), t in zip(store.bond_atoms[b0:b1].tolist(), store.bond_type[b0:b1].tolist()):
        mol.AddBond(int(i), int(j), types[int(t)])
    return mol


def compare_with_smiles(store: QM9Store, smiles: list[str]) -> dict[str, Any]:
    """Counts of molecules whose perceived bonds match their SMILES (see the module docstring).

    ``smiles[r]`` is the SMILES of store row ``r`` (the first ``len(smiles)`` rows are compared).
    Also counts the molecules of each perception step and the matches among them, and lists the
    QM9 indices of the molecules that differ even up to the Kekulé form.
    """
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    if store.features != "pyg":
        raise ValueError(f"the SMILES comparison needs Kekulé bonds (feature set 'pyg'), got {store.features!r}")
    counts = {"molecules": 0, "connectivity": 0, "kekule": 0, "resonance": 0}
    by_step: dict[int, Counter] = {}
    mismatches: list[int] = []
    for row, text in enumerate(smiles):
        written = Chem.MolFromSmiles(text, sanitize=False)  # GDB's own Kekulé form
        written.UpdatePropertyCache(strict=False)
        written = Chem.AddHs(written)
        mol = _stored_mol(store, row)
        same_graph = _skeleton_smiles(written) == _skeleton_smiles(mol)
        same_kekule = same_graph and _bond_multiset(written) == _bond_multiset(mol)
        same_resonance = same_graph and _aromatic_multiset(Chem.AddHs(Chem.MolFromSmiles(text))) == _aromatic_multiset(mol)
        step = by_step.setdefault(int(store.bond_step[row]), Counter())
        for key, hit in (("molecules", True), ("connectivity", same_graph), ("kekule", same_kekule), ("resonance", same_resonance)):
            counts[key] += hit
            step[key] += hit
        if not same_resonance:
            mismatches.append(int(store.gdb_index[row]))
    return {**counts, "by_step": {s: dict(c) for s, c in sorted(by_step.items())}, "mismatched_gdb_index": mismatches}


def main(argv: list[str]) -> None:
    """Print the comparison for the first ``argv[0]`` molecules (all when absent) of the ``pyg`` store."""
    limit = int(argv[0]) if argv else None
    store = QM9Store(build_store("pyg", max_molecules=limit)) if limit else load_store("pyg")
    _, smiles = read_smiles(qm9pack_data_dir(), limit)
    result = compare_with_smiles(store, smiles)
    n = result["molecules"]
    for key in ("connectivity", "kekule", "resonance"):
        print(f"{key} equal: {result[key]} of {n} ({100 * result[key] / n:.2f} %)")
    print(f"by perception step: {result['by_step']}")
    print(f"first mismatches (QM9 index): {result['mismatched_gdb_index'][:20]}")


if __name__ == "__main__":
    main(sys.argv[1:])
