"""FAMO's own claims: it is the paper's Algorithm 2, and equal losses keep equal weights (Prop. 6).

Paper: Liu et al. 2023, "FAMO: Fast Adaptive Multitask Optimization" (Alg. 1; App. C, Alg. 2).
Prop. 6: Gama & Grassi 2025 (App. A.4): with equal losses and equally initialised logits, FAMO keeps
equal task weights.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from balancers import create_balancer

K = 3


class PaperFAMO:
    """Appendix C, Algorithm 2 of the FAMO paper, transcribed line by line.

    Only deviation: the listing ends with ``self.xi_opt.step`` (no call), a typo — without the call
    the logits never move, contradicting Alg. 1 line 6 and the text ("call update to update the task
    weighting").
    """

    def __init__(self, num_tasks: int, min_losses: Tensor, alpha: float = 0.025, gamma: float = 0.001) -> None:
        # min_losses (num_tasks,) the loss lower bound for each task.
        self.min_losses = min_losses
        self.xi = torch.tensor([0.0] * num_tasks, requires_grad=True)
        self.xi_opt = torch.optim.Adam([self.xi], lr=alpha, weight_decay=gamma)

    def get_weighted_loss(self, losses: Tensor) -> Tensor:
        # losses (num_tasks,)
        z = F.softmax(self.xi, -1)
        D = losses - self.min_losses + 1e-8
        c = 1 / (z / D).sum().detach()
        loss = (c * D.log() * z).sum()
        return loss

    def update(self, prev_losses: Tensor, curr_losses: Tensor) -> None:
        # prev_losses (num_tasks,)
        # curr_losses (num_tasks,)
        delta = (prev_losses - self.min_losses + 1e-8).log() - (curr_losses - self.min_losses + 1e-8).log()
        with torch.enable_grad():
            d = torch.autograd.grad(F.softmax(self.xi, -1), self.xi, grad_outputs=delta.detach())[0]
        self.xi_opt.zero_grad()
        self.xi.grad = d
        self.xi_opt.step()

    # not in the listing: the effective weights d loss / d losses = c z / D, for comparison
    def weights(self, losses: Tensor) -> Tensor:
        z = F.softmax(self.xi, -1).detach()
        D = losses - self.min_losses + 1e-8
        c = 1 / (z / D).sum()
        return c * z / D


def loss_sequence(n_steps: int, min_losses: Tensor, seed: int = 0) -> Tensor:
    """(n_steps + 1, K) random positive losses above ``min_losses``, trending down at task-specific
    rates with noise, so that the logits move."""
    gen = torch.Generator().manual_seed(seed)
    rates = torch.tensor([0.04, 0.01, -0.01])
    t = torch.arange(n_steps + 1, dtype=torch.float32)[:, None]
    noise = 0.2 * torch.randn(n_steps + 1, K, generator=gen)
    start = torch.rand(K, generator=gen) * 2 + 0.5
    return min_losses + start * torch.exp(-rates * t + noise)


def forbidden_closure(params: Any = None) -> Tensor:
    raise AssertionError("lagged FAMO must not call the closure")


HPARAMS = [(g, lr) for g in (0.0, 1e-3, 1e-2) for lr in (0.025, 0.1)]
MINS = {"zero": None, "vector": [0.1, 0.5, 0.05]}


@pytest.mark.parametrize("mins", list(MINS), ids=list(MINS))
@pytest.mark.parametrize("gamma, w_lr", HPARAMS, ids=[f"gamma={g}-w_lr={lr}" for g, lr in HPARAMS])
def test_same_batch_equals_paper_algorithm_2(gamma: float, w_lr: float, mins: str) -> None:
    kwargs = {} if MINS[mins] is None else {"min_losses": MINS[mins]}
    min_losses = torch.zeros(K) if MINS[mins] is None else torch.tensor(MINS[mins])
    b = create_balancer("famo", K, gamma=gamma, w_lr=w_lr, **kwargs)
    paper = PaperFAMO(K, min_losses, alpha=w_lr, gamma=gamma)
    seq = loss_sequence(50, min_losses, seed=1)
    # losses of step t "after the model step" on the same batch: near losses_t, task 0 improving most
    noise = 0.01 * torch.randn(seq.shape, generator=torch.Generator().manual_seed(2))
    curr = min_losses + (seq - min_losses) * torch.exp(noise - torch.tensor([0.05, 0.01, -0.02]))
    for t in range(50):
        out = b(seq[t])
        expected = paper.get_weighted_loss(seq[t])
        torch.testing.assert_close(out, expected.detach(), rtol=1e-6, atol=1e-6, msg=lambda m: f"loss, step {t}: {m}")
        torch.testing.assert_close(b.weights, paper.weights(seq[t]), rtol=1e-6, atol=1e-7, msg=lambda m: f"weights, step {t}: {m}")
        b.step(lambda params=None: curr[t])
        paper.update(seq[t], curr[t])
        torch.testing.assert_close(b.logits.detach(), paper.xi.detach(), rtol=1e-6, atol=1e-7, msg=lambda m: f"logits, step {t}: {m}")
    assert float(paper.xi.detach().abs().max()) > 0.1, "the logits moved: the comparison is not vacuous"
    assert float((b.weights - 1 / K).abs().max()) > 0.05


@pytest.mark.parametrize("gamma, w_lr", [(1e-3, 0.025), (1e-2, 0.1)])
def test_lagged_equals_paper_with_update_at_the_next_call(gamma: float, w_lr: float) -> None:
    min_losses = torch.tensor(MINS["vector"])
    b = create_balancer("famo", K, gamma=gamma, w_lr=w_lr, min_losses=MINS["vector"], update="lagged")
    paper = PaperFAMO(K, min_losses, alpha=w_lr, gamma=gamma)
    seq = loss_sequence(50, min_losses, seed=3)
    for t in range(50):
        if t > 0:
            paper.update(seq[t - 1], seq[t])
        out = b(seq[t], closure=forbidden_closure)
        torch.testing.assert_close(out, paper.get_weighted_loss(seq[t]).detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(b.weights, paper.weights(seq[t]), rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(b.logits.detach(), paper.xi.detach(), rtol=1e-6, atol=1e-7)
        b.step(forbidden_closure)
    assert float(paper.xi.detach().abs().max()) > 0.1


def test_lagged_equals_same_batch_when_the_closure_returns_the_next_losses() -> None:
    seq = loss_sequence(30, torch.zeros(K), seed=4)
    same = create_balancer("famo", K, w_lr=0.1)
    lagged = create_balancer("famo", K, w_lr=0.1, update="lagged")
    for t in range(30):
        same(seq[t])
        lagged(seq[t])
        torch.testing.assert_close(lagged.weights, same.weights, rtol=1e-6, atol=1e-7)
        same.step(lambda params=None: seq[t + 1])


# --------------------------------------------------------------------- Prop. 6 (seed 003)
def run_famo(update: str, seq: Tensor, gamma: float = 1e-3, w_lr: float = 0.025) -> tuple[list[Tensor], list[Tensor]]:
    """Weights and softmax(logits) at every call; same_batch's closure returns the next losses."""
    b = create_balancer("famo", seq.shape[1], gamma=gamma, w_lr=w_lr, update=update)
    weights, z = [], []
    for t in range(seq.shape[0] - 1):
        b(seq[t])
        weights.append(b.weights.clone())
        z.append(torch.softmax(b.logits.detach(), -1))
        b.step(lambda params=None: seq[t + 1])
    return weights, z


@pytest.mark.parametrize("gamma", [1e-3, 1e-2])
@pytest.mark.parametrize("update", ["same_batch", "lagged"])
@pytest.mark.parametrize("n_tasks", [2, 3, 5])
def test_prop6_equal_losses_keep_equal_weights(update: str, n_tasks: int, gamma: float) -> None:
    gen = torch.Generator().manual_seed(5)
    level = torch.exp(-0.002 * torch.arange(1001.0) + 0.3 * torch.randn(1001, generator=gen))
    seq = level[:, None].expand(1001, n_tasks).contiguous()
    weights, z = run_famo(update, seq, gamma=gamma)
    for t, (w, zt) in enumerate(zip(weights, z)):
        assert torch.all(w == w[0]) and torch.all(zt == zt[0]), f"step {t}: weights {w.tolist()}, z {zt.tolist()}"
        assert math.isclose(float(w.sum()), 1.0, abs_tol=1e-6)


@pytest.mark.parametrize("update", ["same_batch", "lagged"])
def test_prop6_control_unequal_losses_move_weights_from_uniform(update: str) -> None:
    """Same set-up, but task 0 improves faster: FAMO shifts weight away from it (so Prop. 6's test can fail)."""
    gen = torch.Generator().manual_seed(5)
    level = torch.exp(-0.002 * torch.arange(1001.0) + 0.3 * torch.randn(1001, generator=gen))
    rates = torch.tensor([0.003, 0.0, 0.0])
    seq = level[:, None] * torch.exp(-rates * torch.arange(1001.0)[:, None])
    weights, z = run_famo(update, seq)
    assert float(z[-1][0]) < 1 / 3 - 0.1 < 1 / 3 + 0.05 < float(z[-1][1]), z[-1].tolist()
    assert float((weights[-1] - weights[-1].mean()).abs().max()) > 0.05


# ------------------------------------------------------------------------------ errors
def test_loss_below_min_losses_is_rejected() -> None:
    b = create_balancer("famo", K, min_losses=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="min_losses"):
        b(torch.tensor([0.5, 0.1, 0.5]))
    out = b(torch.tensor([0.1, 0.2, 0.3]))  # equal to the bound is allowed: D = 1e-8
    assert torch.isfinite(out)
    b(torch.tensor([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match="min_losses"):
        b.step(lambda params=None: torch.tensor([0.5, 0.5, 0.2]))
    lagged = create_balancer("famo", K, min_losses=0.4, update="lagged")
    with pytest.raises(ValueError, match="min_losses"):
        lagged(torch.tensor([0.5, 0.39, 0.5]))


@pytest.mark.parametrize("update", ["same_batch", "lagged"])
def test_min_losses_are_compared_exactly_in_the_losses_dtype(update: str) -> None:
    """The bound 0.3 is kept exactly (float64) and rounded once to the losses' dtype. Stored in
    float32 it was 0.30000001192..., which refused the float64 loss 0.30000000592."""
    b = create_balancer("famo", 2, min_losses=0.3, update=update)
    assert b.min_losses.dtype == torch.float64 and b.min_losses.tolist() == [0.3, 0.3]
    ok64 = torch.tensor([0.30000000592, 1.0], dtype=torch.float64)
    assert 0.3 < float(ok64[0]) < float(torch.tensor(0.3, dtype=torch.float32))  # the case itself
    b(ok64)  # accepted
    d = float(b._shifted(ok64)[0])
    assert abs(d - (0.30000000592 - 0.3 + 1e-8)) < 1e-20  # D in float64 from the exact bound
    with pytest.raises(ValueError, match="min_losses"):
        b(torch.tensor([0.29999999999, 1.0], dtype=torch.float64))
    # float32: accepted exactly when not below float32(0.3), the value D subtracts
    f32_bound = torch.tensor(0.3, dtype=torch.float32)
    b(torch.stack([f32_bound, torch.tensor(1.0)]))
    below = torch.nextafter(f32_bound, torch.tensor(0.0))
    with pytest.raises(ValueError, match="min_losses"):
        b(torch.stack([below, torch.tensor(1.0)]))
    # the bounds stay float64 through dtype and device moves, and survive a state_dict round trip
    for module in (b.float(), b.half(), b.double(), b.to("cpu")):
        assert module.min_losses.dtype == torch.float64 and module.min_losses.tolist() == [0.3, 0.3]
    c = create_balancer("famo", 2, min_losses=0.0, update=update)
    c.load_state_dict(b.state_dict())
    c(ok64)
    with pytest.raises(ValueError, match="min_losses"):  # the loaded bound is used, not a stale cache
        c(torch.tensor([0.2, 1.0], dtype=torch.float64))


def test_scalar_min_losses_broadcast() -> None:
    seq = loss_sequence(10, torch.full((K,), 0.2), seed=6)
    a = create_balancer("famo", K, min_losses=0.2, w_lr=0.1)
    b = create_balancer("famo", K, min_losses=[0.2] * K, w_lr=0.1)
    for t in range(10):
        torch.testing.assert_close(a(seq[t]), b(seq[t]), rtol=0, atol=0)
        assert torch.equal(a.weights, b.weights)
        a.step(lambda params=None: seq[t + 1])
        b.step(lambda params=None: seq[t + 1])


@pytest.mark.parametrize(
    "hparams, name",
    [
        ({"gamma": -1e-3}, "gamma"),
        ({"gamma": float("nan")}, "gamma"),
        ({"w_lr": 0.0}, "w_lr"),
        ({"w_lr": -0.1}, "w_lr"),
        ({"w_lr": float("nan")}, "w_lr"),
        ({"update": "sometimes"}, "update"),
        ({"min_losses": [0.1, 0.2]}, "min_losses"),
        ({"min_losses": [0.1, 0.2, 0.3, 0.4]}, "min_losses"),
        ({"min_losses": [0.1, float("nan"), 0.3]}, "min_losses"),
        ({"min_losses": float("inf")}, "min_losses"),
    ],
    ids=lambda v: v if isinstance(v, str) else ",".join(f"{k}={x}" for k, x in v.items()),
)
def test_bad_hyperparameters_are_named(hparams: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        create_balancer("famo", K, **hparams)


def test_same_batch_step_needs_the_closure() -> None:
    b = create_balancer("famo", K)
    b(torch.tensor([1.0, 2.0, 3.0]))
    logits = b.logits.detach().clone()
    with pytest.raises(ValueError, match="closure"):
        b.step()
    with pytest.raises(ValueError, match="closure"):
        b.step(None)
    assert torch.equal(b.logits.detach(), logits)
