"""Errors a user can cause: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import errno
from pathlib import Path
import re
import sys
import traceback
from collections.abc import Iterable
from types import TracebackType
from urllib.parse import unquote, unquote_plus


class UserError(Exception):
    """A mistake in the user's input (config, names, paths, environment). One clear line."""


class ConfigError(UserError, ValueError):
    """An invalid configuration value or key (the message names the dotted path)."""


class NonFiniteLossError(UserError, FloatingPointError):
    """A task loss (or the balanced loss) became NaN/Inf during training."""

    def __init__(self, step: int, task: str, value: float, epoch: int, reason: str | None = None) -> None:
        self.step, self.task, self.value, self.epoch, self.reason = step, task, value, epoch, reason
        advice = reason or "lower the learning rate, clip gradients, or check the balancer's hyperparameters"
        super().__init__(f"non-finite loss at training step {step} (epoch {epoch}): {task} = {value}; {advice}")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during a training run. ``run_dir`` holds what was saved (None: nothing
    yet); a command sets ``continue_with`` to the exact command line that continues the work."""

    def __init__(self, run_dir: Path | None, continue_with: str | None = None) -> None:
        super().__init__(str(run_dir) if run_dir else "")
        self.run_dir, self.continue_with = run_dir, continue_with


#: what the user can do about an OS error, by errno
_OS_ADVICE = {
    errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only", errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded", errno.ENOTDIR: "a file is in the way where a folder is needed",
    errno.EISDIR: "it is a folder, a file is needed", errno.EEXIST: "it exists already (a file where a folder is needed?)",
    errno.ENOENT: "no such file or folder", errno.ENAMETOOLONG: "the name is too long",
}
#: the operation, from the innermost Python function that failed
_OPERATIONS = {
    "mkdir": "create the folder", "makedirs": "create the folder", "_mkstemp_inner": "write a file in",
    "mkstemp": "write a file in", "touch": "create", "write_text": "write", "write_bytes": "write",
    "read_text": "read", "read_bytes": "read", "rename": "move", "replace": "move", "unlink": "remove",
    "rmdir": "remove", "iterdir": "list", "scandir": "list", "listdir": "list", "stat": "read",
}


def os_error_line(exc: OSError) -> str:
    """One line for a file-system error: the operation, the path and what went wrong."""
    path = exc.filename if exc.filename is not None else None
    operation = "use"
    tb = exc.__traceback__
    while tb is not None:  # the innermost frame names the operation that failed
        operation = _OPERATIONS.get(tb.tb_frame.f_code.co_name, operation)
        tb = tb.tb_next
    reason = _OS_ADVICE.get(exc.errno or -1, exc.strerror or type(exc).__name__)
    if exc.errno == errno.EEXIST and path is not None and Path(path).is_file():
        reason = "it is a file, a folder is needed"
    if path is None:
        return f"file system error: {reason} ({exc})"
    second = f" -> {exc.filename2}" if exc.filename2 is not None else ""
    return f"cannot {operation} {path}{second}: {reason}"


#: a query-string key holding a secret contains one of these (password, sslpassword, token, ...)
_SECRET_KEYS = ("pass", "pwd", "secret", "token", "key", "auth", "credential")
#: ``key=value`` outside URLs (libpq keyword strings, messages): keys that name a secret
_SECRET_PAIR = re.compile(r"\b(\w*(?:password|passwd|passphrase|pwd|secret|token)\w*)(\s*=\s*)([^\s&;'\",)]+)",
                          re.IGNORECASE)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
#: secrets of the storage URLs this process was given (see :func:`note_secrets`)
_KNOWN: set[str] = set()


def _secret_key(key: str) -> bool:
    key = unquote(key).lower()
    return any(word in key for word in _SECRET_KEYS)


def mask_url(url: str) -> str:
    """``scheme://user:secret@host/db?password=x&sslmode=y`` -> ``scheme://user:***@host/db?password=***&sslmode=y``.

    The password of the user-info part and the value of every query key that names a secret
    (``password``, ``sslpassword``, ``token``, ...) are masked; anything else is unchanged.

    >>> mask_url("postgresql://bench:pw@db:5432/studies?sslpassword=x&sslmode=require")
    'postgresql://bench:***@db:5432/studies?sslpassword=***&sslmode=require'
    """
    if "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds = ""
    if "@" in rest:  # the last '@': a password may hold a raw '@' (masking too much is safe)
        creds, rest = rest.rsplit("@", 1)
        if ":" in creds:
            creds = creds.split(":", 1)[0] + ":***"
        creds += "@"
    if "?" in rest:
        base, query = rest.split("?", 1)
        pairs = re.split(r"([&;])", query)
        for i in range(0, len(pairs), 2):
            key, eq, _ = pairs[i].partition("=")
            if eq and _secret_key(key):
                pairs[i] = f"{key}=***"
        rest = f"{base}?{''.join(pairs)}"
    return f"{scheme}://{creds}{rest}"


def secrets_in(url: str) -> list[str]:
    """The secret strings of a URL (password, secret query values), as written and URL-decoded."""
    if "://" not in url:
        return []
    found: list[str] = []
    rest = url.split("://", 1)[1]
    if "@" in rest:
        creds, rest = rest.rsplit("@", 1)
        if ":" in creds:
            found.append(creds.split(":", 1)[1])
    if "?" in rest:
        for pair in re.split(r"[&;]", rest.split("?", 1)[1]):
            key, eq, value = pair.partition("=")
            if eq and _secret_key(key):
                found.append(value)
    return [s for value in found for s in {value, unquote(value), unquote_plus(value)} if len(s) >= 3]


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with URLs masked (:func:`mask_url`), ``password=...``-like pairs masked and every
    known secret replaced by ``***`` (default: those noted with :func:`note_secrets`).

    For lines that can quote a storage URL in any form: error messages of SQLAlchemy / psycopg,
    tracebacks, worker errors.
    """
    text = _URL.sub(lambda m: mask_url(m.group(0)), text)
    text = _SECRET_PAIR.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    for secret in sorted(_KNOWN if secrets is None else set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def note_secrets(*urls: str) -> None:
    """Remember the secrets of these URLs, so that :func:`redact` masks them in any output."""
    for url in urls:
        if isinstance(url, str):
            _KNOWN.update(secrets_in(url))


def _redacting_excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    sys.stderr.write(redact("".join(traceback.format_exception(kind, exc, tb))))


def protect_output(argv: Iterable[str]) -> None:
    """Note the secrets of URLs on the command line and mask every uncaught traceback (``--debug``,
    internal errors): call once at the start of the command line."""
    note_secrets(*argv)
    sys.excepthook = _redacting_excepthook
