"""NYU-v2 and CityScapes: fixtures in the MTAN layout, loaders, the SegNet against FAMO's code, split-level
metrics, one-line layout errors, and tiny training runs through the real trainer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.training import rundir
from experiments.benchmarks import create_benchmark
from experiments.benchmarks.dense import metrics as M
from experiments.benchmarks.dense.data import scale_crop_flip
from experiments.benchmarks.dense.segnet import build_segnet
from experiments.benchmarks.fixtures import CATEGORY_OF_19, write_fixture
from experiments.benchmarks.localdata import DATA_ENV
from experiments.config import CONFIG_DIR, load_run_config
from experiments.errors import UserError
from experiments.training.evaluation import delta_m, evaluate, literature_reference
from experiments.training.trainer import train

SMALL = (64, 96)  # a fixture shape that keeps these tests fast (the release's is the default)


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)


@pytest.fixture(scope="module")
def nyu_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture("nyuv2", tmp_path_factory.mktemp("nyu"), counts=(6, 3), shape=SMALL)


@pytest.fixture(scope="module")
def city_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture("cityscapes", tmp_path_factory.mktemp("city"), counts=(6, 3), shape=(32, 64))


# ------------------------------------------------------------------------------------ fixtures
def test_nyu_fixture_has_the_release_layout_shapes_and_markers(tmp_path: Path) -> None:
    root = write_fixture("nyuv2", tmp_path, counts=(2, 1))  # the release's 288 x 384
    for split, n in (("train", 2), ("val", 1)):
        for folder, shape in (("image", (288, 384, 3)), ("label", (288, 384)), ("depth", (288, 384, 1)),
                              ("normal", (288, 384, 3))):
            files = sorted(p.name for p in (root / split / folder).iterdir())
            assert files == [f"{i}.npy" for i in range(n)]
            assert np.load(root / split / folder / "0.npy").shape == shape
    image, label = np.load(root / "train/image/0.npy"), np.load(root / "train/label/0.npy")
    depth, normal = np.load(root / "train/depth/0.npy"), np.load(root / "train/normal/0.npy")
    assert 0 <= image.min() and image.max() <= 1
    assert set(np.unique(label)) <= set(range(-1, 13)) and (label == -1).any()
    missing = depth[..., 0] == 0
    assert missing.any() and (depth >= 0).all()
    assert (np.abs(normal[missing]).sum(-1) == 0).all()  # no depth and no normal at the same pixels
    assert np.allclose(np.linalg.norm(normal[~missing], axis=-1), 1, atol=1e-5)


def test_cityscapes_fixture_label7_is_the_category_of_label19(city_root: Path) -> None:
    l19, l7 = np.load(city_root / "train/label_19/0.npy"), np.load(city_root / "train/label_7/0.npy")
    valid = l19 >= 0
    assert (l7[~valid] == -1).all()
    assert (l7[valid] == np.asarray(CATEGORY_OF_19)[l19[valid].astype(int)]).all()
    depth = np.load(city_root / "train/depth/0.npy")
    assert 0 < depth[depth > 0].min() and depth.max() < 1  # inverse depth


# ------------------------------------------------------------------------------------- loaders
def test_loaders_shapes_dtypes_and_splits(nyu_root: Path) -> None:
    bench = create_benchmark("nyuv2", root=str(nyu_root), val_size=2)
    train, val, test = bench.loaders(2, seed=0)
    image, label, depth, normal = next(iter(train))
    assert image.shape == (2, 3, *SMALL) and image.dtype == torch.float32
    assert label.shape == (2, *SMALL) and label.dtype == torch.int64
    assert depth.shape == (2, 1, *SMALL) and normal.shape == (2, 3, *SMALL)
    assert sum(b[0].shape[0] for b in train) == 4 and sum(b[0].shape[0] for b in val) == 2
    assert sum(b[0].shape[0] for b in test) == 3
    assert set(bench.indices["train"].tolist()).isdisjoint(bench.indices["val"].tolist())
    # without a validation split the validation loader is the test split (the reference recipe)
    ref = create_benchmark("nyuv2", root=str(nyu_root), val_size=0)
    _, val0, test0 = ref.loaders(2, seed=0)
    assert val0 is test0 and len(ref.indices["train"]) == 6


def test_augmentation_is_reproducible_per_seed_and_off_for_evaluation(nyu_root: Path) -> None:
    bench = create_benchmark("nyuv2", root=str(nyu_root), val_size=2)
    first = [b[0] for b in bench.loaders(2, seed=5)[0]]
    again = [b[0] for b in bench.loaders(2, seed=5)[0]]
    other = [b[0] for b in bench.loaders(2, seed=6)[0]]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
    raw = torch.from_numpy(np.load(nyu_root / "val/image/0.npy")).permute(2, 0, 1)
    assert torch.equal(next(iter(bench.loaders(2, seed=5)[2]))[0][0], raw)  # test images untouched


def test_scale_crop_flip_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    sample = {"image": torch.rand(3, 4, 6, generator=g), "label": torch.arange(24.0).reshape(4, 6),
              "depth": torch.rand(1, 4, 6, generator=g) + 1, "normal": torch.rand(3, 4, 6, generator=g)}
    kinds = {k: k for k in sample}
    same = scale_crop_flip(sample, kinds, 1.0, 0, 0, False)
    assert all(torch.allclose(same[k], sample[k]) for k in sample)
    flipped = scale_crop_flip(sample, kinds, 1.0, 0, 0, True)
    assert torch.equal(flipped["label"], sample["label"].flip(-1))
    assert torch.allclose(flipped["normal"][0], -sample["normal"][0].flip(-1))
    assert torch.allclose(flipped["normal"][1:], sample["normal"][1:].flip(-1))
    # scale 2: the 2x3 crop at (1, 2) resized back to 4x6 (nearest for labels/depth), depth halved
    zoom = scale_crop_flip(sample, kinds, 2.0, 1, 2, False)
    crop = sample["label"][1:3, 2:5]
    assert torch.equal(zoom["label"], crop.repeat_interleave(2, 0).repeat_interleave(2, 1))
    assert torch.allclose(zoom["depth"][0, ::2, ::2], sample["depth"][0, 1:3, 2:5] / 2)


# --------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("outputs, arch, n_params", [
    ([(13, False), (1, False), (3, True)], "mtan", 44_229_073),   # FAMO nyuv2 SegNetMtan
    ([(13, False), (1, False), (3, True)], "split", 25_055_185),  # FAMO nyuv2 SegNet (SegNetSplit)
    ([(7, False), (1, False)], "mtan", 41_206_984),               # FAMO cityscapes SegNetMtan
])
def test_segnet_parameter_counts_equal_the_reference(outputs: list, arch: str, n_params: int) -> None:
    """Counts of FAMO's modules (commit 0a6ad06dbdd55fce73ec01e3a175c2498cd1e5e9), instantiated once."""
    with torch.device("meta"):
        model = build_segnet(outputs, arch=arch)
    assert sum(p.numel() for p in model.parameters()) == n_params
    # the reference's split: its task-specific parameters are exactly the prediction layers
    head_params = sum(p.numel() for h in model.heads for p in h.parameters())
    assert head_params == sum(64 * 64 * 9 + 64 + 64 * c + c for c, _ in outputs)


@pytest.mark.parametrize("outputs, arch, shape, expected", [
    ([(13, False), (1, False), (3, True)], "mtan", (2, 3, 32, 32), (-269.96751961173055, -52.44764856491227, -18.478000079444474)),
    ([(13, False), (1, False), (3, True)], "split", (2, 3, 32, 32), (-229.8048836454144, -7.012199616843071, 36.886875397786625)),
    ([(7, False), (1, False)], "mtan", (2, 3, 32, 64), (-483.55044723271885, 0.5641658636067968)),
])  # fmt: skip
def test_segnet_outputs_equal_the_reference_modules(outputs: list, arch: str, shape: tuple, expected: tuple) -> None:
    """FAMO's ``_SegNet`` / ``SegNetSplit`` loaded with this model's weights (state-dict names mapped
    one to one) gave outputs equal to this model's to 0.0 in float64 (commit 0a6ad06, run once); the
    numbers are random projections of the (log-softmax, depth, normal) outputs in training mode."""
    torch.manual_seed(0)
    model = build_segnet(outputs, arch=arch).double().train()
    x = torch.rand(*shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
    out[0] = torch.log_softmax(out[0], dim=1)
    g = torch.Generator().manual_seed(1)
    got = [float((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum()) for o in out]
    assert got == pytest.approx(list(expected), rel=1e-7)


def test_model_outputs_and_trunk_split(nyu_root: Path) -> None:
    bench = create_benchmark("nyuv2", root=str(nyu_root))
    model = bench.build_model(filters=[8, 16, 32, 32, 32])
    out = model(torch.rand(2, 3, *SMALL))
    assert [tuple(o.shape) for o in out] == [(2, 13, *SMALL), (2, 1, *SMALL), (2, 3, *SMALL)]
    assert torch.allclose(out[2].norm(dim=1), torch.ones(2, *SMALL), atol=1e-5)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.rand(1, 3, 48, 48))
    with pytest.raises(ValueError, match="filters\\[3\\] == filters\\[4\\]"):
        bench.build_model(filters=[8, 16, 32, 32, 64])


# ---------------------------------------------------------------------------- split-level metrics
def test_evaluation_accumulates_the_confusion_matrix_and_averages_batches(nyu_root: Path) -> None:
    """mIoU from the split's summed confusion matrix (not a mean of per-batch mIoUs); depth and normal
    errors as the mean over batches of each batch's value (the reference's avg_cost)."""
    bench = create_benchmark("nyuv2", root=str(nyu_root))
    model = bench.build_model(filters=[8, 16, 32, 32, 32])
    _, _, test = bench.loaders(2, seed=0)  # 3 test images: batches of 2 and 1
    got = evaluate(model, bench, test, torch.device("cpu"))
    model.eval()
    conf, depth, normal, per_batch_miou = 0, [], [], []
    with torch.no_grad():
        for image, label, dep, nor in test:
            out = model(image)
            c = M.confusion_counts(out[0], label).reshape(13, 13)
            conf = conf + c
            per_batch_miou.append(M.miou_and_pixel_accuracy(c)[0].item())
            depth.append(M.depth_errors(out[1], dep))
            normal.append(M.normal_errors(out[2], nor))
    miou, acc = M.miou_and_pixel_accuracy(conf).tolist()
    assert got["seg_miou"] == pytest.approx(miou) and got["seg_pix_acc"] == pytest.approx(acc)
    assert got["depth_abs_err"] == pytest.approx((depth[0][0] + depth[1][0]).item() / 2, rel=1e-5)
    assert got["normal_angle_median"] == pytest.approx((normal[0][1] + normal[1][1]).item() / 2, rel=1e-5)
    assert abs(miou - sum(per_batch_miou) / 2) > 1e-4  # the two definitions differ here: the test can fail


@pytest.mark.parametrize("name, row, option, paper", [
    # seed 000 Table 1, FAMO / Nash-MTL / LS rows (mIoU, pix acc, abs, rel, mean, median, 11.25, 22.5, 30) and their Δm%
    ("nyuv2", (38.88, 64.90, 0.5474, 0.2194, 25.06, 19.57, 29.21, 56.61, 68.98), "metrics", -4.10),
    ("nyuv2", (40.13, 65.93, 0.5261, 0.2171, 25.26, 20.08, 28.40, 55.47, 68.15), "metrics", -4.04),
    ("nyuv2", (39.29, 65.33, 0.5493, 0.2263, 28.15, 23.96, 22.09, 47.50, 61.08), "metrics", 5.59),
    ("nyuv2", (38.88, 64.90, 0.5474, 0.2194, 25.06, 19.57, 29.21, 56.61, 68.98), "tasks", -6.79),  # seed 003's formula
    # seed 000 Table 3, CityScapes FAMO row: both formulas agree (two metrics per task)
    ("cityscapes", (74.54, 93.29, 0.0145, 32.59), "metrics", 8.13),
    ("cityscapes", (74.54, 93.29, 0.0145, 32.59), "tasks", 8.13),
])  # fmt: skip
def test_delta_m_reproduces_the_papers_numbers(name: str, row: tuple, option: str, paper: float, nyu_root: Path,
                                               city_root: Path) -> None:
    bench = create_benchmark(name, root=str(nyu_root if name == "nyuv2" else city_root), delta_m=option)
    percent = {"seg_miou", "seg_pix_acc", "normal_within_11_25", "normal_within_22_5", "normal_within_30"}
    values = {m.name: v / 100 if m.name in percent else v for m, v in zip(bench.metrics, row)}
    got = delta_m(values, bench.metrics, literature_reference(bench.metrics))
    assert got == pytest.approx(paper, abs=0.015)  # the table's inputs and outputs are rounded


# ------------------------------------------------------------------------------------ bad copies
def test_no_root_is_one_line_naming_the_layout() -> None:
    with pytest.raises(UserError) as err:
        create_benchmark("nyuv2")
    msg = str(err.value)
    assert "\n" not in msg and DATA_ENV in msg and "ROOT/{train,val}/{image,label,depth,normal}/<i>.npy" in msg


def test_env_var_finds_benchmark_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fixture("cityscapes", tmp_path / "cityscapes", counts=(2, 1), shape=(32, 64))
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    assert create_benchmark("cityscapes").root == tmp_path / "cityscapes"


@pytest.mark.parametrize("damage, expected", [
    (lambda r: (r / "train/depth/1.npy").unlink(), "missing {root}/train/depth/1.npy"),
    (lambda r: __import__("shutil").rmtree(r / "val/normal"), "missing {root}/val/normal;"),
    (lambda r: np.save(r / "train/label/0.npy", np.zeros((5, 5), np.float32)),
     "malformed {root}/train/label/0.npy: shape (5, 5), expected (64, 96)"),
    (lambda r: (r / "train/image/0.npy").write_text("not numpy"), "malformed {root}/train/image/0.npy: not a readable"),
])  # fmt: skip
def test_broken_layouts_are_one_line_naming_the_first_bad_file(tmp_path: Path, damage, expected: str) -> None:
    root = write_fixture("nyuv2", tmp_path / "copy", counts=(3, 1), shape=SMALL)
    damage(root)
    with pytest.raises(UserError) as err:
        create_benchmark("nyuv2", root=str(root))
    msg = str(err.value)
    assert expected.format(root=root) in msg and "\n" not in msg and "expected layout: ROOT/" in msg


def test_bad_label_values_fail_when_loaded(tmp_path: Path) -> None:
    root = write_fixture("cityscapes", tmp_path, counts=(2, 1), shape=(32, 64))
    np.save(root / "train/label_7/1.npy", np.full((32, 64), 7, np.float32))  # 7 classes: 0..6
    bench = create_benchmark("cityscapes", root=str(root))
    with pytest.raises(UserError, match=r"label_7/1.npy: label values in \[7, 7\], expected -1..6"):
        list(bench.loaders(2, seed=0)[0])


def test_a_bad_file_read_by_a_loader_worker_is_still_one_line(tmp_path: Path) -> None:
    root = write_fixture("cityscapes", tmp_path, counts=(2, 1), shape=(32, 64))
    np.save(root / "train/depth/1.npy", np.zeros((32, 64), np.float32))  # (H, W) instead of (H, W, 1)
    bench = create_benchmark("cityscapes", root=str(root), num_workers=1)
    with pytest.raises(UserError) as err:
        list(bench.loaders(2, seed=0)[0])
    assert str(err.value).startswith(f"cityscapes: malformed {root}/train/depth/1.npy: shape (32, 64), expected (32, 64, 1)")
    assert "\n" not in str(err.value)


def test_options_are_checked(nyu_root: Path) -> None:
    with pytest.raises(ValueError, match="val_size must be in"):
        create_benchmark("nyuv2", root=str(nyu_root), val_size=6)
    with pytest.raises(ValueError, match="multiples of 32"):
        create_benchmark("nyuv2", root=str(nyu_root), resize=[64, 80])
    with pytest.raises(UserError, match="unknown options"):
        create_benchmark("nyuv2", root=str(nyu_root), bogus=1)


# ------------------------------------------------------------------------------- tiny training
@pytest.mark.parametrize("name, variant", [("nyuv2", None), ("cityscapes", "seg7"), ("cityscapes", "seg19")])
def test_tiny_scale_trains_through_the_real_trainer(name: str, variant: str | None, nyu_root: Path, city_root: Path,
                                                    tmp_path: Path) -> None:
    root = nyu_root if name == "nyuv2" else city_root
    overrides = {"benchmark": {"options": {"root": str(root)}}, "train": {"progress": False, "device": "cpu"},
                 "balancer": {"name": "famo"}}
    if variant:
        overrides["benchmark"]["variant"] = variant
    cfg = load_run_config(CONFIG_DIR / f"{name}.yaml", "tiny", overrides)
    result = train(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / rundir.SUMMARY).read_text())
    assert summary["status"] == "complete" and result.summary["status"] == "complete"
    bench = create_benchmark(name, variant, root=str(root))
    assert set(summary["test_metrics"]) == {m.name for m in bench.metrics}
    assert all(np.isfinite(v) for v in summary["test_metrics"].values())
    assert (tmp_path / "run" / rundir.BEST).is_file() and (tmp_path / "run" / rundir.METRICS).is_file()
