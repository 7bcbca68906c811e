"""The contract's checks of how a balancer is built, named and driven: constructor, ``repr``,
registry metadata, and the lifecycle of ``balancers/base.py`` (closure, epoch hook, hooks that
must leave the model alone).

Each function takes a :class:`~balancers.contract.problem.BalancerConfig` (and its case's keyword
arguments) and raises :class:`~balancers.contract.core.ContractViolation` when the balancer breaks
the rule its docstring states. :data:`CHECKS` lists them with their cases.
"""

from __future__ import annotations

import ast
from typing import Any

import torch
from torch import Tensor

from balancers.base import Balancer
from balancers.contract.checks import K, accepted_hparams
from balancers.contract.core import Case, Check, Skipped, assert_same_trajectory, ensure, expect_raises
from balancers.contract.problem import BalancerConfig, make_problem
from balancers.registry import balancer_info, create_balancer, list_balancers, register


# ------------------------------------------------------------------------ constructor, repr
def fewer_than_two_tasks_raise(config: BalancerConfig, n_tasks: int) -> None:
    """``n_tasks`` < 2 is a ValueError naming ``n_tasks`` (a balancer is multi-task)."""
    with expect_raises(ValueError, r"n_tasks", f"{config} with n_tasks={n_tasks}"):
        create_balancer(config.name, n_tasks, **config.hparams(max(n_tasks, 0)))


def unknown_hyperparameter_is_named(config: BalancerConfig) -> None:
    """An unknown keyword is a ValueError naming it and listing the accepted ones."""
    with expect_raises(ValueError, r"bogus_hparam", f"{config} with bogus_hparam=1") as err:
        create_balancer(config.name, K, **config.hparams(), bogus_hparam=1)
    for name in accepted_hparams(config):
        ensure(name in str(err.value), f"{config}: the message does not list the accepted {name!r}: {err.value}")


def repr_is_the_constructor_call_and_str_the_registry_name(config: BalancerConfig) -> None:
    """``repr`` is ``Class(n_tasks=K, <hparams()>)`` and rebuilds an equal balancer; ``str`` is the
    registry name."""
    b = config.build()
    cls = type(b)
    text = repr(b)
    ensure(text.startswith(f"{cls.__name__}(n_tasks={K}") and text.endswith(")"), f"{config}: repr {text}")
    call = ast.parse(text, mode="eval").body
    ensure(isinstance(call, ast.Call) and not call.args, f"{config}: repr {text} is not a keyword call")
    ensure([kw.arg for kw in call.keywords] == ["n_tasks", *b.hparams()],
           f"{config}: repr {text} does not list n_tasks and hparams() {list(b.hparams())}")
    rebuilt = eval(text, {cls.__name__: cls})  # noqa: S307 - the balancer's own repr
    ensure(type(rebuilt) is cls and repr(rebuilt) == text, f"{config}: eval(repr) gives {rebuilt!r}")
    ensure(repr(create_balancer(config.name, K, **b.hparams())) == text,
           f"{config}: create_balancer(**hparams()) does not rebuild {text}")
    for key, value in dict(config.extra).items():
        ensure(b.hparams()[key] == value, f"{config}: hparams()[{key!r}] = {b.hparams().get(key)!r}, built with {value!r}")
    ensure(str(b) == config.info.name == cls.registry_name,
           f"{config}: str {str(b)!r}, registry name {config.info.name!r}")


def duplicate_registration_is_an_error(config: BalancerConfig) -> None:
    """Registering another class under the same name fails and leaves the registry as it was."""
    name = config.info.name
    original = balancer_info(name).cls

    class Impostor(Balancer):
        pass

    with expect_raises(ValueError, None, f"registering another class as {name!r}"):
        register(name, description="impostor", paper="none")(Impostor)
    ensure(balancer_info(name).cls is original, f"{name!r} was re-registered")
    ensure(list_balancers().count(name) == 1, f"{name!r} is listed twice")


# ---------------------------------------------------------------- metadata and lifecycle
def metadata_matches_the_class(config: BalancerConfig) -> None:
    """The metadata names this class, has a description and a paper; ``has_parameters`` is true
    exactly when ``named_learnables()`` yields the balancer's own Parameters (then it is stateful);
    a balancer that does not need the model refuses ``attach``."""
    info = config.info
    b = config.build()
    ensure(info.cls is type(b) and info.description and info.paper,
           f"{config}: metadata {info} does not describe {type(b).__name__} (description and paper needed)")
    learnables = dict(b.named_learnables())
    ensure(bool(learnables) == info.has_parameters, f"{config}: has_parameters={info.has_parameters} but "
                                                    f"named_learnables() gives {list(learnables)}")
    own = {id(p) for p in b.parameters()}
    ensure(all(isinstance(p, torch.nn.Parameter) and id(p) in own for p in learnables.values()),
           f"{config}: named_learnables() are not the balancer's own Parameters")
    if info.has_parameters:
        ensure(info.stateful, f"{config}: has_parameters but not stateful")
    if not info.needs_model:
        p = make_problem(config)
        with expect_raises(TypeError, None, f"{config}.attach() although needs_model=False"):
            b.attach(p.model, p.optimizer)


def closure_is_ignored_unless_used(config: BalancerConfig) -> None:
    """A balancer whose instance does not use the closure (``uses_closure``, which can only narrow
    the registry's ``needs_closure``) runs the same with ``closure=None``: what a trainer then passes."""
    b = config.build()
    uses = getattr(b, "uses_closure", config.info.needs_closure)
    ensure(config.info.needs_closure or not uses, f"{config} uses the closure but its metadata says it does not")
    if uses:
        raise Skipped("uses the closure")

    def forbidden(params: Any = None) -> Tensor:
        raise AssertionError(f"{config} called the closure although it does not use it")

    with_closure, _ = make_problem(config).run(5)
    never_called, _ = make_problem(config).run(5, closure=forbidden)
    assert_same_trajectory(with_closure, never_called, f"{config} with a closure it must not call")
    p = make_problem(config)
    for t in range(5):
        loss = p.balancer(p.losses(), closure=None)
        p.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        p.balancer.after_backward()
        p.optimizer.step()
        p.balancer.step(None)
        if config.info.needs_epoch_end and (t + 1) % p.epoch_every == 0:
            p.balancer.epoch_end()
        ensure(torch.equal(p.balancer.weights, with_closure[t]), f"{config} with closure=None, step {t}")


def epoch_end_matters_only_when_needed(config: BalancerConfig) -> None:
    """``epoch_end()`` changes the trajectory exactly when the metadata says ``needs_epoch_end``."""
    with_epochs, _ = make_problem(config, epoch_every=1).run(6, epoch_end=True)
    without, _ = make_problem(config, epoch_every=1).run(6, epoch_end=False)
    same = all(torch.equal(a, b) for a, b in zip(with_epochs, without))
    ensure(same != config.info.needs_epoch_end, f"{config}: needs_epoch_end={config.info.needs_epoch_end} but "
                                                f"epoch_end() {'changes nothing' if same else 'changes the weights'}")


def balancer_never_steps_or_backprops_the_model(config: BalancerConfig) -> None:
    """The call fills no ``.grad`` and moves no parameter; ``step()`` touches neither."""
    p = make_problem(config)
    p.run(2)
    p.optimizer.zero_grad(set_to_none=True)
    params = {n: t.detach().clone() for n, t in p.model.named_parameters()}
    _, loss = p.call()
    ensure(all(t.grad is None for t in p.model.parameters()), f"{config} filled .grad in its call")
    ensure(all(torch.equal(t, params[n]) for n, t in p.model.named_parameters()), f"{config} moved the model")
    loss.backward()
    p.balancer.after_backward()  # the one hook that may change .grad (Nash-MTL's clipping)
    p.optimizer.step()
    params = {n: t.detach().clone() for n, t in p.model.named_parameters()}
    grads = {n: t.grad.clone() for n, t in p.model.named_parameters()}
    p.balancer.step(p.closure)
    for n, t in p.model.named_parameters():
        ensure(torch.equal(t, params[n]) and torch.equal(t.grad, grads[n]), f"{config} step() touched {n}")


def after_backward_only_rescales_gradients(config: BalancerConfig) -> None:
    """The hook never moves parameters; it leaves ``.grad`` alone unless the class overrides it, and
    then only shrinks it (clipping), keeping every parameter's gradient direction."""
    p = make_problem(config, dtype=torch.float64)
    p.run(2)
    _, loss = p.call()
    p.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    params = {n: t.detach().clone() for n, t in p.model.named_parameters()}
    grads = {n: t.grad.clone() for n, t in p.model.named_parameters()}
    p.balancer.after_backward()
    overrides = type(p.balancer).after_backward is not Balancer.after_backward
    for n, t in p.model.named_parameters():
        ensure(torch.equal(t, params[n]), f"{config} after_backward moved {n}")
        if not overrides:
            ensure(torch.equal(t.grad, grads[n]), f"{config} after_backward changed {n}.grad without overriding it")
        else:
            ratio = t.grad.norm() / grads[n].norm()
            ensure(float(ratio) <= 1 + 1e-12, f"{config} after_backward grew {n}.grad")
            torch.testing.assert_close(t.grad, ratio * grads[n], rtol=1e-12, atol=0)


CHECKS: list[Check] = [
    Check("fewer_than_two_tasks_raise", fewer_than_two_tasks_raise,
          tuple(Case(str(n), {"n_tasks": n}) for n in (1, 0, -1))),
    Check("unknown_hyperparameter_is_named", unknown_hyperparameter_is_named),
    Check("repr_is_the_constructor_call_and_str_the_registry_name", repr_is_the_constructor_call_and_str_the_registry_name),
    Check("duplicate_registration_is_an_error", duplicate_registration_is_an_error),
    Check("metadata_matches_the_class", metadata_matches_the_class),
    Check("closure_is_ignored_unless_used", closure_is_ignored_unless_used),
    Check("epoch_end_matters_only_when_needed", epoch_end_matters_only_when_needed),
    Check("balancer_never_steps_or_backprops_the_model", balancer_never_steps_or_backprops_the_model),
    Check("after_backward_only_rescales_gradients", after_backward_only_rescales_gradients),
]
