"""Claims F9–F13 (``analysis.claim_checks_seeds``): each check's decision on hand-made runs with
known values (no training), failures counted, the paper's number and the scale note in the row,
and simulated error rates of the claim-shaped rules under their nulls."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis import claim_checks_seeds as seeds
from analysis.verdicts import ALPHA, INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, claim_decide, paired_t_p, tost_p
from tests.analysis.helpers import make_run
from tests.analysis.test_claims import timed_run
from tests.analysis.test_verdict_error_rates import BOUND, N_SIMS, rng, scale

#: builds one hand-made run: (folder, config, variant, label, seed) -> run directory
Maker = Callable[[Path, str, "str | None", str, int], Path]


class SeedRuns:
    """Stands in for ClaimRuns: ``run`` builds a hand-made run (once) with ``make`` instead of
    training; epoch times come from ``times`` (label, seed) instead of timing trainers."""

    def __init__(self, root: Path, make: Maker, n_seeds: int = 5, scale: str = "small",
                 times: dict[tuple[str, int], float | None] | None = None) -> None:
        self.root, self.make, self.times = root, make, times or {}
        self.seeds = tuple(range(1, n_seeds + 1))
        self.plan = SimpleNamespace(scale=scale, seeds=self.seeds, looks=(n_seeds,), balancers=("famo", "marigold"),
                                    gamma_configs=("multimnist", "synthetic", "qm9"), similar_variants=("CL_CR", "RL_RR"))
        self.alpha = ALPHA
        self.asked: list[dict] = []
        self.built: dict[tuple, Path] = {}
        self.timed: list[list[str]] = []

    def run(self, config: str, balancer: str, seed: int, *, variant: str | None = None, name: str | None = None,
            hparams: dict | None = None, extra: dict | None = None, cosine: bool = False) -> Path:
        label = name or balancer
        self.asked.append({"config": config, "balancer": balancer, "label": label, "variant": variant,
                           "hparams": hparams, "extra": extra})
        key = (config, variant, label, seed)
        if key not in self.built:
            self.built[key] = self.make(self.root / config / str(variant) / label, config, variant, label, seed)
        return self.built[key]

    def interleaved_epoch_seconds(self, run_dirs: list[Path]) -> list[float | None]:
        self.timed.append([d.parent.name for d in run_dirs])
        return [self.times[(d.parent.name, int(d.name.split("_")[1]))] for d in run_dirs]


def delta_run(folder: Path, label: str, seed: int, dm: float) -> Path:
    """A hand-made CL_RR run whose test Δm% vs its initial model is ``dm`` (tests.analysis.test_claims)."""
    return make_run(folder, label, seed, 0.1, 0.2 * (1 + dm / 50), 1.0)


def fail(run_dir: Path) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps({**summary, "status": "diverged"}))


# ------------------------------------------------------------------------------ F9
def gamma_maker(shift: dict[tuple[str, float], float]) -> Maker:
    """Δm% = −10 + a seed effect + small noise, shifted by ``shift[(config, γ)]``."""
    def make(folder: Path, config: str, variant: str | None, label: str, seed: int) -> Path:
        gamma = float(label.removeprefix("famo_gamma"))
        noise = 0.05 * ((seed * (3 + seeds.GAMMAS.index(gamma))) % 5)  # differs per γ: no zero-variance pair
        return delta_run(folder, label, seed, -10.0 + 3 * seed + noise + shift.get((config, gamma), 0.0))
    return make


def test_f9_asks_every_gamma_explicitly_and_is_supported_when_all_match(tmp_path: Path) -> None:
    runs = SeedRuns(tmp_path, gamma_maker({}), n_seeds=3)
    measured, seeds_shown, verdict = seeds.check_f9(runs)
    assert verdict.verdict == SUPPORTED, verdict.reason
    assert "Holm over 6 tested parts" in verdict.test and "paired TOST" in verdict.test
    asked = {(a["config"], a["hparams"]["gamma"], a["label"]) for a in runs.asked}
    assert {(c, g) for c, g, _ in asked} == {(c, g) for c in ("multimnist", "synthetic", "qm9") for g in seeds.GAMMAS}
    assert all(label == f"famo_gamma{g:g}" for _, g, label in asked)  # never the shared "famo" runs
    assert "margin ±10" in measured and "margin ±2" in measured and "CityScapes" in measured
    assert "NOT the paper's setting" in measured and "--scale full --only F9" in measured


def test_f9_is_refuted_by_one_gamma_far_outside_the_margin_and_counts_failures(tmp_path: Path) -> None:
    runs = SeedRuns(tmp_path, gamma_maker({("multimnist", 1e-2): 8.0}), n_seeds=3)
    verdict = seeds.check_f9(runs)[2]
    assert verdict.verdict == NOT_SUPPORTED
    assert "multimnist/CL_RR γ=0.01 ≈ γ=0.001: not supported" in verdict.reason
    fine = SeedRuns(tmp_path / "fail", gamma_maker({}), n_seeds=3)
    seeds.check_f9(fine)
    fail(fine.built[("multimnist", "CL_RR", "famo_gamma0.0001", 1)])
    measured, _, verdict = seeds.check_f9(fine)
    assert "famo_gamma0.0001_seed1: diverged" in measured and "survivors only: 2/3 seeds" in measured
    assert "failed runs counted as the worst value observed (γ=0.0001: 1)" in verdict.reason
    assert verdict.verdict != SUPPORTED  # a worst-value seed breaks the equivalence


def test_f9_shaped_claim_keeps_its_error_rates_under_the_null() -> None:
    """Six TOST parts, two per setting against the setting's shared γ = 1e-3 runs: every part at
    the edge of its margin (true) → false "not supported" <= α; one part at its null → false
    "supported" <= α; all equal → power."""
    def claim(gen: np.random.Generator, deltas: list[float], n: int = 5) -> tuple[np.ndarray, np.ndarray]:
        s, r = [], []
        for setting in range(3):
            base = gen.normal(0, 3, (N_SIMS, n))
            for j in range(2):
                arm = base + deltas[2 * setting + j] + gen.normal(0, 1, (N_SIMS, n))
                ps, pr = tost_p(arm - base, 2.0, scale(arm, base))
                s.append(ps)
                r.append(pr)
        return np.stack(s, -1), np.stack(r, -1)

    _, refuted = claim_decide(*claim(rng(21), [2.0, -2.0, 2.0, 2.0, -2.0, 2.0]), ALPHA)
    assert refuted.mean() <= BOUND
    supported, _ = claim_decide(*claim(rng(22), [0.0, 0.0, 0.0, 0.0, 0.0, 2.0], n=10), ALPHA)
    assert supported.mean() <= BOUND
    assert claim_decide(*claim(rng(23), [0.0] * 6, n=10), ALPHA)[0].mean() > 0.2


# ------------------------------------------------------------------------------ F10
def change_maker(changes: dict[str, tuple[float, float]]) -> Maker:
    """Runs whose two per-task changes (Δ%, positive = worse) are ``changes[label]`` + seed noise:
    accuracy 0.1 (1 − c0/100) and mse 0.2 (1 + c1/100) against the initial 0.1 / 0.2."""
    def make(folder: Path, config: str, variant: str | None, label: str, seed: int) -> Path:
        c0, c1 = changes[label]
        k = 1 + sorted(changes).index(label)  # noise differs per method: no zero-variance differences
        c0, c1 = c0 + 0.3 * ((seed * k) % 7), c1 - 0.2 * ((seed * (k + 3)) % 7) + seed
        return make_run(folder, label, seed, 0.1 * (1 - c0 / 100), 0.2 * (1 + c1 / 100), 1.0)
    return make


def test_f10_uniform_worse_worst_task_and_larger_spread(tmp_path: Path) -> None:
    changes = {"uniform": (-60.0, 40.0), "famo": (-30.0, 10.0), "nashmtl": (-35.0, 12.0)}
    runs = SeedRuns(tmp_path, change_maker(changes))
    measured, _, verdict = seeds.check_f10(runs)
    assert verdict.verdict == SUPPORTED, verdict.reason
    assert "Holm over 4 tested parts" in verdict.test
    assert {a["config"] for a in runs.asked} == {"qm9"} and {a["label"] for a in runs.asked} == set(changes)
    assert "849.3" in measured and "97.78" in measured and "NOT the paper's setting" in measured
    # uniform the stable one: refuted
    flipped = {"uniform": (-30.0, 10.0), "famo": (-60.0, 40.0), "nashmtl": (-35.0, 12.0)}
    refuted = seeds.check_f10(SeedRuns(tmp_path / "flipped", change_maker(flipped)))[2]
    assert refuted.verdict == NOT_SUPPORTED and "uniform's spread larger than famo's: not supported" in refuted.reason


def test_f10_stats_and_a_failed_famo_run_counts_against_famo(tmp_path: Path) -> None:
    worst, spread = seeds.change_stats(np.array([[-5.0, 3.0, 1.0], [2.0, 2.0, 2.0]]))
    assert list(worst) == [3.0, 2.0] and spread[1] == 0.0 and spread[0] == pytest.approx(np.std([-5, 3, 1]))
    changes = {"uniform": (-60.0, 40.0), "famo": (-30.0, 10.0), "nashmtl": (-35.0, 12.0)}
    runs = SeedRuns(tmp_path, change_maker(changes))
    seeds.check_f10(runs)
    fail(runs.built[("qm9", None, "famo", 3)])
    measured, _, verdict = seeds.check_f10(runs)
    assert "famo_seed3: diverged" in measured and "survivors only: 4/5 seeds" in measured
    assert "counted as the worst value observed (famo worst: 1)" in verdict.reason
    assert verdict.numbers == {} and verdict.verdict in (SUPPORTED, INCONCLUSIVE)


def test_f10_shaped_claim_is_not_supported_falsely_when_methods_are_equal() -> None:
    """Three methods with the same per-task change distribution (11 tasks, skewed, a shared seed
    effect): the four derived-statistic paired t-tests under Holm say "supported" and "not
    supported" each <= α."""
    gen, n = rng(24), 5
    seed_effect = gen.normal(0, 20, (N_SIMS, n, 1))
    arms = [seed_effect + gen.lognormal(3, 1, (N_SIMS, n, 11)) for _ in range(3)]
    stats_ = [seeds.change_stats(a) for a in arms]
    p_s, p_r = [], []
    for m in (1, 2):
        for k in (0, 1):
            x, y = stats_[m][k], stats_[0][k]  # claim: method's statistic lower than uniform's
            s, r = paired_t_p(y - x, scale(x, y))
            p_s.append(s)
            p_r.append(r)
    supported, refuted = claim_decide(np.stack(p_s, -1), np.stack(p_r, -1), ALPHA)
    assert supported.mean() <= BOUND and refuted.mean() <= BOUND


# ------------------------------------------------------------------------------ F11
def test_f11_marigold_against_each_loss_balancer_with_holm(tmp_path: Path) -> None:
    means = {"marigold": -20.0, "uniform": -10.0, "si": -12.0, "rlw": -9.0, "dwa": -11.0, "uw": -13.0}

    def make(folder: Path, config: str, variant: str | None, label: str, seed: int) -> Path:
        k = 1 + list(means).index(label)  # 1..6: distinct mod 7, so no zero-variance differences
        return delta_run(folder, label, seed, means[label] + seed + 0.1 * ((seed * k) % 7))

    runs = SeedRuns(tmp_path, make)
    measured, _, verdict = seeds.check_f11(runs)
    assert verdict.verdict == SUPPORTED and "Holm over 5 tested parts" in verdict.test, verdict.reason
    assert {a["variant"] for a in runs.asked} == {"CL_RR"} and "UW 5.89" in measured and "−4.54" in measured
    assert "MARIGOLD better than LS: supported" in verdict.reason
    means["uw"] = -30.0  # UW better than MARIGOLD (as on CityScapes in the paper): refuted
    refuted = seeds.check_f11(SeedRuns(tmp_path / "uw", make))[2]
    assert refuted.verdict == NOT_SUPPORTED and "MARIGOLD better than UW: not supported" in refuted.reason


def test_f11_shaped_claim_false_supported_at_most_alpha_with_one_part_at_its_null() -> None:
    """Five "better" parts sharing MARIGOLD's runs: four clearly true, one exactly equal → the
    claim is false and "supported" stays <= α; all equal → "not supported" <= α."""
    gen, n = rng(25), 10
    seed_effect = gen.normal(0, 3, (N_SIMS, n))
    ours = seed_effect + gen.normal(0, 1, (N_SIMS, n))
    for deltas, check in (([3.0, 3.0, 3.0, 3.0, 0.0], 0), ([0.0] * 5, 1)):
        p_s, p_r = [], []
        for d in deltas:
            other = seed_effect + d + gen.normal(0, 1, (N_SIMS, n))
            s, r = paired_t_p(other - ours, scale(ours, other))
            p_s.append(s)
            p_r.append(r)
        assert claim_decide(np.stack(p_s, -1), np.stack(p_r, -1), ALPHA)[check].mean() <= BOUND


# ------------------------------------------------------------------------------ F12
def test_f12_per_variant_times_interleaved_together_and_equal_time_values(tmp_path: Path) -> None:
    curves = {"famo": [0, -10, -20, -30], "marigold": [0, -12, -22, -33], "marigold_fused": [0, -15, -25, -35]}
    per_epoch = {"famo": 2.0, "marigold": 2.5, "marigold_fused": 1.0}

    def make(folder: Path, config: str, variant: str | None, label: str, seed: int) -> Path:
        jitter = 0.1 * ((seed * len(label)) % 3)
        return timed_run(folder.parent, label, seed, [v - jitter * (e > 0) for e, v in enumerate(curves[label])])

    times = {(m, s): t + 0.01 * s * (m == "famo") for m in per_epoch for s in range(1, 6) for t in [per_epoch[m]]}
    runs = SeedRuns(tmp_path, make, times=times)
    measured, _, verdict = seeds.check_f12(runs)
    assert runs.timed[0] == ["famo", "marigold", "marigold_fused"] and len(runs.timed) == 5  # one process per seed
    fused = [a for a in runs.asked if a["label"] == "marigold_fused"]
    assert fused and all(a["hparams"] == {"variant": "fused"} and a["balancer"] == "marigold" for a in fused)
    assert "Holm over 4 tested parts" in verdict.test
    assert "marigold_fused faster per epoch than famo: supported" in verdict.reason
    assert "marigold faster per epoch than famo: not supported" in verdict.reason  # 2.5 s vs 2 s
    assert verdict.verdict == NOT_SUPPORTED and "152 vs FAMO 182" in measured
    times[("marigold_fused", 2)] = None  # could not be timed: that variant's failure of the time part
    again = seeds.check_f12(SeedRuns(tmp_path / "again", make, times=times))[2]
    assert "failed runs counted as the worst value observed (marigold_fused s/epoch: 1)" in again.reason


# ------------------------------------------------------------------------------ F13
def weight_maker(deviation: dict[tuple[str, str], float]) -> Maker:
    """Runs whose epoch-mean normalised weight of task 0 is 0.5 + the deviation (+ seed noise)."""
    def make(folder: Path, config: str, variant: str | None, label: str, seed: int) -> Path:
        run_dir = delta_run(folder, label, seed, -10.0)
        metrics = pd.read_csv(run_dir / "metrics.csv")
        w = 0.5 + deviation.get((str(variant), label), 0.02) + 0.005 * (seed % 3)
        metrics.loc[metrics["epoch"] > 0, "weight_left_cls"] = [2 * (w - 0.01), w]  # epoch 1 sums to 2: normalised
        metrics.loc[metrics["epoch"] > 0, "weight_right_rec"] = [2 * (1.01 - w), 1 - w]
        metrics.to_csv(run_dir / "metrics.csv", index=False)
        return run_dir
    return make


def test_f13_reads_epoch_mean_weights_of_every_balancer_but_famo_on_cl_cr(tmp_path: Path) -> None:
    runs = SeedRuns(tmp_path, weight_maker({}), n_seeds=3)
    measured, _, verdict = seeds.check_f13(runs)
    asked = {(a["variant"], a["label"]) for a in runs.asked}
    assert asked == {(v, m) for v in ("CL_CR", "RL_RR") for m in seeds.WEIGHT_BALANCERS} - {("CL_CR", "famo")}
    assert "Holm over 11 tested parts" in verdict.test and verdict.verdict == SUPPORTED, verdict.reason
    assert "FAMO on CL_CR left out" in measured
    far = SeedRuns(tmp_path / "far", weight_maker({("RL_RR", "uw"): 0.3}), n_seeds=3)
    refuted = seeds.check_f13(far)[2]
    assert refuted.verdict == NOT_SUPPORTED and "RL_RR uw weights near 0.5: not supported" in refuted.reason


def test_f13_a_failed_run_counts_as_that_balancers_failure(tmp_path: Path) -> None:
    runs = SeedRuns(tmp_path, weight_maker({}), n_seeds=3)
    failed = runs.run("multimnist", "dwa", 1, variant="CL_CR")
    fail(failed)
    assert seeds.weight_deviations([failed]) == [None]
    verdict = seeds.check_f13(runs)[2]
    assert "failed runs counted as the worst value observed (dwa max|w−0.5|: 1)" in verdict.reason


def test_f13_one_sample_rule_false_supported_at_the_bound() -> None:
    """Per-seed deviations whose true mean is exactly the bound: "near 0.5" supported <= α."""
    gen = rng(26)
    for n in (5, 10):
        dev = seeds.NEAR_HALF + gen.normal(0, 0.03, (N_SIMS, n))
        bound = np.full_like(dev, seeds.NEAR_HALF)
        p_support, _ = paired_t_p(bound - dev, scale(dev, bound))
        assert (p_support <= ALPHA).mean() <= BOUND


def test_tiny_plan_keeps_the_new_claims_cheap_and_the_checks_follow_the_plan(tmp_path: Path) -> None:
    from analysis.claim_runs import PLANS

    assert PLANS["tiny"].gamma_configs == ("multimnist",) and PLANS["tiny"].similar_variants == ("RL_RR",)
    for name in ("small", "full"):
        assert PLANS[name].gamma_configs == ("multimnist", "synthetic", "qm9")
        assert PLANS[name].similar_variants == ("CL_CR", "RL_RR")
    runs = SeedRuns(tmp_path, gamma_maker({}), n_seeds=3)
    runs.plan.gamma_configs = ("multimnist",)
    verdict = seeds.check_f9(runs)[2]
    assert "Holm over 2 tested parts" in verdict.test and {a["config"] for a in runs.asked} == {"multimnist"}
