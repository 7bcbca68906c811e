"""Tests of the QM9 benchmark's data, split, units, graphs and model (real qm9pack data; the first
run preprocesses the default (``pyg``) store, a few minutes of CPU, then it is cached)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from experiments.benchmarks import qm9
from experiments.benchmarks.base import MultiTaskModel
from experiments.benchmarks.qm9 import QM9Benchmark

HA_TO_EV = 27.211386246
# PyG's QM9 atomrefs (eV) for U0 / U / H / G, atomic number -> energy
ATOMREF = {
    "u0": {1: -13.61312172, 6: -1029.86312267},
    "u": {1: -13.5745904, 6: -1029.82456413},
    "h": {1: -13.54887564, 6: -1029.79887659},
    "g": {1: -13.90303183, 6: -1030.25891228},
}


@pytest.fixture(scope="module")
def bench() -> QM9Benchmark:
    return QM9Benchmark()


@pytest.fixture(scope="module")
def store(bench: QM9Benchmark) -> qm9.QM9Store:
    return bench.store  # builds the on-disk cache on the first run


@pytest.fixture(scope="module")
def raw_head() -> pd.DataFrame:
    """The first molecules of the raw qm9pack file, read independently of the benchmark code."""
    return pd.read_csv(qm9.qm9pack_data_dir() / "qm9_part1.csv", nrows=60).set_index("Index")


def _y(bench: QM9Benchmark, gdb: int, task: str) -> float:
    return float(bench.store.y[bench.store.position_of(gdb), qm9.TASKS.index(task)])


# ---------------------------------------------------------------------------------- dataset
def test_molecule_count_is_pyg_qm9(store: qm9.QM9Store) -> None:
    assert len(store) == qm9.N_MOLECULES == 130_831
    gdb = store.gdb_index
    assert gdb.unique().numel() == len(store)
    assert int(gdb.min()) == 1 and int(gdb.max()) == 133_885
    assert 133_885 - len(store) == 3_054  # the uncharacterized molecules are absent
    assert store.x.shape == (int(store.n_atoms.sum()), qm9.NODE_DIM)
    assert store.pos.shape == (int(store.n_atoms.sum()), 3)
    assert store.y.shape == (len(store), 11) and torch.isfinite(store.y).all()
    # bond perception: nearly all molecules get bond orders (default or extended-Hückel connectivity)
    assert (store.bond_step == 2).sum() < 100
    assert int(store.n_atoms.min()) >= 3 and int(store.n_atoms.max()) == 29


def test_cache_reload_reads_the_cache_and_never_rebuilds(store: qm9.QM9Store, monkeypatch) -> None:
    """A second process (here: an emptied in-memory table) loads the on-disk cache — the same
    tensors — and never parses the raw files again (how long that takes is measured in the docs,
    not asserted here)."""
    from experiments.benchmarks.qm9 import cache

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was rebuilt instead of reloaded")

    monkeypatch.setattr(cache, "build_store", no_rebuild)
    monkeypatch.setattr(cache, "_LOADED", {})
    again = cache.load_store(store.features)
    assert again is not store
    for name in ("gdb_index", "n_atoms", "x", "pos", "n_bonds", "bond_atoms", "bond_type", "y"):
        assert torch.equal(getattr(again, name), getattr(store, name)), name


def test_full_split_sizes_and_disjoint(bench: QM9Benchmark) -> None:
    sp = bench.splits
    assert (len(sp["train"]), len(sp["val"]), len(sp["test"])) == (110_831, 10_000, 10_000)
    allrows = torch.cat([sp["train"], sp["val"], sp["test"]])
    assert allrows.unique().numel() == 130_831  # no index in two splits, every molecule used
    # the split is a fixed function of split_seed
    again = QM9Benchmark(split_seed=0).splits
    assert all(torch.equal(sp[k], again[k]) for k in sp)
    other = QM9Benchmark(split_seed=1).splits
    assert not torch.equal(sp["test"], other["test"])


def test_eval_size_option_fixes_val_and_test(bench: QM9Benchmark) -> None:
    full = bench.splits
    for options, sizes in [({"subset": 128, "eval_size": 64}, (128, 64, 64)),
                           ({"subset": 2_000, "eval_size": 500}, (2_000, 500, 500)),  # above the subset rule's 200
                           ({"eval_size": 1_000}, (110_831, 1_000, 1_000))]:
        sp = QM9Benchmark(**options).splits
        assert (len(sp["train"]), len(sp["val"]), len(sp["test"])) == sizes, options
        for k in sp:  # prefixes of the full split: nested, and the same rows for every eval_size
            assert torch.equal(sp[k], full[k][: len(sp[k])])
    for bad in (0, 10_001):
        with pytest.raises(ValueError, match="eval_size"):
            QM9Benchmark(eval_size=bad)


@pytest.mark.parametrize(("subset", "n_eval"), [(2_000, 200), (50_000, 4_511)])
def test_subset_split_is_nested(bench: QM9Benchmark, subset: int, n_eval: int) -> None:
    sub = QM9Benchmark(subset=subset)
    sp, full = sub.splits, bench.splits
    assert (len(sp["train"]), len(sp["val"]), len(sp["test"])) == (subset, n_eval, n_eval)
    for k in sp:
        assert set(sp[k].tolist()) <= set(full[k].tolist())
    assert torch.cat(list(sp.values())).unique().numel() == subset + 2 * n_eval
    # normalisation statistics come from the (subset) training split
    assert torch.allclose(sub.target_mean, sub.store.y[sp["train"]].mean(0))


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="subset"):
        QM9Benchmark(subset=0)
    with pytest.raises(TypeError, match="unknown option"):
        QM9Benchmark(sbuset=10)
    with pytest.raises(TypeError, match="unknown model option"):
        QM9Benchmark().build_model(width=3)
    with pytest.raises(ValueError, match="unknown variant"):
        QM9Benchmark("nope")


def test_missing_qm9pack_message(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setattr(qm9.data, "_QM9PACK", "qm9pack_not_installed_for_this_test")
    monkeypatch.setenv("BALANCEBENCH_CACHE", str(tmp_path))
    with pytest.raises(ImportError, match="pip install qm9pack_not_installed_for_this_test") as info:
        QM9Benchmark()  # no cache and no raw data: fails at construction, one line
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------- units
def test_water_homo_in_ev(bench: QM9Benchmark, raw_head: pd.DataFrame) -> None:
    assert raw_head.loc[3, "Stoichiometry"] == "[2,0,0,1,0]"  # H2O
    assert raw_head.loc[3, "HOMO_au"] == pytest.approx(-0.2928)
    assert _y(bench, 3, "homo") == pytest.approx(-7.967, abs=1e-3)
    assert _y(bench, 3, "homo") == pytest.approx(-0.2928 * HA_TO_EV, abs=1e-9)
    assert _y(bench, 3, "lumo") == pytest.approx(raw_head.loc[3, "LUMO_au"] * HA_TO_EV, abs=1e-9)
    assert _y(bench, 3, "zpve") == pytest.approx(raw_head.loc[3, "ZPVE_au"] * HA_TO_EV, abs=1e-9)
    for task, col in [("mu", "Dipole_debye"), ("alpha", "Polarizability_bohr3"), ("r2", "R2_bohr2"), ("cv", "Heatcapacity_Cv_cal_mol_K")]:
        assert _y(bench, 3, task) == pytest.approx(raw_head.loc[3, col], abs=1e-12)


def test_methane_atomization_energies(bench: QM9Benchmark, raw_head: pd.DataFrame) -> None:
    assert raw_head.loc[1, "SMILES"] == "C"
    assert raw_head.loc[1, "InternalEnergy_0K_au"] == pytest.approx(-40.47893)
    cols = {"u0": "InternalEnergy_0K_au", "u": "InternalEnergy_298K_au", "h": "Enthalphy_298K_au", "g": "GibbsFreeEnergy_298K_au"}
    for task, col in cols.items():
        total_ev = raw_head.loc[1, col] * HA_TO_EV
        expected = total_ev - (ATOMREF[task][6] + 4 * ATOMREF[task][1])  # CH4: one C, four H
        assert _y(bench, 1, task) == pytest.approx(expected, abs=1e-6), task
    # U0 atomization of methane by hand: (-40.47893 + 37.846772 + 4 * 0.500273) Ha = -0.631066 Ha
    assert _y(bench, 1, "u0") == pytest.approx(-0.631066 * HA_TO_EV, abs=1e-4)
    assert _y(bench, 1, "u0") == pytest.approx(-17.172, abs=1e-3)


# ---------------------------------------------------------------------------------- graphs
@pytest.fixture(scope="module")
def rich_head() -> QM9Benchmark:
    """The ``rich`` variant on the first 60 molecules (its own small store; no full rich cache needed)."""
    rich = QM9Benchmark("rich")
    rich._store = qm9.QM9Store(qm9.build_store("rdkit", max_molecules=60, workers=1))
    return rich


def _molecule(bench: QM9Benchmark, gdb: int):
    return bench.get_data(bench.store.position_of(gdb))


@pytest.mark.parametrize("variant", ["reference", "rich"])
def test_methane_node_features_and_edges(bench: QM9Benchmark, rich_head: QM9Benchmark, variant: str) -> None:
    data = _molecule(bench if variant == "reference" else rich_head, 1)
    # one-hot H,C,N,O,F | Z | aromatic | sp | sp2 | sp3 | num_hs; PyG's unsanitised read leaves sp3 at 0
    carbon = [0, 1, 0, 0, 0, 6, 0, 0, 0, 1 if variant == "rich" else 0, 4]
    hydrogen = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    assert data.x.tolist() == [carbon] + [hydrogen] * 4
    assert data.edge_index.shape == (2, 20)  # complete graph: 5 * 4 ordered pairs
    src, dst = data.edge_index
    assert (src != dst).all()
    assert len(set(zip(src.tolist(), dst.tolist()))) == 20
    bond = data.edge_attr[:, :4]
    is_ch = (src == 0) | (dst == 0)
    assert bond[is_ch].tolist() == [[1.0, 0.0, 0.0, 0.0]] * 8  # C-H single bonds
    assert bond[~is_ch].abs().sum() == 0  # H...H: no bond
    dist = data.edge_attr[:, 4]
    assert torch.allclose(dist, (data.pos[src] - data.pos[dst]).norm(dim=1))
    assert dist[is_ch].min() > 1.08 and dist[is_ch].max() < 1.10  # C-H ~ 1.09 Å


def test_pyrrole_aromatic_features(rich_head: QM9Benchmark, raw_head: pd.DataFrame) -> None:
    assert raw_head.loc[50, "SMILES"] == "N1C=CC=C1"
    data = _molecule(rich_head, 50)
    heavy = data.x[data.x[:, 5] > 1]
    assert heavy[:, 6].tolist() == [1.0] * 5  # all ring atoms aromatic
    assert heavy[:, 8].tolist() == [1.0] * 5  # sp2
    nitrogen = heavy[heavy[:, 5] == 7][0]
    assert nitrogen[10] == 1  # N-H
    aromatic_edges = data.edge_attr[:, 3].sum()
    assert aromatic_edges == 10  # 5 ring bonds, both directions


def test_pyrrole_is_kekule_in_the_reference_features(bench: QM9Benchmark) -> None:
    """PyG's QM9 view of pyrrole: no aromatic or hybridisation flag, two C=C and three single ring bonds."""
    data = _molecule(bench, 50)
    assert data.x[:, 6:10].abs().sum() == 0
    heavy = (data.x[:, 5] > 1).nonzero().flatten()
    src, dst = data.edge_index
    ring = torch.isin(src, heavy) & torch.isin(dst, heavy) & (data.edge_attr[:, :4].sum(1) > 0)
    per_type = data.edge_attr[ring, :4].sum(0) / 2  # each bond appears in both directions
    assert per_type.tolist() == [3.0, 2.0, 0.0, 0.0]
    assert data.x[data.x[:, 5] == 7][0, 10] == 1  # N-H


def test_collate_batch_structure(bench: QM9Benchmark) -> None:
    rows = bench.splits["train"][:16].tolist()
    batch = bench.collate()(rows)
    s = bench.store
    n = s.n_atoms[rows]
    assert batch.num_graphs == 16 and bench.batch_size(batch) == 16
    assert batch.x.shape == (int(n.sum()), 11)
    assert batch.edge_index.shape[1] == int((n * (n - 1)).sum())
    src, dst = batch.edge_index
    assert (src != dst).all() and torch.equal(batch.batch[src], batch.batch[dst])
    assert batch.edge_attr.shape == (batch.edge_index.shape[1], 5)
    assert int(batch.edge_attr[:, :4].sum()) == 2 * int(s.n_bonds[rows].sum())
    expected_y = (s.y[rows] - bench.target_mean) / bench.target_std
    assert torch.allclose(batch.y.double(), expected_y, atol=1e-5)
    moved = bench.to_device(batch, torch.device("cpu"))
    assert torch.equal(moved.edge_index, batch.edge_index)


def test_loaders_shuffle_with_seed() -> None:
    sub = QM9Benchmark(subset=300)
    tr, va, te = sub.loaders(batch_size=64, seed=0)
    first = next(iter(tr)).idx
    assert torch.equal(first, next(iter(sub.loaders(64, 0)[0])).idx)
    assert not torch.equal(first, next(iter(sub.loaders(64, 1)[0])).idx)
    seen = torch.cat([b.idx for b in tr])
    assert sorted(seen.tolist()) == sorted(sub.splits["train"].tolist())
    assert torch.equal(torch.cat([b.idx for b in va]), sub.splits["val"])
    assert sum(b.num_graphs for b in te) == 200


def test_build_store_slice_matches_cache(bench: QM9Benchmark, tmp_path) -> None:
    """Preprocessing path (2 worker processes) on a slice equals the cached rows; atomic save."""
    part = qm9.build_store(max_molecules=300, workers=2)
    full = bench.store
    k = int(part["n_atoms"].sum())
    assert len(part["n_atoms"]) == 300 and torch.equal(part["gdb_index"], full.gdb_index[:300])
    assert torch.equal(part["x"], full.x[:k]) and torch.equal(part["pos"], full.pos[:k])
    assert torch.equal(part["bond_type"], full.bond_type[: int(part["n_bonds"].sum())])
    assert torch.equal(part["y"], full.y[:300])
    path = tmp_path / "sub" / "qm9.pt"
    qm9.save_store(part, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["qm9.pt"]  # no temporary file left
    assert torch.equal(torch.load(path, weights_only=True)["x"], part["x"])


# ---------------------------------------------------------------------------------- model
def test_metric_specs(bench: QM9Benchmark) -> None:
    assert bench.name == "qm9" and bench.variants == ("reference", "rich") and bench.variant == "reference"
    assert bench.task_names == ["mu", "alpha", "homo", "lumo", "r2", "zpve", "u0", "u", "h", "g", "cv"]
    specs = bench.metrics
    assert [m.name for m in specs] == [f"{t}_mae" for t in bench.task_names]
    assert [m.task for m in specs] == list(range(11))
    assert not any(m.higher_is_better for m in specs)
    assert specs[2].stl == 60.576 and specs[0].stl == 0.0671 and specs[10].stl == 0.07212
    # the literature STL MAEs were measured with PyG's features: the rich variant has none
    rich = QM9Benchmark("rich").metrics
    assert [m.name for m in rich] == [m.name for m in specs] and all(m.stl is None for m in rich)


@pytest.mark.parametrize(("heads", "embedding"), [("shared_lin1", 16), ("per_task_mlp", 32)])
def test_model_forward_backward(bench: QM9Benchmark, heads: str, embedding: int) -> None:
    torch.manual_seed(0)
    model = qm9.build_qm9_model(11, dim=16, heads=heads)
    assert isinstance(model, MultiTaskModel) and len(model.heads) == 11
    batch = bench.collate()(bench.splits["train"][:6].tolist())
    outputs = model(bench.inputs(batch))
    assert len(outputs) == 11 and all(o.shape == (6, 1) for o in outputs)
    # shared part's output: lin1 (dim) for the reference, the Set2Set graph embedding (2 * dim) otherwise
    assert model.trunk(batch).shape == (6, embedding)
    losses = bench.losses(outputs, batch)
    assert losses.shape == (11,) and torch.isfinite(losses).all()
    losses.sum().backward()
    grads = [p.grad for p in model.trunk.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    sums = bench.metric_sums(outputs, batch)
    assert sums.shape == (11,) and torch.isfinite(sums).all() and (sums >= 0).all()


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_model_is_the_reference_net(bench: QM9Benchmark) -> None:
    """Nash-MTL / FAMO ``Net``: shared lin1 = Linear(128, 64) + ReLU, then one Linear(64, 1) per task."""
    model = bench.build_model()
    conv = model.trunk.conv
    assert conv.nn[0].in_features == 5 and conv.nn[2].out_features == 64 * 64
    assert (model.trunk.lin1.in_features, model.trunk.lin1.out_features) == (128, 64)
    assert all(isinstance(h, torch.nn.Linear) and (h.in_features, h.out_features) == (64, 1) for h in model.heads)
    assert _count(model.trunk) == 616_960 and _count(model.heads) == 715


def test_rich_model_has_per_task_mlp_heads() -> None:
    model = QM9Benchmark("rich").build_model()
    assert model.trunk.lin1 is None and model.trunk.out_dim == 128
    assert [type(m) for m in model.heads[0]] == [torch.nn.Linear, torch.nn.ReLU, torch.nn.Linear]
    assert model.heads[0][0].in_features == 128
    assert _count(model.trunk) == 608_704 and _count(model.heads) == 11 * 8_321 == 91_531


def test_metric_sums_denormalise(bench: QM9Benchmark) -> None:
    rows = bench.splits["val"][:5].tolist()
    batch = bench.collate()(rows)
    exact = [batch.y[:, k : k + 1] for k in range(11)]
    assert torch.allclose(bench.metric_sums(exact, batch), torch.zeros(11))
    # predictions off by exactly one target unit (D, a0^3, eV, ...) -> MAE 1 unit = 1000 meV for energies
    off = [batch.y[:, k : k + 1] + 1.0 / float(bench.target_std[k]) for k in range(11)]
    scale = torch.tensor([1, 1, 1000, 1000, 1, 1000, 1000, 1000, 1000, 1000, 1], dtype=torch.float32)
    assert torch.allclose(bench.metric_sums(off, batch) / 5, scale, rtol=1e-3)
    assert math.isclose(float(bench.losses(exact, batch).sum()), 0.0, abs_tol=1e-12)
    assert np.isfinite(bench.target_std.numpy()).all()
