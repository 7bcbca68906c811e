"""Evaluation passes and the validation objective (Δm%) shared by training, studies and analysis."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from experiments.benchmarks.base import Benchmark, MetricSpec
from experiments.errors import ConfigError

#: the file ``balancebench stl`` writes into its output directory
REFERENCE_FILE = "stl_reference.json"


@contextmanager
def isolated_rng(seed: int, device: torch.device) -> Iterator[None]:
    """Run a block on its own random streams, seeded with ``seed``, and leave every global stream
    exactly as it was: torch's CPU generator, the CUDA generator of ``device``, Python's
    ``random`` and NumPy's global state.

    Why: starting a DataLoader iterator that has no generator draws its base seed from torch's
    global generator, and any stochastic layer in an evaluation pass draws from it too; if
    evaluation shared the stream, turning an evaluation on or off would change every later
    shuffle and dropout mask of training. Isolating the pass (rather than giving each loader a
    generator) covers every benchmark, including ones defined outside the project.
    """
    devices = [device] if device.type == "cuda" else []
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.default_generator.manual_seed(int(seed))
            if devices:
                with torch.cuda.device(device):
                    torch.cuda.manual_seed(int(seed))
            random.seed(int(seed))
            np.random.seed(int(seed) % 2**32)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


@torch.no_grad()
def evaluate(model: nn.Module, bench: Benchmark, loader: Iterable, device: torch.device,
             autocast: bool | torch.dtype | None = False, seed: int = 0) -> dict[str, float]:
    """Metric values over a loader (``bench.metric_values`` of the summed ``metric_sums``; model in eval
    mode for the pass, restored afterwards); ``autocast``: a dtype, True (bfloat16), or False/None (off).

    The pass runs under :func:`isolated_rng` with ``seed``: it consumes nothing from the random
    streams training uses, and the same model gives the same metrics whatever was evaluated
    before it.
    """
    dtype = autocast if isinstance(autocast, torch.dtype) else torch.bfloat16
    was_training = model.training
    model.eval()
    sums: torch.Tensor | None = None  # the benchmark's accumulator (its length is the benchmark's choice)
    count = 0
    try:
        with isolated_rng(seed, device):
            for batch in loader:
                batch = bench.to_device(batch, device)
                with torch.autocast(device.type, dtype=dtype, enabled=bool(autocast)):
                    outputs = model(bench.inputs(batch))
                batch_sums = bench.metric_sums(outputs, batch).to(torch.float64)
                sums = batch_sums if sums is None else sums + batch_sums
                count += bench.batch_size(batch)
    finally:
        model.train(was_training)
    if sums is None:
        sums = torch.zeros(len(bench.metrics), dtype=torch.float64, device=device)
    values = bench.metric_values(sums, count).tolist()
    return {spec.name: v for spec, v in zip(bench.metrics, values)}


#: Δm% averaging a task's metrics first, then over tasks: seed 003 Eq. 1 (Gama & Grassi; their
#: ``multiTaskMetric`` in Gabriel-SGama/UnitScal_vs_SMTOs ``supervised_experiments/metrics.py``).
#: Reproduces the "avg" column of seed 003 Table 4 (Cityscapes, 2 + 2 + 1 metrics).
PER_TASK = "per_task"
#: Δm% averaging over all metrics at once: seed 000 §5.2 (FAMO) and seed 004 §5 (MARIGOLD), as in
#: the ``delta_fn`` of AvivNavon/nash-mtl ``experiments/nyuv2/utils.py`` that FAMO's code imports.
#: Reproduces seed 000 Table 1 (NYU-v2, 2 + 2 + 5 metrics).
PER_METRIC = "per_metric"
DELTA_M_DEFINITIONS: dict[str, str] = {
    PER_TASK: "metrics averaged within each task, then over tasks (seed 003 Eq. 1)",
    PER_METRIC: "average over all metrics at once (seeds 000 §5.2 and 004 §5)",
}


def check_definition(definition: str) -> str:
    """``definition`` when it names a Δm% / mean-rank definition, else a one-line ConfigError."""
    if definition not in DELTA_M_DEFINITIONS:
        raise ConfigError(f"unknown Δm% definition {definition!r}; valid: {', '.join(DELTA_M_DEFINITIONS)}")
    return definition


def delta_m(values: Mapping[str, float], specs: Sequence[MetricSpec], reference: Mapping[str, float],
            definition: str = PER_TASK) -> float:
    """Δm% of ``values`` against ``reference`` (lower is better).

    Per metric ``(-1)^{higher is better} (M − M_ref) / |M_ref|``, times 100, then averaged:
    ``per_task`` (seed 003 Eq. 1; the trainer's validation objective) over a task's metrics first
    (over a ``MetricSpec.group``'s when the benchmark sets groups), then over tasks; ``per_metric``
    (seeds 000 and 004) over all metrics at once. The two agree while every task has one metric
    and differ otherwise.

    >>> from experiments.benchmarks.base import MetricSpec
    >>> specs = [MetricSpec("a", 0, False), MetricSpec("b", 0, False), MetricSpec("c", 1, False)]
    >>> values, ref = {"a": 0.9, "b": 1.0, "c": 1.0}, {"a": 1.0, "b": 1.0, "c": 1.0}
    >>> round(delta_m(values, specs, ref, "per_task"), 4), round(delta_m(values, specs, ref, "per_metric"), 4)
    (-2.5, -3.3333)
    """
    check_definition(definition)
    per_task: dict[tuple[str, int], list[float]] = {}
    for spec in specs:
        ref = reference[spec.name]
        sign = -1.0 if spec.higher_is_better else 1.0
        denom = abs(ref) if abs(ref) > 1e-12 else 1e-12
        key = ("task", spec.task) if spec.group is None else ("group", spec.group)
        per_task.setdefault(key, []).append(sign * (values[spec.name] - ref) / denom)
    if definition == PER_METRIC:
        changes = [c for task in per_task.values() for c in task]
        return 100.0 * sum(changes) / len(changes)
    task_means = [sum(v) / len(v) for v in per_task.values()]
    return 100.0 * sum(task_means) / len(task_means)


def literature_reference(specs: Sequence[MetricSpec]) -> dict[str, float] | None:
    """The benchmark's literature STL values when every metric has one, else None."""
    if specs and all(s.stl is not None for s in specs):
        return {s.name: float(s.stl) for s in specs}  # type: ignore[arg-type]
    return None


def load_reference_file(path: str, specs: Sequence[MetricSpec]) -> dict[str, float]:
    """Single-task references from a ``balancebench stl`` file (or its directory). For the
    validation objective, validation metrics are used when the file has them."""
    file = Path(path)
    if file.is_dir():
        file = file / REFERENCE_FILE
    if not file.is_file():
        raise ConfigError(f"reference: no STL reference file at {path}")
    data = json.loads(file.read_text())
    metrics = data.get("val_metrics") or data.get("metrics", data)
    missing = [m.name for m in specs if m.name not in metrics]
    if missing:
        raise ConfigError(f"reference {path} lacks metrics {missing}")
    return {m.name: float(metrics[m.name]) for m in specs}
