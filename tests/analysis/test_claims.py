"""``balancebench claims``: the checks' logic on hand-made runs, and the whole tiny table."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from analysis import claim_checks
from analysis.claim_runs import ClaimRuns
from analysis.claims import CLAIMS, Claim, check_claim, run_claims, select
from analysis.verdicts import ALPHA, INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict
from tests.analysis.helpers import make_run
from balancebench.main import main
from experiments.errors import UserError


class FakeRuns:
    """Stands in for ClaimRuns: hands out prepared run directories instead of training, and
    prepared epoch times instead of timing trainers."""

    def __init__(self, dirs: dict[tuple[str, int], Path], seeds: tuple[int, ...], toy: pd.DataFrame | None = None,
                 times: dict[Path, float | None] | None = None, looks: tuple[int, ...] | None = None) -> None:
        self.dirs, self.seeds, self._toy, self.times = dirs, seeds, toy, times or {}
        self.plan = SimpleNamespace(balancers=("famo", "marigold"), seeds=seeds, looks=looks or (len(seeds),))
        self.alpha = ALPHA
        self.root = Path(next(iter(dirs.values()))).parent if dirs else Path(".")
        self.asked: list[tuple[str, int, dict]] = []

    def run(self, config: str, balancer: str, seed: int, **kwargs: object) -> Path:
        self.asked.append((balancer, seed, kwargs))
        key = (kwargs.get("name") or balancer, seed)
        return self.dirs.get((*key, kwargs.get("variant")), self.dirs.get(key))

    def interleaved_epoch_seconds(self, run_dirs: list[Path]) -> list[float | None]:
        return [self.times[d] for d in run_dirs]

    def toy(self, toy_dir: object = None) -> pd.DataFrame:
        assert self._toy is not None
        return self._toy


def timed_run(root: Path, method: str, seed: int, objective: list[float], status: str = "complete") -> Path:
    run_dir = root / method / f"seed_{seed}"
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"status": status, "balancer": method, "seed": seed}))
    rows = [{"epoch": e, "val_objective": v, "epoch_seconds": None if e == 0 else 99.0} for e, v in enumerate(objective)]
    pd.DataFrame(rows).to_csv(run_dir / "metrics.csv", index=False)
    return run_dir


def f7_runs(tmp_path: Path, swap: bool = False) -> FakeRuns:
    """FAMO: 2 s per epoch (interleaved timing), reaches -30 after 6 s; MARIGOLD: 1 s per epoch,
    -35 after 3 s. The runs' own epoch_seconds (99 s) must not be used."""
    dirs, times = {}, {}
    for seed, jitter in enumerate((0.0, 0.05, -0.05, 0.02)):
        famo = timed_run(tmp_path, "famo", seed, [0, -10 + jitter, -20, -30])
        marigold = timed_run(tmp_path, "marigold", seed, [0, -15, -25 + jitter, -35 + 3 * jitter])
        times[famo], times[marigold] = 2 + jitter, 1 + jitter / 2
        if swap:
            famo, marigold = marigold, famo
        dirs[("famo", seed)], dirs[("marigold", seed)] = famo, marigold
    return FakeRuns(dirs, (0, 1, 2, 3), times=times)


def test_f7_uses_interleaved_epoch_times_and_each_seeds_equal_budget(tmp_path: Path) -> None:
    measured, seeds, verdict = claim_checks.check_f7(f7_runs(tmp_path))
    assert verdict.verdict == SUPPORTED, verdict.reason
    assert "paired t-test" in verdict.test and "interleaved" in measured
    # seed 0's budget is MARIGOLD's 3 x 1 s: FAMO only has epoch 1 (2 s) by then
    best = claim_checks.equal_time_values(
        {"famo": [claim_checks.objective_curve(tmp_path / "famo" / "seed_0")],
         "marigold": [claim_checks.objective_curve(tmp_path / "marigold" / "seed_0")]},
        {"famo": [2.0], "marigold": [1.0]})
    assert best == {"famo": [-10.0], "marigold": [-35.0]}
    assert seeds == "4 (0, 1, 2, 3)"
    swapped = claim_checks.check_f7(f7_runs(tmp_path / "swapped", swap=True))[2]
    assert swapped.verdict == NOT_SUPPORTED


def test_f7_counts_a_diverged_run_as_that_methods_failure(tmp_path: Path) -> None:
    runs = f7_runs(tmp_path)
    (runs.dirs[("marigold", 1)] / "summary.json").write_text(json.dumps({"status": "diverged"}))
    measured, _, verdict = claim_checks.check_f7(runs)
    assert "marigold seed_1: diverged" in measured and "survivors only: 3/4 seeds, 1 failed" in measured
    assert "failed runs counted as the worst value observed (marigold: 1)" in verdict.reason
    runs.times[runs.dirs[("famo", 2)]] = None  # could not be timed: a failure of the time part
    assert "failed runs counted as the worst value observed (famo s/epoch: 1)" in claim_checks.check_f7(runs)[2].reason


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
    assert [c.id for c in select(None)] == [f"F{i}" for i in range(1, 14)] == list(CLAIMS)
    assert [c.id for c in select("f6, F2, f13")] == ["F6", "F2", "F13"]
    with pytest.raises(UserError, match="unknown claim id"):
        select("F14")
    assert main(["claims", "--only", "F14", "--out", "unused"]) == 2
    assert "unknown claim id(s) F14" in capsys.readouterr().err


@pytest.mark.slow
def test_claims_tiny_prints_all_thirteen_rows_with_numbers(toy_runs, tmp_path: Path, capsys) -> None:
    _, toy_dir = toy_runs
    code = main(["claims", "--scale", "tiny", "--out", str(tmp_path), "--toy-dir", str(toy_dir), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    rows = {r.split("|")[1].strip(): r for r in printed.splitlines() if re.match(r"\|\s*F\d+\s*\|", r)}
    assert list(rows) == [f"F{i}" for i in range(1, 14)]
    table = pd.read_csv(tmp_path / "tiny" / "claims.csv").set_index("id")
    assert list(table.columns) == ["claim", "source", "verdict", "seeds_per_group", "test", "p_value", "measured"]
    assert set(table["verdict"]) <= {SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE}
    for claim_id, row in table.iterrows():
        assert re.search(r"\d", row["measured"]), claim_id  # measured numbers, not prose
        assert row["test"] and row["source"].startswith("seed 00")
    assert table.loc["F1", "verdict"] == SUPPORTED  # the toy fixture: FAMO 5/5, uniform fails
    assert table.loc["F6", "verdict"] == SUPPORTED
    for claim_id in ("F2", "F3", "F4", "F7", "F8", "F9", "F10", "F11", "F12", "F13"):  # two seeds at tiny: too few
        assert table.loc[claim_id, "verdict"] == INCONCLUSIVE and "too few seeds" in rows[claim_id]
        assert str(table.loc[claim_id, "seeds_per_group"]) == "2" and pd.isna(table.loc[claim_id, "p_value"])
    # every seed-level claim trained tuned configurations; the budget table says what each search cost
    for claim_id in ("F2", "F3", "F4", "F5", "F7", "F8"):
        assert table.loc[claim_id, "test"].endswith("configurations: tuned (study budget 2/method)"), claim_id
    assert "untuned" in table.loc["F1", "test"] and "untuned" in table.loc["F6", "test"]
    budget = pd.read_csv(tmp_path / "tiny" / "studies.csv")
    # the single-task references of every setting, QM9's eleven included, are in the budget table
    stl = budget[budget["method"] == "stl"].set_index("setting")
    assert stl.loc["qm9", "budget"] == 11 and stl.loc["multimnist-CL_RR", "budget"] == 2
    assert (stl["search_wall_s"] > 0).all()
    budget = budget[budget["method"] != "stl"]
    searched = budget[budget["budget"] > 0]
    assert (searched["budget"] == 2).all() and (searched[["complete", "pruned", "failed"]].sum(axis=1) == 2).all()
    assert {"qm9", "multimnist-CL_RR", "multimnist-CL_CR-main_left_cls"} <= set(budget["setting"])
    assert budget.set_index("label").loc["fixed_from_famo", "budget"] == 0
    assert "## Tuning (tiny)" in (tmp_path / "tiny" / "claims.md").read_text()
    # every claim has its plot (F1: the toy's trajectories; the others: what their tests decided on), linked
    plots = {p.stem for p in (tmp_path / "tiny" / "plots").glob("*.png")}
    assert plots == {f"F{i}" for i in range(1, 14)}
    assert all(f"![{i}](plots/{i}.png)" in (tmp_path / "tiny" / "claims.md").read_text() for i in plots)
    # a second call reuses every finished run (and F7's timing) and answers the same
    again = run_claims("tiny", only="F2,F4,F7", out=tmp_path, quiet=True).set_index("id")
    assert list(again["measured"]) == list(table.loc[["F2", "F4", "F7"], "measured"])


# ------------------------------------------------------------------------------ failures, F2, F4
def multimnist_runs(root: Path, deltas: dict[str, list[float]]) -> dict[tuple[str, int], Path]:
    """Hand-made Multi-MNIST CL_RR runs (tests.analysis.helpers) whose test Δm% vs the initial
    model is the given value: accuracy 0.1 (Δ 0 %) and mse 0.2 (1 − Δ/100) · ... solved per run."""
    dirs = {}
    for method, values in deltas.items():
        for seed, dm in enumerate(values):
            # Δm% = mean(−(acc − 0.1)/0.1, (mse − 0.2)/0.2) × 100 with acc = 0.1: mse = 0.2 (1 + dm/50)
            dirs[(method, seed)] = make_run(root / method, method, seed, 0.1, 0.2 * (1 + dm / 50), 1.0)
    return dirs


def test_f2_is_paired_and_counts_a_diverged_run_instead_of_aborting(tmp_path: Path) -> None:
    dirs = multimnist_runs(tmp_path, {"famo": [-10.0, -12.0, -9.0, -11.0, -10.5], "uniform": [-5.0, -6.0, -5.5, -4.0, -5.2]})
    runs = FakeRuns(dirs, (0, 1, 2, 3, 4))
    measured, seeds, verdict = claim_checks.check_f2(runs)
    assert verdict.verdict == SUPPORTED and "paired t-test" in verdict.test and seeds.startswith("5 ")
    assert "famo -10.5" in measured  # mean of the five Δm% values
    summary = json.loads((dirs[("famo", 3)] / "summary.json").read_text())
    (dirs[("famo", 3)] / "summary.json").write_text(json.dumps({**summary, "status": "diverged"}))
    measured, _, verdict = claim_checks.check_f2(runs)
    assert "famo seed0: diverged" not in measured and "famo_seed3: diverged" in measured
    assert "survivors only: 4/5 seeds, 1 failed" in measured
    assert "counted as the worst value observed (famo: 1)" in verdict.reason and verdict.numbers["n_a"] == 5


def test_f4_extracts_weights_once_from_the_first_looks_famo_runs(tmp_path: Path) -> None:
    deltas = [-10.0, -12.0, -9.0, -11.0, -10.5, -10.2, -9.8]
    dirs = multimnist_runs(tmp_path, {"famo": deltas, "fixed_from_famo": [d + 0.1 * (i % 3) for i, d in enumerate(deltas)]})
    runs = FakeRuns(dirs, tuple(range(7)), looks=(5, 7))
    measured, _, verdict = claim_checks.check_f4(runs)
    assert "seeds 0, 1, 2, 3, 4;" in measured  # the first look's seeds, although 7 are in use
    assert verdict.verdict == SUPPORTED and "paired TOST" in verdict.test, verdict.reason
    fixed = [kw for b, _, kw in runs.asked if b == "fixed"]
    assert len(fixed) == 7 and len({json.dumps(kw["hparams"]) for kw in fixed}) == 1


def test_f3_decides_its_parts_with_holm(tmp_path: Path) -> None:
    dirs = {}
    for variant in ("CL_CR", "RL_RR"):
        runs_of = multimnist_runs(tmp_path / variant, {m: [-10.0 + 0.1 * ((s * (i + 2)) % 3) for s in range(5)]
                                                       for i, m in enumerate(("uniform", "famo", "marigold"))})
        dirs.update({(m, s, variant): d for (m, s), d in runs_of.items()})
    measured, _, verdict = claim_checks.check_f3(FakeRuns(dirs, tuple(range(5))))
    assert "Holm over 5 tested parts" in verdict.test  # 4 TOST parts + FAMO's spread (Welch)
    assert verdict.reason.count("≈ uniform: supported after Holm") == 4
    assert "marigold weights near 0.5: not supported (max |epoch weight − 0.5| of marigold = 0.2" in verdict.reason
    assert "FAMO unstable on CL_CR: inconclusive after Holm (zero variance in both groups" in verdict.reason
    assert verdict.verdict == NOT_SUPPORTED and "marigold max|w−0.5| 0.2" in measured


def f8_runs(root: Path, accuracy: dict[str, list[float]]) -> FakeRuns:
    """Hand-made runs (tests.analysis.helpers) whose test left-digit accuracy is given per label;
    their last epoch's second-task weight is 0.7 (0.5 for uniform)."""
    dirs = {(label, s): make_run(root / label, label, s, acc, 0.2, 1.0)
            for label, values in accuracy.items() for s, acc in enumerate(values)}
    return FakeRuns(dirs, tuple(range(len(accuracy["uniform"]))))


def test_f8_compares_the_main_task_paired_with_uniform_and_the_main_task_alone(tmp_path: Path) -> None:
    accuracy = {"marigold_auxiliary": [0.60, 0.62, 0.58, 0.61, 0.63], "uniform": [0.55, 0.58, 0.52, 0.57, 0.58],
                "fixed_main_only": [0.50, 0.49, 0.51, 0.52, 0.50]}
    runs = f8_runs(tmp_path, accuracy)
    measured, seeds, verdict = claim_checks.check_f8(runs)
    assert verdict.verdict == SUPPORTED, verdict.reason
    assert "Holm over 2 tested parts" in verdict.test and seeds.startswith("5 ")
    assert "marigold auxiliary 0.608" in measured and "uniform 0.56" in measured and "fixed [1, 0] 0.504" in measured
    assert "auxiliary weight 0.7" in measured and "0.08%" in measured
    asked = {label: kw for label, _, kw in runs.asked}
    assert asked["marigold"]["hparams"] == {"objective": "auxiliary", "main_tasks": [0]}
    assert asked["marigold"]["name"] == "marigold_auxiliary" and asked["fixed"]["hparams"] == {"weights": [1.0, 0.0]}
    assert all(kw["extra"] == {"objective_tasks": ["left_cls"]} and kw["variant"] == "CL_CR" for kw in asked.values())
    # the auxiliary task hurts: MARIGOLD below the main task alone refutes the claim
    worse = {**accuracy, "fixed_main_only": [a + 0.1 + 0.01 * (i % 2) for i, a in enumerate(accuracy["marigold_auxiliary"])]}
    refuted = claim_checks.check_f8(f8_runs(tmp_path / "worse", worse))[2]
    assert refuted.verdict == NOT_SUPPORTED and "better than the main task alone: not supported" in refuted.reason


def test_f8_setting_has_its_own_runs_but_shares_the_single_task_references(tmp_path: Path) -> None:
    from analysis.claim_runs import _setting
    from experiments.training.stl import REFERENCE_FILE

    assert _setting("multimnist", "CL_CR", claim_checks.AUX_EXTRA) == "multimnist-CL_CR-main_left_cls"
    shared = tmp_path / "tiny" / "stl" / "multimnist-CL_CR" / REFERENCE_FILE
    shared.parent.mkdir(parents=True)
    shared.write_text("{}")
    runs = ClaimRuns(tmp_path, "tiny", quiet=True)
    assert runs.stl_reference("multimnist", "CL_CR", claim_checks.AUX_EXTRA) == shared  # found, nothing trained


# ------------------------------------------------------------------------------ the sequential runner
def test_a_claim_adds_seeds_until_it_is_decided(tmp_path: Path) -> None:
    runs = ClaimRuns(tmp_path, "small", quiet=True)
    assert runs.plan.looks == (5, 7, 10) and runs.plan.seeds == tuple(range(1, 11)) and 0 not in runs.plan.seeds
    calls = []

    def check(r: ClaimRuns) -> tuple[str, str, Verdict]:
        calls.append((r.seeds, r.alpha))
        decided = len(r.seeds) >= 7
        return "numbers", str(len(r.seeds)), Verdict(SUPPORTED if decided else INCONCLUSIVE, "paired t-test", "why", {},
                                                     0.004 if decided else 0.2, 0.9)
    row = check_claim(Claim("FX", "x", "seed 000", check), runs)
    assert [len(s) for s, _ in calls] == [5, 7] and calls[1][0] == (1, 2, 3, 4, 5, 6, 7)
    assert all(a == pytest.approx(ALPHA / 3) for _, a in calls)
    assert row["verdict"] == SUPPORTED and row["seeds_per_group"] == 7 and row["p_value"] == pytest.approx(0.012)
    assert "looks at 5/7/10 seeds" in row["test"] and "decided at look 2" in row["test"]
    never = check_claim(Claim("FY", "y", "seed 000", lambda r: ("n", "s", Verdict(INCONCLUSIVE, "t", "r", {}, 0.4, 0.6))), runs)
    assert never["seeds_per_group"] == 10 and never["p_value"] == pytest.approx(1.0)
    assert "cap reached, undecided at look 3" in never["test"]
    refuted = check_claim(Claim("FZ", "z", "seed 000", lambda r: ("n", "s", Verdict(NOT_SUPPORTED, "t", "r", {}, 0.99, 0.01))), runs)
    assert refuted["seeds_per_group"] == 5 and refuted["p_value"] == pytest.approx(0.03)  # refuting p × 3 looks


def test_claims_csv_has_the_published_columns(tmp_path: Path, monkeypatch) -> None:
    from analysis import claims

    exact = Verdict(SUPPORTED, "count >= 5", "5 of 5", {}, exact=True)
    tested = Verdict(INCONCLUSIVE, "paired t-test", "too few seeds", {}, 0.3, 0.7)
    monkeypatch.setitem(claims.CLAIMS, "F6", Claim("F6", "c6", "seed 003", lambda r: ("m6", "1 (deterministic)", exact),
                                                   sequential=False))
    monkeypatch.setitem(claims.CLAIMS, "F2", Claim("F2", "c2", "seed 000", lambda r: ("m2", "2 (1, 2)", tested)))
    table = run_claims("tiny", only="F6,F2", out=tmp_path, quiet=True)
    written = pd.read_csv(tmp_path / "tiny" / "claims.csv")
    assert list(written.columns) == ["id", "claim", "source", "verdict", "seeds_per_group", "test", "p_value", "measured"]
    assert list(written["id"]) == ["F6", "F2"] and list(written["verdict"]) == [SUPPORTED, INCONCLUSIVE]
    assert pd.isna(written.loc[0, "p_value"]) and written.loc[0, "seeds_per_group"] == "1 (deterministic)"
    assert written.loc[1, "p_value"] == pytest.approx(0.3) and written.loc[1, "seeds_per_group"] == "2"  # one look at tiny
    assert "reason" in table.columns and re.search(r"\|\s*F2\s*\|.*too few seeds", (tmp_path / "tiny" / "claims.md").read_text())


def test_qm9_claims_use_trained_stl_below_full_scale_and_the_papers_stl_at_full(tmp_path: Path, monkeypatch) -> None:
    from analysis import claim_runs

    trained: list[str] = []
    monkeypatch.setattr("experiments.training.stl.train_stl_references",
                        lambda cfg, folder: trained.append(cfg.scale) or Path(folder) / "stl_reference.json")
    assert ClaimRuns(tmp_path, "full", quiet=True)._reference("qm9", None, None) == {"reference": "literature"}
    assert trained == []
    small = ClaimRuns(tmp_path, "small", quiet=True)._reference("qm9", None, None)
    assert trained == ["small"] and small["reference"].endswith("small/stl/qm9/stl_reference.json")
    assert "qm9" in claim_runs.STL_CONFIGS


def test_the_budget_table_lists_the_single_task_references(tmp_path: Path) -> None:
    from analysis.claim_runs import stl_budget

    assert stl_budget(tmp_path).empty
    folder = tmp_path / "stl" / "qm9"
    folder.mkdir(parents=True)
    (folder / "stl_reference.json").write_text(json.dumps(
        {"seed": 0, "runs": {f"t{i}": f"task_t{i}" for i in range(11)}, "epochs": 22, "wall_seconds": 249.5}))
    (row,) = stl_budget(tmp_path).to_dict("records")
    assert (row["setting"], row["method"], row["budget"], row["complete"], row["search_epochs"], row["search_wall_s"]) \
        == ("qm9", "stl", 11, 11, 22, 249.5)


def test_claim_runs_keep_a_diverged_run_and_reuse_it(tmp_path: Path, monkeypatch) -> None:
    runs = ClaimRuns(tmp_path, "tiny", quiet=True)
    monkeypatch.setattr(ClaimRuns, "stl_reference", lambda self, *a, **k: None)
    blow_up = {"train": {"lr": 1e30}, "benchmark": {"options": {"n_train": 256}}}
    # untuned: the search would refuse lr 1e30 as outside its space (the point here is the divergence)
    run_dir = runs.run("synthetic", "uniform", 1, extra=blow_up, tune=False)  # does not raise
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "diverged"
    assert claim_checks.delta_ms([run_dir]) == [None]

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a diverged run is final: it must be reused, not re-trained")
    monkeypatch.setattr("experiments.training.trainer.train", no_training)
    assert runs.run("synthetic", "uniform", 1, extra=blow_up, tune=False) == run_dir
    assert runs.take_notes() == ["untuned (config defaults)"]


def test_outputs_are_written_after_every_claim_with_their_provenance(tmp_path: Path, monkeypatch) -> None:
    """A long run that stops (here: the second claim raises) leaves the rows decided so far, and
    claims.md says which command, commit, machine and wall time made them."""
    from analysis import claims

    exact = Verdict(SUPPORTED, "count >= 5", "5 of 5", {}, exact=True)

    def broken(runs: object) -> None:
        raise KeyboardInterrupt  # the session ends mid-run

    monkeypatch.setitem(claims.CLAIMS, "F6", Claim("F6", "c6", "seed 003", lambda r: ("m6", "1 (deterministic)", exact),
                                                   sequential=False))
    monkeypatch.setitem(claims.CLAIMS, "F2", Claim("F2", "c2", "seed 000", broken))
    with pytest.raises(KeyboardInterrupt):
        run_claims("tiny", only="F6,F2", out=tmp_path, quiet=True)
    written = pd.read_csv(tmp_path / "tiny" / "claims.csv")
    assert list(written["id"]) == ["F6"] and list(written["verdict"]) == [SUPPORTED]
    head = (tmp_path / "tiny" / "claims.md").read_text().splitlines()[0]
    assert head.startswith(f"Command: `balancebench claims --scale tiny --only F6,F2 --out {tmp_path}`")
    assert re.search(r"commit \S+ · machine: .+ cores, .+ · torch \S+ · wall time of this invocation [\d.]+ min "
                     r"\(1 of 2 claims", head), head
