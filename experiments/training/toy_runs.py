"""FAMO Fig. 1 on the toy: balancers from the five starts through the one trainer, each final loss
pair classified against the variant's Pareto front with a margin (on / off / undecided)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from experiments.training import rundir
from experiments.benchmarks.toy import STARTS, pareto_distance, pareto_distances, toy_losses
from experiments.config import CONFIG_DIR, RunConfig, deep_merge, load_run_config, to_dict
from experiments.errors import UserError
from experiments.training.trainer import load_run_dir_config, train

#: the reference distance (normalised, see ``pareto_distance``) of "reached the Pareto front"
PARETO_TOLERANCE = 0.02
#: a final point is "on" the front only this close (an order of magnitude inside the tolerance) ...
ON_FRONT = PARETO_TOLERANCE / 10
#: ... and "off" it only this far (an order of magnitude outside); in between it is "undecided",
#: so no classification rests on a trajectory that ends near the tolerance
OFF_FRONT = PARETO_TOLERANCE * 10
#: settings that change how a run executes but not what it computes (the toy's 2-element
#: tensors give bit-identical runs with any thread count: tests/experiments/test_toy.py)
_EXECUTION_ONLY = ("progress", "num_threads", "device")


def classify(distance: float) -> str:
    """``on`` (<= ON_FRONT), ``off`` (>= OFF_FRONT) or ``undecided`` (in between, or not finite)."""
    if distance <= ON_FRONT:
        return "on"
    if distance >= OFF_FRONT:
        return "off"
    return "undecided"


def final_theta(run_dir: Path) -> torch.Tensor:
    state = rundir.load_checkpoint(Path(run_dir) / rundir.LAST)
    return state["model"]["trunk.theta"]


def toy_config(name: str, index: int, scale: str, overrides: dict[str, Any] | None = None) -> RunConfig:
    """configs/toy.yaml at ``scale`` for ``name`` from start ``index``, then ``overrides``."""
    extra = {"benchmark": {"options": {"start": list(STARTS[index])}}, "balancer": {"name": name}}
    return load_run_config(CONFIG_DIR / "toy.yaml", scale, deep_merge(extra, overrides or {}))


def config_differences(old: RunConfig, new: RunConfig) -> list[str]:
    """Dotted keys (with old → new values) where two run configs differ in what they compute."""
    def flat(data: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(data, dict):
            return {prefix: data}
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out

    a, b = flat(to_dict(old)), flat(to_dict(new))
    # the toy's scales only select YAML sections (their resolved settings are compared) and its
    # Δm% reference is exact at any scale, so `balancebench toy` runs serve every claims scale
    skip = {f"train.{k}" for k in _EXECUTION_ONLY} | {"scale"}
    return [f"{k}={a.get(k)!r}→{b.get(k)!r}" for k in sorted(set(a) | set(b)) if k not in skip and a.get(k) != b.get(k)]


def _run_one(name: str, index: int, scale: str, overrides: dict[str, Any], out: str, progress: bool,
             threads: int | None) -> str:
    """Train, resume or reuse one (balancer, start) run; returns its directory. Top-level for spawn.

    A directory trained (or begun) with another configuration is refused with one line: its
    results are not what is asked for now, and retraining over it would destroy them."""
    if threads:
        torch.set_num_threads(threads)
    run_dir = Path(out) / f"{name}_start{index}"
    cfg = toy_config(name, index, scale, deep_merge(overrides, {"train": {"progress": progress}}))
    if (run_dir / rundir.CONFIG).is_file():
        differ = config_differences(load_run_dir_config(run_dir), cfg)
        if differ:
            raise UserError(f"{run_dir} was trained with another configuration ({', '.join(differ)}); "
                            "remove it or choose another --out")
    if not _complete(run_dir):
        train(cfg, run_dir, resume=True)
    return str(run_dir)


def first_step_on_front(run_dir: Path, variant: str) -> int | None:
    """The first logged step whose loss pair is within ON_FRONT of the front (None: never)."""
    if not (Path(run_dir) / rundir.STEPS).is_file():  # fewer steps than train.log_every
        return None
    steps = rundir.read_table(run_dir, rundir.STEPS)
    if steps.empty:
        return None
    pairs = torch.tensor(steps[["loss_L1", "loss_L2"]].to_numpy(), dtype=torch.float64)
    hits = (pareto_distances(pairs, variant) <= ON_FRONT).nonzero()
    return int(steps["step"].iloc[int(hits[0])]) if len(hits) else None


def summarize(name: str, index: int, run_dir: Path) -> dict[str, Any]:
    """One row of the toy table: where the run ended and how far from its variant's front."""
    cfg = load_run_dir_config(run_dir)
    variant = cfg.benchmark.variant or "official"
    start, theta = STARTS[index], final_theta(run_dir)
    losses = toy_losses(theta.double(), variant)
    distance = pareto_distance(losses, variant)
    return {"balancer": name, "variant": variant, "dtype": cfg.benchmark.options.get("dtype", "float32"),
            "start": f"({start[0]:g}, {start[1]:g})", "theta": f"({theta[0]:.4f}, {theta[1]:.4f})",
            "L1": float(losses[0]), "L2": float(losses[1]), "pareto_distance": distance, "front": classify(distance),
            "first_step_on_front": first_step_on_front(run_dir, variant),
            "steps": cfg.train.epochs * int(cfg.benchmark.options.get("steps_per_epoch", 1000)), "run_dir": str(run_dir)}


def run_toy(balancers: list[str], scale: str = "small", overrides: dict[str, Any] | None = None,
            out: Path = Path("runs/toy"), progress: bool = True, workers: int = 1,
            runs: list[tuple[str, int]] | None = None) -> pd.DataFrame:
    """Train (or reuse) each balancer from each start (``workers`` processes), or only the
    (balancer, start index) pairs in ``runs``; the table of final θ, losses, normalised Pareto
    distance, its classification (``front``: on / off / undecided) and the first step on the front."""
    jobs = list(runs) if runs is not None else [(name, index) for name in balancers for index in range(len(STARTS))]
    args = [(name, index, scale, overrides or {}, str(out), progress and workers == 1, 1 if workers > 1 else None)
            for name, index in jobs]
    if workers > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            run_dirs = list(pool.map(_run_one, *zip(*args)))
    else:
        run_dirs = [_run_one(*a) for a in args]
    table = pd.DataFrame([summarize(name, index, Path(d)) for (name, index), d in zip(jobs, run_dirs)])
    rundir.write_table(Path(out) / "toy_pareto.csv", table)
    return table


def _complete(run_dir: Path) -> bool:
    path = Path(run_dir) / rundir.SUMMARY
    return path.is_file() and json.loads(path.read_text()).get("status") == "complete"
