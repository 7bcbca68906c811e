"""The claims' fair searches: the search seed is never evidence, every method gets the same
shared draws, the chosen values land in the evidence runs' config.yaml, and a finished search is
read (not re-run) by a second invocation."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from analysis.claim_runs import EVIDENCE_SEEDS, PLANS, ClaimRuns, ScalePlan
from analysis.claim_tuning import SEARCH_SEED, STUDY_TEMPLATE, study_group
from experiments.config import load_yaml
from experiments.studies.storage import open_storage

#: a small synthetic setting: 2 epochs (tiny scale) of 2 steps
EXTRA = {"benchmark": {"options": {"n_train": 256}}, "train": {"max_steps_per_epoch": 2, "num_threads": 1}}
SETTING = "synthetic-n_train256"


def test_the_search_seed_is_never_an_evidence_seed() -> None:
    assert SEARCH_SEED == 0 and SEARCH_SEED not in EVIDENCE_SEEDS
    for plan in PLANS.values():
        assert SEARCH_SEED not in plan.seeds and plan.trials >= 2
    assert PLANS["tiny"].trials < PLANS["small"].trials < PLANS["full"].trials
    with pytest.raises(ValueError, match="search seed 0 must not be an evidence seed"):
        ScalePlan("x", (0, 1), looks=(2,))
    with pytest.raises(ValueError, match="search seed"):
        ClaimRuns("unused", "tiny", quiet=True).run("synthetic", "uniform", SEARCH_SEED)


def test_the_claims_protocol_is_random_search_without_pruning() -> None:
    template = load_yaml(STUDY_TEMPLATE)
    assert template["sampler"] == {"name": "random", "seed": SEARCH_SEED} and template["pruner"] == {"name": "none"}
    assert template.get("shared_draws") is None  # every trial after the published default: shared draws


def test_fixed_hyperparameters_leave_the_space_and_get_their_own_study(tmp_path: Path) -> None:
    runs = ClaimRuns(tmp_path, "tiny", quiet=True)
    data = runs.tuning.study_dict("multimnist", "multimnist-CL_RR", {}, "CL_RR", "famo", "famo-x", {"gamma": 1e-2})
    assert data["method_spaces"] == {} and data["published_defaults"]["famo"] == {"gamma": 1e-2, "w_lr": 0.025}
    assert data["pruner"] == {"name": "none"} and data["n_trials"] == 2 and data["overrides"]["seed"] == SEARCH_SEED
    own = runs.tuning.study_dict("multimnist", "multimnist-CL_RR", {}, "CL_RR", "famo", "famo", {})
    assert own["method_spaces"]["famo"] == {"gamma": [1e-4, 1e-3, 1e-2]}
    assert study_group("famo", {}) == "famo" and study_group("famo", {"gamma": 1e-2}) != study_group("famo", {"gamma": 1e-3})


def run_config(run_dir: Path) -> dict:
    return yaml.safe_load((Path(run_dir) / "config.yaml").read_text())


def test_tuned_runs_train_the_chosen_configuration_and_the_search_is_reused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(ClaimRuns, "stl_reference", lambda self, *a, **k: None)  # Δm% vs the untrained model: faster
    runs = ClaimRuns(tmp_path, "tiny", quiet=True)
    dirs = {m: runs.run("synthetic", m, 1, extra=EXTRA) for m in ("uniform", "famo")}
    assert runs.run("synthetic", "famo", 1, extra=EXTRA) == dirs["famo"]  # asked again: the same config, reused
    weights = [0.25] * 4
    fixed = runs.run("synthetic", "fixed", 1, name="fixed_from_famo", hparams={"weights": weights}, extra=EXTRA)
    journal = tmp_path / "tiny" / "studies" / SETTING / "study.journal"
    storage = open_storage(str(journal))
    trials = {m: optuna.load_study(study_name=f"{m}/{m}", storage=storage).trials for m in ("uniform", "famo")}
    # the same budget, and trial 1 of every method drew the same shared values
    assert [len(t) for t in trials.values()] == [2, 2]
    assert trials["uniform"][1].params == {k: trials["famo"][1].params[k] for k in ("lr", "weight_decay")}
    for method, run_dir in dirs.items():
        best = min((t for t in trials[method] if t.value is not None), key=lambda t: (t.value, t.number))
        chosen, searched = run_config(run_dir), run_config(best.user_attrs["run_dir"])
        assert chosen["train"]["lr"] == best.params["lr"] and chosen["seed"] == 1 and searched["seed"] == SEARCH_SEED
        for cfg in (chosen, searched):  # otherwise the very configuration the search evaluated
            cfg.pop("seed"), cfg["train"].pop("evaluate_test"), cfg["train"].pop("cosine_every")
            cfg["resolved"].pop("run_dir")
        assert chosen == searched, method
    famo_best = runs.tuned("synthetic", "famo", extra=EXTRA).params
    assert run_config(dirs["famo"])["balancer"]["hparams"]["gamma"] == famo_best["gamma"]
    derived = run_config(fixed)
    assert derived["train"]["lr"] == famo_best["lr"] and derived["train"]["weight_decay"] == famo_best["weight_decay"]
    assert derived["balancer"] == {"name": "fixed", "hparams": {"weights": weights}}
    table = runs.tuning.table().set_index("label")
    assert list(table.index) == ["famo", "fixed_from_famo", "uniform"]
    assert (table.loc[["famo", "uniform"], ["complete", "pruned", "failed"]].sum(axis=1) == 2).all()
    assert table.loc["fixed_from_famo", "budget"] == 0 and "no own search" in table.loc["fixed_from_famo", "note"]
    assert runs.take_notes() == ["tuned (study budget 2/method)"] and runs.take_notes() == []

    # a second invocation reads the finished searches and reuses the finished runs: nothing trains
    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a finished search or run must be reused, not re-trained")
    monkeypatch.setattr("experiments.training.trainer.train", no_training)
    before = {m: [(t.number, t.datetime_complete) for t in ts] for m, ts in trials.items()}
    again = ClaimRuns(tmp_path, "tiny", quiet=True)
    assert {m: again.run("synthetic", m, 1, extra=EXTRA) for m in ("uniform", "famo")} == dirs
    assert again.run("synthetic", "fixed", 1, name="fixed_from_famo", hparams={"weights": weights}, extra=EXTRA) == fixed
    storage = open_storage(str(journal))  # (reopening a study appends a create record to a journal: no trial)
    assert {m: [(t.number, t.datetime_complete) for t in optuna.load_study(study_name=f"{m}/{m}", storage=storage).trials]
            for m in before} == before
    pd.testing.assert_frame_equal(again.tuning.table(), runs.tuning.table())
