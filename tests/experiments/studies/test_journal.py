"""Damaged study journals: a torn last line is repaired (backup kept, no complete record dropped, no
finished trial lost); any other damage is one line naming the file and the first bad line, for
every command that opens the storage."""

from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from balancebench.main import main
from experiments.config import CONFIG_DIR
from experiments.studies.journal import JournalDamaged, open_journal
from experiments.studies.storage import open_storage

GROUP = "synthetic-default-tiny"
ROOT = Path(__file__).resolve().parents[3]


def study_dict(out: Path, **over: object) -> dict:
    return {
        "benchmark_config": str(CONFIG_DIR / "synthetic.yaml"), "scale": "tiny",
        "overrides": {"train": {"epochs": 1, "max_steps_per_epoch": 2, "log_every": 1, "num_threads": 1}},
        "methods": ["uniform"], "shared_space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
        "n_trials": 3, "rerun_seeds": [0], "out": str(out), "pruner": {"name": "none"}, **over,
    }


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> bytes:
    """The bytes of a finished study's journal (3 search trials and 1 rerun), written by another
    process (as after a crash: the process that wrote a torn record is gone)."""
    tmp = tmp_path_factory.mktemp("journal")
    config = tmp / "study.yaml"
    config.write_text(yaml.safe_dump(study_dict(tmp / "results")))
    done = subprocess.run([sys.executable, "-m", "balancebench.main", "study", "--config", str(config), "--quiet"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return (tmp / "results" / GROUP / "study.journal").read_bytes()


def finished_trials(path: Path) -> dict[tuple[str, int], tuple]:
    """(study, trial number) -> (state, value, params) of every finished trial the journal holds."""
    storage = open_storage(str(path))
    found = {}
    for study in storage.get_all_studies():
        for t in storage.get_all_trials(study._study_id):
            if t.state.is_finished():
                found[(study.study_name, t.number)] = (t.state, t.value, t.params)
    return found


def run_cli_study(tmp_path: Path, journal: Path) -> int:
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study_dict(tmp_path / "again", storage=str(journal))))
    return main(["study", "--config", str(config), "--quiet"])


def one_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ------------------------------------------------------------------------------ torn last line
def test_torn_tail_is_read_by_results_and_repaired_by_study_with_no_finished_trial_lost(pristine, tmp_path, capsys):
    journal = tmp_path / "study.journal"
    torn = pristine[:-30]  # the last record cut inside, as by a crash or a full disk during a write
    journal.write_bytes(torn)
    assert main(["results", "--storage", str(journal)]) == 0
    assert "is incomplete" in capsys.readouterr().err
    assert journal.read_bytes() == torn  # a reader never writes
    kept = finished_trials(journal)
    complete_lines = pristine.count(b"\n") - 1

    assert run_cli_study(tmp_path, journal) == 0
    err = capsys.readouterr().err
    assert f"repaired study journal {journal}" in err and f"last line {complete_lines + 1}" in err
    backups = list(tmp_path.glob("study.journal.torn-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == torn  # the original bytes, kept
    repaired = journal.read_bytes()
    lines = repaired.split(b"\n")
    assert repaired.startswith(pristine[: pristine.rfind(b"\n", 0, len(pristine) - 1) + 1])  # every complete record
    assert all(json.loads(line) for line in lines[:-1]) and lines[-1] == b""  # a valid journal again
    after = finished_trials(journal)
    assert all(after[key] == value for key, value in kept.items())  # no finished trial lost or changed
    search = [t for t in optuna.load_study(study_name=f"{GROUP}/uniform", storage=open_storage(str(journal))).trials]
    assert sum(t.state == TrialState.COMPLETE for t in search) == 3


def test_a_complete_last_record_without_its_line_end_is_kept(pristine, tmp_path, capsys):
    journal = tmp_path / "study.journal"
    journal.write_bytes(pristine[:-1])
    storage = open_journal(journal, writer=True)
    assert "lacked its line end, which is added" in capsys.readouterr().err
    assert journal.read_bytes() == pristine  # nothing dropped, the line end restored
    # the search study, the rerun study and the single-task reference's record
    names = sorted(s.study_name for s in storage.get_all_studies())
    assert names[:2] == [f"{GROUP}/stl-reference", f"{GROUP}/uniform"] and len(names) == 3
    assert re.fullmatch(rf"{GROUP}/uniform/rerun-t\d+", names[2]), names  # the best trial's reruns


def test_truncated_mid_file_study_repairs_and_finishes_the_budget(pristine, tmp_path, capsys):
    journal = tmp_path / "study.journal"
    journal.write_bytes(pristine[: len(pristine) // 2])
    kept = finished_trials(journal)
    capsys.readouterr()
    assert run_cli_study(tmp_path, journal) == 0
    assert "repaired study journal" in capsys.readouterr().err
    after = finished_trials(journal)
    assert all(after[key] == value for key, value in kept.items())
    trials = optuna.load_study(study_name=f"{GROUP}/uniform", storage=open_storage(str(journal))).trials
    counted = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(counted) == 3  # the budget, completed again


def test_a_tear_while_the_study_runs_is_repaired_before_the_next_append(tmp_path, capsys):
    journal = tmp_path / "study.journal"
    storage = open_storage(str(journal), writer=True)
    study = optuna.create_study(study_name="s", storage=storage)
    study.set_user_attr("a", 1)
    with open(journal, "ab") as handle:  # another writer died mid-write
        handle.write(b'{"op_code":2,"worker_id":"x","study_id":0,"user_at')
    study.set_user_attr("b", 2)
    err = capsys.readouterr().err
    assert one_line(err).startswith(f"balancebench: repaired study journal {journal}")
    again = optuna.load_study(study_name="s", storage=open_storage(str(journal)))
    assert again.user_attrs == {"a": 1, "b": 2}


# ------------------------------------------------------------------------------ other damage
def _garbage(data: bytes) -> tuple[bytes, int]:
    return data + b"garbage from another program\n", data.count(b"\n") + 1


def _not_a_record(data: bytes) -> tuple[bytes, int]:
    return data + b'{"hello": "world"}\n', data.count(b"\n") + 1


def _missing_fields(data: bytes) -> tuple[bytes, int]:  # optuna itself raised KeyError on this
    return data + b'{"op_code": 4, "worker_id": "w"}\n', data.count(b"\n") + 1


def _invalid_utf8(data: bytes) -> tuple[bytes, int]:
    cut = data.index(b"\n", len(data) // 3)
    return data[: cut - 3] + b"\xff\xfe" + data[cut - 3:], data.count(b"\n", 0, cut) + 1


def _chunk_removed(data: bytes) -> tuple[bytes, int]:
    start = data.index(b"\n", len(data) // 4) + 10  # inside a line: that line is glued to a later one
    end = data.index(b"\n", len(data) // 2) - 10
    return data[:start] + data[end:], data.count(b"\n", 0, start) + 1


@pytest.mark.parametrize("damage", [_garbage, _not_a_record, _missing_fields, _invalid_utf8, _chunk_removed],
                         ids=lambda f: f.__name__.strip("_"))
def test_other_damage_is_one_line_naming_the_first_bad_line_for_every_command(pristine, tmp_path, capsys, damage):
    journal = tmp_path / "study.journal"
    data, line = damage(pristine)
    journal.write_bytes(data)
    with pytest.raises(JournalDamaged) as info:
        open_storage(str(journal))
    assert info.value.line == line
    for argv in (["results", "--storage", str(journal)],
                 ["report", "--storage", str(journal), "--out", str(tmp_path / "report")]):
        assert main(argv) == 2
        msg = one_line(capsys.readouterr().err)
        assert msg.startswith(f"balancebench: error: study journal {journal} is damaged at line {line}:"), msg
        assert f"head -n {line - 1}" in msg
    assert run_cli_study(tmp_path, journal) == 2
    assert f"damaged at line {line}:" in one_line(capsys.readouterr().err)
    assert journal.read_bytes() == data  # refused, not appended to
