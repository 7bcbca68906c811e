"""Optuna storages for studies, the budget lock, and exact trial-budget accounting.

Storage
    The default is Optuna's ``JournalStorage`` over a ``JournalFileBackend`` file
    (``results/<study>/study.journal``): an append-only log guarded by a file lock, so several
    worker processes on one machine never see "database is locked" and no server is needed. It is
    read and appended through :mod:`experiments.studies.journal` (every line checked, a torn last
    line repaired before the next write).
    ``optuna-dashboard results/<study>/study.journal`` opens it. Any URL with ``://`` is an Optuna
    RDB URL (``sqlite:///x.db``, ``postgresql://user:pw@host/db``, ...); RDB storages run with
    Optuna's heartbeat (``heartbeat_interval``/``grace_period``) and
    ``RetryHeartbeatStaleTrialCallback`` (optuna 5's name of ``RetryFailedTrialCallback``), so a
    trial whose worker vanished is failed and re-queued with the same parameters. Optuna 5's
    journal storage has no heartbeat, so for it (and for any storage) a RUNNING trial whose worker
    process on *this* host no longer exists is failed and re-queued the same way
    (:func:`reap_dead_trials`).

Budget
    A method's budget is its number of *counted* trials: COMPLETE + PRUNED + FAIL + RUNNING, where
    a FAIL that was re-queued (killed worker, Ctrl-C) does not count - its retry does. A worker
    takes the budget lock, counts, and only then asks Optuna for a trial; the lock is released
    as soon as the trial exists. So N workers on any number of machines never exceed the budget
    (``MaxTrialsCallback`` checks after a trial ends and can overshoot by N - 1). The lock is a
    file lock for journal and SQLite storages, ``pg_advisory_lock`` on PostgreSQL and
    ``GET_LOCK`` on MySQL; other databases fall back to a check right after the trial is created.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import warnings
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import FrozenTrial, TrialState

from experiments.errors import UserError, mask_url, note_secrets, redact, secrets_in
from experiments.studies.journal import open_journal

HEARTBEAT_INTERVAL = 30
GRACE_PERIOD = 120
MAX_RETRY = 3
#: ``failure_kind`` user attrs of failures that are not the method's fault (the trial is re-queued)
RETRYABLE = ("interrupted", "worker_died")
JOURNAL_NAME = "study.journal"


def is_rdb_url(url: str) -> bool:
    return "://" in url


def _one_line(exc: BaseException, *urls: str) -> str:
    """The first line of a driver's error message, with every secret of ``urls`` masked."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return redact(text, [s for url in urls for s in secrets_in(url)])


def open_storage(url: str, *, writer: bool = False) -> BaseStorage:
    """An Optuna storage for ``url`` (journal file path or RDB URL); errors are one-line UserErrors
    with any password masked. A journal is checked line by line (:mod:`experiments.studies.journal`);
    a ``writer`` (``study``) repairs its torn last line first."""
    note_secrets(url)  # any later error line or traceback of this process masks them too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if not is_rdb_url(url):
            path = Path(url)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                return open_journal(path, writer=writer)
            except OSError as exc:
                raise UserError(f"cannot open journal storage {path}: {exc.strerror or exc}") from None
        shown, url = mask_url(url), _with_driver(url)
        engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if url.startswith("sqlite"):
            engine_kwargs = {"connect_args": {"timeout": 60}}
        try:
            return RDBStorage(
                url, engine_kwargs=engine_kwargs, heartbeat_interval=HEARTBEAT_INTERVAL, grace_period=GRACE_PERIOD,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY))
        except ImportError:
            raise UserError(f"cannot open storage {shown}: its database driver is not installed "
                            "(for PostgreSQL: pip install 'balancebench[postgres]')") from None
        except Exception as exc:  # sqlalchemy errors: unreachable host, bad credentials, bad URL
            raise UserError(f"cannot open storage {shown}: {_one_line(exc, url)}") from None


def _with_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is installed."""
    scheme, rest = url.split("://", 1)
    if scheme not in ("postgresql", "postgres"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def default_storage_url(out: str | Path, group: str) -> str:
    return str(Path(out) / group / JOURNAL_NAME)


# ------------------------------------------------------------------------------ the budget lock
class BudgetLock:
    """An inter-process lock around "count the trials, then create one". ``release`` is idempotent
    (the objective releases it as soon as its trial exists; ``__exit__`` releases it again)."""

    exact = True

    def __init__(self, url: str, storage: BaseStorage) -> None:
        self.url, self.storage = url, storage
        self._held: Any = None

    def acquire(self) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> BudgetLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


class FileLock(BudgetLock):
    def __init__(self, url: str, storage: BaseStorage, path: Path) -> None:
        super().__init__(url, storage)
        self.path = path

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (closed in release)
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        self._held = handle

    def release(self) -> None:
        handle, self._held = self._held, None
        if handle is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()


class SqlLock(BudgetLock):
    """PostgreSQL advisory lock / MySQL named lock on a connection of the storage's own engine."""

    KEY = zlib.crc32(b"balancebench-budget")

    def __init__(self, url: str, storage: BaseStorage, dialect: str) -> None:
        super().__init__(url, storage)
        self.dialect = dialect

    def acquire(self) -> None:
        from sqlalchemy import text

        conn = self.storage.engine.connect()  # type: ignore[attr-defined]
        if self.dialect == "postgresql":
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.KEY})
        else:
            conn.execute(text("SELECT GET_LOCK(:k, -1)"), {"k": f"balancebench-{self.KEY}"})
        conn.commit()
        self._held = conn

    def release(self) -> None:
        from sqlalchemy import text

        conn, self._held = self._held, None
        if conn is None:
            return
        try:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.KEY})
            else:
                conn.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": f"balancebench-{self.KEY}"})
            conn.commit()
        finally:
            conn.close()


class NoLock(BudgetLock):
    exact = False

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


def budget_lock(url: str, storage: BaseStorage) -> BudgetLock:
    if not is_rdb_url(url):
        return FileLock(url, storage, Path(url + ".budget.lock"))
    scheme = url.split("://", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        from sqlalchemy.engine import make_url

        path = make_url(url).database
        if not path or path == ":memory:":
            return NoLock(url, storage)
        return FileLock(url, storage, Path(path + ".budget.lock"))
    if scheme in ("postgresql", "postgres"):
        return SqlLock(url, storage, "postgresql")
    if scheme in ("mysql", "mariadb"):
        return SqlLock(url, storage, "mysql")
    return NoLock(url, storage)


# ------------------------------------------------------------------------------ accounting
def retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials that were re-queued (their retry counts instead)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def counted_trials(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that use the budget, by number."""
    retried = retried_numbers(trials)
    keep = []
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING):
            keep.append(t)
        elif (t.state == TrialState.FAIL and t.number not in retried and not _awaiting_retry(t)
              and t.user_attrs.get("failure_kind") != "over_budget"):
            keep.append(t)
    return sorted(keep, key=lambda t: t.number)


def _awaiting_retry(trial: FrozenTrial) -> bool:
    """An interrupted/killed trial that the next reap re-queues (until MAX_RETRY is reached)."""
    return (trial.user_attrs.get("failure_kind") in RETRYABLE
            and len(trial.system_attrs.get("retry_history", [])) < MAX_RETRY)


def budget_trials(trials: Sequence[FrozenTrial], budget: int) -> list[FrozenTrial]:
    """The first ``budget`` counted trials: the only ones results may select from."""
    return counted_trials(trials)[:budget]


# ------------------------------------------------------------------------------ dead workers
def worker_identity() -> dict[str, Any]:
    import psutil

    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "created": round(psutil.Process(pid).create_time(), 2)}


def _worker_dead(trial: FrozenTrial, host: str, allow_anonymous: bool) -> bool:
    import psutil

    worker = trial.user_attrs.get("worker")
    if not isinstance(worker, dict):
        # died between creating the trial and recording its worker (journal storages only)
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        return allow_anonymous and time.time() - started > 300
    if worker.get("host") != host:
        return False  # another machine: RDB heartbeats handle it
    try:
        created = psutil.Process(int(worker["pid"])).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError, KeyError):
        return True
    return abs(created - float(worker.get("created", created))) > 1.0  # the pid was reused


def reap_dead_trials(study: optuna.Study) -> int:
    """Fail RUNNING trials of dead local workers and re-queue every retryable failure (with the
    same parameters, as RetryHeartbeatStaleTrialCallback does). Call under the budget lock."""
    storage = study._storage
    heartbeat = isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat:
            optuna.storages.fail_stale_trials(study)
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
        host = socket.gethostname()
        trials = study.get_trials(deepcopy=False)
        retried = retried_numbers(trials)
        changed = 0
        for trial in trials:
            if trial.state == TrialState.RUNNING and _worker_dead(trial, host, allow_anonymous=not heartbeat):
                worker = trial.user_attrs.get("worker") or {}
                storage.set_trial_user_attr(trial._trial_id, "failure_kind", "worker_died")
                storage.set_trial_user_attr(trial._trial_id, "fail_reason",
                                            f"worker process {worker.get('pid', '?')} on {host} died during the trial")
                if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
                    continue
                trial = storage.get_trial(trial._trial_id)
            elif not (trial.state == TrialState.FAIL and trial.user_attrs.get("failure_kind") in RETRYABLE):
                continue
            if trial.number in retried:
                continue
            retry(study, trial)  # does nothing once MAX_RETRY is reached: the failure then counts
            changed += 1
        return changed


@contextlib.contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's own per-trial log lines (with tracebacks for failed trials) off; we print our own."""
    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(old)
