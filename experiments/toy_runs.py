"""FAMO Fig. 1 on the toy: every balancer from the five starts, through the one trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from experiments import rundir
from experiments.benchmarks.toy import STARTS, pareto_distance, toy_losses
from experiments.config import CONFIG_DIR, deep_merge, load_run_config
from experiments.trainer import train

#: a run "reached the Pareto front" when its final loss pair lies within this normalised distance
#: of the numerical front (see ``pareto_distance``); stuck runs sit at distances around 1
PARETO_TOLERANCE = 0.02


def final_theta(run_dir: Path) -> torch.Tensor:
    state = rundir.load_checkpoint(Path(run_dir) / rundir.LAST)
    return state["model"]["trunk.theta"]


def run_toy(balancers: list[str], scale: str = "small", overrides: dict[str, Any] | None = None,
            out: Path = Path("runs/toy"), progress: bool = True) -> pd.DataFrame:
    """Train each balancer from each start; table of final θ, losses, distance, reached."""
    rows = []
    for name in balancers:
        for index, start in enumerate(STARTS):
            run_dir = Path(out) / f"{name}_start{index}"
            extra = {"benchmark": {"options": {"start": list(start)}}, "balancer": {"name": name},
                     "train": {"progress": progress}}
            cfg = load_run_config(CONFIG_DIR / "toy.yaml", scale, deep_merge(extra, overrides or {}))
            if (run_dir / rundir.SUMMARY).is_file() and _complete(run_dir):
                pass  # finished earlier: reuse, never retrain
            else:
                train(cfg, run_dir, resume=True)
            theta = final_theta(run_dir)
            losses = toy_losses(theta.double())
            distance = pareto_distance(losses)
            rows.append({"balancer": name, "start": f"({start[0]:g}, {start[1]:g})",
                         "theta": f"({theta[0]:.3f}, {theta[1]:.3f})", "L1": float(losses[0]),
                         "L2": float(losses[1]), "pareto_distance": distance,
                         "reached_front": distance <= PARETO_TOLERANCE, "run_dir": str(run_dir)})
    table = pd.DataFrame(rows)
    rundir.write_table(Path(out) / "toy_pareto.csv", table)
    return table


def _complete(run_dir: Path) -> bool:
    import json

    return json.loads((Path(run_dir) / rundir.SUMMARY).read_text()).get("status") == "complete"
