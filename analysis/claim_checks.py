"""The eight checks behind ``balancebench claims``. Each takes the run launcher
(:class:`analysis.claim_runs.ClaimRuns`), gets its runs (trained or reused) for the current
look's seeds, reads the run directories (:mod:`analysis.claim_values`: failed runs kept as
``None``) and returns ``(measured numbers as text, seeds as text, Verdict)``; seed-level tests
run at ``runs.alpha`` (the per-look level of the sequential plan)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.claim_runs import SYNTHETIC_SETTINGS, ClaimRuns
from analysis.claim_values import (Value, delta_ms, failure_text, famo_weight_std, finished, max_weight_deviation,
                                   pm, reference_kind, status)
from analysis.gradients import mean_cosine
from analysis.runs import load_run
from analysis.verdicts import (INCONCLUSIVE, MIN_SEEDS, NOT_SUPPORTED, SUPPORTED, Verdict, combine, correlation, impute_failures,
                               paired_better, threshold, tost_equivalent, welch_better)
from experiments.training import rundir

Outcome = tuple[str, str, Verdict]

#: Δm% points within which two methods "match" / "perform comparably" (F3, F4): the TOST margin
EQUIVALENCE_MARGIN = 2.0
#: "weights stay near 0.5" (F3): every epoch-mean normalised weight within 0.5 ± this
WEIGHT_TOLERANCE = 0.1
#: Prop. 6 (F6): the largest |w_i − 1/K| over 1,000 steps with equal losses
SYMMETRY_TOLERANCE = 1e-6
#: ... and the control (unequal losses) must move the weights by at least this
CONTROL_MIN_DEVIATION = 1e-3
#: EMA factor of the weight extraction (seed 003 §3.5)
EXTRACTION_EMA = 0.9


# ------------------------------------------------------------------------------ helpers
def seeds_text(runs: ClaimRuns) -> str:
    return f"{len(runs.seeds)} ({', '.join(map(str, runs.seeds))})"


def mm_dirs(runs: ClaimRuns, variant: str, method: str, seeds: Sequence[int] | None = None) -> list[Path]:
    """Multi-MNIST runs of one variant and method over the seeds (default: the current look's);
    uniform runs carry the cosine probe (F5). Every claim asks for them the same way, so they
    are trained once and shared."""
    if method == "fixed_from_famo":
        raise ValueError("fixed_from_famo runs come from check_f4")
    return [runs.run("multimnist", method, s, variant=variant, cosine=method == "uniform")
            for s in (runs.seeds if seeds is None else seeds)]


# ------------------------------------------------------------------------------ F1
def _f1_part(starts: pd.DataFrame, method: str, need_all_on: bool) -> Verdict:
    """FAMO (``need_all_on``): supported when every start is on the front, not supported when
    one is off. Uniform: supported when one start is off, not supported when every start is on.
    Otherwise (an undecided start could change the answer) inconclusive."""
    from experiments.training.toy_runs import OFF_FRONT, ON_FRONT

    on, off = int((starts["front"] == "on").sum()), int((starts["front"] == "off").sum())
    undecided = [s for s, f in zip(starts["start"], starts["front"]) if f == "undecided"]
    n = len(starts)
    test = f"{method}: starts with distance <= {ON_FRONT:g} (on), >= {OFF_FRONT:g} (off), else undecided"
    counts = f"{on} on, {off} off, {len(undecided)} undecided ({', '.join(undecided) or 'none'}) of {n}"
    if n == 0:
        return Verdict(INCONCLUSIVE, test, f"no {method} runs", exact=True)
    if need_all_on:
        kind = NOT_SUPPORTED if off else SUPPORTED if on == n else INCONCLUSIVE
    else:
        kind = SUPPORTED if off else NOT_SUPPORTED if on == n else INCONCLUSIVE
    # deterministic counts (no sampling model): decided by their own verdict, outside Holm
    return Verdict(kind, test, counts, {"on": on, "off": off, "undecided": len(undecided)}, exact=True)


def check_f1(runs: ClaimRuns, toy_dir: str | Path | None = None) -> Outcome:
    """FAMO on the front from all five starts, uniform + Adam off it from at least one, decided
    with a margin: a start counts as on the front only at a normalised distance <= tol/10 and as
    off it only at >= 10·tol (tol = PARETO_TOLERANCE); in between it is undecided, and a verdict
    an undecided start could change is inconclusive. No verdict rests on a trajectory that ends
    near the tolerance, so none flips with the CPU, the thread count or float32 vs float64."""
    from experiments.training.toy_runs import OFF_FRONT, ON_FRONT, PARETO_TOLERANCE

    table = runs.toy(toy_dir)
    famo, uniform = table[table["balancer"] == "famo"], table[table["balancer"] == "uniform"]
    verdict = combine([("FAMO on the front from all 5 starts", _f1_part(famo, "famo", need_all_on=True)),
                       ("uniform off the front from >= 1 start", _f1_part(uniform, "uniform", need_all_on=False))])
    verdict.test = (f"per start: normalised distance of the final loss pair to the Pareto front <= {ON_FRONT:g} "
                    f"(tol/10) is on, >= {OFF_FRONT:g} (10·tol) is off, else undecided (tol {PARETO_TOLERANCE:g}); "
                    "FAMO 5/5 on and uniform >= 1 off")
    setting = ", ".join(f"{c} {', '.join(sorted(set(map(str, table[c]))))}" for c in ("variant", "dtype", "steps")
                        if c in table)

    def text(rows: pd.DataFrame) -> str:
        dist = ", ".join(f"{s} {d:.2g}" for s, d in zip(rows["start"], rows["pareto_distance"]))
        return f"{int((rows['front'] == 'on').sum())}/{len(rows)} on, {int((rows['front'] == 'off').sum())} off ({dist})"

    measured = f"toy {setting}: FAMO {text(famo)}; uniform+Adam {text(uniform)}"
    return measured, f"{len(table) // max(len(table['balancer'].unique()), 1)} starts (deterministic) x " \
                     f"{len(table['balancer'].unique())} methods", verdict


# ------------------------------------------------------------------------------ F2
def check_f2(runs: ClaimRuns) -> Outcome:
    dirs = {m: [runs.run("qm9", m, s) for s in runs.seeds] for m in ("uniform", "famo")}
    values = {m: delta_ms(d) for m, d in dirs.items()}
    verdict = paired_better(values["famo"], values["uniform"], alpha=runs.alpha, names=("famo", "uniform"))
    measured = (f"test Δm% famo {pm(values['famo'])} vs uniform {pm(values['uniform'])} "
                f"(reference: {reference_kind(dirs['famo'] + dirs['uniform'])}; paper: 58.5 vs 177.6 against STL)"
                + failure_text(dirs["famo"] + dirs["uniform"]))
    return measured, seeds_text(runs), verdict


# ------------------------------------------------------------------------------ F3
def check_f3(runs: ClaimRuns) -> Outcome:
    parts: list[tuple[str, Verdict]] = []
    text: list[str] = []
    famo_std: dict[str, list[Value]] = {}
    every: list[Path] = []
    for variant in ("CL_CR", "RL_RR"):
        uniform_dirs = mm_dirs(runs, variant, "uniform")
        base = delta_ms(uniform_dirs)
        every += uniform_dirs
        text.append(f"{variant} (Δm% vs {reference_kind(uniform_dirs)}): uniform {pm(base)}")
        for method in runs.plan.balancers:
            dirs = mm_dirs(runs, variant, method)
            every += dirs
            values = delta_ms(dirs)
            text.append(f"{method} {pm(values)}")
            parts.append((f"{variant} {method} ≈ uniform", tost_equivalent(
                values, base, EQUIVALENCE_MARGIN, alpha=runs.alpha, names=(method, "uniform"))))
            if method == "famo":
                famo_std[variant] = [famo_weight_std(d) for d in dirs]
                continue
            worst = max(max_weight_deviation(d) for d in dirs)
            text.append(f"{method} max|w−0.5| {worst:.3g}")
            parts.append((f"{variant} {method} weights near 0.5",
                          threshold(worst, WEIGHT_TOLERANCE, what=f"max |epoch weight − 0.5| of {method}")))
    if len(famo_std) == 2:
        text.append(f"FAMO step-weight std CL_CR {pm(famo_std['CL_CR'])} vs RL_RR {pm(famo_std['RL_RR'])}")
        # different variants are not paired by design: Welch; a failed run counts against the claim
        parts.append(("FAMO unstable on CL_CR", welch_better(
            famo_std["CL_CR"], famo_std["RL_RR"], lower_is_better=False, alpha=runs.alpha,
            names=("std CL_CR", "std RL_RR"), failure="against")))
    return "; ".join(text) + failure_text(every), seeds_text(runs), combine(parts, alpha=runs.alpha)


# ------------------------------------------------------------------------------ F4
def check_f4(runs: ClaimRuns) -> Outcome:
    """The weights are extracted once, from FAMO's runs at the first look's seeds (so later looks
    compare against the same fixed weights), and the fixed-weight runs use every look's seeds."""
    from experiments.studies.extract import extract_weights

    famo_dirs = mm_dirs(runs, "CL_RR", "famo")
    first = runs.plan.seeds[: runs.plan.looks[0]]
    source_seeds = [(s, d) for s, d in zip(first, mm_dirs(runs, "CL_RR", "famo", seeds=first)) if finished(d)]
    source = [d for _, d in source_seeds]
    if not source:
        verdict = Verdict(INCONCLUSIVE, "paired TOST", "no finished FAMO run to extract weights from", {})
        return f"FAMO's runs at seeds {first} all failed" + failure_text(famo_dirs), seeds_text(runs), verdict
    extracted = extract_weights(source, ema=EXTRACTION_EMA, out=runs.root / "extracted" / "multimnist-CL_RR")
    weights = [round(w, 6) for w in extracted.weights]
    fixed_dirs = [runs.run("multimnist", "fixed", s, variant="CL_RR", name="fixed_from_famo",
                           hparams={"weights": weights}) for s in runs.seeds]
    famo, fixed = delta_ms(famo_dirs), delta_ms(fixed_dirs)
    verdict = tost_equivalent(fixed, famo, EQUIVALENCE_MARGIN, alpha=runs.alpha, names=("fixed_from_famo", "famo"))
    measured = (f"Multi-MNIST CL_RR: EMA({EXTRACTION_EMA}) weights {weights} from FAMO's runs at seeds "
                f"{', '.join(str(s) for s, _ in source_seeds)}; test Δm% fixed {pm(fixed)} vs famo {pm(famo)} "
                f"(reference: {reference_kind(famo_dirs)})" + failure_text(famo_dirs + fixed_dirs))
    return measured, seeds_text(runs), verdict


# ------------------------------------------------------------------------------ F5
def crossfit_gain(uniform: np.ndarray, balancers: np.ndarray) -> np.ndarray:
    """Cross-fitted gain of "the best balancer" over uniform (Δm%, lower is better), unbiased by
    the choice: for each seed s the balancer is chosen by its mean over the *other* seeds, and
    the gain at s is ``uniform[s] − chosen[s]``; the estimate is the mean over seeds. Shapes:
    ``uniform`` (..., n), ``balancers`` (..., K, n), seeds aligned; n >= 2.

    The naive "uniform mean − the best balancer mean" picks the maximum of K noisy means and is
    biased upward (by about +0.25 sd/√n·√2 for two equal balancers); here the selection and the
    measurement never share a seed, so the estimate's expectation is exactly the true gain of the
    balancer the selection picks (0 when all methods are equal)."""
    n = uniform.shape[-1]
    if n < 2:
        raise ValueError(f"cross-fitting needs >= 2 seeds, got {n}")
    others = (balancers.sum(axis=-1, keepdims=True) - balancers) / (n - 1)  # (..., K, n)
    chosen = np.argmin(others, axis=-2)[..., None, :]  # (..., 1, n)
    return (uniform - np.take_along_axis(balancers, chosen, axis=-2)[..., 0, :]).mean(axis=-1)


def gain_point(runs: ClaimRuns, label: str, dirs_of: Callable[[str], list[Path]]) -> dict[str, Any]:
    uniform_dirs = dirs_of("uniform")
    dirs = {m: dirs_of(m) for m in runs.plan.balancers}
    values = [delta_ms(uniform_dirs)] + [delta_ms(d) for d in dirs.values()]
    imputed = impute_failures(values, [True] * len(values)) if len(runs.seeds) >= 2 else None
    gain = float(crossfit_gain(imputed[0][0], np.stack(imputed[0][1:]))) if imputed else math.nan
    cos = [mean_cosine(d) if finished(d) else math.nan for d in uniform_dirs]
    failed = sum(not finished(d) for d in uniform_dirs + [d for ds in dirs.values() for d in ds])
    return {"setting": label, "mean_cosine": float(np.nanmean(cos)) if any(map(math.isfinite, cos)) else math.nan,
            "gain": gain, "failed_runs": failed}


def check_f5(runs: ClaimRuns) -> Outcome:
    points = [gain_point(runs, f"multimnist/{v}", lambda m, v=v: mm_dirs(runs, v, m)) for v in ("CL_RR", "CL_CR", "RL_RR")]
    for label, corr, conflict in SYNTHETIC_SETTINGS:
        extra = {"benchmark": {"options": {"correlation": corr, "conflict": conflict}}}
        points.append(gain_point(runs, f"synthetic/{label}", lambda m, e=extra: [
            runs.run("synthetic", m, s, extra=e, cosine=m == "uniform") for s in runs.seeds]))
    frame = pd.DataFrame(points)
    rundir.write_table(runs.root / "f5_points.csv", frame)
    verdict = correlation(frame["mean_cosine"], frame["gain"], negative=True, alpha=runs.alpha,
                          names=("mean task-gradient cosine (uniform)", "cross-fitted gain over uniform (Δm%)"),
                          labels=list(frame["setting"]))
    if len(runs.seeds) < MIN_SEEDS:
        verdict = Verdict(INCONCLUSIVE, verdict.test, f"too few seeds: each point is a mean of {len(runs.seeds)} "
                          f"(need >= {MIN_SEEDS}); the correlation alone: {verdict.verdict} ({verdict.reason})",
                          verdict.numbers, panels=[replace(p, verdict=INCONCLUSIVE) for p in verdict.panels])
    shown = ", ".join(f"{p['setting']} (cos {p['mean_cosine']:.2f}, gain {p['gain']:.2f}"
                      + (f", {p['failed_runs']} failed runs" if p["failed_runs"] else "") + ")" for p in points)
    r = verdict.numbers.get("r", math.nan)
    measured = (f"r(mean cosine, cross-fitted gain of the best of {'/'.join(runs.plan.balancers)} over uniform in "
                f"Δm% points) = {r:.3f} over {len(points)} settings: {shown}")
    return measured, seeds_text(runs), verdict


# ------------------------------------------------------------------------------ F6
def check_f6(runs: ClaimRuns) -> Outcome:
    from analysis.symmetry import famo_max_weight_deviation

    steps, k = 1000, 4
    equal = famo_max_weight_deviation(n_tasks=k, steps=steps, equal_losses=True)
    control = famo_max_weight_deviation(n_tasks=k, steps=steps, equal_losses=False)
    measured = (f"K={k}, {steps} steps, identical heads and targets: max |w_i − 1/K| = {equal:.3g}; "
                f"control with unequal losses: {control:.3g}")
    check = threshold(equal, SYMMETRY_TOLERANCE, what="max |w_i − 1/K| with equal losses")
    if control < CONTROL_MIN_DEVIATION:
        verdict = Verdict(INCONCLUSIVE, check.test, f"the control moved the weights by only {control:.3g} "
                          f"(< {CONTROL_MIN_DEVIATION:g}): the check cannot tell", {"value": equal}, exact=True)
    else:
        verdict = check
        verdict.reason += f"; control moved them by {control:.3g} >= {CONTROL_MIN_DEVIATION:g}"
    verdict.test = f"numerical: max |w_i − 1/K| over {steps} steps <= {SYMMETRY_TOLERANCE:g} (control >= {CONTROL_MIN_DEVIATION:g})"
    return measured, "1 (deterministic)", verdict


# ------------------------------------------------------------------------------ F7
def objective_curve(run_dir: Path) -> pd.Series | None:
    """Validation objective per epoch (epoch 0: the untrained model), None for a failed run."""
    if not finished(run_dir):
        return None
    metrics = load_run(run_dir).metrics().sort_values("epoch")
    return pd.Series(metrics["val_objective"].to_numpy(dtype=float), index=metrics["epoch"].to_numpy())


def best_within(curve: pd.Series, seconds_per_epoch: float, budget: float) -> float:
    """Best objective among the epochs whose cumulative training time fits the budget."""
    elapsed = curve.index.to_numpy(dtype=float) * seconds_per_epoch
    return float(curve[elapsed <= budget * (1 + 1e-9)].min())


def equal_time_values(curves: dict[str, list[pd.Series | None]], per_epoch: dict[str, list[Value]]) -> dict[str, list[Value]]:
    """Per method and seed, the best objective within that seed's budget: the shortest training
    time (epochs × interleaved s/epoch) of the methods' finished runs at the seed."""
    methods = list(curves)
    best: dict[str, list[Value]] = {m: [] for m in methods}
    for i in range(len(curves[methods[0]])):
        usable = {m: (curves[m][i], per_epoch[m][i]) for m in methods
                  if curves[m][i] is not None and per_epoch[m][i] is not None}
        budget = min((float(c.index.max()) * t for c, t in usable.values()), default=math.nan)
        for m in methods:
            best[m].append(best_within(*usable[m], budget) if m in usable else None)
    return best


def check_f7(runs: ClaimRuns) -> Outcome:
    """Both parts use the epoch times of the two configurations measured interleaved in one
    process per seed (:mod:`analysis.claim_timing`), not the runs' own epoch times. A run that
    diverged in training still has a time per epoch (its configuration can be timed) and counts
    as a failure in the equal-wall-time part; a configuration that cannot be timed fails the
    time part."""
    methods = ("famo", "marigold")
    dirs = {m: mm_dirs(runs, "CL_RR", m) for m in methods}
    per_epoch: dict[str, list[Value]] = {m: [] for m in methods}
    for i in range(len(runs.seeds)):
        pair = [dirs[m][i] for m in methods]
        timed = runs.interleaved_epoch_seconds(pair) if all(status(d) != "missing" for d in pair) else [None] * 2
        for m, t in zip(methods, timed):
            per_epoch[m].append(t)
    curves = {m: [objective_curve(d) for d in dirs[m]] for m in methods}
    best = equal_time_values(curves, per_epoch)
    verdict = combine([
        ("faster per epoch", paired_better(per_epoch["marigold"], per_epoch["famo"], alpha=runs.alpha,
                                           names=("marigold s/epoch", "famo s/epoch"))),
        ("better at equal wall time", paired_better(best["marigold"], best["famo"], alpha=runs.alpha,
                                                    names=("marigold", "famo"))),
    ], alpha=runs.alpha)
    measured = (f"Multi-MNIST CL_RR: s/epoch measured interleaved in one process: marigold {pm(per_epoch['marigold'])} "
                f"vs famo {pm(per_epoch['famo'])}; best validation objective within each seed's equal training time: "
                f"marigold {pm(best['marigold'])} vs famo {pm(best['famo'])}" + failure_text(dirs["famo"] + dirs["marigold"]))
    return measured, seeds_text(runs), verdict


# ------------------------------------------------------------------------------ F8
#: the auxiliary-learning setting (seed 004 §3.5, Eq. 13-14): Multi-MNIST CL_CR, classifying the left
#: digit is the main task (task 0; model selection on it alone), the right digit the auxiliary task
AUX_VARIANT, AUX_MAIN = "CL_CR", "left_cls"
AUX_EXTRA = {"objective_tasks": [AUX_MAIN]}
#: run label -> (balancer, hyperparameters): MARIGOLD's own defaults otherwise (w_lr 1e-4, r 1e-3)
AUX_METHODS = {
    "marigold_auxiliary": ("marigold", {"objective": "auxiliary", "main_tasks": [0]}),
    "uniform": ("uniform", {}),
    "fixed_main_only": ("fixed", {"weights": [1.0, 0.0]}),
}


def main_task_accuracy(run_dir: Path) -> Value:
    """Test accuracy of the main task at the run's best validation epoch; None for a failed run."""
    return float(load_run(run_dir).summary["test_metrics"][f"{AUX_MAIN}_acc"]) if finished(run_dir) else None


def final_auxiliary_weight(run_dir: Path) -> Value:
    """The auxiliary task's epoch-mean weight in the last logged epoch (the main task's is 1)."""
    if not finished(run_dir):
        return None
    record = load_run(run_dir)
    column = f"weight_{record.tasks[1]}"
    weights = record.metrics().query("epoch > 0")
    return float(weights[column].iloc[-1]) if column in weights and len(weights) else None


def check_f8(runs: ClaimRuns) -> Outcome:
    dirs = {label: [runs.run("multimnist", balancer, s, variant=AUX_VARIANT, hparams=hp, extra=AUX_EXTRA,
                             name=None if label == balancer else label) for s in runs.seeds]
            for label, (balancer, hp) in AUX_METHODS.items()}
    acc = {label: [main_task_accuracy(d) for d in ds] for label, ds in dirs.items()}
    ours = acc["marigold_auxiliary"]
    verdict = combine([
        ("better than uniform (LS)", paired_better(ours, acc["uniform"], lower_is_better=False, alpha=runs.alpha,
                                                   names=("marigold auxiliary", "uniform"))),
        ("better than the main task alone", paired_better(ours, acc["fixed_main_only"], lower_is_better=False,
                                                          alpha=runs.alpha, names=("marigold auxiliary", "fixed [1, 0]"))),
    ], alpha=runs.alpha)
    omega = [final_auxiliary_weight(d) for d in dirs["marigold_auxiliary"]]
    measured = (f"Multi-MNIST {AUX_VARIANT}, main task {AUX_MAIN} (selection on it alone), auxiliary right_cls: "
                f"test {AUX_MAIN} accuracy marigold auxiliary {pm(ours)} vs uniform {pm(acc['uniform'])} vs fixed [1, 0] "
                f"{pm(acc['fixed_main_only'])}; MARIGOLD's last-epoch auxiliary weight {pm(omega)} (starts at 1); "
                "paper (Table 4, ads ranking, main task click): NE gain over LS 0.08%"
                + failure_text([d for ds in dirs.values() for d in ds]))
    return measured, seeds_text(runs), verdict
