"""Secrets in storage URLs never reach any output: the password of the user-info part
(``user:pw@``) and secret query values (``?password=``, ``sslpassword=``, tokens) are masked in
every command's lines, progress, error lines, ``--debug`` tracebacks and written files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from balancebench.main import main
from experiments.config import CONFIG_DIR
from experiments.errors import mask_url, redact, secrets_in
from experiments.studies.storage import open_storage

ROOT = Path(__file__).resolve().parents[3]
USER_PW, QUERY_PW, SSL_PW, TOKEN = "Us3r-s3cret", "Qu3ry-s3cret", "Ss1-s3cret", "T0ken-s3cret"
SECRETS = (USER_PW, QUERY_PW, SSL_PW, TOKEN)
#: both forms, on a port where nothing listens
UNREACHABLE = [
    f"postgresql://bench:{USER_PW}@127.0.0.1:1/studies",
    f"postgresql://bench@127.0.0.1:1/studies?password={QUERY_PW}&sslpassword={SSL_PW}&connect_timeout=5",
    f"postgresql://bench:{USER_PW}@127.0.0.1:1/studies?sslpassword={SSL_PW}&access_token={TOKEN}",
    f"postgresql://bench:{USER_PW}@127.0.0.1:notaport/studies",  # a malformed URL: the driver quotes parts
]


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "balancebench.main", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} in {where}:\n{text[-2000:]}"


def test_mask_url_both_forms() -> None:
    assert mask_url(f"postgresql://u:{USER_PW}@h:5432/db") == "postgresql://u:***@h:5432/db"
    masked = mask_url(f"postgresql+psycopg2://u@h/db?sslmode=require&password={QUERY_PW}&SSLPassword={SSL_PW}"
                      f";auth_token={TOKEN}&application_name=bb")
    assert masked == ("postgresql+psycopg2://u@h/db?sslmode=require&password=***&SSLPassword=***;auth_token=***"
                      "&application_name=bb")
    assert mask_url("results/x/study.journal") == "results/x/study.journal"
    assert mask_url("sqlite:///results/x.db") == "sqlite:///results/x.db"
    assert mask_url(f"postgresql://u:p@{USER_PW}@h/db") == "postgresql://u:***@h/db"  # a raw '@' in the password
    assert set(secrets_in(f"postgresql://u:{USER_PW}@h/db?password={QUERY_PW}")) == {USER_PW, QUERY_PW}
    assert "p@ss-word" in secrets_in("mysql://u:p%40ss-word@h/db")  # the decoded form too


def test_redact_masks_urls_pairs_and_known_secrets_anywhere_in_text() -> None:
    text = (f'could not parse "postgresql://u:{USER_PW}@h/db?password={QUERY_PW}"; '
            f"dsn: host=h password={QUERY_PW} user=u; bare {SSL_PW} and {TOKEN}")
    out = redact(text, [SSL_PW, TOKEN])
    assert_no_secret(out, "redacted text")
    assert "postgresql://u:***@h/db?password=***" in out and "host=h password=*** user=u" in out


@pytest.mark.parametrize("url", UNREACHABLE, ids=["userinfo", "query", "both", "malformed"])
def test_unreachable_storage_every_command_one_line_no_secret(url: str, tmp_path: Path, capsys) -> None:
    config = tmp_path / "with_url.yaml"
    config.write_text(yaml.safe_dump(_study(tmp_path, storage=url)))
    for argv in (["results", "--storage", url], ["report", "--storage", url, "--out", str(tmp_path / "r")],
                 ["study", "--config", str(config), "--quiet"],
                 ["study", "--config", str(_study_file(tmp_path)), "--storage", url, "--quiet"]):
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("balancebench: error: cannot open storage"), captured.err
        assert_no_secret(captured.out + captured.err, " ".join(argv[:1]))


@pytest.mark.parametrize("url", UNREACHABLE[1:3], ids=["query", "both"])
def test_debug_tracebacks_have_no_secret(url: str, tmp_path: Path) -> None:
    for argv in (["--debug", "results", "--storage", url],
                 ["--debug", "study", "--config", str(_study_file(tmp_path)), "--storage", url, "--quiet"]):
        done = run_cli(*argv)
        assert done.returncode == 1 and "Traceback" in done.stderr and "UserError" in done.stderr, done.stderr
        assert_no_secret(done.stdout + done.stderr, f"--debug {argv[1]}")


def test_an_internal_error_quoting_the_url_is_masked_in_its_traceback() -> None:
    url = f"postgresql://u:{USER_PW}@h/db?sslpassword={SSL_PW}"
    code = ("import sys; from experiments.errors import protect_output; protect_output(sys.argv[1:]); "
            f"raise RuntimeError('lost connection to ' + sys.argv[1] + ' (password {USER_PW})')")
    done = subprocess.run([sys.executable, "-c", code, url], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "RuntimeError: lost connection to postgresql://u:***@h/db" in done.stderr
    assert_no_secret(done.stderr, "an internal traceback")


def test_a_study_on_real_postgresql_never_shows_or_writes_the_passwords(postgres_url: str, tmp_path: Path) -> None:
    """The throwaway cluster trusts loopback, so it accepts any password: the URLs carry real ones."""
    base = postgres_url.replace("postgres@", f"postgres:{USER_PW}@") + f"?sslpassword={SSL_PW}&application_name=bb"
    query = postgres_url + f"?password={QUERY_PW}&sslpassword={SSL_PW}"
    outputs = []
    done = run_cli("study", "--config", str(_study_file(tmp_path)), "--storage", base)  # with progress output
    assert done.returncode == 0, done.stderr
    outputs.append(done)
    assert "storage: postgresql+psycopg2://postgres:***@" in done.stdout
    for argv in (["results", "--storage", query, "--out", str(tmp_path / "tables")],
                 ["report", "--storage", query, "--out", str(tmp_path / "report")]):
        outputs.append(run_cli(*argv))
        assert outputs[-1].returncode == 0, outputs[-1].stderr
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(_study(tmp_path, storage=query, n_trials=1)))
    for argv in (["study", "--config", str(changed)], ["--debug", "study", "--config", str(changed)]):
        outputs.append(run_cli(*argv))  # a refused reopen: an error line naming the storage
        assert outputs[-1].returncode in (1, 2) and "n_trials was 2, now 1" in outputs[-1].stderr
    for done in outputs:
        assert_no_secret(done.stdout + done.stderr, " ".join(done.args[3:5]))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "results.md" for p in written) and any(p.name == "report.md" for p in written)
    for path in written:
        if path.suffix != ".yaml" or path.parent != tmp_path:  # the study files we wrote hold the URL
            assert_no_secret(path.read_bytes().decode("utf-8", "replace"), str(path))
    storage = open_storage(postgres_url)
    for study in storage.get_all_studies():
        stored = [study.user_attrs, study.system_attrs] + [
            (t.user_attrs, t.system_attrs, t.params) for t in storage.get_all_trials(study._study_id)]
        assert_no_secret(json.dumps(stored, default=str), f"the storage's study {study.study_name}")


def _study(tmp_path: Path, **over: object) -> dict:
    return {"benchmark_config": str(CONFIG_DIR / "synthetic.yaml"), "scale": "tiny",
            "overrides": {"train": {"epochs": 1, "max_steps_per_epoch": 2, "log_every": 1, "num_threads": 1}},
            "methods": ["uniform"], "shared_space": {"lr": {"low": 1e-4, "high": 1e-2, "log": True}},
            "n_trials": 2, "rerun_seeds": [0], "out": str(tmp_path / "results"), "pruner": {"name": "none"},
            "name": "secrets", **over}


def _study_file(tmp_path: Path) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_study(tmp_path)))
    return path
