"""``balancebench claims``: each published claim as a check that runs what it needs (or reuses the
runs under ``--out``), measures, and answers with a declared test (see :mod:`analysis.verdicts`).

Seed-level claims follow the scale's sequential plan (:mod:`analysis.claim_runs`): checked at the
first look's seeds, then — while inconclusive — again with the seeds added up to each next look,
until decided or at the cap; every look tests at α / (number of looks).

``claims.csv`` under ``--out/<scale>`` has the columns ``COLUMNS``: id, claim, source (seed and
section), verdict, seeds_per_group (seeds per method at the deciding or last look; the check's own
description for deterministic claims), test (the test, its level and the plan), p_value (the
claim's p-value in the direction of its verdict — refutation for "not supported", support
otherwise — Holm-adjusted over the claim's parts and multiplied by the number of looks, so it
compares with α = 0.05; empty for deterministic checks) and measured (the numbers). ``claims.md``
and the printed table add the seeds, the reason (every part's verdict) and the check's seconds.

Each row's ``test`` says how its runs were configured: "tuned (study budget N/method)" — every
method's configuration chosen on validation by the claims' fair search at seed 0
(:mod:`analysis.claim_tuning`) — or untuned (the toy, the deterministic check). The searches'
budget table (setting, method, trials complete / pruned / failed, wall time, best parameters) is
``studies.csv`` next to ``claims.csv`` and the end of ``claims.md``.

``plots/<id>.png`` (:mod:`analysis.claim_plots`) shows, per claim, the values each of its tests
decided on (per seed, paired where the test pairs them) with the part's verdict; F1's plot is the
toy's trajectories against the Pareto front. ``claims.md`` links them.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import claim_checks as checks
from analysis import claim_checks_seeds as more
from analysis.claim_runs import ClaimRuns, stl_budget
from analysis.claim_tuning import BUDGET_FILE, SEARCH_SEED
from analysis.verdicts import ALPHA, INCONCLUSIVE, NOT_SUPPORTED, Verdict
from experiments.training import rundir
from experiments.errors import UserError


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    source: str
    check: Callable[..., checks.Outcome]
    #: decided on seeds, along the sequential plan (False: a deterministic check, run once)
    sequential: bool = True


CLAIMS: dict[str, Claim] = {c.id: c for c in [
    Claim("F1", "FAMO reaches the Pareto front of the toy from all five starts; uniform+Adam fails from >= 1",
          "seed 000 Fig. 1 (§5.1)", checks.check_f1, sequential=False),
    Claim("F2", "On QM9, FAMO's Δm% is better (lower) than uniform loss's",
          "seed 000 Table 2 (58.5 vs 177.6)", checks.check_f2),
    Claim("F3", "On two similar tasks (Multi-MNIST CL_CR, RL_RR) uniform matches the balancers and their weights "
          "stay near 0.5; FAMO is the unstable exception on dual classification",
          "seed 003 §3.2, Fig. 2", checks.check_f3),
    Claim("F4", "EMA-extracted fixed weights perform comparably to the balancer they came from",
          "seed 003 §3.5, Table 2", checks.check_f4),
    Claim("F5", "Mean task-gradient cosine similarity correlates with when uniform matches the balancers "
          "(higher cosine, smaller balancer gain)", "seed 003 §A.2.1, Fig. 7", checks.check_f5),
    Claim("F6", "With equal losses and equal initial logits FAMO keeps equal weights",
          "seed 003 App. A.4, Prop. 6", checks.check_f6, sequential=False),
    Claim("F7", "MARIGOLD beats FAMO at equal wall time and is faster per epoch",
          "seed 004 Fig. 3, Table 3", checks.check_f7),
    Claim("F8", "MARIGOLD with the auxiliary objective (main task in the upper level) improves the main task "
          "over uniform (LS) and over the main task alone", "seed 004 §3.5, Eq. 13-14, Table 4 (NE gain 0.08% "
          "over LS on the main task)", checks.check_f8),
    Claim("F9", "FAMO's performance is robust to its regularisation γ ∈ {1e-4, 1e-3, 1e-2} (Δm% at 1e-4 and 1e-2 "
          "equivalent to 1e-3 within a stated margin) on the settings available here",
          "seed 000 §5.4, Fig. 5 (plot only: 'reasonably well' with every γ on QM9, NYU-v2 and CelebA; "
          "CityScapes the exception)", more.check_f9),
    Claim("F10", "On QM9, uniform loss has a worse worst-task change (their 'lower minimum') and a larger spread of "
          "per-task changes than FAMO and Nash-MTL",
          "seed 003 §A.2.2, Table 5 (min −849.3 uniform vs −351.5 FAMO, −390.2 Nash-MTL; std 229.4 vs 97.78, 108.8)",
          more.check_f10),
    Claim("F11", "MARIGOLD beats the loss-balancing methods LS (uniform), SI, RLW, DWA and UW",
          "seed 004 Tables 5-6 (Δk% NYU-v2: −4.54 vs LS 5.59, SI 4.39, RLW 7.78, DWA 3.57, UW 4.05; CityScapes: "
          "8.62 vs 22.60, 14.11, 24.38, 21.45, UW 5.89)", more.check_f11),
    Claim("F12", "Each MARIGOLD variant (faithful Alg. 2; fused, this project's extension) is faster per epoch than "
          "FAMO and better at equal wall time", "seed 004 Table 3 (s/epoch MARIGOLD 152 vs FAMO 182 on NYU-v2, "
          "100 vs 126 on CityScapes), Fig. 3 (Δk% over time)", more.check_f12),
    Claim("F13", "On two similar tasks the learned weights of every weight-learning balancer (FAMO, MARIGOLD, UW, DWA, "
          "RLW, SI) stay near 0.5 (FAMO on dual classification excepted, as the paper does)",
          "seed 003 §3.2, Fig. 2 (weights 'predominantly clustered around 0.5'; FAMO on CL_CR 'a notable exception')",
          more.check_f13),
]}

PLOTS = "plots"
COLUMNS = ["id", "claim", "source", "verdict", "seeds_per_group", "test", "p_value", "measured"]
MD_COLUMNS = COLUMNS + ["seeds", "reason", "seconds"]


def select(only: str | None) -> list[Claim]:
    if not only:
        return list(CLAIMS.values())
    wanted = [x.strip().upper() for x in only.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in CLAIMS]
    if unknown:
        raise UserError(f"unknown claim id(s) {', '.join(unknown)}; valid: {', '.join(CLAIMS)}")
    return [CLAIMS[x] for x in wanted]


def reported_p(verdict: Verdict, looks: int) -> float:
    """The claim's p-value for the table: in the verdict's direction, × the number of looks."""
    if verdict.exact:
        return math.nan
    p = verdict.p_refute if verdict.verdict == NOT_SUPPORTED else verdict.p_support
    return min(1.0, looks * p) if math.isfinite(p) else math.nan


def check_claim(claim: Claim, runs: ClaimRuns, **kwargs: Any) -> dict[str, Any]:
    """One claim's row; a seed-level claim goes through the looks until it is decided."""
    started = time.perf_counter()
    looks = runs.plan.looks
    take_notes = getattr(runs, "take_notes", lambda: [])
    take_notes()  # forget the previous claim's
    for look in range(len(looks) if claim.sequential else 1):
        runs.at_look(look)
        measured, seeds, verdict = claim.check(runs, **kwargs)
        runs.say(f"{claim.id} at {len(runs.seeds)} seeds: {verdict.verdict}")
        if verdict.verdict != INCONCLUSIVE:
            break
    test = verdict.test
    if claim.sequential:
        stop = "decided" if verdict.verdict != INCONCLUSIVE else "cap reached, undecided"
        test += (f"; sequential: looks at {'/'.join(map(str, looks))} seeds, each at α={ALPHA:g}/{len(looks)} "
                 f"(Bonferroni over looks); {stop} at look {look + 1}")
    test += "; configurations: " + (", ".join(take_notes()) or "untuned (no training)")
    return {"id": claim.id, "claim": claim.claim, "source": claim.source, "verdict": verdict.verdict,
            "seeds_per_group": len(runs.seeds) if claim.sequential else seeds, "test": test,
            "p_value": reported_p(verdict, len(looks) if claim.sequential else 1), "measured": measured,
            "seeds": seeds, "reason": verdict.reason, "seconds": round(time.perf_counter() - started, 1),
            "panels": verdict.panels}


def run_claims(scale: str = "tiny", only: str | None = None, out: str | Path = "results/claims",
               toy_dir: str | Path | None = None, quiet: bool = False) -> pd.DataFrame:
    """Check the selected claims; returns the verdict table (``MD_COLUMNS``) and writes
    ``claims.csv`` (``COLUMNS``), ``studies.csv`` and ``claims.md`` under ``out/<scale>`` — after
    every claim, so a long run that stops leaves the rows it decided (and resumes from its runs)."""
    runs = ClaimRuns(out, scale, quiet=quiet)
    chosen = select(only)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for claim in chosen:
        kwargs: dict[str, Any] = {"toy_dir": toy_dir} if claim.id == "F1" else {}
        rows.append(check_claim(claim, runs, **kwargs))
        runs.say(f"{claim.id}: {rows[-1]['verdict']} ({rows[-1]['seconds']:.0f} s)")
        _plot(runs, rows[-1], toy_dir)
        command = f"balancebench claims --scale {scale}" + (f" --only {only}" if only else "") + f" --out {out}"
        _write_outputs(runs, rows, command, f"{len(rows)} of {len(chosen)} claims", time.perf_counter() - started)
    return pd.DataFrame(rows, columns=MD_COLUMNS)


def _plot(runs: ClaimRuns, row: dict[str, Any], toy_dir: str | Path | None) -> Path | None:
    """``plots/<id>.png`` of one decided claim (F1: the toy runs' trajectories)."""
    from analysis.claim_plots import plot_claim, plot_toy

    out = runs.root / PLOTS / f"{row['id']}.png"
    if row["id"] == "F1":
        csv = (Path(toy_dir) if toy_dir else runs.root / "toy") / "toy_pareto.csv"
        return plot_toy(pd.read_csv(csv), out) if csv.is_file() else None
    return plot_claim(row["id"], row["claim"], row["verdict"], row["panels"], out)


def provenance(command: str, wall_seconds: float, done: str) -> str:
    """Where and how the table was made: command, commit, machine, torch, wall time."""
    import platform
    import subprocess

    import torch

    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).resolve().parent, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    from experiments.cost.tables import machine_description  # the cost benchmark's machine line

    cpu = machine_description("cpu")["device"]
    device = machine_description("cuda")["device"] if torch.cuda.is_available() else "no GPU"
    return (f"Command: `{command}` · commit {commit} · machine: {cpu}, {os.cpu_count()} cores, {device}, "
            f"{platform.system()} · torch {torch.__version__} · wall time of this invocation "
            f"{wall_seconds / 60:.1f} min ({done}; runs finished by earlier invocations were reused)\n\n")


def _write_outputs(runs: ClaimRuns, rows: list[dict[str, Any]], command: str, done: str, wall_seconds: float) -> None:
    """claims.csv, studies.csv and claims.md (provenance, verdicts, the searches) of the rows so far."""
    table = pd.DataFrame(rows, columns=MD_COLUMNS)
    rundir.write_table(runs.root / "claims.csv", table[COLUMNS])
    budget = runs.tuning.table()
    stl = stl_budget(runs.root)
    budget = pd.concat([budget, stl], ignore_index=True) if len(stl) else budget
    rundir.write_table(runs.root / BUDGET_FILE, budget)
    rundir.atomic_write_text(runs.root / "claims.md", provenance(command, wall_seconds, done) + table.to_markdown(index=False)
                             + "\n\n" + plots_text(runs, table) + tuning_text(runs, budget))


def plots_text(runs: ClaimRuns, table: pd.DataFrame) -> str:
    """The claims.md section linking each claim's plot (relative paths: the report can be copied)."""
    shown = [(i, runs.root / PLOTS / f"{i}.png") for i in table["id"]]
    lines = [f"### {i}\n\n![{i}]({PLOTS}/{i}.png)\n" for i, path in shown if path.is_file()]
    if not lines:
        return ""
    return ("## Plots\n\nPer claim, the values its tests decided on: every seed (joined across methods where the test "
            "pairs them), each group's mean with its 90 % t-interval, failed runs as red crosses; equivalence parts "
            "add the per-seed differences with the t-interval that decided them (1 − 2α of the look) against the "
            "±margin band. Each panel's title gives that part's verdict "
            "(after Holm).\n\n" + "\n".join(lines) + "\n")


def tuning_text(runs: ClaimRuns, budget: pd.DataFrame) -> str:
    """The claims.md section on the searches: the protocol in one paragraph and the budget table."""
    plan = runs.plan
    head = (f"## Tuning ({plan.scale})\n\nEvery method of a seed-level claim trains the configuration a search chose "
            f"for it on validation in the claim's setting: {plan.trials} trials per method (the published default, "
            f"then {plan.trials - 1} points of the shared space (lr, weight decay, dropout where the model has one) "
            "drawn once and given to every method alike), random sampler seed 0, no pruning, the evidence runs' "
            f"epochs; search seed {SEARCH_SEED}, evidence seeds {', '.join(map(str, plan.seeds))} (disjoint). "
            "fixed_from_X trains with X's chosen shared values (no search of its own). Toy (F1) and deterministic "
            "(F6) checks are untuned. Every setting's Δm% is against its single-task references (one run per task "
            "at seed 0, trained once; rows `stl`, their cost in the same columns). "
            f"Budget table: `{BUDGET_FILE}`.\n\n")
    return head + (budget.to_markdown(index=False) if len(budget) else "(no search ran)") + "\n"


def claims_command(args: argparse.Namespace) -> int:
    table = run_claims(scale=args.scale, only=args.only, out=args.out, toy_dir=args.toy_dir, quiet=args.quiet)
    print(table.drop(columns=["seconds"]).to_markdown(index=False))
    print(Path(args.out) / args.scale / "claims.csv")
    return 0
