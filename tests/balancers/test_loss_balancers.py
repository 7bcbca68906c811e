"""IMTL-L, GLS, STCH and DB-MTL (issue 16) against hand-derived values and transcriptions of the
authors' update rules. The registry-wide contract (``test_contract.py``) and the golden table
cover them too; these tests pin each method's own claims.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from balancers import create_balancer
from balancers.dbmtl import EPS
from tests.conftest import make_problem

F64 = torch.float64


def grad_wrt_losses(name: str, losses: Tensor, **hparams) -> tuple[Tensor, Tensor, Tensor]:
    """(returned loss, d loss / d losses, recorded weights) of a fresh balancer on fixed losses."""
    b = create_balancer(name, losses.shape[0], **hparams)
    x = losses.clone().requires_grad_(True)
    out = b(x)
    (grad,) = torch.autograd.grad(out, x)
    return out.detach(), grad, b.weights


# ---------------------------------------------------------------------------------- IMTL-L
def test_imtl_l_gradient_of_the_scales_and_first_weights() -> None:
    b = create_balancer("imtl_l", 2)
    losses = torch.tensor([1.0, 3.0])
    loss = b(losses)
    loss.backward()
    # (1/K) Σ (e^0 ℓ_i - 0) = mean(ℓ); d/ds_i = (e^{s_i} ℓ_i - 1) / K
    assert float(loss.detach()) == pytest.approx(2.0)
    torch.testing.assert_close(b.log_scales.grad, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(b.weights, torch.tensor([0.5, 0.5]))


def test_imtl_l_scales_drive_every_scaled_loss_to_one() -> None:
    """The paper's fixed point: e^{s_i} ℓ_i = 1, i.e. weights 1 / (K ℓ_i) (DB-MTL's log transform)."""
    losses = torch.tensor([0.2, 1.0, 7.0], dtype=F64)
    b = create_balancer("imtl_l", 3).double()
    opt = torch.optim.SGD(b.parameters(), lr=1.0)
    for _ in range(400):
        opt.zero_grad()
        b(losses).backward()
        opt.step()
    torch.testing.assert_close(b.log_scales.detach().exp() * losses, torch.ones(3, dtype=F64), rtol=1e-6, atol=0)
    torch.testing.assert_close(b.weights, 1 / (3 * losses), rtol=1e-6, atol=0)


def test_imtl_l_is_uncertainty_weighting_with_the_scale_negated() -> None:
    """mean(e^{s} ℓ - s) at s = -s' is uw's mean(e^{-s'} ℓ + s'); Adam's step is odd in the gradient,
    so with the same optimizer (one Adam over model and scales, same lr) the two trajectories coincide."""
    runs = []
    for name in ("imtl_l", "uw"):
        p = make_problem(name, dtype=F64)  # the same fresh model, data and balancer defaults
        learnables = list(dict(p.balancer.named_learnables()).values())
        opt = torch.optim.Adam([*p.model.parameters(), *learnables], lr=0.05)  # one lr for both
        weights = []
        for _ in range(10):
            loss = p.balancer(p.losses())
            opt.zero_grad()
            loss.backward()
            opt.step()
            weights.append(p.balancer.weights.clone())
        runs.append((weights, learnables[0].detach().clone()))
    for a, b in zip(runs[0][0], runs[1][0]):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0)
    torch.testing.assert_close(runs[0][1], -runs[1][1], rtol=1e-12, atol=0)
    assert not torch.allclose(runs[0][0][-1], runs[0][0][0])  # the weights did move


# ------------------------------------------------------------------------------------- GLS
@pytest.mark.parametrize("losses", [[1.0, 4.0], [2.0, 2.0, 2.0], [0.1, 5.0, 0.3, 2.0]])
def test_gls_value_and_weights(losses: list[float]) -> None:
    x = torch.tensor(losses, dtype=F64)
    k = len(losses)
    geo = math.prod(losses) ** (1 / k)
    out, grad, w = grad_wrt_losses("gls", x)
    assert float(out) == pytest.approx(geo, rel=1e-12)
    torch.testing.assert_close(grad, geo / (k * x))  # d/dℓ_i (Π ℓ)^{1/K} = L / (K ℓ_i)
    torch.testing.assert_close(w.double(), grad)


def test_gls_does_not_underflow_with_many_small_losses() -> None:
    """11 QM9-sized losses of 1e-4: the product (1e-44) underflows float32, the geometric mean does not."""
    x = torch.full((11,), 1e-4)
    assert float(x.prod()) < 1e-38  # what a product form would face
    out, grad, _ = grad_wrt_losses("gls", x)
    assert float(out) == pytest.approx(1e-4, rel=1e-5)
    torch.testing.assert_close(grad, torch.full((11,), 1 / 11))


def test_gls_rejects_non_positive_losses() -> None:
    with pytest.raises(ValueError, match="gls: losses must be > 0"):
        create_balancer("gls", 2)(torch.tensor([0.0, 1.0]))


# ------------------------------------------------------------------------------------ STCH
def authors_stch_grad(losses: Tensor, nadir: Tensor, mu: float) -> Tensor:
    """d/dℓ of the authors' post-warm-up loss (STCH_MTL/LibMTL/weighting/STCH.py, commit 73898cc),
    transcribed: K μ log Σ exp((log(ℓ/n + 1e-20) − max) / μ), the max detached."""
    x = losses.clone().requires_grad_(True)
    logs = torch.log(x / nadir + 1e-20)
    shifted = logs - logs.detach().max()
    loss = mu * torch.log(torch.exp(shifted / mu).sum()) * len(losses)
    (grad,) = torch.autograd.grad(loss, x)
    return grad


def test_stch_warm_up_collects_the_normaliser_then_scalarises() -> None:
    b = create_balancer("stch", 2, mu=1.0, warmup_epochs=1).double()
    for batch in ([1.0, 1.0], [5.0, 5.0]):  # epoch 0: warm-up only
        b(torch.tensor(batch, dtype=F64))
        torch.testing.assert_close(b.weights, 1 / (2 * torch.tensor(batch, dtype=F64)))
    b.epoch_end()
    for batch in ([2.0, 4.0], [4.0, 8.0]):  # epoch 1: warm-up loss, n accumulates -> (3, 6)
        out = b(torch.tensor(batch, dtype=F64))
        assert float(out) == pytest.approx(0.5 * (math.log(batch[0]) + math.log(batch[1])))
    b.epoch_end()
    # epoch 2: x = log(ℓ / n) = (log 1, log 2): loss log(1 + 2); p = (1/3, 2/3); weights p / ℓ
    losses = torch.tensor([3.0, 12.0], dtype=F64)
    out = b(losses)
    assert float(out) == pytest.approx(math.log(3.0))
    torch.testing.assert_close(b.weights, torch.tensor([1 / 9, 1 / 18], dtype=F64))


@pytest.mark.parametrize("mu", [0.01, 0.1, 0.5, 1.0, 3.0])
def test_stch_is_the_authors_loss_divided_by_k(mu: float) -> None:
    nadir = torch.tensor([3.0, 6.0, 0.5], dtype=F64)
    b = create_balancer("stch", 3, mu=mu, warmup_epochs=0).double()
    b(nadir)  # epoch 0 collects n from this single step
    b.epoch_end()
    losses = torch.tensor([2.0, 9.0, 0.4], dtype=F64)
    x = losses.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(b(x), x)
    torch.testing.assert_close(3 * grad, authors_stch_grad(losses, nadir, mu), rtol=1e-10, atol=0)
    # the smooth max: as μ → 0 the value approaches max_i log(ℓ_i / n_i), from above, within μ log K
    value = float(b(losses))
    top = float((losses / nadir).log().max())
    assert top <= value + 1e-12 <= top + mu * math.log(3) + 2e-12


def test_stch_warmup_length_is_in_epochs() -> None:
    b = create_balancer("stch", 2)  # authors' default: 4 warm-up epochs, the 5th collects n
    losses = torch.tensor([1.0, 4.0])
    for _ in range(5):
        b(losses)
        torch.testing.assert_close(b.weights, 1 / (2 * losses))
        b.epoch_end()
    b(torch.tensor([2.0, 4.0]))  # x = (log 2, 0): p = (2/3, 1/3)
    torch.testing.assert_close(b.weights, torch.tensor([1 / 3, 1 / 12]))


def test_stch_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="mu must be > 0"):
        create_balancer("stch", 2, mu=0.0)
    with pytest.raises(ValueError, match="warmup_epochs must be an integer >= 0"):
        create_balancer("stch", 2, warmup_epochs=-1)


# ----------------------------------------------------------------------------------- DB-MTL
class ExpLosses(nn.Module):
    """ℓ_i = exp(a_iᵀθ + b_i): the task gradients of log ℓ_i w.r.t. the trunk θ are the constants a_i,
    and d log ℓ_i / d b_i = 1, so every quantity of DB-MTL has a closed form."""

    def __init__(self, a: Tensor) -> None:
        super().__init__()
        self.a = a
        self.trunk = nn.Linear(a.shape[1], 1, bias=False).to(a.dtype)  # θ = trunk.weight
        nn.init.zeros_(self.trunk.weight)
        self.heads = nn.Parameter(torch.zeros(a.shape[0], dtype=a.dtype))

    def forward(self) -> Tensor:
        return torch.exp(self.a @ self.trunk.weight[0] + self.heads)


@pytest.mark.parametrize("beta, sigma", [(0.9, 0.0), (0.5, 0.5), (0.0, 0.0)])
def test_dbmtl_update_matches_the_authors_recursion(beta: float, sigma: float) -> None:
    a = torch.tensor([[1.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.5, 0.5, 2.0]], dtype=F64)
    model = ExpLosses(a)
    b = create_balancer("dbmtl", 3, beta=beta, beta_sigma=sigma)
    b.attach(model, torch.optim.SGD(model.parameters(), lr=0.0))
    buffer = torch.zeros_like(a)
    for t in range(1, 5):
        model.zero_grad()
        losses = model()
        out = b(losses)
        out.backward()
        # the authors' LibMTL code: buffer = g + β/t^σ (buffer − g); α = max|buf| / (|buf| + 1e-8)
        g = a * (losses.detach() / (losses.detach() + EPS))[:, None]  # ∇ log(ℓ_i + ε) = a_i ℓ_i / (ℓ_i + ε)
        buffer = g + (beta / t**sigma) * (buffer - g)
        norms = buffer.norm(dim=1)
        alpha = norms.max() / (norms + 1e-8)
        torch.testing.assert_close(model.trunk.weight.grad[0], (alpha @ buffer) / 3, rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(b.alpha.double(), alpha, rtol=1e-6, atol=0)
        # heads get their own log-loss gradient (1/K) ℓ_i / (ℓ_i + ε), not α
        torch.testing.assert_close(model.heads.grad, torch.full((3,), 1 / 3, dtype=F64), rtol=1e-7, atol=0)
        # the value is the mean log loss: the correction term is exactly zero
        assert float(out.detach()) == float((losses.detach() + EPS).log().mean())
        torch.testing.assert_close(b.weights.double(), 1 / (3 * (losses.detach() + EPS)))


def test_dbmtl_rescales_every_task_gradient_to_the_largest_norm() -> None:
    """With β = 0 (no EMA), α_i ĝ_i all have the largest norm: the trunk update is max|g| Σ_i u_i / K."""
    a = torch.tensor([[2.0, 0.0], [0.0, 0.5]], dtype=F64)
    model = ExpLosses(a)
    b = create_balancer("dbmtl", 2, beta=0.0)
    b.attach(model, torch.optim.SGD(model.parameters(), lr=0.0))
    b(model()).backward()
    torch.testing.assert_close(model.trunk.weight.grad[0], torch.tensor([1.0, 1.0], dtype=F64), rtol=1e-7, atol=0)


def test_dbmtl_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        create_balancer("dbmtl", 2, beta=1.0)
    with pytest.raises(ValueError, match="beta_sigma must be >= 0"):
        create_balancer("dbmtl", 2, beta_sigma=-0.5)
