"""Reading the user's copy of CelebA in the official aligned layout (what FAMO's ``experiments/celeba/data.py`` reads).

Layout (``ROOT`` is ``benchmark.options.root`` or ``$BALANCEBENCH_DATA/celeba``)::

    ROOT/Img/img_align_celeba/<name>.jpg    202,599 aligned 178 × 218 face images
    ROOT/Anno/list_attr_celeba.txt          line 1: count; line 2: the 40 attribute names;
                                            then "<name> ±1 ±1 …" (40 values) per image
    ROOT/Eval/list_eval_partition.txt       "<name> <0|1|2>" per image: train / val / test

Parsing follows the reference: attribute value ``1`` is the positive class and anything else
(``-1``) the negative one; the two files must list the same images in the same order (the
reference asserts it). Blank lines are skipped (the reference instead drops the last line, which is
blank when the file ends with a newline). The count on line 1 and the 40 names on line 2 are
checked against the official ones. Every listed image must exist in ``Img/img_align_celeba``.

Preprocessing as the reference (torchvision ``Resize((64, 64))`` then ``ToTensor`` on the PIL
image): RGB, resized to ``image_size × image_size`` with PIL's bilinear filter (the aspect ratio is
not kept), scaled to [0, 1]; no normalisation, no augmentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from experiments.benchmarks.localdata import malformed, missing

#: the 40 attributes, in the order of ``list_attr_celeba.txt``
ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby",
    "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male",
    "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose",
    "Receding_Hairline", "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair",
    "Wearing_Earrings", "Wearing_Hat", "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)  # fmt: skip
IMAGES = Path("Img") / "img_align_celeba"
ATTR_FILE = Path("Anno") / "list_attr_celeba.txt"
PARTITION_FILE = Path("Eval") / "list_eval_partition.txt"
LAYOUT = (f"ROOT/{IMAGES}/<name>.jpg, ROOT/{ATTR_FILE} (count, 40 names, '<name> ±1 x40' rows), "
          f"ROOT/{PARTITION_FILE} ('<name> 0|1|2' rows) (the official aligned CelebA release)")
SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class CelebAIndex:
    """Image names, their (N, 40) 0/1 attribute matrix and their split codes, in file order."""

    names: list[str]
    attributes: np.ndarray
    partition: np.ndarray


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise missing("celeba", path, LAYOUT)
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise malformed("celeba", path, f"unreadable ({exc})", LAYOUT) from None


def read_index(root: Path) -> CelebAIndex:
    """Parse and cross-check the annotation and partition files and the image folder."""
    attr_path, part_path = root / ATTR_FILE, root / PARTITION_FILE
    if not (root / IMAGES).is_dir():
        raise missing("celeba", root / IMAGES, LAYOUT)
    attr_lines, part_lines = _lines(attr_path), _lines(part_path)
    if len(attr_lines) < 3 or not attr_lines[0].strip().isdigit():
        raise malformed("celeba", attr_path, "line 1 must be the number of images", LAYOUT)
    header = tuple(attr_lines[1].split())
    if header != ATTRIBUTES:
        raise malformed("celeba", attr_path, f"line 2 must be the 40 attribute names {ATTRIBUTES[0]} .. "
                        f"{ATTRIBUTES[-1]}, got {len(header)} names", LAYOUT)
    rows = attr_lines[2:]
    if int(attr_lines[0]) != len(rows):
        raise malformed("celeba", attr_path, f"line 1 says {int(attr_lines[0])} images, the file lists {len(rows)}", LAYOUT)
    if len(part_lines) != len(rows):
        raise malformed("celeba", part_path, f"{len(part_lines)} rows, {attr_path.name} has {len(rows)}", LAYOUT)
    names, attrs, parts = [], np.zeros((len(rows), len(ATTRIBUTES)), dtype=np.float32), np.zeros(len(rows), np.int64)
    for k, (row, part) in enumerate(zip(rows, part_lines)):
        fields, pfields = row.split(), part.split()
        if len(fields) != 1 + len(ATTRIBUTES):
            raise malformed("celeba", attr_path, f"row {k + 3} has {len(fields) - 1} values, expected 40", LAYOUT)
        if len(pfields) != 2 or pfields[0] != fields[0] or pfields[1] not in ("0", "1", "2"):
            raise malformed("celeba", part_path, f"row {k + 1} is {part.strip()!r}, expected '{fields[0]} 0|1|2' "
                            f"(same order as {attr_path.name})", LAYOUT)
        names.append(fields[0])
        attrs[k] = [v == "1" for v in fields[1:]]
        parts[k] = int(pfields[1])
    present = {p.name for p in (root / IMAGES).iterdir()}
    for name in names:
        if name not in present:
            raise missing("celeba", root / IMAGES / name, LAYOUT)
    return CelebAIndex(names, attrs, parts)


def load_image(path: Path, size: int) -> Tensor:
    """(3, size, size) float32 in [0, 1]: RGB, PIL bilinear resize, as torchvision's Resize + ToTensor."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.BILINEAR)
    except FileNotFoundError:
        raise missing("celeba", path, LAYOUT) from None
    except (OSError, UnidentifiedImageError) as exc:
        raise malformed("celeba", path, f"not a readable image ({exc})", LAYOUT) from None
    array = np.asarray(rgb, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class CelebASplit(Dataset):
    """``dataset[i]`` = (image (3,S,S) float32, attributes (40,) float32 0/1) of the split's i-th image."""

    def __init__(self, root: Path, index: CelebAIndex, rows: np.ndarray, size: int) -> None:
        self.root, self.size = root, int(size)
        self.names = [index.names[r] for r in rows]
        self.attributes = torch.from_numpy(index.attributes[rows])

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return load_image(self.root / IMAGES / self.names[i], self.size), self.attributes[i]
