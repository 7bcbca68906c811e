"""Errors a user can cause: the CLI prints them as one line and exits non-zero."""

from __future__ import annotations


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


def mask_url(url: str) -> str:
    """``scheme://user:secret@host/db`` -> ``scheme://user:***@host/db`` (anything else unchanged)."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"
