"""The balancer contract (``balancers/base.py``), checked for every registered balancer.

The checks themselves are ``balancers.contract`` (the same ones ``balancebench check-balancer``
runs on a plug-in): this file turns each into one pytest test, ``test_<check name>``, parametrised
over ``list_balancers()`` (plus a few variants, see ``balancers/contract/problem.py``) and the
check's cases, so a newly registered balancer is tested here without anyone editing this file.
Capability-specific checks key off the registry metadata. Registry-wide checks follow.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from balancers import balancer_info, create_balancer, list_balancers
from balancers.contract import CHECKS, Check, Skipped
from balancers.contract.core import Case, ContractViolation, ensure, expect_raises
from tests.conftest import CONFIGS, N_TASKS, BalancerConfig, parametrize_configs

K = N_TASKS


def _case_param(case: Case) -> object:
    marks = [pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")] if case.needs_cuda else []
    return pytest.param(case, id=case.id or None, marks=marks)


def _contract_test(check: Check) -> Callable[..., None]:
    """``test_<check.name>``: the check on every applicable configuration and case."""

    @parametrize_configs([c for c in CONFIGS if check.applies(c)])
    @pytest.mark.parametrize("case", [_case_param(c) for c in check.cases])
    def test(config: BalancerConfig, case: Case) -> None:
        try:
            check.run(config, case)
        except Skipped as exc:
            pytest.skip(str(exc))

    test.__name__ = test.__qualname__ = f"test_{check.name}"
    test.__doc__ = check.doc
    return test


for _check in CHECKS:
    globals()[f"test_{_check.name}"] = _contract_test(_check)


def test_every_check_has_a_unique_name_and_a_rule() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names)) and len(names) >= 20
    assert all(c.fn.__doc__ for c in CHECKS), [c.name for c in CHECKS if not c.fn.__doc__]


def test_the_helpers_fail_when_they_should() -> None:
    """The contract's own assertions can fail: ``ensure`` and ``expect_raises`` raise ContractViolation."""
    with pytest.raises(ContractViolation, match="broken"):
        ensure(False, "broken")
    with pytest.raises(ContractViolation, match="did not raise ValueError"):
        with expect_raises(ValueError):
            pass
    with pytest.raises(ContractViolation, match="does not match"):
        with expect_raises(ValueError, "n_tasks"):
            raise ValueError("something else")


def test_unknown_name_lists_the_valid_ones() -> None:
    for call in (lambda: create_balancer("no-such-balancer", K), lambda: balancer_info("no-such-balancer")):
        with pytest.raises(ValueError, match="no-such-balancer") as err:
            call()
        for name in list_balancers():
            assert name in str(err.value)


def test_a_balancer_nested_in_another_module_checkpoints() -> None:
    """Extra state (optimizer, generator) travels under the parent's key prefix."""
    from balancers import create_balancer

    parent = torch.nn.ModuleDict({"balancer": create_balancer("famo", 3)})
    losses = torch.tensor([1.0, 2.0, 3.0])
    parent["balancer"](losses)
    parent["balancer"].step(lambda params=None: losses * 0.5)
    state = parent.state_dict()
    assert "balancer._extra_state" in state
    clone = torch.nn.ModuleDict({"balancer": create_balancer("famo", 3)})
    clone.load_state_dict(state)
    for module in (parent, clone):
        module["balancer"](losses)
        module["balancer"].step(lambda params=None: losses * 0.25)
    torch.testing.assert_close(clone["balancer"].logits, parent["balancer"].logits)
