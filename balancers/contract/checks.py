"""The contract's checks of what a balancer computes: outputs, state, randomness, symmetry, input range.

Each function takes a :class:`~balancers.contract.problem.BalancerConfig` (and its case's keyword
arguments) and raises :class:`~balancers.contract.core.ContractViolation` when the balancer breaks
the rule its docstring states. :data:`CHECKS` lists them with their cases.
"""

from __future__ import annotations

import inspect
import io
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from balancers.contract.core import (Case, Check, Skipped, assert_same_trajectory, assert_state_equal,
                                     assert_valid_weights, ensure, expect_raises)
from balancers.contract.problem import N_TASKS, BalancerConfig, make_problem

K = N_TASKS


def accepted_hparams(config: BalancerConfig) -> list[str]:
    return [p for p in inspect.signature(config.info.cls.__init__).parameters if p not in ("self", "n_tasks")]


# ------------------------------------------------------------------------------ outputs
def output_is_a_finite_scalar_and_weights_are_valid(config: BalancerConfig) -> None:
    """The returned loss is a finite scalar; ``weights`` are detached, finite, of length K, and
    nonnegative / summing to one as the class declares."""
    p = make_problem(config)
    for _ in range(8):
        loss = p.train_step()
        ensure(loss.shape == (), lambda: f"{config}: output of shape {tuple(loss.shape)}")
        ensure(torch.isfinite(loss), f"{config}: non-finite output {loss}")
        w = p.balancer.weights
        ensure(not w.requires_grad, f"{config}: weights require grad")
        assert_valid_weights(p.balancer, w)


def dtype_and_device_are_kept(config: BalancerConfig, dtype: torch.dtype, device: str) -> None:
    """float32 / float64 losses give a loss of the same dtype, on the losses' device."""
    p = make_problem(config, dtype=dtype, device=device)
    for _ in range(4):
        losses, loss = p.call()
        ensure(losses.dtype == dtype and losses.device.type == device, "the problem's own losses")
        ensure(loss.dtype == dtype, lambda: f"{config}: {dtype} losses gave a {loss.dtype} loss")
        ensure(loss.device == losses.device, lambda: f"{config}: losses on {losses.device}, loss on {loss.device}")
        ensure(p.balancer.weights.device == losses.device, f"{config}: weights on another device")
        ensure(torch.isfinite(loss) and torch.isfinite(p.balancer.weights).all(), f"{config}: non-finite output")
        p.finish(loss)


def weights_are_the_gradient_of_the_output(config: BalancerConfig) -> None:
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
def state_dict_round_trip_resumes_exactly(config: BalancerConfig) -> None:
    """Saved with ``torch.save`` and loaded (``weights_only``) into fresh copies, a run continues
    bit-identically."""
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


def state_dict_loaded_in_memory_shares_nothing(config: BalancerConfig) -> None:
    """Loading another live balancer's state_dict copies it: the two then run independently."""
    p = make_problem(config)
    p.run(5)
    q = make_problem(config)
    q.restore_model(p.snapshot())  # model and optimizer copied; the balancer's state is not:
    q.balancer.load_state_dict(p.balancer.state_dict())
    weights, _ = p.run(5)
    clone_weights, _ = q.run(5)
    assert_same_trajectory(weights, clone_weights, f"{config} loaded from a live balancer's state_dict")


def stateful_metadata_is_truthful(config: BalancerConfig) -> None:
    """A stateless balancer, rebuilt fresh mid-run, continues identically; a stateful one does not."""
    p = make_problem(config)
    p.run(5)
    snap = p.snapshot()
    weights, _ = p.run(5)

    q = make_problem(config)
    q.restore_model(snap)  # same model and optimizer, fresh balancer
    fresh_weights, _ = q.run(5)
    same = all(torch.equal(a, b) for a, b in zip(weights, fresh_weights))
    ensure(same != config.info.stateful, f"{config}: metadata stateful={config.info.stateful} but a fresh "
                                         f"balancer {'continues identically' if same else 'diverges'}")


def reset_returns_to_the_fresh_state(config: BalancerConfig) -> None:
    """After ``reset()`` the state equals a fresh instance's and the run repeats exactly."""
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


def same_seed_same_trajectory_regardless_of_global_rng(config: BalancerConfig) -> None:
    """Randomness is owned by the balancer (a seeded generator), never drawn from torch's global RNG."""
    runs = []
    for global_seed in (1, 2):
        p = make_problem(config)
        torch.manual_seed(global_seed)
        runs.append(p.run(6))
    assert_same_trajectory(runs[0][0], runs[1][0], f"{config}: same seed (weights)")
    assert_same_trajectory(runs[0][1], runs[1][1], f"{config}: same seed (loss)")


def stochastic_balancers_take_a_seed_and_it_matters(config: BalancerConfig) -> None:
    """A ``stochastic`` balancer takes a ``seed``, and seeds 1 and 2 give different weights."""
    ensure("seed" in accepted_hparams(config), f"{config} is stochastic but takes no seed")
    w1, _ = make_problem(config, balancer_overrides={"seed": 1}).run(4)
    w2, _ = make_problem(config, balancer_overrides={"seed": 2}).run(4)
    gap = max(float((a - b).abs().max()) for a, b in zip(w1, w2))
    ensure(gap > 1e-6, f"{config}: seeds 1 and 2 give the same weights")


# ------------------------------------------------------------------------ equivariance
PERM = [2, 0, 1]


def permuting_tasks_permutes_weights(config: BalancerConfig) -> None:
    """Task j of the permuted problem is task PERM[j] of the original (heads, targets, per-task
    hyperparameters ``weights`` / ``min_losses``): its weights are the original's, permuted."""
    if config.info.stochastic:
        if config.info.needs_model:
            raise Skipped("stochastic and model-based: equivariant only in distribution, too costly here")
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
def extreme_loss_scales_stay_finite(config: BalancerConfig, scales: list[float]) -> None:
    """Losses scaled by 1e-6 ... 1e6 (and mixed) give a finite loss and valid weights."""
    p = make_problem(config, scales=scales)
    for _ in range(6):
        losses, loss = p.call()
        ensure(float(losses.detach().min()) < 1e-2 or float(losses.detach().max()) > 1e2, "the set-up")
        ensure(torch.isfinite(loss), lambda: f"{config}: loss {loss} at scales {scales}")
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


def bad_losses_raise_value_error(config: BalancerConfig, make_bad: Callable[[Tensor], Any], pattern: str) -> None:
    """Malformed or non-finite losses raise a ValueError naming the balancer, and change no state."""
    p = make_problem(config)
    p.run(2)
    before = {k: v.clone() if isinstance(v, Tensor) else v for k, v in p.balancer.state_dict().items()}
    with expect_raises(ValueError, pattern, f"{config} on bad losses") as err:
        p.balancer(make_bad(p.losses()), closure=p.closure)
    ensure(str(p.balancer) in str(err.value), f"{config}: the message does not name the balancer: {err.value}")
    after = p.balancer.state_dict()
    for k, v in before.items():
        if isinstance(v, Tensor):
            ensure(torch.equal(v, after[k]), f"{config}: a rejected call changed {k}")


_DEVICES = [Case("cpu", {"device": "cpu"}), Case("cuda", {"device": "cuda"}, needs_cuda=True)]
_SCALES = {"1e-6": [1e-6] * K, "1e-3": [1e-3] * K, "1e3": [1e3] * K, "1e6": [1e6] * K, "mixed": [1e-6, 1.0, 1e6]}

CHECKS: list[Check] = [
    Check("output_is_a_finite_scalar_and_weights_are_valid", output_is_a_finite_scalar_and_weights_are_valid),
    Check("dtype_and_device_are_kept", dtype_and_device_are_kept,
          tuple(Case(f"{d.id}-{str(dt)}", {**d.kwargs, "dtype": dt}, d.needs_cuda)
                for d in _DEVICES for dt in (torch.float32, torch.float64))),
    Check("weights_are_the_gradient_of_the_output", weights_are_the_gradient_of_the_output),
    Check("state_dict_round_trip_resumes_exactly", state_dict_round_trip_resumes_exactly),
    Check("state_dict_loaded_in_memory_shares_nothing", state_dict_loaded_in_memory_shares_nothing),
    Check("stateful_metadata_is_truthful", stateful_metadata_is_truthful),
    Check("reset_returns_to_the_fresh_state", reset_returns_to_the_fresh_state),
    Check("same_seed_same_trajectory_regardless_of_global_rng", same_seed_same_trajectory_regardless_of_global_rng),
    Check("stochastic_balancers_take_a_seed_and_it_matters", stochastic_balancers_take_a_seed_and_it_matters,
          applies=lambda config: config.info.stochastic, when="stochastic balancers only"),
    Check("permuting_tasks_permutes_weights", permuting_tasks_permutes_weights),
    Check("extreme_loss_scales_stay_finite", extreme_loss_scales_stay_finite,
          tuple(Case(name, {"scales": s}) for name, s in _SCALES.items())),
    Check("bad_losses_raise_value_error", bad_losses_raise_value_error,
          tuple(Case(name, {"make_bad": make, "pattern": pattern}) for name, make, pattern in BAD_INPUTS)),
]
