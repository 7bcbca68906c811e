"""``optuna-dashboard <study.journal>`` opens the default storage of a balancebench study: the journal a
real (tiny) study wrote is loaded through optuna-dashboard's own storage reader (the function its
command line calls on the path) and served through its WSGI app, which lists every study and trial."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from experiments.studies.config import study_config_from_dict
from experiments.studies.driver import run_study
from tests.experiments.studies.test_study import GROUP, study_dict

dashboard = pytest.importorskip("optuna_dashboard", reason="optuna-dashboard is not installed "
                                                           "(pip install 'balancebench[dashboard]')")
storage_url = pytest.importorskip("optuna_dashboard._storage_url", reason="optuna-dashboard has no _storage_url")


def _get(app: Any, path: str) -> tuple[str, Any]:
    environ: dict[str, Any] = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return status[0], json.loads(body)


def test_optuna_dashboard_opens_the_default_journal(tmp_path: Path) -> None:
    cfg = study_config_from_dict(study_dict(tmp_path, methods=["uniform"], n_trials=2, rerun_seeds=[0],
                                            overrides={"train": {"epochs": 1, "max_steps_per_epoch": 2}}))
    run_study(cfg, progress=False)
    journal = Path(cfg.out) / GROUP / "study.journal"  # the default storage: no --storage given
    assert journal.is_file()

    storage = storage_url.get_storage(str(journal))  # what `optuna-dashboard <path>` does with the path
    studies = {s.study_name: s for s in storage.get_all_studies()}
    assert f"{GROUP}/uniform" in studies, sorted(studies)
    assert any(name.startswith(f"{GROUP}/uniform/rerun-t") for name in studies), sorted(studies)
    search = storage.get_all_trials(studies[f"{GROUP}/uniform"]._study_id)
    assert len(search) == 2 and all(t.state.is_finished() for t in search)

    app = dashboard.wsgi(str(journal))
    status, listing = _get(app, "/api/studies")
    assert status.startswith("200"), status
    listed = {s["study_name"]: s for s in listing["study_summaries"]}
    assert set(listed) == set(studies)
    status, detail = _get(app, f"/api/studies/{listed[f'{GROUP}/uniform']['study_id']}")
    assert status.startswith("200") and len(detail["trials"]) == 2
    assert {t["state"] for t in detail["trials"]} <= {"Complete", "Pruned"}
