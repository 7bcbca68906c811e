"""Reading the MTAN preprocessed ``.npy`` release of NYU-v2 / CityScapes (the layout the FAMO and Nash-MTL code read).

Layout (``ROOT`` is ``benchmark.options.root`` or ``$BALANCEBENCH_DATA/<name>``)::

    ROOT/train/<folder>/<i>.npy   i = 0 .. N_train-1, one file per image and folder
    ROOT/val/<folder>/<i>.npy     i = 0 .. N_val-1 (the reference codes' *test* split)

Folders and per-file shapes (``H × W`` is 288 × 384 for NYU-v2 and 128 × 256 for the CityScapes
release the FAMO code reads; any size works as long as every file agrees):

* ``image``: (H, W, 3) RGB, float in [0, 1];
* ``label`` (NYU-v2) / ``label_7`` / ``label_19`` (CityScapes): (H, W) class index, -1 = unlabelled;
* ``depth``: (H, W, 1) depth (NYU-v2, metres) or inverse depth (CityScapes); 0 = no measurement;
* ``normal`` (NYU-v2 only): (H, W, 3) unit surface normal in [-1, 1]; (0, 0, 0) = no measurement.

Any real dtype is accepted (the reference loaders call ``.float()`` on every array; labels stay
floats until after augmentation, as there, and are then truncated to integers). The split size is
the number of ``*.npy`` files in ``image/``; every index ``0..N-1`` must exist in every folder.
Checked up front: the folders, every index of every folder, and the shapes of sample 0 of each
split; checked per loaded sample: its shape and its label range. Each failure is one line naming the
file and the expected layout.

Augmentation (training only, ``augment=True``, the reference's ``--apply-augmentation`` default):
a random scale ``s ∈ {1.0, 1.2, 1.5}``, a random ``⌊H/s⌋ × ⌊W/s⌋`` crop resized back to ``H × W``
(image and normals bilinear with ``align_corners=True``, labels and depth nearest), depth divided by
``s``; then a horizontal flip with probability 1/2 that also negates the normals' x component. The
draws come from a per-sample ``torch.Generator`` seeded from the epoch's loader seed, so an epoch is
reproducible with any number of loader workers.

``resize=(h, w)`` (small-scale CPU runs only; ``None`` at full scale) resizes every sample on load
with the same interpolation modes, before augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from experiments.benchmarks.localdata import malformed, missing

#: the reference's random scales
SCALES = (1.0, 1.2, 1.5)
SPLIT_DIRS = ("train", "val")


@dataclass(frozen=True)
class Field:
    """One folder of the layout: its name, channels (None: a 2-D map) and kind."""

    folder: str
    channels: int | None
    kind: str  # image | label | depth | normal


def layout_text(fields: Sequence[Field]) -> str:
    folders = ",".join(f.folder for f in fields)
    return f"ROOT/{{train,val}}/{{{folders}}}/<i>.npy for i = 0..N-1 (the MTAN preprocessed release)"


def _indices(folder: Path) -> set[int]:
    out = set()
    for name in (p.name for p in folder.iterdir()):
        if name.endswith(".npy") and name[:-4].isdigit():
            out.add(int(name[:-4]))
    return out


def scan_split(bench: str, root: Path, split: str, fields: Sequence[Field]) -> tuple[int, tuple[int, int]]:
    """Check one split folder; returns (number of samples, (H, W))."""
    layout = layout_text(fields)
    for f in fields:
        if not (root / split / f.folder).is_dir():
            raise missing(bench, root / split / f.folder, layout)
    image_dir = root / split / fields[0].folder
    n = len([p for p in image_dir.iterdir() if p.name.endswith(".npy")])
    if n == 0:
        raise missing(bench, image_dir / "0.npy", layout)
    wanted = set(range(n))
    for f in fields:
        absent = sorted(wanted - _indices(root / split / f.folder))
        if absent:
            raise missing(bench, root / split / f.folder / f"{absent[0]}.npy", layout)
    first = load_array(bench, root / split / fields[0].folder / "0.npy", layout)
    if first.ndim != 3:
        raise malformed(bench, root / split / fields[0].folder / "0.npy", f"shape {first.shape}, expected (H, W, 3)", layout)
    hw = (int(first.shape[0]), int(first.shape[1]))
    for f in fields:
        check_shape(bench, root / split / f.folder / "0.npy", load_array(bench, root / split / f.folder / "0.npy", layout),
                    hw, f, layout)
    return n, hw


def load_array(bench: str, path: Path, layout: str) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise missing(bench, path, layout) from None
    except (OSError, ValueError, EOFError) as exc:
        raise malformed(bench, path, f"not a readable .npy array ({exc})", layout) from None
    if not isinstance(array, np.ndarray) or not (np.issubdtype(array.dtype, np.floating)
                                                 or np.issubdtype(array.dtype, np.integer)):
        raise malformed(bench, path, f"dtype {getattr(array, 'dtype', type(array))}, expected a real number type", layout)
    return array


def check_shape(bench: str, path: Path, array: np.ndarray, hw: tuple[int, int], field: Field, layout: str) -> None:
    expected = hw if field.channels is None else (*hw, field.channels)
    if tuple(array.shape) != expected:
        raise malformed(bench, path, f"shape {tuple(array.shape)}, expected {expected}", layout)


def _resize(t: Tensor, size: tuple[int, int], kind: str) -> Tensor:
    """(C,H,W) or (H,W) → resized; bilinear (align_corners) for images/normals, nearest otherwise."""
    x = t[None] if t.ndim == 3 else t[None, None]
    if kind in ("image", "normal"):
        y = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    else:
        y = F.interpolate(x, size=size, mode="nearest")
    return y[0] if t.ndim == 3 else y[0, 0]


def augment(sample: dict[str, Tensor], kinds: dict[str, str], gen: torch.Generator) -> dict[str, Tensor]:
    """The reference's random scale-crop and horizontal flip (see the module docstring)."""
    h, w = sample["image"].shape[-2:]
    scale = SCALES[int(torch.randint(len(SCALES), (1,), generator=gen))]
    ch, cw = int(h / scale), int(w / scale)
    top = int(torch.randint(h - ch + 1, (1,), generator=gen))
    left = int(torch.randint(w - cw + 1, (1,), generator=gen))
    flip = bool(torch.rand(1, generator=gen) < 0.5)
    return scale_crop_flip(sample, kinds, scale, top, left, flip)


def scale_crop_flip(sample: dict[str, Tensor], kinds: dict[str, str], scale: float, top: int, left: int,
                    flip: bool) -> dict[str, Tensor]:
    """Crop ``⌊H/scale⌋ × ⌊W/scale⌋`` at (top, left), resize back, depth / scale, optional flip."""
    h, w = sample["image"].shape[-2:]
    ch, cw = int(h / scale), int(w / scale)
    out = {}
    for key, t in sample.items():
        y = _resize(t[..., top:top + ch, left:left + cw], (h, w), kinds[key])
        if kinds[key] == "depth":
            y = y / scale
        if flip:
            y = torch.flip(y, dims=[-1])
            if kinds[key] == "normal":
                y[0] = -y[0]
        out[key] = y
    return out


class MTANSplit(Dataset):
    """One split folder; ``dataset[(index, seed)]`` is the tuple of tensors (image, label, …).

    ``seed < 0`` means no augmentation. Image/depth/normal come out (C, H, W) float32, labels
    (H, W) int64.
    """

    def __init__(self, bench: str, root: Path, split: str, fields: Sequence[Field], hw: tuple[int, int],
                 n_classes: int, resize: tuple[int, int] | None = None) -> None:
        self.bench, self.dir, self.fields, self.hw = bench, root / split, tuple(fields), hw
        self.n_classes, self.resize = int(n_classes), resize
        self.layout = layout_text(fields)

    def _read(self, field: Field, index: int) -> Tensor:
        path = self.dir / field.folder / f"{index}.npy"
        array = load_array(self.bench, path, self.layout)
        check_shape(self.bench, path, array, self.hw, field, self.layout)
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        if field.kind == "label":
            low, high = float(t.min()), float(t.max())
            if low < -1 or high > self.n_classes - 1:
                raise malformed(self.bench, path, f"label values in [{low:g}, {high:g}], expected -1..{self.n_classes - 1}",
                                self.layout)
        return t if field.channels is None else t.permute(2, 0, 1)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, ...]:
        index, seed = int(key[0]), int(key[1])
        sample = {f.kind: self._read(f, index) for f in self.fields}
        kinds = {f.kind: f.kind for f in self.fields}
        if self.resize is not None:
            sample = {k: _resize(t, self.resize, k) for k, t in sample.items()}
        if seed >= 0:
            sample = augment(sample, kinds, torch.Generator().manual_seed(seed))
        out = []
        for f in self.fields:
            t = sample[f.kind]
            out.append(t.to(torch.int64) if f.kind == "label" else t.contiguous())
        return tuple(out)
