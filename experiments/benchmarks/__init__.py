"""Benchmarks: the interface (``base``), the registry by name, one module or subpackage per benchmark.

Modules are imported only when used (QM9 pulls in rdkit and PyG).
"""

from __future__ import annotations

import importlib
from typing import Any

from experiments.benchmarks.base import Benchmark, MetricSpec, MultiTaskModel
from experiments.errors import UserError

_BENCHMARKS: dict[str, str] = {
    "toy": "experiments.benchmarks.toy:ToyBenchmark",
    "multimnist": "experiments.benchmarks.multimnist:MultiMNISTBenchmark",
    "qm9": "experiments.benchmarks.qm9:QM9Benchmark",
    "synthetic": "experiments.benchmarks.synthetic:SyntheticBenchmark",
    "nyuv2": "experiments.benchmarks.nyuv2:NYUv2Benchmark",
    "cityscapes": "experiments.benchmarks.cityscapes:CityscapesBenchmark",
    "celeba": "experiments.benchmarks.celeba:CelebABenchmark",
}


def list_benchmarks() -> list[str]:
    return list(_BENCHMARKS)


def benchmark_class(name: str) -> type[Benchmark]:
    if name not in _BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; valid: {', '.join(_BENCHMARKS)}")
    module, attr = _BENCHMARKS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def create_benchmark(name: str, variant: str | None = None, **options: Any) -> Benchmark:
    """Build a benchmark; unknown names, variants and options are one-line UserErrors."""
    cls = benchmark_class(name)
    if variant is not None and variant not in cls.variants:
        raise UserError(f"unknown variant {variant!r} for benchmark {name!r}; valid: {', '.join(cls.variants)}")
    try:
        return cls(variant, **options)
    except TypeError as exc:
        raise UserError(f"benchmark {name!r}: {exc}") from None


__all__ = ["Benchmark", "MetricSpec", "MultiTaskModel", "benchmark_class", "create_benchmark", "list_benchmarks"]
