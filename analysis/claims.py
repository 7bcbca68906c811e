"""``balancebench claims``: each published claim as a check that runs what it needs (or reuses the
runs under ``--out``), measures, and answers with a declared test (see :mod:`analysis.verdicts`).

The verdict table (printed as Markdown; written as ``claims.md`` / ``claims.csv`` under
``--out/<scale>``) has one row per claim: id, claim, source (seed and section), measured numbers,
seeds, the statistical test and threshold, the verdict and its reason.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis import claim_checks as checks
from analysis.claim_runs import ClaimRuns
from experiments import rundir
from experiments.errors import UserError


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    source: str
    check: Callable[..., checks.Outcome]


CLAIMS: dict[str, Claim] = {c.id: c for c in [
    Claim("F1", "FAMO reaches the Pareto front of the toy from all five starts; uniform+Adam fails from >= 1",
          "seed 000 Fig. 1 (§5.1)", checks.check_f1),
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
          "seed 003 App. A.4, Prop. 6", checks.check_f6),
    Claim("F7", "MARIGOLD beats FAMO at equal wall time and is faster per epoch",
          "seed 004 Fig. 3, Table 3", checks.check_f7),
]}

COLUMNS = ["id", "claim", "source", "measured", "seeds", "test", "verdict", "reason", "seconds"]


def select(only: str | None) -> list[Claim]:
    if not only:
        return list(CLAIMS.values())
    wanted = [x.strip().upper() for x in only.split(",") if x.strip()]
    unknown = [x for x in wanted if x not in CLAIMS]
    if unknown:
        raise UserError(f"unknown claim id(s) {', '.join(unknown)}; valid: {', '.join(CLAIMS)}")
    return [CLAIMS[x] for x in wanted]


def run_claims(scale: str = "tiny", only: str | None = None, out: str | Path = "results/claims",
               toy_dir: str | Path | None = None, quiet: bool = False) -> pd.DataFrame:
    """Check the selected claims; returns the verdict table and writes it under ``out/<scale>``."""
    runs = ClaimRuns(out, scale, quiet=quiet)
    rows = []
    for claim in select(only):
        started = time.perf_counter()
        kwargs: dict[str, Any] = {"toy_dir": toy_dir} if claim.id == "F1" else {}
        measured, seeds, verdict = claim.check(runs, **kwargs)
        rows.append({"id": claim.id, "claim": claim.claim, "source": claim.source, "measured": measured,
                     "seeds": seeds, "test": verdict.test, "verdict": verdict.verdict, "reason": verdict.reason,
                     "seconds": round(time.perf_counter() - started, 1)})
        runs.say(f"{claim.id}: {verdict.verdict} ({time.perf_counter() - started:.0f} s)")
    table = pd.DataFrame(rows, columns=COLUMNS)
    rundir.write_table(runs.root / "claims.csv", table)
    rundir.atomic_write_text(runs.root / "claims.md", table.to_markdown(index=False) + "\n")
    return table


def claims_command(args: argparse.Namespace) -> int:
    table = run_claims(scale=args.scale, only=args.only, out=args.out, toy_dir=args.toy_dir, quiet=args.quiet)
    print(table.drop(columns=["seconds"]).to_markdown(index=False))
    print(Path(args.out) / args.scale / "claims.csv")
    return 0
