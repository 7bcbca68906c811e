"""CelebA: the aligned-release fixture and parser, preprocessing, FAMO's network, F1 / error metrics by hand,
one-line layout errors, and a tiny run through the real trainer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from experiments.training import rundir
from experiments.benchmarks import MultiTaskModel, create_benchmark
from experiments.benchmarks.celeba import celeba_trunk, f1_scores
from experiments.benchmarks.celeba_data import ATTRIBUTES, load_image, read_index
from experiments.benchmarks.fixtures import BLOCK, write_fixture
from experiments.benchmarks.localdata import DATA_ENV
from experiments.config import CONFIG_DIR, load_run_config
from experiments.errors import UserError
from experiments.training.evaluation import evaluate
from experiments.training.trainer import train


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture("celeba", tmp_path_factory.mktemp("celeba"), counts=(16, 6, 5))


def test_fixture_files_have_the_official_format(root: Path) -> None:
    lines = (root / "Anno/list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == "27" and lines[1].split() == list(ATTRIBUTES)
    first = lines[2].split()
    assert first[0] == "000001.jpg" and set(first[1:]) <= {"1", "-1"} and len(first) == 41
    parts = (root / "Eval/list_eval_partition.txt").read_text().splitlines()
    assert parts[0] == "000001.jpg 0" and parts[16] == "000017.jpg 1" and parts[-1] == "000027.jpg 2"
    with Image.open(root / "Img/img_align_celeba/000027.jpg") as img:
        assert img.size == (178, 218) and img.format == "JPEG"


def test_fixture_attributes_are_written_in_the_image(root: Path) -> None:
    index = read_index(root)
    pixels = np.asarray(Image.open(root / "Img/img_align_celeba/000003.jpg"), dtype=float).mean(-1)
    for k in range(len(ATTRIBUTES)):
        r, c = BLOCK[0] * (k // 5), BLOCK[1] * (k % 5)
        bright = pixels[r + 3:r + BLOCK[0] - 3, c + 3:c + BLOCK[1] - 3].mean() > 128
        assert bright == bool(index.attributes[2, k])


def test_parser_and_splits(root: Path) -> None:
    index = read_index(root)
    assert index.names[:2] == ["000001.jpg", "000002.jpg"] and index.attributes.shape == (27, 40)
    assert set(np.unique(index.attributes)) <= {0.0, 1.0}
    bench = create_benchmark("celeba", root=str(root), image_size=32)
    assert [len(bench.splits[s]) for s in ("train", "val", "test")] == [16, 6, 5]
    assert bench.task_names == list(ATTRIBUTES) and bench.n_tasks == 40
    image, y = next(iter(bench.loaders(4, seed=0)[1]))
    assert image.shape == (4, 3, 32, 32) and y.shape == (4, 40) and y.dtype == torch.float32
    assert torch.equal(y[0], torch.from_numpy(index.attributes[16]))  # val = partition code 1, in file order


def test_image_preprocessing_is_pil_bilinear_resize_to_unit_range(root: Path) -> None:
    path = root / "Img/img_align_celeba/000001.jpg"
    got = load_image(path, 64)
    with Image.open(path) as img:
        want = np.asarray(img.convert("RGB").resize((64, 64), Image.BILINEAR), dtype=np.float32) / 255
    assert got.shape == (3, 64, 64) and torch.equal(got, torch.from_numpy(want).permute(2, 0, 1))


def test_f1_and_error_by_hand() -> None:
    # one attribute: predictions 1,1,0,0,1 vs targets 1,0,1,0,1 -> TP 2, FP 1, FN 1: P = R = 2/3, F1 = 2/3
    assert f1_scores(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([1.0])).item() == pytest.approx(2 / 3, rel=1e-6)
    assert f1_scores(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([3.0])).item() == 0.0  # no positives predicted


def test_metrics_are_accumulated_over_the_split(root: Path) -> None:
    """F1 from the split's TP / FP / FN totals (not a mean of per-batch F1s); the error variant is a sample mean."""
    torch.manual_seed(0)
    for variant in ("f1", "error"):
        bench = create_benchmark("celeba", variant, root=str(root), image_size=32)
        model = bench.build_model(channels=[4, 8, 8, 8], hidden=8)
        _, val, _ = bench.loaders(4, seed=0)  # 6 images: batches of 4 and 2
        got = evaluate(model, bench, val, torch.device("cpu"))
        model.eval()
        with torch.no_grad():
            pred = torch.cat([(torch.cat(model(x), 1) > 0).float() for x, _ in val])
        y = torch.cat([t for _, t in val])
        if variant == "f1":
            tp, fp, fn = (pred * y).sum(0), (pred * (1 - y)).sum(0), ((1 - pred) * y).sum(0)
            want = 2 * tp / (2 * tp + fp + fn).clamp(min=1e-12)  # F1 = 2TP / (2TP + FP + FN), up to the 1e-8s
            assert list(got) == [f"{a}_f1" for a in ATTRIBUTES]
        else:
            want = (pred != y).float().mean(0)
        assert torch.allclose(torch.tensor(list(got.values()), dtype=torch.float32), want, atol=1e-6)


def test_loss_is_binary_cross_entropy_per_attribute(root: Path) -> None:
    bench = create_benchmark("celeba", root=str(root), image_size=32)
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(0))
    y = (torch.rand(5, 40, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    losses = bench.losses(list(logits.split(1, dim=1)), (None, y))
    want = torch.stack([F.binary_cross_entropy(torch.sigmoid(logits[:, k]), y[:, k]) for k in range(40)])
    assert losses.shape == (40,) and torch.allclose(losses, want, atol=1e-6)


def test_network_parameter_count_equals_the_reference() -> None:
    """FAMO's experiments/celeba/models.py Network (commit 0a6ad06, instantiated once): 5,197,160 parameters
    (trunk + 40 Linear(512, 1) heads); loaded with this model's weights its sigmoid outputs matched to 1e-16."""
    trunk = celeba_trunk()
    assert sum(p.numel() for p in trunk.parameters()) + 40 * 513 == 5_197_160
    assert trunk(torch.rand(2, 3, 64, 64)).shape == (2, 512)


def test_network_outputs_equal_the_reference_module() -> None:
    """The random projection of this model's (4, 40) logits in training mode, float64; FAMO's Network with the
    same weights (``shared_base`` / ``out_layer`` names mapped one to one) gave sigmoid outputs equal to ours
    to 1.1e-16 (commit 0a6ad06, run once)."""
    torch.manual_seed(0)
    model = MultiTaskModel(celeba_trunk(), [torch.nn.Linear(512, 1) for _ in ATTRIBUTES]).double().train()
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        logits = torch.cat(model(x), dim=1)
    projection = torch.randn(logits.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert float((logits * projection).sum()) == pytest.approx(4.062207622935476, rel=1e-7)


@pytest.mark.parametrize("damage, expected", [
    (lambda r: (r / "Img/img_align_celeba/000005.jpg").unlink(), "missing {root}/Img/img_align_celeba/000005.jpg"),
    (lambda r: (r / "Eval/list_eval_partition.txt").unlink(), "missing {root}/Eval/list_eval_partition.txt"),
    (lambda r: (r / "Anno/list_attr_celeba.txt").write_text("1\nMale Young\n000001.jpg 1 1\n"),
     "malformed {root}/Anno/list_attr_celeba.txt: line 2 must be the 40 attribute names"),
    (lambda r: (r / "Eval/list_eval_partition.txt").write_text(
        (r / "Eval/list_eval_partition.txt").read_text().replace("000002.jpg", "000099.jpg")),
     "malformed {root}/Eval/list_eval_partition.txt: row 2 is '000099.jpg 0', expected '000002.jpg 0|1|2'"),
])  # fmt: skip
def test_broken_copies_are_one_line(tmp_path: Path, damage, expected: str) -> None:
    root = write_fixture("celeba", tmp_path / "copy", counts=(4, 2, 2))
    damage(root)
    with pytest.raises(UserError) as err:
        create_benchmark("celeba", root=str(root))
    msg = str(err.value)
    assert expected.format(root=root) in msg and "\n" not in msg and "expected layout: ROOT/Img/img_align_celeba" in msg


def test_unreadable_image_fails_when_loaded(tmp_path: Path) -> None:
    root = write_fixture("celeba", tmp_path, counts=(2, 1, 1))
    (root / "Img/img_align_celeba/000001.jpg").write_bytes(b"not a jpeg")
    bench = create_benchmark("celeba", root=str(root))
    with pytest.raises(UserError, match="malformed .*000001.jpg: not a readable image"):
        list(bench.loaders(2, seed=0)[0])


@pytest.mark.parametrize("variant", ["f1", "error"])
def test_tiny_scale_trains_through_the_real_trainer(variant: str, root: Path, tmp_path: Path) -> None:
    overrides = {"benchmark": {"variant": variant, "options": {"root": str(root)}},
                 "train": {"progress": False, "device": "cpu"}, "balancer": {"name": "famo"}}
    cfg = load_run_config(CONFIG_DIR / "celeba.yaml", "tiny", overrides)
    train(cfg, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / rundir.SUMMARY).read_text())
    assert summary["status"] == "complete" and len(summary["test_metrics"]) == 40
    assert all(0.0 <= v <= 1.0 for v in summary["test_metrics"].values())
