"""The config schema: each value's type and range declared once, checked where it is loaded.

A config field (or a constructor keyword argument) declares its range in its type hint with
``typing.Annotated``: ``epochs: Annotated[int, Range(ge=1)] = 10``. :func:`coerce` checks a value
against such a hint (YAML reads ``1e-3`` as a string, so numbers in strings are converted) and
raises a one-line :class:`~experiments.errors.ConfigError` naming the dotted path of the value.
:func:`build` does the same for a whole dataclass (unknown keys are rejected), and
:func:`check_options` for the free option dicts (balancer hyperparameters, model and benchmark
options) against the signature of the constructor they are passed to, whose type hints are their
schema. :func:`naming_errors` turns a constructor's own ``ValueError``/``TypeError`` into a
ConfigError naming the option it is about.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from experiments.errors import ConfigError, UserError


@dataclass(frozen=True)
class Range:
    """Bounds on a number: ``Range(ge=1)`` is ``x >= 1``, ``Range(gt=0, lt=1)`` is ``0 < x < 1``."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def check(self, value: Any, path: str) -> None:
        tests = (("ge", ">=", lambda b: value >= b), ("gt", ">", lambda b: value > b),
                 ("le", "<=", lambda b: value <= b), ("lt", "<", lambda b: value < b))
        for name, symbol, holds in tests:
            bound = getattr(self, name)
            if bound is not None and not holds(bound):
                raise ConfigError(f"{path} must be {symbol} {bound}, got {value!r}")

    def describe(self) -> str:
        parts = [f"{s} {getattr(self, n)}" for n, s in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
                 if getattr(self, n) is not None]
        return " and ".join(parts)


@dataclass(frozen=True)
class OneOf:
    """A value from a fixed set: ``OneOf(("adam", "adamw", "sgd"))``."""

    choices: tuple[Any, ...]

    def check(self, value: Any, path: str) -> None:
        if value not in self.choices:
            raise ConfigError(f"{path} must be one of {', '.join(map(str, self.choices))}, got {value!r}")


@dataclass(frozen=True)
class Matches:
    """A string matching a regular expression (``description`` is what the message shows)."""

    pattern: str
    description: str

    def check(self, value: Any, path: str) -> None:
        if not re.fullmatch(self.pattern, value):
            raise ConfigError(f"{path} must be {self.description}, got {value!r}")


@dataclass(frozen=True)
class NonEmpty:
    """A string or list with at least one element."""

    def check(self, value: Any, path: str) -> None:
        if len(value) == 0:
            raise ConfigError(f"{path} must not be empty, got {value!r}")


@dataclass(frozen=True)
class Runtime:
    """Marks a field that says how a run executes, not what it trains (progress bar, threads,
    device, output place): it may differ when a run is resumed."""

    def check(self, value: Any, path: str) -> None:
        return None


PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]


def hints(obj: Any) -> dict[str, Any]:
    """Type hints with their ``Annotated`` extras ({} when they cannot be resolved)."""
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception:  # a plug-in's hint naming something not importable: no types to check
        return {}


def _number(value: Any, hint: type, path: str) -> int | float:
    """An int or finite float from a number or a numeric string (bools are not numbers)."""
    kind = "an integer" if hint is int else "a number"
    if isinstance(value, str):
        try:
            value = int(value) if hint is int and re.fullmatch(r"\s*[-+]?\d+\s*", value) else float(value)
        except ValueError:
            raise ConfigError(f"{path}: expected {kind}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{path}: expected {kind}, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{path}: expected a finite number, got {value!r}")
    if hint is int:
        if isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return int(value)
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range
        raise ConfigError(f"{path}: expected a finite number, got {value!r}") from None


def coerce(value: Any, hint: Any, path: str) -> Any:
    """``value`` checked (and converted where lossless) against ``hint``; ConfigError if it does not fit."""
    origin = typing.get_origin(hint)
    if origin is typing.Annotated:
        base, *extras = typing.get_args(hint)
        value = coerce(value, base, path)
        for extra in extras:
            if hasattr(extra, "check"):
                extra.check(value, path)
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{path}: invalid value {value!r}")
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    if hint is dict or origin in (dict, Mapping):
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{path}: expected a mapping with names as keys, got {value!r}")
        item = typing.get_args(hint)[1] if len(typing.get_args(hint)) == 2 else Any
        return {k: coerce(v, item, f"{path}.{k}") for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if hint in (int, float):
        return _number(value, hint, path)
    if hint is list or origin in (list, tuple, Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} values, got {value!r}")
            return [coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args))]
        item = args[0] if args else Any
        return [coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value  # Any, or a type the schema does not know (e.g. a Tensor): the constructor checks it


def build(cls: type, data: Any, path: str = "") -> Any:
    """An instance of the dataclass ``cls`` from a mapping, every field checked against its hint."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {data!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in data if k not in names]
    if unknown:
        where = f"{path}.{unknown[0]}" if path else str(unknown[0])
        raise ConfigError(f"unknown config key {where!r}; valid keys here: {', '.join(names)}")
    types_ = hints(cls)
    return cls(**{k: coerce(v, types_[k], f"{path}.{k}" if path else k) for k, v in data.items()})


def fields(cls: type, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted path, type hint) of every leaf field of a config dataclass, nested ones included."""
    for name, hint in hints(cls).items():
        path = f"{prefix}{name}"
        if dataclasses.is_dataclass(hint):
            yield from fields(hint, f"{path}.")
        else:
            yield path, hint


def runtime_fields(cls: type, prefix: str = "") -> set[str]:
    """Dotted paths of the fields marked :class:`Runtime`."""
    return {path for path, hint in fields(cls, prefix) if any(isinstance(e, Runtime) for e in extras(hint))}


def extras(hint: Any) -> list[Any]:
    """The ``Annotated`` metadata of a hint, looking inside ``X | None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return [e for arg in typing.get_args(hint) for e in extras(arg)]
    return list(getattr(hint, "__metadata__", ()))


def check_options(fn: Callable[..., Any], options: Mapping[str, Any], path: str,
                  skip: Sequence[str] = ("self",), origins: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``options`` for ``fn(**options)``: unknown names refused unless ``fn`` takes ``**kwargs``,
    values checked against ``fn``'s type hints. ``path`` is where the options are in the config
    (``origins[name]``, where given, for an option that came from elsewhere in it)."""
    if not isinstance(options, Mapping) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"{path}: expected a mapping with names as keys, got {options!r}")
    params = {n: p for n, p in inspect.signature(fn).parameters.items() if n not in skip}
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in options if k not in named)
    where = {k: (origins or {}).get(k, f"{path}.{k}") for k in options}
    if unknown and not takes_any:
        raise ConfigError(f"{where[unknown[0]]}: unknown option; valid: {', '.join(named) or 'none'}")
    types_ = hints(fn.__init__ if isinstance(fn, type) else fn)
    return {k: coerce(v, types_[k], where[k]) if k in types_ else v for k, v in options.items()}


def _named_option(message: str, options: Mapping[str, Any]) -> str | None:
    """The option a constructor's error message is about: the first name it mentions, else the
    only option whose value it quotes."""
    found = {key: m.start() for key in options
             if (m := re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message))}
    if found:
        return min(found, key=found.__getitem__)
    quoted = [k for k, v in options.items() if isinstance(v, (int, float, str)) and str(v)
              and re.search(rf"(?<![\w.-]){re.escape(str(v))}(?![\w.])", message)]
    return quoted[0] if len(quoted) == 1 else None


@contextlib.contextmanager
def naming_errors(options: Mapping[str, Any], prefix: str, origins: Mapping[str, str] | None = None,
                  kinds: tuple[type[BaseException], ...] = (ValueError, TypeError)) -> Iterator[None]:
    """Turn a constructor's ``kinds`` errors into a one-line ConfigError that starts with the config
    path of the option it names (``prefix.<name>``, or ``origins[name]`` for an option that came
    from elsewhere in the config), else with ``prefix``."""
    try:
        yield
    except UserError:
        raise
    except kinds as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        key = _named_option(message, options)
        where = prefix if key is None else (origins or {}).get(key, f"{prefix}.{key}")
        raise ConfigError(f"{where}: {message}") from exc
