"""What a contract check is, and the assertions the checks share.

A :class:`Check` is a named function ``fn(config, **case)`` run on a
:class:`~balancers.contract.problem.BalancerConfig` once per :class:`Case`; it raises
:class:`ContractViolation` (an ``AssertionError``) when the balancer breaks the contract and
:class:`Skipped` when the check cannot apply to this configuration. Checks never use ``assert``
statements (``python -O`` would strip them): :func:`ensure` raises whatever the interpreter flags.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor


class ContractViolation(AssertionError):
    """The balancer breaks the contract; the message says how."""


class Skipped(Exception):
    """The check does not apply to this configuration (the message says why)."""


def ensure(ok: Any, message: str | Callable[[], str]) -> None:
    """Raise :class:`ContractViolation` with ``message`` (a string, or a function making it) unless ``ok``."""
    if not ok:
        raise ContractViolation(message() if callable(message) else message)


@dataclass
class Raised:
    """The exception an :func:`expect_raises` block raised (``value``), filled in on exit."""

    value: BaseException | None = None


@contextmanager
def expect_raises(kind: type[BaseException] | tuple[type[BaseException], ...], pattern: str | None = None,
                  what: str = "the call") -> Iterator[Raised]:
    """The block must raise ``kind`` with a message matching ``pattern`` (``re.search``)."""
    raised = Raised()
    try:
        yield raised
    except kind as exc:
        raised.value = exc
        if pattern is not None and not re.search(pattern, str(exc)):
            raise ContractViolation(f"{what} raised {type(exc).__name__}({str(exc)!r}), which does not match "
                                    f"{pattern!r}") from exc
        return
    names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
    raise ContractViolation(f"{what} did not raise {names}")


@dataclass(frozen=True)
class Case:
    """One parametrisation of a check: an id (``""``: the only case) and its keyword arguments."""

    id: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: only on a machine with CUDA
    needs_cuda: bool = False


@dataclass(frozen=True)
class Check:
    """One rule of the contract. ``applies(config)`` False: the rule is not about this balancer
    (e.g. seeds of a deterministic one); it is then left out rather than skipped."""

    name: str
    fn: Callable[..., None]
    cases: tuple[Case, ...] = (Case(),)
    applies: Callable[[Any], bool] = field(default=lambda config: True)
    #: the configurations the check is about, when ``applies`` narrows them (for reports)
    when: str = ""

    @property
    def doc(self) -> str:
        return " ".join((self.fn.__doc__ or self.name.replace("_", " ")).split())

    def run(self, config: Any, case: Case) -> None:
        """Run on ``config``; raises ContractViolation, Skipped, or what the balancer raised."""
        if case.needs_cuda and not torch.cuda.is_available():
            raise Skipped("no CUDA")
        self.fn(config, **case.kwargs)


# ---------------------------------------------------------------------------- assertions
def assert_valid_weights(b: Any, w: Tensor, atol: float = 1e-5) -> None:
    """(K,) finite weights, nonnegative / on the simplex as the class declares."""
    ensure(w.shape == (b.n_tasks,), lambda: f"{b}: weights of shape {tuple(w.shape)}")
    ensure(torch.isfinite(w).all(), lambda: f"{b}: non-finite weights {w.tolist()}")
    if b.nonnegative_weights:
        ensure((w >= 0).all(), lambda: f"{b}: negative weights {w.tolist()} although nonnegative_weights")
    if b.weights_sum_to_one:
        ensure(abs(float(w.double().sum()) - 1.0) <= atol, lambda: f"{b}: weights {w.tolist()} do not sum to 1")


def assert_same_trajectory(a: list[Tensor], b: list[Tensor], what: str) -> None:
    """Two runs' per-step tensors are bit-identical."""
    ensure(len(a) == len(b), f"{what}: {len(a)} steps != {len(b)} steps")
    for t, (x, y) in enumerate(zip(a, b)):
        ensure(torch.equal(x, y), lambda: f"{what}: step {t}: {x.tolist()} != {y.tolist()}")


def assert_state_equal(a: Any, b: Any, path: str = "state") -> None:
    """Recursive exact equality of (nested) state dicts holding tensors, containers and scalars."""
    if isinstance(a, Tensor):
        ensure(isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{path} differs")
    elif isinstance(a, dict):
        ensure(isinstance(b, dict) and set(a) == set(b),
               lambda: f"{path}: keys {sorted(map(str, a))} != {sorted(map(str, b))}")
        for k in a:
            assert_state_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        ensure(type(a) is type(b) and len(a) == len(b), f"{path} differs")
        for i, (x, y) in enumerate(zip(a, b)):
            assert_state_equal(x, y, f"{path}[{i}]")
    else:
        ensure(a == b, lambda: f"{path}: {a!r} != {b!r}")
