"""Fair Optuna studies: exact budgets, published defaults, resume, workers, fairness invariants,
fixed_from_famo, diverging trials and user errors (tiny synthetic benchmark, a few steps per run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from balancebench.main import main
from experiments.config import CONFIG_DIR, deep_merge
from experiments.errors import ConfigError, UserError
from experiments.studies.extract import ema_extract, epoch_weights
from experiments.studies.driver import run_study
from experiments.studies.config import StudyConfig, load_study_config, study_config_from_dict
from experiments.studies.results import results_table
from experiments.studies.storage import open_storage

GROUP = "synthetic-default-tiny"


def study_cfg(tmp_path: Path, **over: Any) -> StudyConfig:
    return study_config_from_dict(study_dict(tmp_path, **over))


def study_dict(tmp_path: Path, **over: Any) -> dict[str, Any]:
    base = {
        "benchmark_config": str(CONFIG_DIR / "synthetic.yaml"), "scale": "tiny",
        "overrides": {"train": {"epochs": 2, "max_steps_per_epoch": 3, "log_every": 1, "num_threads": 1}},
        "methods": ["uniform", "famo", "fixed_from_famo"],
        "shared_space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}, "weight_decay": [0.0, 1e-4],
                         "dropout": {"low": 0.0, "high": 0.5}},
        "method_spaces": {"famo": {"gamma": [1e-4, 1e-3, 1e-2]}},
        "published_defaults": {"famo": {"gamma": 1e-3, "w_lr": 0.025}},
        "n_trials": 3, "rerun_seeds": [0, 1], "out": str(tmp_path / "results"),
        "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
    }
    return deep_merge(base, over)


def load(cfg: StudyConfig, name: str) -> optuna.Study:
    storage = open_storage(cfg.storage or str(Path(cfg.out) / GROUP / "study.journal"))
    return optuna.load_study(study_name=name, storage=storage)


def snapshot(study: optuna.Study) -> list[tuple]:
    return [(t.number, t.state, t.value, t.params, t.datetime_complete) for t in study.trials]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[StudyConfig, Any]:
    cfg = study_cfg(tmp_path_factory.mktemp("study"))
    return cfg, run_study(cfg, progress=False)


# ------------------------------------------------------------------------ budget and defaults
def test_two_methods_three_trials_exactly_with_published_default_first(finished):
    cfg, outcome = finished
    for method in ("uniform", "famo"):
        study = load(cfg, f"{GROUP}/{method}")
        assert len(study.trials) == 3
        assert all(t.state.is_finished() for t in study.trials)
        first = study.trials[0]
        assert first.user_attrs["published_default"] is True
        assert first.params["lr"] == 1e-3 and first.params["weight_decay"] == 0.0  # the benchmark config's
        assert all(Path(t.user_attrs["run_dir"]).name == f"trial_{t.number}" for t in study.trials)
    assert load(cfg, f"{GROUP}/famo").trials[0].params["gamma"] == 1e-3
    famo_cfg = yaml.safe_load((Path(load(cfg, f"{GROUP}/famo").trials[0].user_attrs["run_dir"]) / "config.yaml").read_text())
    assert famo_cfg["balancer"] == {"name": "famo", "hparams": {"gamma": 1e-3, "w_lr": 0.025}}
    table = outcome.results.set_index("method")
    assert list(table.index) == ["uniform", "famo", "fixed_from_famo"]
    assert table.loc["uniform", "budget"] == table.loc["famo", "budget"] == 3
    assert (table.loc[["uniform", "famo"], ["complete", "pruned", "failed"]].sum(axis=1) == 3).all()
    assert table.loc["fixed_from_famo", "budget"] == 0 and "no own search" in table.loc["fixed_from_famo", "note"]
    assert (table["seeds"] == "2/2").all()
    assert table["test_delta_m_mean"].notna().all() and table["test_delta_m_se"].notna().all()
    for path in outcome.files.values():
        assert path.is_file()


def test_reruns_are_the_best_config_on_each_seed(finished):
    cfg, _ = finished
    search = load(cfg, f"{GROUP}/uniform")
    best = min((t for t in search.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    reruns = load(cfg, f"{GROUP}/uniform/rerun-t{best.number}")
    assert sorted(t.params["seed"] for t in reruns.trials) == [0, 1]
    for trial in reruns.trials:
        run_cfg = yaml.safe_load((Path(trial.user_attrs["run_dir"]) / "config.yaml").read_text())
        assert run_cfg["seed"] == trial.params["seed"] and run_cfg["train"]["lr"] == best.params["lr"]
        assert run_cfg["train"]["evaluate_test"] is True
        assert trial.user_attrs["test_delta_m"] is not None


def test_results_function_and_cli_read_the_storage(finished, capsys):
    cfg, outcome = finished
    storage = str(Path(cfg.out) / GROUP / "study.journal")
    table = results_table(storage)
    assert list(table["method"]) == ["uniform", "famo", "fixed_from_famo"]
    assert main(["results", "--storage", storage, "--format", "latex"]) == 0
    assert r"$\pm$" in capsys.readouterr().out
    assert main(["results", "--storage", storage]) == 0
    assert "| famo" in capsys.readouterr().out


# ------------------------------------------------------------------------ fairness
def test_fairness_invariants_identical_for_every_method(finished, tmp_path):
    cfg, _ = finished
    studies = [load(cfg, f"{GROUP}/{m}") for m in ("uniform", "famo")]
    attrs = [s.user_attrs for s in studies]
    assert attrs[0]["protocol"] == attrs[1]["protocol"] and attrs[0]["protocol_hash"] == attrs[1]["protocol_hash"]
    assert attrs[0]["n_trials"] == attrs[1]["n_trials"] == 3
    protocol = attrs[0]["protocol"]
    assert protocol["sampler"] == {"name": "tpe", "seed": 0, "n_startup_trials": None}
    assert protocol["pruner"]["name"] == "median" and protocol["epochs"] == 2
    assert set(protocol["shared_space"]) == {"lr", "weight_decay"}
    assert protocol["dropped_parameters"] == ["dropout"]  # the synthetic model has no dropout
    assert set(attrs[1]["method_space"]) == {"lr", "weight_decay", "gamma"}
    # every trial of every method searched the same shared distributions
    dists = [t.distributions["lr"] for s in studies for t in s.trials]
    assert all(d == dists[0] for d in dists)
    # ... and trials 1 and 2 of every method took the same drawn values of it (TPE's start-up trials)
    assert protocol["shared_draws"] == 2
    drawn = [[{k: t.params[k] for k in protocol["shared_space"]} for t in s.trials[1:3]] for s in studies]
    assert drawn[0] == drawn[1] and drawn[0][0] != drawn[0][1]
    # reopening the studies with another protocol is refused
    changed = study_cfg(Path(cfg.out).parent, pruner={"name": "none"})
    with pytest.raises(UserError, match="different protocol.*pruner"):
        run_study(changed, progress=False)


@pytest.mark.parametrize("change, field, old, new", [
    ({"n_trials": 2}, "n_trials", 3, 2),
    ({"methods": ["uniform", "famo"]}, "methods", ["famo", "fixed_from_famo", "uniform"], ["famo", "uniform"]),
    ({"rerun_seeds": [0, 1, 2]}, "rerun_seeds", [0, 1], [0, 1, 2]),
    ({"sampler": {"seed": 1}}, "sampler.seed", 0, 1),
    ({"pruner": {"n_startup_trials": 1}}, "pruner.n_startup_trials", 2, 1),
    ({"overrides": {"train": {"epochs": 3}}}, "epochs", 2, 3),
    ({"shared_space": {"weight_decay": [0.0, 1e-3]}}, "shared_space.weight_decay.choices", [0.0, 1e-4], [0.0, 1e-3]),
    ({"method_spaces": {"famo": {"gamma": [1e-3, 1e-2]}}}, "method_space.gamma.choices",
     [1e-4, 1e-3, 1e-2], [1e-3, 1e-2]),
    ({"ema": 0.5}, "ema", 0.9, 0.5),
    ({"shared_draws": 1}, "shared_draws", 2, 1),
    ({"overrides": {"benchmark": {"options": {"noise": 0.2}}}}, "run_config.benchmark.options.noise", 0.1, 0.2),
], ids=lambda v: v if isinstance(v, str) else None)
def test_reopening_with_a_protocol_field_changed_is_refused_naming_it(finished, change, field, old, new):
    cfg, _ = finished
    journal = Path(cfg.out) / GROUP / "study.journal"
    before = journal.read_bytes()
    with pytest.raises(UserError) as info:
        run_study(study_cfg(Path(cfg.out).parent, **change), progress=False)
    message = str(info.value)
    assert f"different protocol: {field} was {old!r}, now {new!r}" in message, message
    assert "\n" not in message
    assert journal.read_bytes() == before  # refused before anything was written
    if field == "epochs":
        assert "(also changed: run_config.train.epochs)" in message


def test_another_n_trials_on_the_command_line_is_one_line(finished, capsys):
    cfg, _ = finished
    config = Path(cfg.out).parent / "again.yaml"
    config.write_text(yaml.safe_dump(study_dict(Path(cfg.out).parent)))
    assert main(["study", "--config", str(config), "--n-trials", "2", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "n_trials was 3, now 2" in err


def test_a_study_without_the_newer_protocol_fields_is_not_continued(finished, tmp_path):
    cfg, _ = finished
    copy = tmp_path / "study.journal"
    copy.write_bytes((Path(cfg.out) / GROUP / "study.journal").read_bytes())
    study = optuna.load_study(study_name=f"{GROUP}/uniform", storage=open_storage(str(copy)))
    study.set_user_attr("protocol", {k: v for k, v in study.user_attrs["protocol"].items() if k != "n_trials"})
    with pytest.raises(UserError, match="earlier balancebench that did not record n_trials"):
        run_study(study_cfg(Path(cfg.out).parent, storage=str(copy)), progress=False)


def test_budget_table_counts_every_trial_in_the_storage(finished, tmp_path):
    """A storage whose recorded budget drifted (as reopening with another --n-trials did before it
    was refused): the table counts the 3 trials that exist and says which are beyond the budget."""
    cfg, _ = finished
    copy = tmp_path / "study.journal"
    copy.write_bytes((Path(cfg.out) / GROUP / "study.journal").read_bytes())
    storage = open_storage(str(copy))
    study = optuna.load_study(study_name=f"{GROUP}/uniform", storage=storage)
    study.set_user_attr("n_trials", 2)
    row = results_table(str(copy)).set_index("method").loc["uniform"]
    complete = sum(t.state == TrialState.COMPLETE for t in study.trials)
    assert row["budget"] == 2 and row["complete"] + row["pruned"] + row["failed"] == 3
    assert row["complete"] == complete
    assert "1 trial(s) beyond the budget of 2 (t2)" in row["note"]
    assert row["best_trial"] in (0, 1)  # selection still only within the budget


def test_fixed_from_famo_trains_the_extracted_famo_weights(finished):
    cfg, _ = finished
    famo = load(cfg, f"{GROUP}/famo")
    best = min((t for t in famo.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    famo_runs = sorted(Path(t.user_attrs["run_dir"]) for t in load(cfg, f"{GROUP}/famo/rerun-t{best.number}").trials)
    expected = ema_extract([epoch_weights(d) for d in famo_runs], 0.9).weights
    fixed = load(cfg, f"{GROUP}/fixed_from_famo/rerun-t{best.number}")
    weights_file = json.loads((Path(cfg.out) / GROUP / "fixed_from_famo" / f"rerun_t{best.number}" / "weights.json").read_text())
    assert weights_file["weights"] == pytest.approx(expected, rel=1e-12)
    assert weights_file["source_runs"] == [str(d) for d in famo_runs]
    assert len(fixed.trials) == 2
    for trial in fixed.trials:
        run_cfg = yaml.safe_load((Path(trial.user_attrs["run_dir"]) / "config.yaml").read_text())
        assert run_cfg["balancer"]["name"] == "fixed"
        assert run_cfg["balancer"]["hparams"]["weights"] == weights_file["weights"]
        assert run_cfg["train"]["lr"] == best.params["lr"]
        assert run_cfg["train"]["weight_decay"] == best.params["weight_decay"]


# ------------------------------------------------------------------------ resume and faults
def test_interrupt_and_resume_keeps_finished_trials(tmp_path, monkeypatch):
    import experiments.training.trainer as trainer

    # no pruner: the Ctrl-C after the fourth trial's first epoch must not depend on its values
    cfg = study_cfg(tmp_path, methods=["uniform"], n_trials=4, rerun_seeds=[0], pruner={"name": "none"})
    real_train, calls = trainer.train, []

    def interrupting_train(run_cfg, run_dir, *, resume=False, on_epoch=None):
        calls.append(run_dir)
        if len(calls) < 4:
            return real_train(run_cfg, run_dir, resume=resume, on_epoch=on_epoch)

        def stop(epoch: int, value: float) -> None:
            on_epoch(epoch, value)
            raise KeyboardInterrupt  # Ctrl-C after the first epoch of the fourth trial

        return real_train(run_cfg, run_dir, resume=resume, on_epoch=stop)

    monkeypatch.setattr(trainer, "train", interrupting_train)
    with pytest.raises(KeyboardInterrupt):
        run_study(cfg, progress=False)
    middle = load(cfg, f"{GROUP}/uniform").trials
    assert [t.state.is_finished() for t in middle] == [True] * 4
    assert middle[3].state == TrialState.FAIL and middle[3].user_attrs["failure_kind"] == "interrupted"
    summary = json.loads((Path(middle[3].user_attrs["run_dir"]) / "summary.json").read_text())
    assert summary["status"] == "interrupted"

    monkeypatch.setattr(trainer, "train", real_train)
    run_study(cfg, progress=False)  # the same call again
    after = load(cfg, f"{GROUP}/uniform").trials
    assert snapshot(load(cfg, f"{GROUP}/uniform"))[:3] == snapshot_of(middle[:3])  # nothing lost or redone
    assert len(after) == 5 and after[3].state == TrialState.FAIL
    assert after[4].system_attrs["retry_history"] == [3] and after[4].params == middle[3].params
    assert after[4].state.is_finished()
    counted = [t for t in after if t.number != 3]
    assert len(counted) == 4  # exactly the budget; the interrupted trial does not count


def snapshot_of(trials: list) -> list[tuple]:
    return [(t.number, t.state, t.value, t.params, t.datetime_complete) for t in trials]


def test_a_trial_that_raises_midway_is_failed_not_complete(tmp_path, monkeypatch):
    import experiments.training.trainer as trainer

    real_train = trainer.train

    def broken_train(run_cfg, run_dir, *, resume=False, on_epoch=None):
        def stop(epoch: int, value: float) -> None:
            raise RuntimeError("disk full")

        return real_train(run_cfg, run_dir, resume=resume, on_epoch=stop)

    monkeypatch.setattr(trainer, "train", broken_train)
    cfg = study_cfg(tmp_path, methods=["uniform"], n_trials=2, rerun_seeds=[0])
    with pytest.raises(RuntimeError, match="disk full"):
        run_study(cfg, progress=False)
    trial, queued = load(cfg, f"{GROUP}/uniform").trials
    assert queued.state == TrialState.WAITING and queued.user_attrs["shared_draw"] == 0  # not run, not counted
    assert trial.state == TrialState.FAIL
    assert trial.user_attrs["failure_kind"] == "error" and "disk full" in trial.user_attrs["fail_reason"]


def test_diverging_trial_is_failed_with_reason_and_the_study_goes_on(tmp_path):
    cfg = study_cfg(tmp_path, methods=["uniform"], rerun_seeds=[0],
                    shared_space={"lr": [1.0e6, 1.0e-3]},
                    published_defaults={"uniform": {"lr": 1.0e6}})
    outcome = run_study(cfg, progress=False)
    trials = load(cfg, f"{GROUP}/uniform").trials
    assert len(trials) == 3 and all(t.state.is_finished() for t in trials)
    assert trials[0].params["lr"] == 1e6 and trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["failure_kind"] == "diverged"
    assert "non-finite loss" in trials[0].user_attrs["fail_reason"]
    row = outcome.results.set_index("method").loc["uniform"]
    assert row["failed"] >= 1 and "t0: diverged" in row["note"]


def test_two_workers_on_the_default_storage_use_exactly_the_budget(tmp_path):
    cfg = study_cfg(tmp_path, methods=["uniform", "famo"], n_trials=4, rerun_seeds=[0, 1], workers=2)
    outcome = run_study(cfg, progress=False)
    assert outcome.storage.endswith("study.journal")
    for method in ("uniform", "famo"):
        trials = load(cfg, f"{GROUP}/{method}").trials
        assert len(trials) == 4 and all(t.state.is_finished() for t in trials)
        assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == 4  # workers do not repeat draws
        reruns = [t for t in load(cfg, f"{GROUP}/{method}/rerun-t{outcome.results.set_index('method').loc[method, 'best_trial']}").trials]
        assert sorted(t.params["seed"] for t in reruns) == [0, 1]
    pids = {t.user_attrs["worker"]["pid"] for m in ("uniform", "famo") for t in load(cfg, f"{GROUP}/{m}").trials}
    assert len(pids) == 2


# ------------------------------------------------------------------------ user errors
def test_config_errors_name_their_path(tmp_path):
    with pytest.raises(ConfigError, match=r"shared_space\.lr\.lowx"):
        study_cfg(tmp_path, shared_space={"lr": {"lowx": 1}})
    with pytest.raises(ConfigError, match="unknown config key 'samplr'"):
        study_cfg(tmp_path, samplr={})
    with pytest.raises(UserError, match="unknown method 'famoo'"):
        run_study(study_cfg(tmp_path, methods=["uniform", "famoo"]), progress=False)
    with pytest.raises(ConfigError, match=r"published_defaults\.famo\.gama"):
        run_study(study_cfg(tmp_path, published_defaults={"famo": {"gama": 1}}), progress=False)
    with pytest.raises(ConfigError, match="outside the search space"):
        run_study(study_cfg(tmp_path, published_defaults={"famo": {"gamma": 0.5}}), progress=False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("benchmark_config: [unclosed\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_study_config(bad)


def test_unreachable_storage_is_one_line_with_the_password_masked(tmp_path, capsys):
    url = "postgresql://bench:s3cret-pw@127.0.0.1:1/studies"
    with pytest.raises(UserError) as info:
        open_storage(url)
    assert "s3cret-pw" not in str(info.value) and "bench:***@127.0.0.1" in str(info.value)
    assert main(["results", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "s3cret-pw" not in err and len(err.strip().splitlines()) == 1


def test_results_on_an_empty_or_missing_storage(tmp_path, capsys):
    with pytest.raises(UserError, match="no study storage"):
        results_table(str(tmp_path / "nothing.journal"))
    empty = tmp_path / "empty.journal"
    optuna.create_study(storage=open_storage(str(empty)), study_name="x")
    with pytest.raises(UserError, match="no balancebench study"):
        results_table(str(empty))
    assert main(["results", "--storage", str(empty)]) == 2
    assert capsys.readouterr().err.startswith("balancebench: error: no balancebench study")


def test_a_dead_workers_running_trial_is_failed_and_requeued(tmp_path):
    import subprocess

    from experiments.studies.storage import counted_trials, reap_dead_trials

    storage = open_storage(str(tmp_path / "s.journal"))
    study = optuna.create_study(storage=storage, study_name="g/uniform")
    study.enqueue_trial({"lr": 0.01})
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer exists, as after SIGKILL
    trial.set_user_attr("worker", {"host": __import__("socket").gethostname(), "pid": gone.pid, "created": 0.0})
    assert [t.number for t in counted_trials(study.trials)] == [0]
    assert reap_dead_trials(study) == 1
    dead, retry = study.trials
    assert dead.state == TrialState.FAIL and dead.user_attrs["failure_kind"] == "worker_died"
    assert retry.state == TrialState.WAITING and retry.params == {"lr": 0.01}
    assert retry.system_attrs["retry_history"] == [0]
    assert counted_trials(study.trials) == []  # neither the dead trial nor the queued retry uses budget
    assert reap_dead_trials(study) == 0  # re-queued once only


def test_hyperband_pruner_is_used_for_every_method(tmp_path):
    cfg = study_cfg(tmp_path, pruner={"name": "hyperband", "min_resource": 1, "reduction_factor": 2},
                    methods=["uniform", "si"], rerun_seeds=[0])
    run_study(cfg, progress=False)
    protocols = [load(cfg, f"{GROUP}/{m}").user_attrs["protocol"]["pruner"] for m in ("uniform", "si")]
    assert protocols[0] == protocols[1] and protocols[0]["name"] == "hyperband"
    assert all(len(load(cfg, f"{GROUP}/{m}").trials) == 3 for m in ("uniform", "si"))


def test_finished_rerun_directories_are_reused_and_stale_trial_dirs_kept(tmp_path):
    cfg = study_cfg(tmp_path, methods=["uniform"], n_trials=2, rerun_seeds=[0])
    first = run_study(cfg, progress=False)
    best = int(first.results.loc[0, "best_trial"])
    rerun_dir = Path(cfg.out) / GROUP / "uniform" / f"rerun_t{best}" / "seed_0"
    stamp = (rerun_dir / "summary.json").stat().st_mtime_ns
    # the same study on a new storage (e.g. the journal was deleted): the search runs again
    # (deterministic, so the same best trial), the old trial directories are moved aside, and the
    # finished rerun of the same config is re-used instead of re-trained
    again = run_study(study_cfg(tmp_path, methods=["uniform"], n_trials=2, rerun_seeds=[0],
                                storage=str(tmp_path / "other.journal")), progress=False)
    assert int(again.results.loc[0, "best_trial"]) == best
    assert (rerun_dir / "summary.json").stat().st_mtime_ns == stamp
    assert again.results.loc[0, "test_delta_m_mean"] == pytest.approx(first.results.loc[0, "test_delta_m_mean"])
    assert len(list((Path(cfg.out) / GROUP / "uniform").glob("trial_0.stale-*"))) == 1


def test_demo_config_is_the_fair_default_study():
    from balancebench.commands.demo import DEMO_CONFIG
    from experiments.studies.plan import make_plan

    plan = make_plan(load_study_config(DEMO_CONFIG))
    assert plan.cfg.methods == ["uniform", "si", "rlw", "famo", "marigold", "fixed_from_famo"]
    assert plan.searched == ["uniform", "si", "rlw", "famo", "marigold"] and plan.derived == {"fixed_from_famo": "famo"}
    assert plan.protocol["benchmark"] == "multimnist" and plan.protocol["variant"] == "CL_RR"
    assert set(plan.protocol["shared_space"]) == {"lr", "weight_decay", "dropout"}
    assert plan.first_trial["famo"]["gamma"] == 1e-3 and plan.fixed_hparams["famo"] == {"w_lr": 0.025}
    assert plan.first_trial["marigold"]["beta"] == 1.0 and plan.fixed_hparams["marigold"] == {"r": 1e-3}
    assert plan.first_trial["rlw"]["distribution"] == "normal"
    assert all(plan.first_trial[m]["lr"] == plan.base.train.lr for m in plan.searched)
    assert plan.spaces["famo"]["gamma"].choices == [1e-4, 1e-3, 1e-2]
    # Δm% vs single-task runs of the same setting (K = 2: two extra short runs), not the untrained model
    assert plan.cfg.reference == "stl" and plan.protocol["objective"] == "validation Δm% vs STL (lower is better)"
    assert plan.tasks == ["left_cls", "right_rec"] and plan.base.reference.endswith("stl/stl_reference.json")
