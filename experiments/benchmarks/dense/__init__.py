"""Dense prediction (NYU-v2, CityScapes): the MTAN ``.npy`` layout, the SegNet / MTAN model, reference losses and metrics."""

from experiments.benchmarks.dense.benchmark import MTANDenseBenchmark
from experiments.benchmarks.dense.data import Field
from experiments.benchmarks.dense.segnet import SegNetTrunk, build_segnet

__all__ = ["Field", "MTANDenseBenchmark", "SegNetTrunk", "build_segnet"]
