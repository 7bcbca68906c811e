"""QM9's feature sets and variants against the reference: PyG's own ``QM9.process`` on our molecules,
the rich variant beside the reference one, the cache kept per feature set, and the perceived bonds
against the GDB SMILES that qm9pack ships."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from experiments.benchmarks import create_benchmark, qm9
from experiments.benchmarks.qm9 import QM9Benchmark
from experiments.benchmarks.qm9.smiles_check import compare_with_smiles
from experiments.training.evaluation import literature_reference

KCALMOL2EV = 0.04336414  # the factor PyG's QM9 applies to the SDF CSV's atomisation energies


@pytest.fixture(scope="module")
def bench() -> QM9Benchmark:
    return QM9Benchmark()


def _write_pyg_raw(bench: QM9Benchmark, rows: int, raw_dir: Path) -> None:
    """PyG's three raw QM9 files for the first ``rows`` molecules of the reference store: the SDF
    (Kekulé bonds, positions, ``gdb_<index>`` names), its CSV (qm9pack's values) and an empty
    uncharacterized list (the store holds characterised molecules only)."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    from experiments.benchmarks.qm9.smiles_check import _stored_mol

    store = bench.store
    raw_dir.mkdir(parents=True)
    blocks = []
    for row in range(rows):
        mol = _stored_mol(store, row)
        a0 = int(store.atom_ptr[row])
        conf = Chem.Conformer(mol.GetNumAtoms())
        for k, (x, y, z) in enumerate(store.pos[a0 : a0 + mol.GetNumAtoms()].double().tolist()):
            conf.SetAtomPosition(k, Point3D(x, y, z))
        mol.AddConformer(conf)
        mol.SetProp("_Name", f"gdb_{int(store.gdb_index[row])}")
        mol.UpdatePropertyCache(strict=False)
        blocks.append(Chem.MolToMolBlock(mol, kekulize=False) + "$$$$\n")
    (raw_dir / "gdb9.sdf").write_text("".join(blocks))

    cols = ["RotA_GHz", "RotB_GHz", "RotC_GHz", "Dipole_debye", "Polarizability_bohr3", "HOMO_au", "LUMO_au",
            "HOMO_LUMO_gap_au", "R2_bohr2", "ZPVE_au", "InternalEnergy_0K_au", "InternalEnergy_298K_au",
            "Enthalphy_298K_au", "GibbsFreeEnergy_298K_au", "Heatcapacity_Cv_cal_mol_K"]
    df = pd.read_csv(qm9.qm9pack_data_dir() / "qm9_part1.csv", usecols=["Index", *cols]).set_index("Index")
    df = df.loc[store.gdb_index[:rows].tolist(), cols]
    atomisation = store.y[:rows, [qm9.TASKS.index(t) for t in ("u0", "u", "h", "g")]].numpy() / KCALMOL2EV
    for k, name in enumerate(["u0_atom", "u298_atom", "h298_atom", "g298_atom"]):
        df[name] = atomisation[:, k]
    df.insert(0, "mol_id", [f"gdb_{i}" for i in df.index])
    df.to_csv(raw_dir / "gdb9.sdf.csv", index=False)
    (raw_dir / "uncharacterized.txt").write_text("\n".join(["header"] * 9 + ["footer", ""]))


def _dense_bonds(edge_index: torch.Tensor, edge_attr: torch.Tensor, n: int) -> torch.Tensor:
    dense = torch.zeros(n, n, 4)
    dense[edge_index[0], edge_index[1]] = edge_attr[:, :4].float()
    return dense


def test_pyg_qm9_process_on_our_molecules_gives_our_features(bench: QM9Benchmark, tmp_path: Path) -> None:
    """PyG's own ``QM9.process`` (the installed torch_geometric) on an SDF of our molecules and bonds
    yields exactly our node features and bond one-hots, and our targets in its units: the columns,
    ``num_hs``, the zero aromatic / hybridisation columns of an unsanitised read, the Kekulé types."""
    from torch_geometric.datasets import QM9

    rows = 120
    _write_pyg_raw(bench, rows, tmp_path / "raw")
    ds = QM9(str(tmp_path))
    assert len(ds) == rows
    direct = [qm9.TASKS.index(t) for t in ("mu", "alpha", "homo", "lumo", "r2", "zpve", "cv")]
    pyg_direct = [0, 1, 2, 3, 5, 6, 11]  # PyG's y columns of the same targets
    n_aromatic_in_smiles = 0
    for row in range(rows):
        ours, theirs = bench.get_data(row), ds[row]
        n = theirs.num_nodes
        assert torch.equal(ours.x, theirs.x), row
        assert torch.equal(_dense_bonds(ours.edge_index, ours.edge_attr, n), _dense_bonds(theirs.edge_index, theirs.edge_attr, n)), row
        assert (ours.pos - theirs.pos).abs().max() < 1e-4  # the SDF keeps 4 decimals
        assert torch.allclose(ours.y[0, direct], theirs.y[0, pyg_direct], rtol=1e-6, atol=1e-6), row
        n_aromatic_in_smiles += "c" in theirs.smiles or "n" in theirs.smiles
    assert n_aromatic_in_smiles == 0  # PyG's own SMILES of the unsanitised molecules: no aromatic atom


def test_reference_store_has_pyg_columns(bench: QM9Benchmark) -> None:
    store = bench.store
    assert store.features == "pyg"
    assert int(store.x[:, 6:10].sum()) == 0  # aromatic, sp, sp2, sp3: zero for every atom
    assert set(store.bond_type.unique().tolist()) == {1, 2, 3}  # Kekulé: never aromatic
    assert int((store.bond_type == 2).sum()) > 10_000 and int((store.bond_type == 3).sum()) > 10_000


def test_rich_features_differ_from_the_reference_only_by_perception() -> None:
    """Same molecules and connectivity (where both perceptions took the same step); the rich set adds
    aromaticity and hybridisation and types aromatic ring bonds 4 where the reference is Kekulé."""
    ref = qm9.build_store("pyg", max_molecules=400, workers=1)
    rich = qm9.build_store("rdkit", max_molecules=400, workers=1)
    assert torch.equal(ref["y"], rich["y"]) and torch.equal(ref["pos"], rich["pos"])
    assert torch.equal(ref["x"][:, [*range(6), 10]], rich["x"][:, [*range(6), 10]])
    heavy = rich["x"][:, 5] > 1
    assert rich["x"][heavy, 6].sum() > 50 and rich["x"][heavy, 9].sum() > 500  # aromatic / sp3 atoms
    same = ref["bond_step"] == rich["bond_step"]
    assert same.float().mean() > 0.98
    bond_ptr = torch.cat([torch.zeros(1, dtype=torch.long), ref["n_bonds"].cumsum(0)])
    bond_ptr_rich = torch.cat([torch.zeros(1, dtype=torch.long), rich["n_bonds"].cumsum(0)])
    aromatic_seen = 0
    for m in same.nonzero().flatten().tolist():
        a = slice(int(bond_ptr[m]), int(bond_ptr[m + 1]))
        b = slice(int(bond_ptr_rich[m]), int(bond_ptr_rich[m + 1]))
        assert torch.equal(ref["bond_atoms"][a], rich["bond_atoms"][b]), m
        kekule, typed = ref["bond_type"][a], rich["bond_type"][b]
        plain = typed != 4
        assert torch.equal(kekule[plain], typed[plain]), m
        assert set(kekule[~plain].tolist()) <= {1, 2}, m  # aromatic bonds are single or double in Kekulé form
        aromatic_seen += int((~plain).sum())
    assert aromatic_seen > 100


def test_cache_file_per_feature_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A cache made for other features, or by another format version, is rebuilt, never reused."""
    monkeypatch.setenv("BALANCEBENCH_CACHE", str(tmp_path))
    assert qm9.cache_path("pyg") != qm9.cache_path("rdkit")
    assert qm9.cache_path("pyg").name == f"qm9_pyg_v{qm9.CACHE_VERSION}.pt" and qm9.cache_path() == qm9.cache_path("pyg")
    with pytest.raises(ValueError, match="feature set"):
        qm9.cache_path("sdf")
    real_build = qm9.cache.build_store
    built: list[str] = []

    def small_build(features: str) -> dict:
        built.append(features)
        return real_build(features, max_molecules=30, workers=1)

    monkeypatch.setattr(qm9.cache, "build_store", small_build)
    qm9.save_store(real_build("rdkit", max_molecules=30, workers=1), qm9.cache_path("pyg"))  # wrong features
    store = qm9.load_store("pyg")
    assert built == ["pyg"] and store.features == "pyg" and int(store.x[:, 6:10].sum()) == 0
    assert qm9.load_store("pyg") is store and built == ["pyg"]  # then read from the cache
    old = torch.load(qm9.cache_path("pyg"), weights_only=True)
    qm9.save_store({**old, "version": 1}, qm9.cache_path("pyg"))
    assert qm9.load_store("pyg").features == "pyg" and built == ["pyg", "pyg"]
    assert qm9.load_store("rdkit").features == "rdkit" and built == ["pyg", "pyg", "rdkit"]  # its own file


def test_perceived_bonds_match_the_gdb_smiles(bench: QM9Benchmark) -> None:
    """RDKit's perception from the xyz geometry against qm9pack's GDB SMILES, first 1,000 molecules
    (all 130,831: docs/fidelity.md)."""
    _, smiles = qm9.data.read_smiles(qm9.qm9pack_data_dir(), 1_000)
    result = compare_with_smiles(bench.store, smiles)
    assert result["molecules"] == 1_000
    assert result["connectivity"] >= 980 and result["kekule"] >= 970 and result["resonance"] >= 970
    assert result["kekule"] <= result["connectivity"] and result["resonance"] <= result["connectivity"]
    assert len(result["mismatched_gdb_index"]) == 1_000 - result["resonance"]
    shifted = compare_with_smiles(bench.store, smiles[1:201])  # each molecule against its neighbour's SMILES
    assert shifted["molecules"] == 200 and shifted["connectivity"] <= 20
    with pytest.raises(ValueError, match="Kekulé"):
        compare_with_smiles(qm9.QM9Store(qm9.build_store("rdkit", max_molecules=5, workers=1)), smiles[:5])


def test_literature_stl_only_for_the_reference_variant() -> None:
    reference = literature_reference(create_benchmark("qm9").metrics)
    assert reference == {f"{t}_mae": v for t, v in qm9.STL_MAE.items()}
    assert literature_reference(create_benchmark("qm9", "rich").metrics) is None  # auto falls back to the untrained model
    assert create_benchmark("qm9", "rich").spec == qm9.VARIANTS["rich"]
