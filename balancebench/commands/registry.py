"""``balancebench list | check-balancer``: what can be run (built-in or plug-in, with its origin),
and the balancer contract run on one balancer."""

from __future__ import annotations

import argparse
from typing import Any

#: exit code of check-balancer when a check fails (2 stays a user's error: a broken plug-in)
CONTRACT_FAILED = 1


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("list", help="balancers and benchmarks (built-in, installed plug-ins, dotted paths) with their origin")
    p.add_argument("plugins", nargs="*", metavar="PACKAGE.MODULE:CLASS",
                   help="also load and show these plug-ins (balancers or benchmarks named by a dotted path)")
    p.set_defaults(func=list_command)

    p = sub.add_parser("check-balancer", help="run the balancer contract on one balancer (e.g. a plug-in); "
                                              "exit 1 when a check fails")
    p.add_argument("name", help="a registered name, an installed plug-in's name, or package.module:ClassName")
    p.add_argument("--hparam", dest="hparams", action="append", default=[], metavar="KEY=VALUE",
                   help="a constructor keyword argument (value read as YAML), e.g. --hparam gamma=0.01")
    p.set_defaults(func=check_balancer_command)


def list_command(args: argparse.Namespace) -> int:
    from experiments.catalog import catalog

    entries = catalog(getattr(args, "plugins", []) or [])
    print("balancers:")
    for e in entries["balancers"]:
        print(f"  {e.name:<16} [{e.origin}] {e.detail}")
    print("benchmarks:")
    for e in entries["benchmarks"]:
        variants = f"variants: {', '.join(e.variants):<20} " if e.available else ""
        print(f"  {e.name:<16} {variants}[{e.origin}] {e.detail}")
    return 0


def check_balancer_command(args: argparse.Namespace) -> int:
    from tabulate import tabulate

    from experiments.catalog import check_balancer
    from experiments.config import parse_set

    outcomes = check_balancer(args.name, parse_set(args.hparams))
    rows, by_check = [], {}
    for o in outcomes:
        by_check.setdefault(o.check, []).append(o)
    for check, results in by_check.items():
        failed = [o for o in results if o.status == "FAIL"]
        status = "FAIL" if failed else results[0].status if len({o.status for o in results}) == 1 else "pass"
        cases = f"{sum(o.status == 'pass' for o in results)}/{len(results)}" if results[0].case else ""
        shown = failed[0] if failed else next((o for o in results if o.message), None)
        detail = "" if shown is None else (f"[{shown.case}] " if shown.case else "") + shown.message
        rows.append((check.replace("_", " "), cases, status, detail[:160]))
    print(tabulate(rows, headers=("check", "cases passed", "result", "detail"), tablefmt="github"))
    counts = {status: sum(r[2] == status for r in rows) for status in ("pass", "FAIL", "skip", "n/a")}
    print(f"{args.name}: {counts['pass']} checks pass, {counts['FAIL']} fail, {counts['skip']} skipped, "
          f"{counts['n/a']} not applicable")
    return CONTRACT_FAILED if counts["FAIL"] else 0
