"""The balancer contract: the rules every balancer, built-in or plug-in, must keep, as checks.

One contract, two users: ``tests/balancers/test_contract.py`` runs every check on every registered
balancer (one pytest test per check, parametrised over balancers and cases), and
``balancebench check-balancer NAME`` runs them on one balancer, a plug-in's included, and prints a
pass/fail table. Checks live in :mod:`balancers.contract.checks` (what a balancer computes) and
:mod:`balancers.contract.lifecycle` (how it is built and driven); the set-up they share, a tiny
multi-task model wired as a trainer wires it, in :mod:`balancers.contract.problem`.

>>> from balancers.contract import run_contract
>>> outcomes = run_contract(BalancerConfig("uniform"))
>>> sorted({o.status for o in outcomes}) in (["pass"], ["n/a", "pass"], ["n/a", "pass", "skip"], ["pass", "skip"])
True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from balancers.contract import checks, lifecycle
from balancers.contract.core import Case, Check, ContractViolation, Skipped
from balancers.contract.problem import BalancerConfig, make_problem
from balancers.plugins import describe

#: every check, in the order a report lists them
CHECKS: list[Check] = [*checks.CHECKS, *lifecycle.CHECKS]

PASS, FAIL, SKIP, NOT_APPLICABLE = "pass", "FAIL", "skip", "n/a"


@dataclass(frozen=True)
class Outcome:
    """The result of one check on one case: ``status`` is pass, FAIL, skip or n/a; ``message`` why."""

    check: str
    case: str
    status: str
    message: str = ""


def run_check(check: Check, config: BalancerConfig, case: Case) -> Outcome:
    """Run one case of one check; whatever the balancer raises is its failure, named."""
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left as it was
        torch.manual_seed(0)
        try:
            check.run(config, case)
        except Skipped as exc:
            return Outcome(check.name, case.id, SKIP, str(exc))
        except AssertionError as exc:
            return Outcome(check.name, case.id, FAIL, " ".join(str(exc).split()) or type(exc).__name__)
        except Exception as exc:  # the balancer's own error under the check: a failure, not a crash
            return Outcome(check.name, case.id, FAIL, f"raised {describe(exc)}")
    return Outcome(check.name, case.id, PASS)


def run_contract(config: BalancerConfig, only: list[Check] | None = None) -> list[Outcome]:
    """Every check (or ``only`` these) on ``config``, one :class:`Outcome` per case."""
    outcomes: list[Outcome] = []
    for check in only if only is not None else CHECKS:
        if not check.applies(config):
            outcomes.append(Outcome(check.name, "", NOT_APPLICABLE, check.when))
            continue
        outcomes.extend(run_check(check, config, case) for case in check.cases)
    return outcomes


__all__ = ["CHECKS", "BalancerConfig", "Case", "Check", "ContractViolation", "Outcome", "Skipped", "make_problem",
           "run_check", "run_contract"]
