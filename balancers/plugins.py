"""Finding plug-ins: classes named by a dotted path (``"my_pkg.weighting:MyBalancer"``) or by the
entry points of installed packages.

Both registries use it, the balancers' (``balancers/registry.py``, group ``balancebench.balancers``)
and the benchmarks' (``experiments/benchmarks``, group ``balancebench.benchmarks``). Whatever goes
wrong while loading a plug-in (its module does not import, the attribute is missing, it is not a
class) is a :class:`PluginError`: one line that names the plug-in and says what to fix; the chained
exception keeps the plug-in's own traceback for ``--debug``.

>>> load_path("collections:OrderedDict", "example").__name__
'OrderedDict'
>>> is_path("famo"), is_path("my_pkg.weighting:MyBalancer")
(False, True)
"""

from __future__ import annotations

import functools
import importlib
import re
from dataclasses import dataclass
from importlib import metadata
from typing import Any

#: ``package.module:Attribute`` (the attribute may be dotted: ``module:Outer.Inner``)
_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")

BALANCER_GROUP = "balancebench.balancers"
BENCHMARK_GROUP = "balancebench.benchmarks"


class PluginError(ValueError):
    """A plug-in that cannot be used: one line naming it and what went wrong."""


@dataclass(frozen=True)
class EntryPoint:
    """One advertised plug-in: its name, ``module:attr`` value and the distribution that ships it."""

    name: str
    value: str
    dist: str

    @property
    def origin(self) -> str:
        return f"entry point ({self.dist})"


def is_path(name: str) -> bool:
    """Whether ``name`` is a dotted path ``module:Attribute`` (registry names never hold a colon)."""
    return bool(_PATH.fullmatch(name))


def describe(exc: BaseException) -> str:
    """``TypeName: message`` on one line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_path(path: str, kind: str, what: str | None = None) -> Any:
    """The object that ``"module:attr"`` names. ``kind`` (``"balancer"``) and ``what`` (default
    ``<kind> plug-in '<path>'``) name it in the messages."""
    what = what or f"{kind} plug-in {path!r}"
    if not is_path(path):
        raise PluginError(f"{what}: expected a dotted path 'package.module:ClassName'")
    module_name, attr = path.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the plug-in's own import: any error is the plug-in's, named here
        raise PluginError(f"{what}: cannot import module {module_name!r} ({describe(exc)})") from exc
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{what}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_class(path: str, kind: str, base: type) -> type:
    """The class ``path`` names, checked to be a subclass of ``base``."""
    obj = load_path(path, kind)
    check_class(obj, base, f"{kind} plug-in {path!r}")
    return obj


def check_class(obj: Any, base: type, what: str) -> None:
    """PluginError unless ``obj`` is a subclass of ``base`` (``what`` names the plug-in)."""
    if not isinstance(obj, type):
        raise PluginError(f"{what}: expected a class derived from {base.__module__}.{base.__qualname__}, "
                          f"got {type(obj).__name__} {obj!r}")
    if not issubclass(obj, base):
        raise PluginError(f"{what}: {obj.__module__}.{obj.__qualname__} does not derive from "
                          f"{base.__module__}.{base.__qualname__}")


@functools.lru_cache(maxsize=None)
def entry_points(group: str) -> tuple[EntryPoint, ...]:
    """The plug-ins installed packages advertise in ``group`` (read once per process; a name
    advertised twice is kept once, the first distribution's)."""
    found: dict[str, EntryPoint] = {}
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        label = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "unknown distribution"
        found.setdefault(ep.name, EntryPoint(ep.name, ep.value, label))
    return tuple(found.values())


def entry_point(group: str, name: str) -> EntryPoint | None:
    """The installed entry point ``name`` of ``group``, if any."""
    return next((ep for ep in entry_points(group) if ep.name == name), None)


def load_entry_point(ep: EntryPoint, kind: str, base: type) -> type:
    """The class an entry point names, checked to be a subclass of ``base``."""
    what = f"{kind} plug-in {ep.name!r} ({ep.origin}: {ep.value})"
    obj = load_path(ep.value, kind, what)
    check_class(obj, base, what)
    return obj
