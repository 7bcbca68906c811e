"""The ``>>>`` examples in the balancers' docstrings run as tests (an example that runs cannot rot)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import balancers

MODULES = sorted(m.name for m in pkgutil.iter_modules(balancers.__path__, "balancers."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples of {name} failed (see output)"


def test_the_new_balancers_carry_examples() -> None:
    finder = doctest.DocTestFinder()
    for name in ("balancers.imtl_l", "balancers.gls", "balancers.stch"):
        examples = sum(len(t.examples) for t in finder.find(importlib.import_module(name)))
        assert examples > 0, f"{name} has no docstring example"
