"""CityScapes, 2 tasks (segmentation and inverse depth) from the user's copy of the MTAN release.

Seed 000 Table 3 and seed 004 Tables 2, 3, 6, 8 use variant ``seg7`` (7 classes, folder
``label_7``); variant ``seg19`` reads the release's 19-class labels (``label_19``), the "19C" step of
seed 003 §3.3. Seed 003's instance-segmentation task is not in this release (it has no instance
labels), so it is not offered. Layout, model, losses and metrics: see
:mod:`experiments.benchmarks.dense` (``ROOT/{train,val}/{image,label_7|label_19,depth}/<i>.npy``,
2,975 training and 500 test images of 128 × 256 in the release the FAMO code reads). STL
references (``seg7`` only): seed 000 Table 3 (the FAMO code's ``BASE``), valid at full scale only.
"""

from __future__ import annotations

from experiments.benchmarks.dense.benchmark import MTANDenseBenchmark
from experiments.benchmarks.dense.data import Field

_IMAGE, _DEPTH = Field("image", 3, "image"), Field("depth", 1, "depth")
#: seed 000 Table 3 / seed 004 Table 2 STL row (mIoU and pixel accuracy as fractions, as the code's BASE)
STL_SEG7 = {"seg_miou": 0.7401, "seg_pix_acc": 0.9316, "depth_abs_err": 0.0125, "depth_rel_err": 27.77}


class CityscapesBenchmark(MTANDenseBenchmark):
    """CityScapes: 7- (or 19-) class segmentation and depth (MTAN .npy release, user's copy)."""

    name = "cityscapes"
    variants = ("seg7", "seg19")
    FIELDS = {"seg7": (_IMAGE, Field("label_7", None, "label"), _DEPTH),
              "seg19": (_IMAGE, Field("label_19", None, "label"), _DEPTH)}
    N_CLASSES = {"seg7": 7, "seg19": 19}
    STL = {"seg7": STL_SEG7}
