"""FAMO Fig. 1 on the toy: every balancer from the five starts, through the one trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import torch

from experiments.training import rundir
from experiments.benchmarks.toy import STARTS, pareto_distance, toy_losses
from experiments.config import CONFIG_DIR, deep_merge, load_run_config
from experiments.training.trainer import train

#: a run "reached the Pareto front" when its final loss pair lies within this normalised distance
#: of the numerical front (see ``pareto_distance``); stuck runs sit at distances around 1
PARETO_TOLERANCE = 0.02


def final_theta(run_dir: Path) -> torch.Tensor:
    state = rundir.load_checkpoint(Path(run_dir) / rundir.LAST)
    return state["model"]["trunk.theta"]


def _run_one(name: str, index: int, scale: str, overrides: dict[str, Any], out: str, progress: bool,
             threads: int | None) -> str:
    """Train (or reuse) one (balancer, start) run; returns its directory. Top-level for spawn."""
    if threads:
        torch.set_num_threads(threads)
    start = STARTS[index]
    run_dir = Path(out) / f"{name}_start{index}"
    extra = {"benchmark": {"options": {"start": list(start)}}, "balancer": {"name": name},
             "train": {"progress": progress}}
    cfg = load_run_config(CONFIG_DIR / "toy.yaml", scale, deep_merge(extra, overrides))
    if not ((run_dir / rundir.SUMMARY).is_file() and _complete(run_dir)):  # finished runs are reused
        train(cfg, run_dir, resume=True)
    return str(run_dir)


def run_toy(balancers: list[str], scale: str = "small", overrides: dict[str, Any] | None = None,
            out: Path = Path("runs/toy"), progress: bool = True, workers: int = 1) -> pd.DataFrame:
    """Train each balancer from each start (``workers`` processes); table of final θ, losses,
    normalised Pareto distance and whether the front was reached."""
    jobs = [(name, index) for name in balancers for index in range(len(STARTS))]
    args = [(name, index, scale, overrides or {}, str(out), progress and workers == 1, 1 if workers > 1 else None)
            for name, index in jobs]
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            run_dirs = list(pool.map(_run_one, *zip(*args)))
    else:
        run_dirs = [_run_one(*a) for a in args]
    rows = []
    for (name, index), run_dir in zip(jobs, run_dirs):
        start, theta = STARTS[index], final_theta(Path(run_dir))
        losses = toy_losses(theta.double())
        distance = pareto_distance(losses)
        rows.append({"balancer": name, "start": f"({start[0]:g}, {start[1]:g})",
                     "theta": f"({theta[0]:.3f}, {theta[1]:.3f})", "L1": float(losses[0]),
                     "L2": float(losses[1]), "pareto_distance": distance,
                     "reached_front": distance <= PARETO_TOLERANCE, "run_dir": run_dir})
    table = pd.DataFrame(rows)
    rundir.write_table(Path(out) / "toy_pareto.csv", table)
    return table


def _complete(run_dir: Path) -> bool:
    import json

    return json.loads((Path(run_dir) / rundir.SUMMARY).read_text()).get("status") == "complete"
