"""Hand-made run directories with known numbers (no training), for the table and report tests.

Setting: Multi-MNIST CL_RR (metrics ``left_cls_acc`` ↑ and ``right_rec_mse`` ↓). Every run's
initial model (metrics.csv epoch 0, the Δm% reference) has acc 0.1 and mse 0.2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import yaml

OPTIONS = {"n_train": 64, "n_val": 32, "n_test": 32}
TASKS = ["left_cls", "right_rec"]
INITIAL = {"left_cls_acc": 0.1, "right_rec_mse": 0.2}

#: (method, seed, test acc, test mse, epoch seconds)
RUNS = [
    ("uniform", 0, 0.5, 0.10, 1.0),
    ("uniform", 1, 0.7, 0.12, 1.2),
    ("famo", 0, 0.6, 0.15, 2.2),
    ("famo", 1, 0.6, 0.05, 2.2),
    ("rlw", 0, 0.2, 0.30, 1.1),
]
#: hand-computed from seed 003 Eq. 1: 100 * mean_task((-1)^hib (M - M0) / |M0|)
DELTA_M = {("uniform", 0): -225.0, ("uniform", 1): -320.0, ("famo", 0): -262.5, ("famo", 1): -287.5, ("rlw", 0): -25.0}
#: per metric ranks of the seed means (acc: 0.6, 0.6, 0.2 ↑; mse: 0.11, 0.10, 0.30 ↓), averaged
MEAN_RANK = {"uniform": (1.5 + 2) / 2, "famo": (1.5 + 1) / 2, "rlw": 3.0}


def make_run(root: Path, method: str, seed: int, acc: float, mse: float, seconds: float,
             hparams: dict | None = None, steps: bool = True) -> Path:
    run_dir = root / f"{method}_seed{seed}"
    run_dir.mkdir(parents=True)
    hp = hparams or {}
    config = {"benchmark": {"name": "multimnist", "variant": "CL_RR", "options": OPTIONS},
              "balancer": {"name": method, "hparams": hp}, "seed": seed, "scale": "tiny",
              "resolved": {"tasks": TASKS, "balancer_hparams": hp}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    summary = {"status": "complete", "benchmark": "multimnist", "variant": "CL_RR", "balancer": method,
               "seed": seed, "scale": "tiny", "tasks": TASKS, "best_epoch": 2, "best_val_objective": -10.0,
               "reference": "initial_model", "val_metrics": {"left_cls_acc": acc, "right_rec_mse": mse},
               "test_metrics": {"left_cls_acc": acc, "right_rec_mse": mse},
               "epoch_seconds_mean": seconds, "step_seconds_median": seconds / 10}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    w0 = 0.5 if method == "uniform" else 0.3
    metrics = pd.DataFrame([
        {"epoch": 0, "val_left_cls_acc": 0.1, "val_right_rec_mse": 0.2, "test_left_cls_acc": INITIAL["left_cls_acc"],
         "test_right_rec_mse": INITIAL["right_rec_mse"], "val_objective": 0.0},
        {"epoch": 1, "weight_left_cls": w0, "weight_right_rec": 1 - w0, "val_left_cls_acc": acc / 2,
         "val_right_rec_mse": mse * 2, "test_left_cls_acc": acc / 2, "test_right_rec_mse": mse * 2,
         "val_objective": -5.0, "epoch_seconds": seconds},
        {"epoch": 2, "weight_left_cls": w0, "weight_right_rec": 1 - w0, "val_left_cls_acc": acc,
         "val_right_rec_mse": mse, "test_left_cls_acc": acc, "test_right_rec_mse": mse, "val_objective": -10.0,
         "epoch_seconds": seconds},
    ])
    metrics.to_csv(run_dir / "metrics.csv", index=False)
    if steps:
        rows = [{"step": s, "epoch": (s - 1) // 2, "loss_left_cls": 1.0 / s, "loss_right_rec": 0.5 / s,
                 "weight_left_cls": w0 + 0.01 * s * (method != "uniform"),
                 "weight_right_rec": 1 - w0 - 0.01 * s * (method != "uniform")} for s in range(1, 5)]
        pd.DataFrame(rows).to_csv(run_dir / "steps.csv", index=False)
    return run_dir


def make_runs(root: Path) -> list[Path]:
    return [make_run(root, *spec) for spec in RUNS]
