"""Shared draws: every method's trials 1..N take the same points of the shared space (drawn once
from the sampler seed), the count is part of the protocol, and a search-only study is resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from experiments.config import CONFIG_DIR, deep_merge
from experiments.errors import ConfigError, UserError
from experiments.studies.config import ParamSpec, shared_draw_count, study_config_from_dict
from experiments.studies.driver import run_search
from experiments.studies.storage import open_storage

GROUP = "draws"


def cfg_dict(tmp_path: Path, **over: Any) -> dict[str, Any]:
    base = {
        "benchmark_config": str(CONFIG_DIR / "synthetic.yaml"), "scale": "tiny", "name": GROUP,
        "overrides": {"train": {"epochs": 1, "max_steps_per_epoch": 2, "log_every": 1, "num_threads": 1}},
        "methods": ["uniform", "famo"],
        "shared_space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "weight_decay": [0.0, 1e-4, 1e-3]},
        "method_spaces": {"famo": {"gamma": [1e-4, 1e-3, 1e-2]}},
        "published_defaults": {"famo": {"gamma": 1e-3}},
        "n_trials": 4, "rerun_seeds": [0], "out": str(tmp_path), "pruner": {"name": "none"},
    }
    return deep_merge(base, over)


def test_draws_stay_in_their_space_and_repeat_with_the_seed() -> None:
    specs = {"log": ParamSpec(low=1e-4, high=1e-1, log=True), "lin": ParamSpec(low=0.0, high=0.5),
             "step": ParamSpec(low=0.0, high=1.0, step=0.25), "int": ParamSpec(low=1, high=4, type="int"),
             "cat": ParamSpec(choices=["a", "b", 3])}
    rng, again = np.random.default_rng(7), np.random.default_rng(7)
    for name, spec in specs.items():
        values = [spec.draw(rng) for _ in range(200)]
        assert all(spec.contains(v) for v in values), name
        assert values == [spec.draw(again) for _ in range(200)], name
        assert len(set(values)) > 1, name
    assert {specs["cat"].draw(rng) for _ in range(200)} == {"a", "b", 3}
    assert {specs["step"].draw(rng) for _ in range(200)} == {0.0, 0.25, 0.5, 0.75, 1.0}


@pytest.mark.parametrize("over, expected", [
    ({"sampler": {"name": "random"}}, 3),  # every trial after the published default
    ({}, 3),  # TPE: its random start-up trials (10 by default), at most n_trials - 1
    ({"n_trials": 20}, 9),
    ({"n_trials": 20, "sampler": {"n_startup_trials": 4}}, 3),
    ({"shared_draws": 1}, 1),
    ({"shared_draws": 50}, 3),
])
def test_how_many_trials_share_draws(tmp_path: Path, over: dict[str, Any], expected: int) -> None:
    assert shared_draw_count(study_config_from_dict(cfg_dict(tmp_path, **over))) == expected


def test_negative_shared_draws_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="shared_draws: must be >= 0"):
        study_config_from_dict(cfg_dict(tmp_path, shared_draws=-1))


def test_every_method_gets_the_same_shared_draws_and_the_search_resumes(tmp_path: Path) -> None:
    cfg = study_config_from_dict(cfg_dict(tmp_path))
    plan, results = run_search(cfg)
    storage = open_storage(str(tmp_path / GROUP / "study.journal"))
    trials = {m: optuna.load_study(study_name=f"{GROUP}/{m}", storage=storage).trials for m in ("uniform", "famo")}
    assert len(plan.shared_draws) == 3 and plan.protocol["shared_draws"] == 3
    for method, ts in trials.items():
        assert len(ts) == 4 and all(t.state.is_finished() for t in ts)
        assert ts[0].user_attrs["published_default"] is True
        shared = [{k: t.params[k] for k in ("lr", "weight_decay")} for t in ts[1:]]
        assert shared == plan.shared_draws, method  # the same points, in the same order
        assert [t.user_attrs["shared_draw"] for t in ts[1:]] == [0, 1, 2]
    assert all("gamma" in t.params for t in trials["famo"])  # the method's own parameter is still sampled
    assert len({d["lr"] for d in plan.shared_draws}) == 3  # real draws, not one point repeated
    assert set(results["method"]) == {"uniform", "famo"} and (results["budget"] == 4).all()
    # a second call reads the finished search: no trial is added or re-run
    stamps = {m: [t.datetime_complete for t in ts] for m, ts in trials.items()}
    run_search(cfg)
    storage = open_storage(str(tmp_path / GROUP / "study.journal"))
    for method in stamps:
        again = optuna.load_study(study_name=f"{GROUP}/{method}", storage=storage).trials
        assert [t.datetime_complete for t in again] == stamps[method]
    # the count of shared draws is part of the protocol
    with pytest.raises(UserError, match="shared_draws was 3, now 1"):
        run_search(study_config_from_dict(cfg_dict(tmp_path, shared_draws=1)))
