"""The balancer registry: a decorator with metadata beside each class, and two entry points.

Built-in balancers register when ``balancers`` is imported. Plug-ins register the same way
(``@register(...)`` on a :class:`~balancers.base.Balancer` subclass) in their own package and are
found by name when first asked for (:func:`balancer_info`): an entry point of group
``balancebench.balancers`` whose name is the registered name, or a dotted path
``"my_pkg.weighting:MyBalancer"`` (a class registered without a name is registered under its
dotted path). Either way they pass the same checks and the same contract suite
(``balancers.contract``) as a built-in one; a broken plug-in is a one-line
:class:`~balancers.plugins.PluginError`.
"""

from __future__ import annotations

import fnmatch
import inspect
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from balancers import plugins
from balancers.base import Balancer
from balancers.plugins import PluginError

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
#: where each registered balancer came from: built-in, entry point (dist), dotted path, or a module
_ORIGINS: dict[str, str] = {}
#: dotted paths of plug-ins registered under another name -> that name
_ALIASES: dict[str, str] = {}
BUILT_IN = "built-in"


def register(
    name: str | None = None,
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
    """Class decorator that registers a balancer under ``name`` (None: its dotted path
    ``module:ClassName``, the name a plug-in is then reached by); a duplicate name is an error."""

    def decorate(cls: B) -> B:
        if not (isinstance(cls, type) and issubclass(cls, Balancer)):
            raise TypeError(f"@register: {cls!r} is not a subclass of balancers.Balancer")
        key = name if name is not None else f"{cls.__module__}:{cls.__qualname__}"
        if not key or (name is not None and plugins.is_path(name)) or any(c.isspace() for c in key):
            raise ValueError(f"@register: invalid balancer name {key!r} (a word, or None for the dotted path)")
        if key in _REGISTRY:
            raise ValueError(f"balancer name {key!r} is already registered by {_REGISTRY[key].cls}")
        info = BalancerInfo(
            key, cls, description, paper, needs_closure, needs_model, needs_task_grads,
            has_parameters, needs_epoch_end, stochastic, stateful, needs_unclipped_step,
        )
        cls.registry_name = key  # type: ignore[attr-defined]
        cls.registry_info = info  # type: ignore[attr-defined]
        _REGISTRY[key] = info
        top = cls.__module__.split(".")[0]
        origin = "dotted path" if name is None else f"registered by {cls.__module__}"
        _ORIGINS[key] = BUILT_IN if top == "balancers" else origin
        return cls

    return decorate


def list_balancers(pattern: str = "*") -> list[str]:
    """Registered names matching the shell-style ``pattern``, in registration order: the built-in
    balancers and the plug-ins loaded so far (see :func:`available_balancers` for installed ones)."""
    _load_builtin()
    return [n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern)]


def available_balancers() -> list[str]:
    """The registered names, then the entry points of installed packages not loaded yet (loading
    one, :func:`balancer_info`, may fail: a broken plug-in)."""
    names = list_balancers()
    return names + [ep.name for ep in plugins.entry_points(plugins.BALANCER_GROUP) if ep.name not in names]


def balancer_origin(name: str) -> str:
    """Where a balancer comes from: ``built-in``, ``entry point (<dist> <version>)``, ``dotted
    path``, or ``registered by <module>`` (a class registered in a script)."""
    info = balancer_info(name)
    return _ORIGINS.get(name) or _ORIGINS[info.name]


def balancer_info(name: str) -> BalancerInfo:
    """Metadata of a balancer: a registered name, an installed entry point's name or a dotted path
    (the plug-in is loaded and registered on first use). Unknown names raise ValueError listing the
    valid ones; a broken plug-in raises :class:`~balancers.plugins.PluginError` (a ValueError)."""
    _load_builtin()
    if not isinstance(name, str):
        raise ValueError(f"a balancer name must be a string, got {name!r}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _ALIASES:
        return _REGISTRY[_ALIASES[name]]
    ep = plugins.entry_point(plugins.BALANCER_GROUP, name)
    if ep is not None:
        return _load_entry_point(ep)
    if plugins.is_path(name):
        return _load_path(name)
    valid = ", ".join(available_balancers())
    raise ValueError(f"unknown balancer {name!r}; valid names: {valid} "
                     "(or a plug-in's dotted path 'package.module:ClassName')")


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
    if balancer_origin(name) == BUILT_IN:
        return info.cls(n_tasks, **hparams)
    try:  # a plug-in's constructor: its value checks are ValueErrors, anything else is the plug-in's fault
        return info.cls(n_tasks, **hparams)
    except (ValueError, TypeError):
        raise
    except Exception as exc:
        raise PluginError(f"balancer plug-in {name!r}: the constructor raised {plugins.describe(exc)}") from exc


def _registered(cls: type, what: str) -> BalancerInfo:
    """The registry entry of a loaded plug-in class: it must carry its own ``@register`` metadata."""
    info = cls.__dict__.get("registry_info")
    if not isinstance(info, BalancerInfo) or _REGISTRY.get(info.name) is not info:
        raise PluginError(f"{what}: {cls.__module__}.{cls.__qualname__} has no registry metadata; decorate it "
                          "with @balancers.register(description=..., paper=..., needs_closure=..., ...)")
    return info


def _load_path(path: str) -> BalancerInfo:
    cls = plugins.load_class(path, "balancer", Balancer)
    info = _registered(cls, f"balancer plug-in {path!r}")
    if info.name != path:
        _ALIASES[path] = info.name
    if _ORIGINS[info.name].startswith("registered by"):
        _ORIGINS[info.name] = "dotted path" if info.name == path else f"dotted path {path}"
    return info


def _load_entry_point(ep: plugins.EntryPoint) -> BalancerInfo:
    what = f"balancer plug-in {ep.name!r} ({ep.origin}: {ep.value})"
    info = _registered(plugins.load_entry_point(ep, "balancer", Balancer), what)
    if info.name != ep.name:
        raise PluginError(f"{what}: the class is registered as {info.name!r}; give @register the entry "
                          f"point's name ({ep.name!r})")
    _ORIGINS[info.name] = ep.origin
    return info


def _load_builtin() -> None:
    # Importing the package registers the built-in balancers exactly once.
    import balancers  # noqa: F401
