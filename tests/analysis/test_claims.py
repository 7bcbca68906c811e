"""``balancebench claims``: the checks' logic on hand-made runs, and the whole tiny table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from analysis import claim_checks
from analysis.claims import CLAIMS, run_claims, select
from analysis.verdicts import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from experiments.cli import main
from experiments.errors import UserError


class FakeRuns:
    """Stands in for ClaimRuns: hands out prepared run directories instead of training."""

    def __init__(self, dirs: dict[tuple[str, int], Path], seeds: tuple[int, ...], toy: pd.DataFrame | None = None) -> None:
        self.dirs, self.seeds, self._toy = dirs, seeds, toy
        self.plan = SimpleNamespace(balancers=("famo", "marigold"))

    def run(self, config: str, balancer: str, seed: int, **_: object) -> Path:
        return self.dirs[(balancer, seed)]

    def toy(self, toy_dir: object = None) -> pd.DataFrame:
        assert self._toy is not None
        return self._toy


def timed_run(root: Path, method: str, seed: int, seconds: list[float], objective: list[float]) -> Path:
    run_dir = root / f"{method}_{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"status": "complete", "balancer": method, "seed": seed}))
    rows = [{"epoch": e, "val_objective": v, "epoch_seconds": (None if e == 0 else seconds[e - 1])}
            for e, v in enumerate(objective)]
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    return run_dir


def test_f7_compares_per_epoch_time_and_the_best_objective_within_equal_wall_time(tmp_path: Path) -> None:
    dirs = {}
    for seed, jitter in enumerate((0.0, 0.05, -0.05)):
        # FAMO: 2 s per epoch, reaches -30 after 6 s; MARIGOLD: 1 s per epoch, -35 after 3 s
        dirs[("famo", seed)] = timed_run(tmp_path, "famo", seed, [2 + jitter] * 3, [0, -10 + jitter, -20, -30])
        dirs[("marigold", seed)] = timed_run(tmp_path, "marigold", seed, [1 + jitter] * 3, [0, -15, -25, -35 + jitter])
    measured, seeds, verdict = claim_checks.check_f7(FakeRuns(dirs, (0, 1, 2)))
    assert verdict.verdict == SUPPORTED, verdict.reason
    # the common budget is the shortest run (marigold seed 2: 3 x 0.95 s); FAMO only has epoch 1 by then
    assert "within 2.85 s" in measured and "famo -10.00" in measured
    assert seeds == "3 (0, 1, 2)"
    # swap the roles: now MARIGOLD is slower and worse
    swapped = {("famo", s): d for (m, s), d in dirs.items() if m == "marigold"}
    swapped.update({("marigold", s): d for (m, s), d in dirs.items() if m == "famo"})
    assert claim_checks.check_f7(FakeRuns(swapped, (0, 1, 2)))[2].verdict == NOT_SUPPORTED


def toy_table(famo: list[str], uniform: list[str]) -> pd.DataFrame:
    """A toy table whose starts are classified as given (on / off / undecided)."""
    distance = {"on": 0.0001, "undecided": 0.03, "off": 0.9}
    rows = [{"balancer": b, "start": f"s{i}", "front": f, "pareto_distance": distance[f], "variant": "official",
             "dtype": "float64", "steps": 50_000} for b, flags in (("famo", famo), ("uniform", uniform))
            for i, f in enumerate(flags)]
    return pd.DataFrame(rows)


def test_f1_decides_with_a_margin_and_undecided_starts_make_it_inconclusive() -> None:
    def verdict(famo: list[str], uniform: list[str]):
        return claim_checks.check_f1(FakeRuns({}, (), toy_table(famo, uniform)))

    ok = verdict(["on"] * 5, ["on", "off", "on", "on", "on"])
    assert ok[2].verdict == SUPPORTED and "5/5 on" in ok[0] and "1 off" in ok[0]
    assert "<= 0.002" in ok[2].test and ">= 0.2" in ok[2].test  # the rule is stated with the verdict
    assert verdict(["on"] * 4 + ["off"], ["off"] * 5)[2].verdict == NOT_SUPPORTED
    assert verdict(["on"] * 5, ["on"] * 5)[2].verdict == NOT_SUPPORTED
    # a FAMO start between tol/10 and 10·tol could go either way: no verdict on it
    famo_undecided = verdict(["on"] * 4 + ["undecided"], ["off"] * 5)
    assert famo_undecided[2].verdict == INCONCLUSIVE and "s4" in famo_undecided[2].reason
    assert verdict(["on"] * 5, ["on"] * 4 + ["undecided"])[2].verdict == INCONCLUSIVE
    # ... unless the decided starts settle it either way
    assert verdict(["on"] * 5, ["undecided", "off", "on", "on", "on"])[2].verdict == SUPPORTED
    assert verdict(["undecided", "off", "on", "on", "on"], ["off"] * 5)[2].verdict == NOT_SUPPORTED


def test_f6_prop_6_holds_numerically_and_the_control_moves() -> None:
    measured, seeds, verdict = claim_checks.check_f6(FakeRuns({}, ()))
    assert verdict.verdict == SUPPORTED and verdict.numbers["value"] <= 1e-6
    control = float(re.search(r"unequal losses: ([0-9.e-]+)", measured).group(1))
    assert control > 1e-3 and seeds == "1 (deterministic)"


def test_unknown_claim_ids_are_user_errors(capsys) -> None:
    assert [c.id for c in select(None)] == ["F1", "F2", "F3", "F4", "F5", "F6", "F7"] == list(CLAIMS)
    assert [c.id for c in select("f6, F2")] == ["F6", "F2"]
    with pytest.raises(UserError, match="unknown claim id"):
        select("F9")
    assert main(["claims", "--only", "F9", "--out", "unused"]) == 2
    assert "unknown claim id(s) F9" in capsys.readouterr().err


@pytest.mark.slow
def test_claims_tiny_prints_all_seven_rows_with_numbers(toy_runs, tmp_path: Path, capsys) -> None:
    _, toy_dir = toy_runs
    code = main(["claims", "--scale", "tiny", "--out", str(tmp_path), "--toy-dir", str(toy_dir), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if re.match(r"\|\s*F\d\s*\|", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["F1", "F2", "F3", "F4", "F5", "F6", "F7"]
    table = pd.read_csv(tmp_path / "tiny" / "claims.csv").set_index("id")
    assert set(table["verdict"]) <= {SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE}
    for claim_id, row in table.iterrows():
        assert re.search(r"\d", row["measured"]), claim_id  # measured numbers, not prose
        assert row["test"] and row["reason"] and row["source"].startswith("seed 00")
    assert table.loc["F1", "verdict"] == SUPPORTED  # the toy fixture: FAMO 5/5, uniform fails
    assert table.loc["F6", "verdict"] == SUPPORTED
    for claim_id in ("F2", "F3", "F4", "F7"):  # two seeds at tiny scale: too few for a seed-level test
        assert table.loc[claim_id, "verdict"] == INCONCLUSIVE and "too few seeds" in table.loc[claim_id, "reason"]
    # a second call reuses every finished run and answers the same
    again = run_claims("tiny", only="F2,F4", out=tmp_path, quiet=True).set_index("id")
    assert list(again["measured"]) == list(table.loc[["F2", "F4"], "measured"])
