"""NYU-v2, 3 tasks (13-class segmentation, depth, surface normals) from the user's copy of the MTAN release.

Seed 000 Table 1 / 5 and seed 004 Tables 1, 3, 5, 7. Layout, model, losses and metrics: see
:mod:`experiments.benchmarks.dense` (``ROOT/{train,val}/{image,label,depth,normal}/<i>.npy``,
795 training and 654 test images of 288 × 384 in the release). STL references: the single-task
values of seed 000 Table 1 (the FAMO / Nash-MTL code's ``BASE`` vector, from CAGrad), valid at the
full scale only.
"""

from __future__ import annotations

from experiments.benchmarks.dense.benchmark import MTANDenseBenchmark
from experiments.benchmarks.dense.data import Field

NYU_FIELDS = (Field("image", 3, "image"), Field("label", None, "label"), Field("depth", 1, "depth"),
              Field("normal", 3, "normal"))
#: seed 000 Table 1 / seed 004 Table 1 STL row, in the reference code's units (fractions, metres, degrees)
NYU_STL = {
    "seg_miou": 0.3830, "seg_pix_acc": 0.6376, "depth_abs_err": 0.6754, "depth_rel_err": 0.2780,
    "normal_angle_mean": 25.01, "normal_angle_median": 19.21, "normal_within_11_25": 0.3014,
    "normal_within_22_5": 0.5720, "normal_within_30": 0.6915,
}  # fmt: skip


class NYUv2Benchmark(MTANDenseBenchmark):
    """NYU-v2: 13-class segmentation, depth, normals (MTAN .npy release, user's copy)."""

    name = "nyuv2"
    variants = ("default",)
    FIELDS = {"default": NYU_FIELDS}
    N_CLASSES = {"default": 13}
    STL = {"default": NYU_STL}
