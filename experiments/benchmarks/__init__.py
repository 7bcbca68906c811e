"""Benchmarks: the interface (``base``), the registry by name, one module or subpackage per benchmark.

Modules are imported only when used (QM9 pulls in rdkit and PyG). Plug-ins are found the way
plug-in balancers are (:mod:`balancers.plugins`): an entry point of group
``balancebench.benchmarks`` of an installed package, or a dotted path
``"my_pkg.tasks:MyBenchmark"``. A plug-in is a :class:`Benchmark` subclass; its instances are
named by the reference they were reached by (so run summaries name something any process can
load again). A broken plug-in is a one-line :class:`~experiments.errors.UserError` naming it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from balancers import plugins
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
    """The built-in benchmarks."""
    return list(_BENCHMARKS)


def available_benchmarks() -> list[str]:
    """The built-in benchmarks, then the entry points of installed packages."""
    return list(_BENCHMARKS) + [ep.name for ep in plugins.entry_points(plugins.BENCHMARK_GROUP)
                                if ep.name not in _BENCHMARKS]


def benchmark_origin(name: str) -> str:
    """``built-in``, ``entry point (<dist> <version>)`` or ``dotted path``."""
    if name in _BENCHMARKS:
        return "built-in"
    ep = plugins.entry_point(plugins.BENCHMARK_GROUP, name)
    return ep.origin if ep is not None else "dotted path"


def is_known(name: str) -> bool:
    """Whether ``name`` is a built-in benchmark (checked without importing it)."""
    return name in _BENCHMARKS


def benchmark_class(name: str) -> type[Benchmark]:
    """The class of a built-in benchmark, an installed entry point or a dotted path."""
    if name in _BENCHMARKS:
        module, attr = _BENCHMARKS[name].split(":")
        return getattr(importlib.import_module(module), attr)
    try:
        ep = plugins.entry_point(plugins.BENCHMARK_GROUP, name)
        if ep is not None:
            cls, what = plugins.load_entry_point(ep, "benchmark", Benchmark), f"benchmark plug-in {name!r} ({ep.origin})"
        elif plugins.is_path(name):
            cls, what = plugins.load_class(name, "benchmark", Benchmark), f"benchmark plug-in {name!r}"
        else:
            raise UserError(f"unknown benchmark {name!r}; valid: {', '.join(available_benchmarks())} "
                            "(or a plug-in's dotted path 'package.module:ClassName')")
    except plugins.PluginError as exc:
        raise UserError(str(exc)) from exc
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise UserError(f"{what}: {cls.__qualname__} does not implement {missing}")
    return cls


def create_benchmark(name: str, variant: str | None = None, **options: Any) -> Benchmark:
    """Build a benchmark; unknown names, variants and options are one-line UserErrors (and so is
    a plug-in whose constructor fails)."""
    cls = benchmark_class(name)
    if variant is not None and variant not in cls.variants:
        raise UserError(f"unknown variant {variant!r} for benchmark {name!r}; valid: {', '.join(cls.variants)}")
    try:
        bench = cls(variant, **options)
    except TypeError as exc:
        raise UserError(f"benchmark {name!r}: {exc}") from None
    except (UserError, ValueError, OSError):
        raise
    except Exception as exc:
        if name in _BENCHMARKS:  # a built-in's unexpected error is a bug: keep its traceback
            raise
        raise UserError(f"benchmark plug-in {name!r}: the constructor raised {plugins.describe(exc)}") from exc
    if name not in _BENCHMARKS:
        bench.name = name  # what summaries record: the reference any process can load again
    return bench


__all__ = ["Benchmark", "MetricSpec", "MultiTaskModel", "available_benchmarks", "benchmark_class", "benchmark_origin",
           "create_benchmark", "is_known", "list_benchmarks"]
