"""A throwaway PostgreSQL cluster on loopback for tests (initdb + pg_ctl, as a non-root user)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the 'postgres' account then."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--", *cmd]
    return ["su", "postgres", "-s", "/bin/sh", "-c", " ".join(cmd)]


def pg_available() -> str | None:
    """Why a cluster cannot start here, or None when it can."""
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        return "PostgreSQL's initdb/pg_ctl are not on PATH"
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """Start a cluster on 127.0.0.1:<free port>; yields a SQLAlchemy URL; stops and deletes it."""
    root = Path(tempfile.mkdtemp(prefix="bb-pg-"))
    data, sock = root / "data", root / "sock"
    sock.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sock, "postgres")
    port = _free_port()
    log = root / "server.log"
    try:
        subprocess.run(_as_user(["initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync"]),
                       check=True, capture_output=True)
        if os.geteuid() == 0:
            subprocess.run(["touch", str(log)], check=True)
            shutil.chown(log, "postgres")
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {sock} -c fsync=off -c max_connections=100"
        subprocess.run(_as_user(["pg_ctl", "-D", str(data), "-l", str(log), "-o", opts, "-w", "start"]),
                       check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_user(["pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


_DATABASES = itertools.count()


def fresh_database(server_url: str) -> str:
    """Create a new empty database on the cluster behind ``server_url``; return its SQLAlchemy URL."""
    import psycopg2

    name = f"bb_test_{os.getpid()}_{next(_DATABASES)}"
    dsn = server_url.replace("postgresql+psycopg2://", "postgresql://")
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
    finally:
        conn.close()
    return server_url.rsplit("/", 1)[0] + "/" + name
