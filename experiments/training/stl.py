"""Single-task references at any scale: one model per task, same architecture and trainer.

A single-task run is the multi-task model trained with ``fixed`` one-hot weights (the other heads
get no gradient) and selected on its own task's validation metrics, so Δm% can be computed at
reduced scales where the literature's full-scale STL numbers do not apply.
"""

from __future__ import annotations

from pathlib import Path

from experiments.training import rundir
from experiments.config import RunConfig, replace
from experiments.training.trainer import train
from experiments.benchmarks import create_benchmark
from experiments.training.evaluation import REFERENCE_FILE


def train_stl_references(cfg: RunConfig, out: Path) -> Path:
    """Train one run per task under ``out``; write ``out/stl_reference.json`` and return its path.

    The file holds the test (``metrics``) and validation (``val_metrics``) metrics of each task's
    own run, the run directories and what they cost (``wall_seconds``, ``epochs``: sums over the
    runs, as each run's summary records them; a finished run is reused, not re-trained)."""
    bench = create_benchmark(cfg.benchmark.name, cfg.benchmark.variant, **cfg.benchmark.options)
    tasks, k = bench.task_names, bench.n_tasks
    test: dict[str, float] = {}
    val: dict[str, float] = {}
    runs = {}
    wall, epochs = 0.0, 0
    for i, task in enumerate(tasks):
        one_hot = [1.0 if j == i else 0.0 for j in range(k)]
        task_cfg = replace(cfg, {"balancer": {"name": "fixed", "hparams": {"weights": one_hot}},
                                 "objective_tasks": [task], "reference": "initial"})
        run_dir = Path(out) / f"task_{task}"
        summary = train(task_cfg, run_dir, resume=True).summary
        own = {m.name for m in bench.metrics if m.task == i}
        test.update({n: v for n, v in summary["test_metrics"].items() if n in own})
        val.update({n: v for n, v in summary["val_metrics"].items() if n in own})
        runs[task] = str(run_dir)
        wall += float(summary.get("wall_seconds") or 0.0)
        epochs += int(summary.get("epochs_trained") or 0)
    path = Path(out) / REFERENCE_FILE
    rundir.write_json(path, {"benchmark": cfg.benchmark.name, "variant": bench.variant, "scale": cfg.scale,
                             "seed": cfg.seed, "metrics": test, "val_metrics": val, "runs": runs,
                             "wall_seconds": round(wall, 3), "epochs": epochs})
    return path
