"""The balancer contract (``balancers/base.py``), checked for every registered balancer.

Parametrised over ``list_balancers()`` (plus a few variants, see ``tests/conftest.py``): a newly
registered balancer is tested here without anyone editing this file. Capability-specific checks key
off the registry metadata.
"""

from __future__ import annotations

import ast
import inspect
import io
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor

from balancers import Balancer, balancer_info, create_balancer, list_balancers, register
from tests.conftest import CONFIGS, N_TASKS, BalancerConfig, make_problem, parametrize_configs

K = N_TASKS
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


def accepted_hparams(config: BalancerConfig) -> list[str]:
    return [p for p in inspect.signature(config.info.cls.__init__).parameters if p not in ("self", "n_tasks")]


def assert_valid_weights(b: Balancer, w: Tensor, atol: float = 1e-5) -> None:
    assert w.shape == (b.n_tasks,), f"{b}: weights of shape {tuple(w.shape)}"
    assert torch.isfinite(w).all(), f"{b}: non-finite weights {w.tolist()}"
    if b.nonnegative_weights:
        assert (w >= 0).all(), f"{b}: negative weights {w.tolist()} although nonnegative_weights"
    if b.weights_sum_to_one:
        assert abs(float(w.double().sum()) - 1.0) <= atol, f"{b}: weights {w.tolist()} do not sum to 1"


def assert_same_trajectory(a: list[Tensor], b: list[Tensor], what: str) -> None:
    assert len(a) == len(b)
    for t, (x, y) in enumerate(zip(a, b)):
        assert torch.equal(x, y), f"{what}: step {t}: {x.tolist()} != {y.tolist()}"


def assert_state_equal(a: Any, b: Any, path: str = "state") -> None:
    """Recursive exact equality of (nested) state dicts holding tensors, containers and scalars."""
    if isinstance(a, Tensor):
        assert isinstance(b, Tensor) and a.dtype == b.dtype and torch.equal(a, b), f"{path} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{path}: keys {sorted(map(str, a))} != {sorted(map(str, b))}"
        for k in a:
            assert_state_equal(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), f"{path} differs"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_state_equal(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


# ------------------------------------------------------------------------------ outputs
@parametrize_configs()
def test_output_is_a_finite_scalar_and_weights_are_valid(config: BalancerConfig) -> None:
    p = make_problem(config)
    for _ in range(8):
        loss = p.train_step()
        assert loss.shape == (), f"{config}: output of shape {tuple(loss.shape)}"
        assert torch.isfinite(loss)
        w = p.balancer.weights
        assert not w.requires_grad
        assert_valid_weights(p.balancer, w)


@parametrize_configs()
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_dtype_and_device_are_kept(config: BalancerConfig, dtype: torch.dtype, device: str) -> None:
    p = make_problem(config, dtype=dtype, device=device)
    for _ in range(4):
        losses, loss = p.call()
        assert losses.dtype == dtype and losses.device.type == device  # the problem itself
        assert loss.dtype == dtype, f"{config}: {dtype} losses gave a {loss.dtype} loss"
        assert loss.device == losses.device, f"{config}: losses on {losses.device}, loss on {loss.device}"
        assert p.balancer.weights.device == losses.device
        assert torch.isfinite(loss) and torch.isfinite(p.balancer.weights).all()
        p.finish(loss)


@parametrize_configs()
def test_weights_are_the_gradient_of_the_output(config: BalancerConfig) -> None:
    """``weights`` == d loss / d losses_i of the last call (float64 losses, 1e-6 relative)."""
    p = make_problem(config, dtype=torch.float64)
    for _ in range(6):
        losses, loss = p.call()
        (grad,) = torch.autograd.grad(loss, losses, retain_graph=True)
        w = p.balancer.weights
        torch.testing.assert_close(w.double(), grad, rtol=1e-6, atol=1e-9 * float(grad.abs().max()),
                                   msg=lambda m: f"{config}: weights != d loss / d losses: {m}")
        p.finish(loss)


# ------------------------------------------------------------------------------- state
@parametrize_configs()
def test_state_dict_round_trip_resumes_exactly(config: BalancerConfig) -> None:
    p = make_problem(config)
    p.run(5)
    buf = io.BytesIO()
    torch.save({"model": p.model.state_dict(), "optimizer": p.optimizer.state_dict(),
                "balancer": p.balancer.state_dict(), "steps": p.steps_done}, buf)
    weights, outputs = p.run(5)

    buf.seek(0)
    ckpt = torch.load(buf)  # torch's default, weights_only=True: the state must be plain data
    q = make_problem(config)  # identical fresh copies of model, optimizer and balancer
    q.model.load_state_dict(ckpt["model"])
    q.optimizer.load_state_dict(ckpt["optimizer"])
    q.balancer.load_state_dict(ckpt["balancer"])
    q.steps_done = ckpt["steps"]
    resumed_weights, resumed_outputs = q.run(5)
    assert_same_trajectory(weights, resumed_weights, f"{config} resumed from state_dict (weights)")
    assert_same_trajectory(outputs, resumed_outputs, f"{config} resumed from state_dict (loss)")


@parametrize_configs()
def test_state_dict_loaded_in_memory_shares_nothing(config: BalancerConfig) -> None:
    """Loading another live balancer's state_dict copies it: the two then run independently."""
    p = make_problem(config)
    p.run(5)
    q = make_problem(config)
    q.restore_model(p.snapshot())  # model and optimizer copied; the balancer's state is not:
    q.balancer.load_state_dict(p.balancer.state_dict())
    weights, _ = p.run(5)
    clone_weights, _ = q.run(5)
    assert_same_trajectory(weights, clone_weights, f"{config} loaded from a live balancer's state_dict")


@parametrize_configs()
def test_stateful_metadata_is_truthful(config: BalancerConfig) -> None:
    """A stateless balancer, rebuilt fresh mid-run, continues identically; a stateful one does not."""
    p = make_problem(config)
    p.run(5)
    snap = p.snapshot()
    weights, _ = p.run(5)

    q = make_problem(config)
    q.restore_model(snap)  # same model and optimizer, fresh balancer
    fresh_weights, _ = q.run(5)
    same = all(torch.equal(a, b) for a, b in zip(weights, fresh_weights))
    assert same != config.info.stateful, (
        f"{config}: metadata stateful={config.info.stateful} but a fresh balancer "
        f"{'continues identically' if same else 'diverges'}"
    )


@parametrize_configs()
def test_reset_returns_to_the_fresh_state(config: BalancerConfig) -> None:
    p = make_problem(config)
    start = p.snapshot()
    first, first_out = p.run(5)
    p.run(3)
    p.balancer.reset()
    assert_state_equal(p.balancer.state_dict(), config.build().state_dict(), f"{config} after reset")
    p.restore_model(start)
    again, again_out = p.run(5)
    assert_same_trajectory(first, again, f"{config} after reset (weights)")
    assert_same_trajectory(first_out, again_out, f"{config} after reset (loss)")
    fresh, _ = make_problem(config).run(5)  # a fresh instance on an identical fresh problem
    assert_same_trajectory(fresh, again, f"{config} after reset vs fresh (weights)")


@parametrize_configs()
def test_same_seed_same_trajectory_regardless_of_global_rng(config: BalancerConfig) -> None:
    runs = []
    for global_seed in (1, 2):
        p = make_problem(config)
        torch.manual_seed(global_seed)  # randomness must be owned by the balancer, never global
        runs.append(p.run(6))
    assert_same_trajectory(runs[0][0], runs[1][0], f"{config}: same seed (weights)")
    assert_same_trajectory(runs[0][1], runs[1][1], f"{config}: same seed (loss)")


@parametrize_configs([c for c in CONFIGS if c.info.stochastic])
def test_stochastic_balancers_take_a_seed_and_it_matters(config: BalancerConfig) -> None:
    assert "seed" in accepted_hparams(config), f"{config} is stochastic but takes no seed"
    w1, _ = make_problem(config, balancer_overrides={"seed": 1}).run(4)
    w2, _ = make_problem(config, balancer_overrides={"seed": 2}).run(4)
    gap = max(float((a - b).abs().max()) for a, b in zip(w1, w2))
    assert gap > 1e-6, f"{config}: seeds 1 and 2 give the same weights"


# ------------------------------------------------------------------------ equivariance
PERM = [2, 0, 1]


@parametrize_configs()
def test_permuting_tasks_permutes_weights(config: BalancerConfig) -> None:
    """Task j of the permuted problem is task PERM[j] of the original (heads, targets, hparams)."""
    if config.info.stochastic:
        if config.info.needs_model:
            pytest.skip("stochastic and model-based: equivariant only in distribution, too costly here")
        # weights do not follow the losses pathwise; compare their means over many draws
        losses = torch.tensor([0.5, 1.0, 4.0])
        means = []
        for perm, seed in ((None, 1), (PERM, 2)):
            b = config.build(seed=seed)
            ls = losses if perm is None else losses[perm]
            means.append(torch.stack([(b(ls), b.weights.clone())[1] for _ in range(4000)]).mean(0))
        torch.testing.assert_close(means[1], means[0][PERM], atol=0.02, rtol=0)
        return
    scales = [1.0, 3.0, 0.5]
    p = make_problem(config, dtype=torch.float64, scales=scales)
    q = make_problem(config, dtype=torch.float64, scales=scales, perm=PERM)
    torch.testing.assert_close(q.losses(), p.losses()[PERM], rtol=0, atol=0)  # the set-up itself
    wp, op = p.run(8)
    wq, oq = q.run(8)
    for t in range(8):
        torch.testing.assert_close(wq[t], wp[t][PERM], rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"{config} step {t}: permuted weights differ: {m}")
        torch.testing.assert_close(oq[t], op[t], rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------------------ scales
@parametrize_configs()
@pytest.mark.parametrize(
    "scales", [[1e-6] * K, [1e-3] * K, [1e3] * K, [1e6] * K, [1e-6, 1.0, 1e6]], ids=["1e-6", "1e-3", "1e3", "1e6", "mixed"]
)
def test_extreme_loss_scales_stay_finite(config: BalancerConfig, scales: list[float]) -> None:
    p = make_problem(config, scales=scales)
    for _ in range(6):
        losses, loss = p.call()
        assert float(losses.detach().min()) < 1e-2 or float(losses.detach().max()) > 1e2  # the set-up
        assert torch.isfinite(loss), f"{config}: loss {loss} at scales {scales}"
        assert_valid_weights(p.balancer, p.balancer.weights, atol=1e-4)
        p.finish(loss)


# -------------------------------------------------------------------------- bad inputs
def _with(losses: Tensor, i: int, value: float) -> Tensor:
    out = losses.detach().clone()
    out[i] = value
    return out


BAD_INPUTS: list[tuple[str, Callable[[Tensor], Any], str]] = [
    ("2-D", lambda l: l.reshape(1, -1), r"1-D.*\(1, 3\)"),
    ("column", lambda l: l.reshape(-1, 1), r"1-D.*\(3, 1\)"),
    ("0-D", lambda l: l.sum(), r"1-D.*\(\)"),
    ("too-long", lambda l: torch.cat([l, l[:1]]), r"length n_tasks=3.*\(4,\)"),
    ("too-short", lambda l: l[:-1], r"length n_tasks=3.*\(2,\)"),
    ("nan", lambda l: _with(l, 1, float("nan")), r"finite.*nan"),
    ("inf", lambda l: _with(l, 2, float("inf")), r"finite.*inf"),
    ("-inf", lambda l: _with(l, 0, float("-inf")), r"finite.*-inf"),
    ("integer", lambda l: torch.tensor([1, 2, 3]), r"floating point.*int64"),
    ("list", lambda l: [1.0, 2.0, 3.0], r"torch.Tensor.*list"),
    ("none", lambda l: None, r"torch.Tensor.*NoneType"),
]


@parametrize_configs()
@pytest.mark.parametrize("make_bad, pattern", [(m, p) for _, m, p in BAD_INPUTS], ids=[n for n, _, _ in BAD_INPUTS])
def test_bad_losses_raise_value_error(config: BalancerConfig, make_bad: Callable[[Tensor], Any], pattern: str) -> None:
    p = make_problem(config)
    p.run(2)
    before = p.balancer.state_dict()
    before = {k: v.clone() if isinstance(v, Tensor) else v for k, v in before.items()}
    with pytest.raises(ValueError, match=pattern) as err:
        p.balancer(make_bad(p.losses()), closure=p.closure)
    assert str(p.balancer) in str(err.value), "the message names the balancer"
    after = p.balancer.state_dict()
    for k, v in before.items():
        if isinstance(v, Tensor):
            assert torch.equal(v, after[k]), f"{config}: a rejected call changed {k}"


@parametrize_configs()
@pytest.mark.parametrize("n_tasks", [1, 0, -1])
def test_fewer_than_two_tasks_raise(config: BalancerConfig, n_tasks: int) -> None:
    with pytest.raises(ValueError, match=r"n_tasks"):
        create_balancer(config.name, n_tasks, **config.hparams(max(n_tasks, 0)))


@parametrize_configs()
def test_unknown_hyperparameter_is_named(config: BalancerConfig) -> None:
    with pytest.raises(ValueError, match=r"bogus_hparam") as err:
        create_balancer(config.name, K, **config.hparams(), bogus_hparam=1)
    for name in accepted_hparams(config):  # and the accepted ones are listed
        assert name in str(err.value)


def test_unknown_name_lists_the_valid_ones() -> None:
    for call in (lambda: create_balancer("no-such-balancer", K), lambda: balancer_info("no-such-balancer")):
        with pytest.raises(ValueError, match="no-such-balancer") as err:
            call()
        for name in list_balancers():
            assert name in str(err.value)


# ------------------------------------------------------------------------ repr, registry
@parametrize_configs()
def test_repr_is_the_constructor_call_and_str_the_registry_name(config: BalancerConfig) -> None:
    b = config.build()
    cls = type(b)
    text = repr(b)
    assert text.startswith(f"{cls.__name__}(n_tasks={K}") and text.endswith(")"), text
    call = ast.parse(text, mode="eval").body
    assert isinstance(call, ast.Call) and not call.args
    assert [kw.arg for kw in call.keywords] == ["n_tasks", *b.hparams()]
    rebuilt = eval(text, {cls.__name__: cls})  # noqa: S307 - our own repr
    assert type(rebuilt) is cls and repr(rebuilt) == text
    assert repr(create_balancer(config.name, K, **b.hparams())) == text
    for key, value in dict(config.extra).items():
        assert b.hparams()[key] == value
    assert str(b) == config.name == cls.registry_name


@parametrize_configs()
def test_duplicate_registration_is_an_error(config: BalancerConfig) -> None:
    original = balancer_info(config.name).cls

    class Impostor(Balancer):
        pass

    with pytest.raises(ValueError, match=config.name):
        register(config.name, description="impostor", paper="none")(Impostor)
    assert balancer_info(config.name).cls is original
    assert list_balancers().count(config.name) == 1


# ---------------------------------------------------------------- metadata and lifecycle
@parametrize_configs()
def test_metadata_matches_the_class(config: BalancerConfig) -> None:
    info = config.info
    b = config.build()
    assert info.cls is type(b) and info.name == config.name and info.description and info.paper
    learnables = dict(b.named_learnables())
    assert bool(learnables) == info.has_parameters
    own = {id(p) for p in b.parameters()}
    assert all(isinstance(p, torch.nn.Parameter) and id(p) in own for p in learnables.values())
    if info.has_parameters:
        assert info.stateful
    if not info.needs_model:
        p = make_problem(config)
        with pytest.raises(TypeError):
            b.attach(p.model, p.optimizer)


@parametrize_configs()
def test_closure_is_ignored_unless_used(config: BalancerConfig) -> None:
    """A balancer whose instance does not use the closure (``uses_closure``, which can only narrow the
    registry's ``needs_closure``) runs the same with ``closure=None`` — what a trainer then passes."""
    b = config.build()
    uses = getattr(b, "uses_closure", config.info.needs_closure)
    assert config.info.needs_closure or not uses, f"{config} uses the closure but its metadata says it does not"
    if uses:
        pytest.skip("uses the closure")

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
        assert torch.equal(p.balancer.weights, with_closure[t]), f"{config} with closure=None, step {t}"


@parametrize_configs()
def test_epoch_end_matters_only_when_needed(config: BalancerConfig) -> None:
    with_epochs, _ = make_problem(config, epoch_every=1).run(6, epoch_end=True)
    without, _ = make_problem(config, epoch_every=1).run(6, epoch_end=False)
    same = all(torch.equal(a, b) for a, b in zip(with_epochs, without))
    assert same != config.info.needs_epoch_end, f"{config}: needs_epoch_end={config.info.needs_epoch_end}"


@parametrize_configs()
def test_balancer_never_steps_or_backprops_the_model(config: BalancerConfig) -> None:
    p = make_problem(config)
    p.run(2)
    p.optimizer.zero_grad(set_to_none=True)
    params = {n: t.detach().clone() for n, t in p.model.named_parameters()}
    _, loss = p.call()
    assert all(t.grad is None for t in p.model.parameters()), f"{config} filled .grad in its call"
    assert all(torch.equal(t, params[n]) for n, t in p.model.named_parameters()), f"{config} moved the model"
    loss.backward()
    p.balancer.after_backward()  # the one hook that may change .grad (Nash-MTL's clipping)
    p.optimizer.step()
    params = {n: t.detach().clone() for n, t in p.model.named_parameters()}
    grads = {n: t.grad.clone() for n, t in p.model.named_parameters()}
    p.balancer.step(p.closure)
    for n, t in p.model.named_parameters():
        assert torch.equal(t, params[n]) and torch.equal(t.grad, grads[n]), f"{config} step() touched {n}"


@parametrize_configs()
def test_after_backward_only_rescales_gradients(config: BalancerConfig) -> None:
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
        assert torch.equal(t, params[n]), f"{config} after_backward moved {n}"
        if not overrides:
            assert torch.equal(t.grad, grads[n]), f"{config} after_backward changed {n}.grad without overriding it"
        else:
            ratio = t.grad.norm() / grads[n].norm()
            assert float(ratio) <= 1 + 1e-12, f"{config} after_backward grew {n}.grad"
            torch.testing.assert_close(t.grad, ratio * grads[n], rtol=1e-12, atol=0)


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
