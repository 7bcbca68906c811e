"""Studies restricted to some tasks (run config ``objective_tasks``) and the auxiliary-learning study
(configs/studies/auxiliary.yaml: MARIGOLD objective=auxiliary against uniform, fixed [1, 0], FAMO)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from balancers import create_balancer
from experiments.config import CONFIG_DIR
from experiments.errors import ConfigError
from experiments.training.evaluation import delta_m
from experiments.benchmarks.base import MetricSpec
from experiments.studies.driver import run_study
from experiments.studies.config import load_study_config
from experiments.studies.plan import make_plan
from experiments.studies.storage import open_storage
from tests.experiments.studies.test_study import GROUP, study_cfg

AUXILIARY = CONFIG_DIR / "studies" / "auxiliary.yaml"


def test_auxiliary_study_config_is_marigold_auxiliary_against_three_baselines():
    plan = make_plan(load_study_config(AUXILIARY))
    assert plan.protocol["benchmark"] == "multimnist" and plan.protocol["variant"] == "CL_CR"
    assert plan.tasks == ["left_cls", "right_cls"] and plan.base.objective_tasks == ["left_cls"]
    assert plan.searched == ["marigold", "uniform", "fixed", "famo"]
    assert plan.protocol["objective"].startswith("validation Δm% over left_cls")
    assert [s["name"] for s in plan.objective_metric_specs] == ["left_cls_acc"]
    assert plan.fixed_hparams["marigold"] == {"objective": "auxiliary", "main_tasks": [0], "r": 1e-3}
    assert plan.fixed_hparams["fixed"] == {"weights": [1.0, 0.0]}
    # every searched method's first trial builds its balancer as configured
    for method in plan.searched:
        cfg = plan.run_config(method, plan.first_trial[method], plan.fixed_hparams[method], 0, False)
        balancer = create_balancer(cfg.balancer.name, len(plan.tasks), **cfg.balancer.hparams)
        if method == "marigold":
            assert balancer.objective == "auxiliary" and balancer.main_tasks == [0] and balancer.w_lr == 1e-4
        assert cfg.objective_tasks == ["left_cls"]


def test_unknown_objective_task_is_a_config_error_at_plan_time(tmp_path):
    with pytest.raises(ConfigError, match=r"objective_tasks: unknown task\(s\) \['left'\]"):
        make_plan(study_cfg(tmp_path, overrides={"objective_tasks": ["left"]}))


def test_all_task_studies_name_their_reference_in_the_protocol(tmp_path):
    plan = make_plan(study_cfg(tmp_path))
    assert plan.protocol["objective"] == "validation Δm% vs STL (lower is better)"
    assert plan.protocol["reference"] == "stl" and "reference" not in plan.protocol["run_config"]
    assert plan.objective_metric_specs == plan.metric_specs
    untrained = make_plan(study_cfg(tmp_path, reference="untrained"))
    assert untrained.protocol["objective"] == "validation Δm% vs untrained model (lower is better)"
    assert untrained.base.reference == "initial" and untrained.protocol_hash != plan.protocol_hash


def test_rerun_test_delta_m_is_over_the_objective_tasks_only(tmp_path):
    cfg = study_cfg(tmp_path, methods=["uniform"], n_trials=1, rerun_seeds=[0],
                    overrides={"objective_tasks": ["task1"]})
    run_study(cfg, progress=False)
    storage = open_storage(str(Path(cfg.out) / GROUP / "study.journal"))
    study = optuna.load_study(study_name=f"{GROUP}/uniform/rerun-t0", storage=storage)
    (trial,) = study.trials
    test = trial.user_attrs["test_metrics"]
    plan = make_plan(cfg)
    stl = json.loads(Path(plan.base.reference).read_text())["metrics"]  # the STL runs' test metrics
    only = [MetricSpec(**s) for s in plan.metric_specs if s["task"] == 1]
    every = [MetricSpec(**s) for s in plan.metric_specs]
    assert trial.user_attrs["test_delta_m"] == pytest.approx(delta_m(test, only, stl), rel=1e-12)
    assert abs(delta_m(test, every, stl) - delta_m(test, only, stl)) > 1e-6  # the restriction matters
