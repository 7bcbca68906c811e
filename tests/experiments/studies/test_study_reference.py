"""The Δm% reference of studies: single-task runs of the same setting by default, trained once,
stored, reused by every later invocation and by concurrent ones; the untrained model and the
literature only on request, and named in every header; bad choices are one line."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

import experiments.training.stl as stl_module
from balancebench.main import main
from experiments.benchmarks.base import MetricSpec
from experiments.errors import ConfigError, UserError
from experiments.studies.driver import run_study
from experiments.studies.plan import make_plan
from experiments.studies.reference import _train_and_store, ensure_stl_reference, run_reference, stl_record
from experiments.studies.results import budget_table, render, results_table
from experiments.studies.storage import budget_lock, open_storage
from experiments.training.evaluation import delta_m
from tests.experiments.studies.test_study import GROUP, study_dict

#: one method, one trial, one rerun seed: what the reference needs and nothing more
SMALL = {"methods": ["uniform"], "n_trials": 1, "rerun_seeds": [0]}


def small_cfg(tmp_path: Path, **over):
    from experiments.studies.config import study_config_from_dict

    return study_config_from_dict(study_dict(tmp_path, **{**SMALL, **over}))


@pytest.fixture
def stl_calls(monkeypatch) -> list[Path]:
    """Every call of the single-task trainer (the real one runs)."""
    calls: list[Path] = []
    real = stl_module.train_stl_references

    def counted(cfg, out):
        calls.append(Path(out))
        return real(cfg, out)

    monkeypatch.setattr(stl_module, "train_stl_references", counted)
    return calls


def test_stl_is_trained_once_and_reused_by_the_next_invocation(tmp_path, stl_calls):
    cfg = small_cfg(tmp_path)
    first = run_study(cfg, progress=False)
    plan = make_plan(cfg)
    file = Path(plan.base.reference)
    assert len(stl_calls) == 1 and file == (Path(cfg.out) / GROUP / "stl" / "stl_reference.json").resolve()
    stored = json.loads(file.read_text())
    assert set(stored["runs"]) == set(plan.tasks) and stored["seed"] == 0  # one run per task, the search seed
    for task in plan.tasks:  # each run trained its own task alone
        run_cfg = yaml.safe_load((Path(stored["runs"][task]) / "config.yaml").read_text())
        assert run_cfg["objective_tasks"] == [task] and run_cfg["balancer"]["name"] == "fixed"
        assert run_cfg["balancer"]["hparams"]["weights"] == [float(t == task) for t in plan.tasks]
    storage = open_storage(plan.storage_url)
    assert stl_record(storage, GROUP) == stored  # every machine on the storage uses these values
    # the reruns' test Δm% is against the STL runs' test metrics
    from experiments.benchmarks.base import MetricSpec as Spec

    rerun = first.results.set_index("method").loc["uniform"]
    specs = [Spec(**s) for s in plan.metric_specs]
    test = {s.name: rerun[f"test_{s.name}_mean"] for s in specs}
    assert rerun["test_delta_m_mean"] == pytest.approx(delta_m(test, specs, stored["metrics"]), rel=1e-9)
    stamp = file.stat().st_mtime_ns

    again = run_study(cfg, progress=False)  # finished study, same storage: nothing is trained
    assert len(stl_calls) == 1 and file.stat().st_mtime_ns == stamp
    assert again.results.loc[0, "test_delta_m_mean"] == first.results.loc[0, "test_delta_m_mean"]

    file.unlink()  # another machine on the same storage: the stored values are written, not re-trained
    run_study(cfg, progress=False)
    assert len(stl_calls) == 1 and json.loads(file.read_text()) == stored

    budget = budget_table(results_table(plan.storage_url)).set_index("method")
    row = budget.loc["STL reference"]
    assert row["complete"] == len(plan.tasks) and row["search_epochs"] == stored["epochs"] > 0
    assert row["search_wall_s"] == round(stored["wall_seconds"], 1) and "seed 0" in row["note"]


def test_a_waiting_invocation_does_not_train_the_reference_again(tmp_path, stl_calls):
    """Two invocations on one storage: the second waits for the lock, then finds the reference."""
    cfg = small_cfg(tmp_path)
    plan = make_plan(cfg)
    storage = open_storage(plan.storage_url, writer=True)
    lock = budget_lock(plan.storage_url, storage)
    got: list = []

    def other() -> None:
        other_storage = open_storage(plan.storage_url, writer=True)
        got.append(ensure_stl_reference(plan, other_storage, budget_lock(plan.storage_url, other_storage)))

    with lock:  # this invocation trains; the other one is blocked (or has not looked yet)
        waiting = threading.Thread(target=other)
        waiting.start()
        record = _train_and_store(plan, storage, lambda msg: None)
    waiting.join(timeout=300)
    assert not waiting.is_alive() and got == [record] and len(stl_calls) == 1


def test_results_header_and_column_say_vs_stl(tmp_path):
    cfg = small_cfg(tmp_path)
    outcome = run_study(cfg, progress=False)
    text = render(outcome.results, "md")
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    assert text.startswith("Δm% vs STL.") and "test Δm% vs STL |" in header and "| STL reference" in text
    assert (outcome.results["delta_m_reference"] == "STL").all()
    assert main(["results", "--storage", outcome.storage_url]) == 0  # the stored study tells the same


def test_untrained_reference_only_on_request_and_labelled(tmp_path, stl_calls, capsys):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study_dict(tmp_path, **SMALL)))
    assert main(["study", "--config", str(config), "--reference", "untrained", "--quiet"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| method"))
    assert out.startswith("Δm% vs untrained model.") and "test Δm% vs untrained model |" in header
    assert "STL reference" not in out and not stl_calls
    assert not (tmp_path / "results" / GROUP / "stl").exists()
    # the study's protocol records its reference: continuing it with another one is refused
    assert main(["study", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "reference was 'untrained', now 'stl'" in err[0]


@pytest.mark.parametrize("value, message", [
    ("bogus", "reference: expected stl, untrained, literature, got 'bogus'"),
    ("literature", "reference: literature: benchmark 'synthetic'"),
])
def test_an_invalid_reference_is_one_line(tmp_path, capsys, value, message):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study_dict(tmp_path, **SMALL, reference=value)))
    assert main(["study", "--config", str(config), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "untrained" in err[0]
    assert not (tmp_path / "results").exists()  # nothing trained, nothing written


def test_reference_in_the_run_overrides_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="overrides.reference: the study's Δm% reference is its own key"):
        make_plan(small_cfg(tmp_path, overrides={"reference": "initial"}))


def test_literature_is_refused_below_full_scale_and_stl_without_a_metric_per_task(tmp_path):
    cfg = small_cfg(tmp_path, reference="literature", scale="small")
    nyu_like = SimpleNamespace(name="nyuv2", variant="default", task_names=["seg", "depth"],
                               metrics=[MetricSpec("miou", 0, True, stl=0.5), MetricSpec("abs", 1, False, stl=0.6)],
                               reference_at_any_scale=False)
    with pytest.raises(ConfigError, match="measured at full scale, not at scale 'small'; use reference: stl"):
        run_reference(cfg, nyu_like, tmp_path)
    assert run_reference(small_cfg(tmp_path, reference="literature", scale="full"), nyu_like, tmp_path) == "literature"
    no_metric = SimpleNamespace(name="plug", variant="default", task_names=["a", "b"],
                                metrics=[MetricSpec("a_err", 0, False)], reference_at_any_scale=False)
    with pytest.raises(UserError, match="no metric for task.s. b, so no single-task run .* use reference: untrained"):
        run_reference(small_cfg(tmp_path), no_metric, tmp_path)


def test_a_given_reference_file_is_used_as_it_is_and_nothing_is_trained(tmp_path, stl_calls, capsys):
    """``reference_file`` (the claims' searches pass their setting's STL file): read, never trained,
    never rewritten; a missing file or one given with another reference kind is one line."""
    first = small_cfg(tmp_path / "a")
    run_study(first, progress=False)  # a real STL file to point at
    given = Path(make_plan(first).base.reference)
    assert len(stl_calls) == 1 and given.is_file()
    before = given.read_text()
    cfg = small_cfg(tmp_path / "b", reference_file=str(given.parent))
    run_study(cfg, progress=False)
    assert len(stl_calls) == 1 and given.read_text() == before  # nothing trained, the file untouched
    assert Path(make_plan(cfg).base.reference) == given.resolve()
    assert not list((tmp_path / "b").rglob("stl_reference.json"))
    with pytest.raises(ConfigError, match="no single-task reference file"):
        make_plan(small_cfg(tmp_path / "c", reference_file=str(tmp_path / "missing.json")))
    with pytest.raises(ConfigError, match="only with reference: stl"):
        small_cfg(tmp_path / "d", reference="untrained", reference_file=str(given))
