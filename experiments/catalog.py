"""What ``balancebench list`` and ``balancebench check-balancer`` report: every balancer and
benchmark with its origin, and the balancer contract run on one of them.

Origins: ``built-in``, ``entry point (<dist> <version>)`` for an installed package's entry point
(groups ``balancebench.balancers`` / ``balancebench.benchmarks``), ``dotted path`` for a class named
``package.module:ClassName``. A plug-in that cannot be loaded is listed with the one-line reason,
never hidden; asked for by name, it is a :class:`~experiments.errors.UserError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from balancers import Balancer, PluginError, available_balancers, balancer_info, balancer_origin, plugins
from balancers.contract import BalancerConfig, Outcome, run_contract
from experiments.benchmarks import Benchmark, available_benchmarks, benchmark_class, benchmark_origin
from experiments.errors import UserError
from experiments.schema import check_options, naming_errors


@dataclass(frozen=True)
class Entry:
    """One row of ``balancebench list``: ``detail`` is the description, or why it is unavailable."""

    name: str
    origin: str
    detail: str
    variants: tuple[str, ...] = ()
    available: bool = True


def _balancer_entry(name: str) -> Entry:
    try:
        info = balancer_info(name)
    except PluginError as exc:
        ep = plugins.entry_point(plugins.BALANCER_GROUP, name)
        return Entry(name, ep.origin if ep else "dotted path", f"unavailable: {exc}", available=False)
    return Entry(name, balancer_origin(name), info.description)


def _benchmark_entry(name: str) -> Entry:
    try:
        cls = benchmark_class(name)
    except (ImportError, UserError) as exc:  # a built-in's optional dependency, or a broken plug-in
        return Entry(name, benchmark_origin(name), f"unavailable: {exc}", available=False)
    doc = next(iter((cls.__doc__ or name).strip().splitlines()), name)
    return Entry(name, benchmark_origin(name), doc, tuple(cls.variants))


def kind_of(reference: str) -> str:
    """``"balancer"`` or ``"benchmark"``: what the dotted path ``reference`` names."""
    obj = plugins.load_path(reference, "plug-in") if plugins.is_path(reference) else None
    if obj is None:
        raise UserError(f"{reference!r} is not a dotted path 'package.module:ClassName'")
    if isinstance(obj, type) and issubclass(obj, Balancer):
        return "balancer"
    if isinstance(obj, type) and issubclass(obj, Benchmark):
        return "benchmark"
    raise UserError(f"plug-in {reference!r}: {obj!r} is neither a balancers.Balancer nor an "
                    "experiments.benchmarks.Benchmark subclass")


def catalog(references: Iterable[str] = ()) -> dict[str, list[Entry]]:
    """``{"balancers": [...], "benchmarks": [...]}``: the built-ins, the installed entry points,
    then the dotted paths given in ``references`` (each loaded, so a broken one says why)."""
    extra: dict[str, list[str]] = {"balancer": [], "benchmark": []}
    for reference in references:
        try:
            extra[kind_of(reference)].append(reference)
        except PluginError as exc:
            raise UserError(str(exc)) from exc
    broken = []
    for reference in extra["balancer"]:  # loading registers it (under its own name, if it has one)
        try:
            balancer_info(reference)
        except PluginError:
            broken.append(reference)
    balancers = [*available_balancers(), *broken]
    benchmarks = [*available_benchmarks(), *extra["benchmark"]]
    return {"balancers": [_balancer_entry(n) for n in balancers],
            "benchmarks": [_benchmark_entry(n) for n in benchmarks]}


def contract_config(name: str, hparams: dict[str, Any]) -> BalancerConfig:
    """The balancer ``name`` with ``hparams``, checked as a run config checks them and built once,
    so that a balancer that cannot be built is one line here, not a failure of every check."""
    try:
        info = balancer_info(name)
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    hparams = check_options(info.cls.__init__, hparams, "--hparam", ("self", "n_tasks"))
    config = BalancerConfig(name, tuple(sorted(hparams.items())))
    with naming_errors(hparams, "--hparam"):
        try:
            config.build()
        except PluginError as exc:
            raise UserError(str(exc)) from exc
        except TypeError as exc:
            raise UserError(f"balancer {name!r} cannot be built with {hparams or 'its defaults'} ({exc}); "
                            "give its required hyperparameters with --hparam NAME=VALUE") from exc
    return config


def check_balancer(name: str, hparams: dict[str, Any] | None = None) -> list[Outcome]:
    """The balancer contract (``balancers.contract``) run on ``name`` built with ``hparams``."""
    return run_contract(contract_config(name, dict(hparams or {})))


__all__ = ["Entry", "catalog", "check_balancer", "contract_config", "kind_of"]
