"""Errors a user can cause: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations

import errno
from pathlib import Path


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


def mask_url(url: str) -> str:
    """``scheme://user:secret@host/db`` -> ``scheme://user:***@host/db`` (anything else unchanged)."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"
