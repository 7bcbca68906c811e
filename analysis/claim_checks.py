"""The seven checks behind ``balancebench claims``. Each takes the run launcher
(:class:`analysis.claim_runs.ClaimRuns`), gets its runs (trained or reused), reads the run
directories and returns ``(measured numbers as text, seeds as text, Verdict)``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.claim_runs import SYNTHETIC_SETTINGS, ClaimRuns
from analysis.gradients import mean_cosine
from analysis.runs import epoch_seconds, load_run, run_frame
from analysis.tables import format_pm, mean_se
from analysis.verdicts import (INCONCLUSIVE, MIN_SEEDS, NOT_SUPPORTED, SUPPORTED, Verdict, bootstrap_equivalent,
                               combine, correlation, threshold, welch_better)
from experiments import rundir

Outcome = tuple[str, str, Verdict]

#: Δm% points within which two methods "match" / "perform comparably" (F3, F4)
EQUIVALENCE_MARGIN = 2.0
#: "weights stay near 0.5" (F3): every epoch-mean normalised weight within 0.5 ± this
WEIGHT_TOLERANCE = 0.1
#: Prop. 6 (F6): the largest |w_i − 1/K| over 1,000 steps with equal losses
SYMMETRY_TOLERANCE = 1e-6
#: ... and the control (unequal losses) must move the weights by at least this
CONTROL_MIN_DEVIATION = 1e-3


# ------------------------------------------------------------------------------ helpers
def delta_ms(dirs: Sequence[Path]) -> list[float]:
    """Test Δm% of each run (its own reference; see analysis.runs.reference_for)."""
    return list(run_frame([load_run(d) for d in dirs])["delta_m"]) if dirs else []


def reference_kind(dirs: Sequence[Path]) -> str:
    return ", ".join(sorted(set(run_frame([load_run(d) for d in dirs])["reference"]))) if dirs else "?"


def pm(values: Sequence[float]) -> str:
    return format_pm(*mean_se(values))


def seeds_text(runs: ClaimRuns) -> str:
    return f"{len(runs.seeds)} ({', '.join(map(str, runs.seeds))})"


def mm_dirs(runs: ClaimRuns, variant: str, method: str) -> list[Path]:
    """Multi-MNIST runs of one variant and method over the seeds; uniform runs carry the cosine
    probe (F5). Every claim asks for them the same way, so they are trained once and shared."""
    if method == "fixed_from_famo":
        raise ValueError("fixed_from_famo runs come from check_f4")
    return [runs.run("multimnist", method, s, variant=variant, cosine=method == "uniform") for s in runs.seeds]


def normalised_weights(run_dir: Path, source: str) -> pd.DataFrame:
    """The run's weights (``source`` = steps or epochs (epoch >= 1)), rows normalised to sum 1."""
    record = load_run(run_dir)
    table = rundir.read_table(run_dir, rundir.STEPS) if source == "steps" else record.metrics().query("epoch > 0")
    w = table[[f"weight_{t}" for t in record.tasks]].astype(float)
    return w.div(w.sum(axis=1), axis=0)


# ------------------------------------------------------------------------------ F1
def _f1_part(starts: pd.DataFrame, method: str, need_all_on: bool) -> Verdict:
    """FAMO (``need_all_on``): supported when every start is on the front, not supported when
    one is off. Uniform: supported when one start is off, not supported when every start is on.
    Otherwise (an undecided start could change the answer) inconclusive."""
    from experiments.toy_runs import OFF_FRONT, ON_FRONT

    on, off = int((starts["front"] == "on").sum()), int((starts["front"] == "off").sum())
    undecided = [s for s, f in zip(starts["start"], starts["front"]) if f == "undecided"]
    n = len(starts)
    test = f"{method}: starts with distance <= {ON_FRONT:g} (on), >= {OFF_FRONT:g} (off), else undecided"
    counts = f"{on} on, {off} off, {len(undecided)} undecided ({', '.join(undecided) or 'none'}) of {n}"
    if n == 0:
        return Verdict(INCONCLUSIVE, test, f"no {method} runs")
    if need_all_on:
        kind = NOT_SUPPORTED if off else SUPPORTED if on == n else INCONCLUSIVE
    else:
        kind = SUPPORTED if off else NOT_SUPPORTED if on == n else INCONCLUSIVE
    return Verdict(kind, test, counts, {"on": on, "off": off, "undecided": len(undecided)})


def check_f1(runs: ClaimRuns, toy_dir: str | Path | None = None) -> Outcome:
    """FAMO on the front from all five starts, uniform + Adam off it from at least one, decided
    with a margin: a start counts as on the front only at a normalised distance <= tol/10 and as
    off it only at >= 10·tol (tol = PARETO_TOLERANCE); in between it is undecided, and a verdict
    an undecided start could change is inconclusive. No verdict rests on a trajectory that ends
    near the tolerance, so none flips with the CPU, the thread count or float32 vs float64."""
    from experiments.toy_runs import OFF_FRONT, ON_FRONT, PARETO_TOLERANCE

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
    verdict = welch_better(values["famo"], values["uniform"], names=("famo", "uniform"))
    measured = (f"test Δm% famo {pm(values['famo'])} vs uniform {pm(values['uniform'])} "
                f"(reference: {reference_kind(dirs['famo'])}; paper: 58.5 vs 177.6 against STL)")
    return measured, seeds_text(runs), verdict


# ------------------------------------------------------------------------------ F3
def famo_weight_std(run_dir: Path) -> float:
    """Standard deviation over logged steps of FAMO's normalised weight of task 0."""
    return float(normalised_weights(run_dir, "steps").iloc[:, 0].std(ddof=1))


def check_f3(runs: ClaimRuns) -> Outcome:
    parts: list[tuple[str, Verdict]] = []
    text: list[str] = []
    famo_std: dict[str, list[float]] = {}
    for variant in ("CL_CR", "RL_RR"):
        uniform_dirs = mm_dirs(runs, variant, "uniform")
        base = delta_ms(uniform_dirs)
        text.append(f"{variant} (Δm% vs {reference_kind(uniform_dirs)}): uniform {pm(base)}")
        for method in runs.plan.balancers:
            dirs = mm_dirs(runs, variant, method)
            values = delta_ms(dirs)
            text.append(f"{method} {pm(values)}")
            parts.append((f"{variant} {method} ≈ uniform", bootstrap_equivalent(values, base, EQUIVALENCE_MARGIN,
                                                                                names=(method, "uniform"))))
            if method == "famo":
                famo_std[variant] = [famo_weight_std(d) for d in dirs]
                continue
            worst = max(float((normalised_weights(d, "epochs").iloc[:, 0] - 0.5).abs().max()) for d in dirs)
            text.append(f"{method} max|w−0.5| {worst:.3g}")
            parts.append((f"{variant} {method} weights near 0.5",
                          threshold(worst, WEIGHT_TOLERANCE, what=f"max |epoch weight − 0.5| of {method}")))
    if len(famo_std) == 2:
        text.append(f"FAMO step-weight std CL_CR {pm(famo_std['CL_CR'])} vs RL_RR {pm(famo_std['RL_RR'])}")
        parts.append(("FAMO unstable on CL_CR", welch_better(famo_std["CL_CR"], famo_std["RL_RR"], lower_is_better=False,
                                                             names=("std CL_CR", "std RL_RR"))))
    return "; ".join(text), seeds_text(runs), combine(parts)


# ------------------------------------------------------------------------------ F4
def check_f4(runs: ClaimRuns) -> Outcome:
    from experiments.extract import extract_weights

    famo_dirs = mm_dirs(runs, "CL_RR", "famo")
    extracted = extract_weights(famo_dirs, ema=0.9, out=runs.root / "extracted" / "multimnist-CL_RR")
    weights = [round(w, 6) for w in extracted.weights]
    fixed_dirs = [runs.run("multimnist", "fixed", s, variant="CL_RR", name="fixed_from_famo",
                           hparams={"weights": weights}) for s in runs.seeds]
    famo, fixed = delta_ms(famo_dirs), delta_ms(fixed_dirs)
    verdict = bootstrap_equivalent(fixed, famo, EQUIVALENCE_MARGIN, names=("fixed_from_famo", "famo"))
    measured = (f"Multi-MNIST CL_RR: EMA(0.9) weights {weights} from FAMO's runs; test Δm% fixed {pm(fixed)} "
                f"vs famo {pm(famo)} (reference: {reference_kind(famo_dirs)})")
    return measured, seeds_text(runs), verdict


# ------------------------------------------------------------------------------ F5
def gain_point(runs: ClaimRuns, label: str, dirs_of: Any) -> dict[str, Any]:
    uniform_dirs = dirs_of("uniform")
    base = float(np.mean(delta_ms(uniform_dirs)))
    best = min(float(np.mean(delta_ms(dirs_of(m)))) for m in runs.plan.balancers)
    cos = [mean_cosine(d) for d in uniform_dirs]
    return {"setting": label, "mean_cosine": float(np.nanmean(cos)) if any(map(math.isfinite, cos)) else math.nan,
            "gain": base - best}


def check_f5(runs: ClaimRuns) -> Outcome:
    points = [gain_point(runs, f"multimnist/{v}", lambda m, v=v: mm_dirs(runs, v, m)) for v in ("CL_RR", "CL_CR", "RL_RR")]
    for label, corr, conflict in SYNTHETIC_SETTINGS:
        extra = {"benchmark": {"options": {"correlation": corr, "conflict": conflict}}}
        points.append(gain_point(runs, f"synthetic/{label}", lambda m, e=extra: [
            runs.run("synthetic", m, s, extra=e, cosine=m == "uniform") for s in runs.seeds]))
    frame = pd.DataFrame(points)
    rundir.write_table(runs.root / "f5_points.csv", frame)
    verdict = correlation(frame["mean_cosine"], frame["gain"], negative=True)
    if len(runs.seeds) < MIN_SEEDS:
        verdict = Verdict(INCONCLUSIVE, verdict.test, f"too few seeds: each point is a mean of {len(runs.seeds)} "
                          f"(need >= {MIN_SEEDS}); the correlation alone: {verdict.verdict} ({verdict.reason})",
                          verdict.numbers)
    shown = ", ".join(f"{p['setting']} (cos {p['mean_cosine']:.2f}, gain {p['gain']:.2f})" for p in points)
    r = verdict.numbers.get("r", math.nan)
    measured = (f"r(mean cosine, gain of the best of {'/'.join(runs.plan.balancers)} over uniform in Δm% points) = "
                f"{r:.3f} over {len(points)} settings: {shown}")
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
                          f"(< {CONTROL_MIN_DEVIATION:g}): the check cannot tell", {"value": equal})
    else:
        verdict = check
        verdict.reason += f"; control moved them by {control:.3g} >= {CONTROL_MIN_DEVIATION:g}"
    verdict.test = f"numerical: max |w_i − 1/K| over {steps} steps <= {SYMMETRY_TOLERANCE:g} (control >= {CONTROL_MIN_DEVIATION:g})"
    return measured, "1 (deterministic)", verdict


# ------------------------------------------------------------------------------ F7
def time_and_best(run_dir: Path) -> tuple[float, pd.DataFrame]:
    """(mean seconds per training epoch, epochs with cumulative training seconds and val
    objective; epoch 0, the untrained model, at 0 s). Probe time is not training time."""
    record = load_run(run_dir)
    metrics = record.metrics().sort_values("epoch").set_index("epoch")
    seconds = epoch_seconds(record).reindex(metrics.index).fillna(0.0)
    curve = pd.DataFrame({"elapsed": seconds.cumsum().to_numpy(), "objective": metrics["val_objective"].to_numpy()})
    return float(seconds[seconds.index > 0].mean()), curve


def best_within(curve: pd.DataFrame, budget: float) -> float:
    return float(curve.loc[curve["elapsed"] <= budget + 1e-9, "objective"].min())


def check_f7(runs: ClaimRuns) -> Outcome:
    dirs = {m: mm_dirs(runs, "CL_RR", m) for m in ("famo", "marigold")}
    timing = {m: [time_and_best(d) for d in ds] for m, ds in dirs.items()}
    per_epoch = {m: [t for t, _ in v] for m, v in timing.items()}
    budget = min(float(c["elapsed"].iloc[-1]) for v in timing.values() for _, c in v)
    best = {m: [best_within(c, budget) for _, c in v] for m, v in timing.items()}
    verdict = combine([
        ("faster per epoch", welch_better(per_epoch["marigold"], per_epoch["famo"], names=("marigold s/epoch", "famo s/epoch"))),
        ("better at equal wall time", welch_better(best["marigold"], best["famo"], names=("marigold", "famo"))),
    ])
    measured = (f"Multi-MNIST CL_RR: s/epoch marigold {pm(per_epoch['marigold'])} vs famo {pm(per_epoch['famo'])}; "
                f"best val Δm% within {budget:.3g} s of training: marigold {pm(best['marigold'])} vs famo {pm(best['famo'])}")
    return measured, seeds_text(runs), verdict
