"""The toy of FAMO Fig. 1: both variants' objectives against an independent transcription of the
reference code, their Pareto front against the reference code's plotted one, the margin rule,
float64 runs, thread-count invariance, refusing stale runs, and the F1 verdict in float32 vs float64."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.training import rundir
from experiments.benchmarks.toy import (STARTS, VARIANTS, ToyBenchmark, pareto_distance, pareto_distances,
                                        pareto_front, toy_losses)
from experiments.errors import UserError
from experiments.training.toy_runs import OFF_FRONT, ON_FRONT, PARETO_TOLERANCE, classify, run_toy, toy_config
from experiments.training.trainer import Trainer, train


def reference_losses(t1: float, t2: float, sign: float) -> tuple[float, float]:
    """Cranial-XIX/FAMO experiments/toy/problem.py (commit 0a6ad06), ``Toy(scale=0.1)``, written out
    with ``math`` (sign = +1: its f2; −1: Appendix D's)."""
    f1 = math.log(max(abs(0.5 * (-t1 - 7) - math.tanh(-t2)), 5e-6)) + 6
    f2 = math.log(max(abs(0.5 * (-t1 + 3) + sign * math.tanh(-t2) + 2), 5e-6)) + 6
    c1, c2 = max(math.tanh(0.5 * t2), 0.0), max(math.tanh(-0.5 * t2), 0.0)
    g1 = ((-t1 + 7) ** 2 + 0.1 * (-t2 - 8) ** 2) / 10 - 20
    g2 = ((-t1 - 7) ** 2 + 0.1 * (-t2 - 8) ** 2) / 10 - 20
    return 0.1 * (c1 * f1 + c2 * g1), c1 * f2 + c2 * g2


POINTS = [(9.0, 9.0), (-8.5, 7.5), (0.0, 0.0), (-7.5, -0.5), (9.0, -1.0), (5.0, 3.87), (-1.0, 2.0), (3.0, -8.3552)]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_objective_equals_the_reference_formula(variant: str) -> None:
    sign = {"official": 1.0, "appendix_d": -1.0}[variant]
    got = toy_losses(torch.tensor(POINTS, dtype=torch.float64), variant)
    for (t1, t2), pair in zip(POINTS, got.tolist()):
        assert pair == pytest.approx(reference_losses(t1, t2, sign), rel=1e-12, abs=1e-12)


def test_variants_differ_only_in_f2_above_the_ridge_and_in_famo_bounds() -> None:
    grid = torch.cartesian_prod(torch.linspace(-10, 10, 81, dtype=torch.float64), torch.linspace(-10, 10, 81, dtype=torch.float64))
    official, printed = toy_losses(grid, "official"), toy_losses(grid, "appendix_d")
    below = grid[:, 1] <= 0
    assert torch.equal(official[below], printed[below])  # c1 = 0: the f terms vanish
    assert torch.equal(official[:, 0], printed[:, 0])  # L1 never differs
    assert (official[~below, 1] - printed[~below, 1]).abs().max() > 1.0
    assert ToyBenchmark("official").loss_lower_bounds == [-2.1, -21.0]  # the reference trainer's min_losses
    assert ToyBenchmark("appendix_d").loss_lower_bounds == [-2.0, -20.0]
    assert ToyBenchmark().variant == "official"
    for variant in VARIANTS:  # the infima hold on a grid and are approached near θ = (±7, −8.4)
        losses = toy_losses(grid, variant)
        assert (losses[:, 0] > -2.0).all() and (losses[:, 1] > -20.0).all()
    with pytest.raises(ValueError, match="dtype"):
        ToyBenchmark(dtype="float16")


def test_pareto_front_matches_the_reference_plot_and_is_the_same_for_both_variants() -> None:
    front = pareto_front("official")
    assert torch.equal(front, pareto_front("appendix_d"))  # the front lies at θ₂ < 0, where they agree
    assert len(front) > 5000 and (front[1:, 0] > front[:-1, 0]).all() and (front[1:, 1] < front[:-1, 1]).all()
    # the single-task ends: L1's minimum at θ = (7, θ₂*) and L2's at (−7, θ₂*), near the infima
    assert front[0, 0] == pytest.approx(-1.99894, abs=1e-5) and front[-1, 1] == pytest.approx(-19.9894, abs=1e-4)
    # the reference code draws its front as θ₂ = −8.3552, θ₁ ∈ [−7, 7] (experiments/toy/utils.py)
    x = torch.linspace(-7, 7, 200, dtype=torch.float64)
    assert pareto_distances(toy_losses(torch.stack([x, torch.full_like(x, -8.3552)], -1))).max() < 1e-5
    # no point of a random sample around the front lies more than 1e-4 beyond (below) the polyline
    gen = torch.Generator().manual_seed(0)
    sample = torch.stack([torch.rand(100_000, generator=gen, dtype=torch.float64) * 15 - 7.5,
                          torch.rand(100_000, generator=gen, dtype=torch.float64) * 2 - 9.4], -1)
    losses = toy_losses(sample)
    inside = (losses[:, 0] >= front[0, 0]) & (losses[:, 0] <= front[-1, 0])
    assert not (losses[:, 0] < front[0, 0]).any()
    polyline_l2 = torch.from_numpy(np.interp(losses[:, 0].numpy(), front[:, 0].numpy(), front[:, 1].numpy()))
    beyond = inside & (losses[:, 1] < polyline_l2)
    assert pareto_distances(losses[beyond]).max() < 1e-4
    assert pareto_distance(toy_losses(torch.tensor([9.0, 9.0], dtype=torch.float64))) > 1.0


def test_the_margin_rule() -> None:
    assert ON_FRONT == PARETO_TOLERANCE / 10 and OFF_FRONT == PARETO_TOLERANCE * 10
    assert [classify(d) for d in (0.0, ON_FRONT, 1.01 * ON_FRONT, PARETO_TOLERANCE, 0.99 * OFF_FRONT, OFF_FRONT, 1.0)] == \
        ["on", "on", "undecided", "undecided", "undecided", "off", "off"]
    assert classify(float("nan")) == "undecided"


def short_cfg(tmp_path: Path, dtype: str, threads: int, name: str = "famo", steps: int = 400):
    return toy_config(name, 2, "tiny", {"benchmark": {"options": {"dtype": dtype, "steps_per_epoch": steps}},
                                        "train": {"epochs": 1, "log_every": 10, "progress": False, "num_threads": threads}})


def test_a_float64_toy_run_is_float64_throughout(tmp_path: Path) -> None:
    trainer = Trainer(short_cfg(tmp_path, "float64", 1), tmp_path / "run")
    assert trainer.model.trunk.theta.dtype == torch.float64
    assert trainer.balancer.logits.dtype == torch.float64 and trainer.balancer.min_losses.dtype == torch.float64
    assert torch.allclose(trainer.balancer.min_losses, torch.tensor([-2.1, -21.0], dtype=torch.float64), atol=1e-6)
    trainer.run()
    theta = rundir.load_checkpoint(tmp_path / "run" / rundir.LAST)["model"]["trunk.theta"]
    assert theta.dtype == torch.float64
    float32 = Trainer(short_cfg(tmp_path, "float32", 1), tmp_path / "run32")
    assert float32.model.trunk.theta.dtype == torch.float32 and float32.balancer.logits.dtype == torch.float32


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_thread_count_does_not_change_a_toy_run(tmp_path: Path, dtype: str) -> None:
    """Every tensor of a toy step has two elements, far below any intra-op parallel grain, so a run
    is the same sequence of the same kernels with 1 or 2 threads: bit-identical at every logged step."""
    before = torch.get_num_threads()
    try:
        tables, thetas = [], []
        for threads in (1, 2):
            for name in ("famo", "uniform"):
                run = tmp_path / f"{name}_{threads}"
                train(short_cfg(tmp_path, dtype, threads, name), run)
                tables.append(rundir.read_table(run, rundir.STEPS))
                thetas.append(rundir.load_checkpoint(run / rundir.LAST)["model"]["trunk.theta"])
    finally:
        torch.set_num_threads(before)
    for one, two in ((0, 2), (1, 3)):
        assert torch.equal(thetas[one], thetas[two])
        assert tables[one][["step", "loss_L1", "loss_L2"]].equals(tables[two][["step", "loss_L1", "loss_L2"]])
    assert not torch.equal(thetas[0], thetas[1])  # famo and uniform do differ


def test_a_run_trained_with_another_configuration_is_refused_not_reused(tmp_path: Path) -> None:
    from experiments.config import deep_merge

    small = {"benchmark": {"options": {"steps_per_epoch": 20}}, "train": {"epochs": 1}}
    first = run_toy([], scale="tiny", overrides=small, out=tmp_path, progress=False, runs=[("famo", 2)])
    summary = (tmp_path / "famo_start2" / rundir.SUMMARY).read_text()
    again = run_toy([], scale="small", overrides=small, out=tmp_path, progress=False, runs=[("famo", 2)])
    assert (tmp_path / "famo_start2" / rundir.SUMMARY).read_text() == summary  # reused, not retrained
    assert first.drop(columns="run_dir").equals(again.drop(columns="run_dir"))
    for change, needle in (({"benchmark": {"variant": "appendix_d"}}, "benchmark.variant='official'→'appendix_d'"),
                           ({"benchmark": {"options": {"dtype": "float32"}}}, "benchmark.options.dtype"),
                           ({"train": {"epochs": 2}}, "train.epochs=1→2"),
                           ({"balancer": {"hparams": {"w_lr": 0.01}}}, "balancer.hparams.w_lr")):
        with pytest.raises(UserError, match="trained with another configuration") as err:
            run_toy([], scale="tiny", overrides=deep_merge(small, change), out=tmp_path, progress=False,
                    runs=[("famo", 2)])
        assert needle in str(err.value) and "\n" not in str(err.value)
    assert (tmp_path / "famo_start2" / rundir.SUMMARY).read_text() == summary  # nothing lost


def test_f1_decides_the_same_in_float32_and_float64(toy_runs, toy_runs_float32) -> None:
    """The six runs that decide F1 (FAMO from every start, uniform from its failing start (9, 9))
    are classified alike in float32 (the reference code's dtype) and float64 (F1's), and the
    verdict agrees; both are decided with the margin (no start undecided)."""
    from analysis.claim_checks import check_f1

    class FakeRuns:  # check_f1 only asks the launcher for the toy table
        def __init__(self, table: object) -> None:
            self.table = table

        def toy(self, toy_dir: object = None) -> object:
            return self.table

    table64, _ = toy_runs
    table32, _ = toy_runs_float32
    key = ["balancer", "start"]
    merged = table32.merge(table64, on=key, suffixes=("_32", "_64"))
    assert len(merged) == 6 and set(merged["dtype_32"]) == {"float32"} and set(merged["dtype_64"]) == {"float64"}
    assert (merged["front_32"] == merged["front_64"]).all(), merged[key + ["pareto_distance_32", "pareto_distance_64"]]
    assert "undecided" not in set(merged["front_32"])
    verdict32 = check_f1(FakeRuns(table32))[2].verdict
    verdict64 = check_f1(FakeRuns(table64))[2].verdict
    assert verdict32 == verdict64 == "supported"
    assert STARTS[2] == (9.0, 9.0)
