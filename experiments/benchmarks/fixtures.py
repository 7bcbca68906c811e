"""Tiny stand-ins for NYU-v2, CityScapes and CelebA, written in the exact on-disk layout the loaders read.

They exist so the loaders, models and metrics can be tested (and a new user can try the commands)
without the real data, which is never downloaded. Images are random; the labels are random too but
*consistent*: every field follows the real release's format (shapes, value ranges, the ``-1`` /
zero "missing" markers) and the targets are functions of the image, so a model can learn them.

* ``nyuv2`` / ``cityscapes`` (MTAN ``.npy`` release, see :mod:`experiments.benchmarks.dense.data`):
  a scene is a coarse grid of blocks; each block has a class, a planar depth and that plane's unit
  normal; the image is the block's class colour plus noise. A border strip is unlabelled (-1) and
  about 5 % of the pixels have no depth (0) and no normal (0, 0, 0). CityScapes' ``label_7`` is
  the Cityscapes category of the ``label_19`` class (flat, construction, object, nature, sky,
  human, vehicle) and its depth is an inverse depth (values around 0.01–0.1, as in the release).
  Default sizes are the releases' (288 × 384 and 128 × 256), all arrays float32.
* ``celeba`` (official aligned layout): ``Img/img_align_celeba/<6-digit id>.jpg`` (178 × 218
  JPEGs), ``Anno/list_attr_celeba.txt`` (count, the 40 attribute names, then one row of ``±1`` per
  image) and ``Eval/list_eval_partition.txt`` (``<file> <0|1|2>`` for train / val / test);
  the image is grey noise in which block ``k`` of a 5 × 8 grid (27 × 35 pixels) is brightened when
  attribute ``k`` is +1 and darkened when it is -1.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np

from experiments.benchmarks.celeba_data import ATTRIBUTES

BENCHMARKS = ("nyuv2", "cityscapes", "celeba")
#: the releases' image sizes
NYU_SHAPE = (288, 384)
CITYSCAPES_SHAPE = (128, 256)
CELEBA_SIZE = (178, 218)  # width, height of the aligned images
#: (height, width) of the block that encodes one attribute in a CelebA fixture image
BLOCK = (27, 35)
#: Cityscapes category (0..6: flat, construction, object, nature, sky, human, vehicle) of each of the 19 classes
CATEGORY_OF_19 = (0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 5, 6, 6, 6, 6, 6, 6)
DEFAULT_COUNTS = {"nyuv2": (6, 3), "cityscapes": (6, 3), "celeba": (24, 8, 8)}


def write_fixture(benchmark: str, out: Path, counts: tuple[int, ...] | None = None,
                  shape: tuple[int, int] | None = None, seed: int = 0) -> Path:
    """Write a tiny ``benchmark`` dataset under ``out`` (created); returns ``out``.

    ``counts``: images per split, (train, val) for the MTAN layouts and (train, val, test) for
    CelebA; ``shape``: (H, W) of the dense images (default: the release's). ``seed``: all randomness.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"no fixture for benchmark {benchmark!r}; valid: {', '.join(BENCHMARKS)}")
    counts = tuple(int(c) for c in (counts or DEFAULT_COUNTS[benchmark]))
    if len(counts) != len(DEFAULT_COUNTS[benchmark]) or min(counts) < 1:
        raise ValueError(f"{benchmark}: counts must be {len(DEFAULT_COUNTS[benchmark])} positive numbers, got {counts}")
    out = Path(out)
    rng = np.random.default_rng(seed)
    if benchmark == "celeba":
        _write_celeba(out, counts, rng)
    else:
        default = NYU_SHAPE if benchmark == "nyuv2" else CITYSCAPES_SHAPE
        hw = tuple(int(v) for v in (shape or default))
        if len(hw) != 2 or min(hw) < 8:
            raise ValueError(f"shape must be (height, width) with both >= 8, got {shape}")
        for split, n in zip(("train", "val"), counts):
            for i in range(n):
                _write_dense_sample(out / split, i, benchmark, hw, rng)
    return out


def _scene(hw: tuple[int, int], n_classes: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """(class map, depth, normals) of a blocky planar scene; class map (H, W) int, depth (H, W) > 0."""
    h, w = hw
    grid = (3, 4)
    classes = rng.integers(0, n_classes, size=grid)
    rows = np.minimum(np.arange(h) * grid[0] // h, grid[0] - 1)
    cols = np.minimum(np.arange(w) * grid[1] // w, grid[1] - 1)
    block = classes[rows][:, cols]
    ys, xs = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    depth = np.empty((h, w))
    normals = np.empty((h, w, 3))
    for r in range(grid[0]):
        for c in range(grid[1]):
            sel = (rows[:, None] == r) & (cols[None, :] == c)
            gx, gy = rng.uniform(-0.5, 0.5, size=2)
            depth[sel] = rng.uniform(1.5, 6.0) + gx * xs[sel] + gy * ys[sel]
            n = np.array([-gx, -gy, 1.0])
            normals[sel] = n / np.linalg.norm(n)
    return block, depth, normals


def _write_dense_sample(split_dir: Path, i: int, benchmark: str, hw: tuple[int, int], rng: np.random.Generator) -> None:
    n_classes = 13 if benchmark == "nyuv2" else 19
    classes, depth, normals = _scene(hw, n_classes, rng)
    palette = np.random.default_rng(12345).uniform(0.1, 0.9, size=(n_classes, 3))  # same colours in every image
    image = np.clip(palette[classes] + rng.normal(0.0, 0.05, size=(*hw, 3)), 0.0, 1.0)
    labels = classes.astype(np.float64)
    border = max(1, hw[0] // 32)
    labels[:border] = -1
    holes = rng.random(hw) < 0.05
    depth = np.where(holes, 0.0, depth)
    arrays: dict[str, np.ndarray] = {"image": image}
    if benchmark == "nyuv2":
        arrays["label"] = labels
        arrays["depth"] = depth[..., None]
        arrays["normal"] = np.where(holes[..., None], 0.0, normals)
    else:
        category = np.asarray(CATEGORY_OF_19, dtype=np.float64)[classes]
        arrays["label_19"] = labels
        arrays["label_7"] = np.where(labels < 0, -1.0, category)
        arrays["depth"] = np.where(holes, 0.0, 0.3 / np.maximum(depth, 1e-6))[..., None]  # inverse depth
    for folder, array in arrays.items():
        (split_dir / folder).mkdir(parents=True, exist_ok=True)
        np.save(split_dir / folder / f"{i}.npy", array.astype(np.float32))


def _write_celeba(out: Path, counts: tuple[int, ...], rng: np.random.Generator) -> None:
    from PIL import Image

    img_dir = out / "Img" / "img_align_celeba"
    img_dir.mkdir(parents=True, exist_ok=True)
    (out / "Anno").mkdir(parents=True, exist_ok=True)
    (out / "Eval").mkdir(parents=True, exist_ok=True)
    n = sum(counts)
    width, height = CELEBA_SIZE
    names, rows, parts = [], [], []
    for i in range(n):
        name = f"{i + 1:06d}.jpg"
        attrs = rng.integers(0, 2, size=len(ATTRIBUTES))
        pixels = rng.normal(128.0, 20.0, size=(height, width, 3))
        for k, on in enumerate(attrs):  # block k of a 5 x 8 grid (35 x 27 px) encodes attribute k
            r, c = BLOCK[0] * (k // 5), BLOCK[1] * (k % 5)
            pixels[r:r + BLOCK[0], c:c + BLOCK[1]] += 80.0 if on else -80.0
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(img_dir / name, quality=95)
        names.append(name)
        rows.append(name + "".join(f" {1 if a else -1:>2d}" for a in attrs))
        parts.append(f"{name} {0 if i < counts[0] else 1 if i < counts[0] + counts[1] else 2}")
    header = " ".join(ATTRIBUTES) + " "
    (out / "Anno" / "list_attr_celeba.txt").write_text(f"{n}\n{header}\n" + "\n".join(rows) + "\n")
    (out / "Eval" / "list_eval_partition.txt").write_text("\n".join(parts) + "\n")


@functools.lru_cache(maxsize=None)
def temporary_fixture(benchmark: str, n_train: int) -> Path:
    """A fixture of the release's image size with ``n_train`` training images and 1 test image, written
    once per process into a temporary directory removed at exit (the cost benchmark's data)."""
    root = Path(tempfile.mkdtemp(prefix=f"balancebench-{benchmark}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    counts = (int(n_train), 1) if benchmark != "celeba" else (int(n_train), 1, 1)
    return write_fixture(benchmark, root, counts=counts)
