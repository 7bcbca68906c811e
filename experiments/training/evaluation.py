"""Evaluation passes and the validation objective (Δm%) shared by training, studies and analysis."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from experiments.benchmarks.base import Benchmark, MetricSpec
from experiments.errors import ConfigError

#: the file ``balancebench stl`` writes into its output directory
REFERENCE_FILE = "stl_reference.json"


@torch.no_grad()
def evaluate(model: nn.Module, bench: Benchmark, loader: Iterable, device: torch.device,
             autocast: bool = False) -> dict[str, float]:
    """Metric means over a loader (model in eval mode for the pass, restored afterwards)."""
    was_training = model.training
    model.eval()
    sums = torch.zeros(len(bench.metrics), dtype=torch.float64, device=device)
    count = 0
    for batch in loader:
        batch = bench.to_device(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            outputs = model(bench.inputs(batch))
        sums += bench.metric_sums(outputs, batch).to(torch.float64)
        count += bench.batch_size(batch)
    model.train(was_training)
    values = (sums / max(count, 1)).tolist()
    return {spec.name: v for spec, v in zip(bench.metrics, values)}


def delta_m(values: Mapping[str, float], specs: Sequence[MetricSpec], reference: Mapping[str, float]) -> float:
    """Δm% of ``values`` against ``reference`` (lower is better).

    Seed 003 Eq. 1 / FAMO §5.2: per metric ``(-1)^{higher is better} (M − M_ref) / |M_ref|``,
    averaged over the metrics of a task first, then over tasks, times 100.
    """
    per_task: dict[int, list[float]] = {}
    for spec in specs:
        ref = reference[spec.name]
        sign = -1.0 if spec.higher_is_better else 1.0
        denom = abs(ref) if abs(ref) > 1e-12 else 1e-12
        per_task.setdefault(spec.task, []).append(sign * (values[spec.name] - ref) / denom)
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
