"""The balancer registry: a decorator with metadata beside each class, and two entry points."""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from balancers.base import Balancer

B = TypeVar("B", bound=type[Balancer])


@dataclass(frozen=True)
class BalancerInfo:
    """What a trainer and a reader need to know about a registered balancer.

    ``needs_closure``: uses the same-batch loss closure (in ``__call__`` and/or ``step``).
    ``needs_model``: must be ``attach``-ed to the model and its optimizer before training.
    ``needs_task_grads``: computes per-task gradients of the shared parameters (O(K) passes).
    ``has_parameters``: owns parameters the *model* optimizer must train (``named_learnables``).
    ``needs_epoch_end``: relies on ``epoch_end()`` being called after each epoch.
    ``needs_unclipped_step``: models the optimizer step on exactly the gradients of the returned
    loss (MARIGOLD's virtual step), so a trainer must not clip gradients (``train.grad_clip``).
    """

    name: str
    cls: type[Balancer]
    description: str
    paper: str
    needs_closure: bool = False
    needs_model: bool = False
    needs_task_grads: bool = False
    has_parameters: bool = False
    needs_epoch_end: bool = False
    stochastic: bool = False
    stateful: bool = False
    needs_unclipped_step: bool = False


_REGISTRY: dict[str, BalancerInfo] = {}


def register(
    name: str,
    *,
    description: str,
    paper: str,
    needs_closure: bool = False,
    needs_model: bool = False,
    needs_task_grads: bool = False,
    has_parameters: bool = False,
    needs_epoch_end: bool = False,
    stochastic: bool = False,
    stateful: bool = False,
    needs_unclipped_step: bool = False,
) -> Callable[[B], B]:
    """Class decorator that registers a balancer under ``name``; a duplicate name is an error."""

    def decorate(cls: B) -> B:
        if name in _REGISTRY:
            raise ValueError(f"balancer name {name!r} is already registered by {_REGISTRY[name].cls}")
        info = BalancerInfo(
            name, cls, description, paper, needs_closure, needs_model, needs_task_grads,
            has_parameters, needs_epoch_end, stochastic, stateful, needs_unclipped_step,
        )
        cls.registry_name = name  # type: ignore[attr-defined]
        cls.registry_info = info  # type: ignore[attr-defined]
        _REGISTRY[name] = info
        return cls

    return decorate


def list_balancers(pattern: str = "*") -> list[str]:
    """Registered names matching the shell-style ``pattern``, in registration order."""
    _load_builtin()
    return [n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)]


def balancer_info(name: str) -> BalancerInfo:
    """Metadata of a registered balancer; unknown names raise ValueError listing the valid ones."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown balancer {name!r}; valid names: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def create_balancer(name: str, n_tasks: int, **hparams: Any) -> Balancer:
    """Build the balancer ``name`` for ``n_tasks`` tasks.

    Unknown hyperparameters raise ValueError naming them and the accepted ones; the constructor
    validates values and ranges.
    """
    info = balancer_info(name)
    accepted = [p for p in inspect.signature(info.cls.__init__).parameters if p not in ("self", "n_tasks")]
    unknown = sorted(set(hparams) - set(accepted))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) {unknown} for balancer {name!r}; accepted: {accepted or 'none'}"
        )
    return info.cls(n_tasks, **hparams)


def _load_builtin() -> None:
    # Importing the package registers the built-in balancers exactly once.
    import balancers  # noqa: F401
