"""The simple balancers' own rules: uniform, fixed, si, rlw, uw, dwa."""

from __future__ import annotations

import math

import pytest
import torch

from balancers import create_balancer

K = 3
LOSSES = torch.tensor([0.5, 2.0, 8.0])


def random_losses(n: int, seed: int = 0, k: int = K) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, k, generator=gen, dtype=torch.float64) * 5 + 0.01


# ------------------------------------------------------------------------------ uniform
def test_uniform_is_the_mean() -> None:
    b = create_balancer("uniform", K)
    for dtype, rtol in ((torch.float32, 1e-6), (torch.float64, 1e-7)):
        for losses in random_losses(5).to(dtype):
            torch.testing.assert_close(b(losses), losses.mean(), rtol=rtol, atol=0)
            torch.testing.assert_close(b.weights, torch.full((K,), 1 / K))


def test_fixed_with_equal_weights_is_uniform() -> None:
    fixed = create_balancer("fixed", K, weights=[2.5] * K)
    uniform = create_balancer("uniform", K)
    for losses in random_losses(5).float():
        assert torch.equal(fixed(losses), uniform(losses))
        assert torch.equal(fixed.weights, uniform.weights)


# -------------------------------------------------------------------------------- fixed
@pytest.mark.parametrize("given", [[1.0, 2.0, 3.0], [0.0, 0.0, 5.0], torch.tensor([0.2, 0.2, 0.6])], ids=["123", "one-hot", "tensor"])
def test_fixed_normalises_and_is_the_weighted_sum(given: list[float] | torch.Tensor) -> None:
    w = torch.as_tensor(given, dtype=torch.float64)
    w = w / w.sum()
    b = create_balancer("fixed", K, weights=given)
    torch.testing.assert_close(b.weights.double(), w, rtol=1e-7, atol=0)  # before any call, too
    for losses in random_losses(5):
        torch.testing.assert_close(b(losses), (w * losses).sum(), rtol=1e-7, atol=0)
        torch.testing.assert_close(b.weights.double(), w, rtol=1e-7, atol=0)


@pytest.mark.parametrize(
    "weights, pattern",
    [
        (None, "weights are required"),
        ([1.0, -1.0, 2.0], r"finite and >= 0.*-1\.0"),
        ([1.0, 2.0], r"length n_tasks=3.*got 2"),
        ([1.0, 2.0, 3.0, 4.0], r"length n_tasks=3.*got 4"),
        ([0.0, 0.0, 0.0], "sum to zero"),
        ([1.0, float("nan"), 1.0], "finite"),
        ([1.0, float("inf"), 1.0], "finite"),
    ],
    ids=["missing", "negative", "short", "long", "zero-sum", "nan", "inf"],
)
def test_fixed_rejects_bad_weights(weights: list[float] | None, pattern: str) -> None:
    kwargs = {} if weights is None else {"weights": weights}
    with pytest.raises(ValueError, match=pattern):
        create_balancer("fixed", K, **kwargs)


# ----------------------------------------------------------------------------------- si
def test_si_is_the_mean_log_with_weights_one_over_k_loss() -> None:
    b = create_balancer("si", K)
    for losses in random_losses(5):
        leaf = losses.clone().requires_grad_()
        out = b(leaf)
        torch.testing.assert_close(out, losses.log().mean(), rtol=1e-12, atol=0)
        torch.testing.assert_close(b.weights.double(), 1 / (K * losses), rtol=1e-6, atol=0)
        (grad,) = torch.autograd.grad(out, leaf)
        torch.testing.assert_close(grad, 1 / (K * losses), rtol=1e-12, atol=0)


def test_si_is_scale_invariant_and_rejects_non_positive_losses() -> None:
    b = create_balancer("si", K)
    scale = torch.tensor([1e-3, 1.0, 1e4], dtype=torch.float64)
    for losses in random_losses(3):
        # rescaling a task's loss shifts the objective by a constant (same gradient in the model)
        torch.testing.assert_close(b(losses * scale) - b(losses), scale.log().mean(), rtol=1e-9, atol=1e-12)
    for bad in ([1.0, 0.0, 2.0], [1.0, -0.5, 2.0]):
        with pytest.raises(ValueError, match="> 0"):
            b(torch.tensor(bad))


# ---------------------------------------------------------------------------------- rlw
def test_rlw_normal_is_softmax_of_seeded_gaussians() -> None:
    seed = 7
    b = create_balancer("rlw", K, seed=seed)  # distribution="normal" by default
    gen = torch.Generator().manual_seed(seed)  # re-derived: K standard normals per call
    for losses in random_losses(20).float():
        expected = torch.softmax(torch.randn(K, generator=gen), dim=0)
        out = b(losses)
        torch.testing.assert_close(b.weights, expected, rtol=1e-6, atol=0)
        torch.testing.assert_close(out, (expected * losses).sum(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("distribution", ["normal", "dirichlet"])
def test_rlw_weights_on_the_simplex_with_mean_one_over_k(distribution: str) -> None:
    b = create_balancer("rlw", K, distribution=distribution, seed=3)
    losses = torch.tensor([1.0, 2.0, 3.0])
    draws = []
    for _ in range(5000):
        b(losses)
        draws.append(b.weights.clone())
    w = torch.stack(draws).double()
    assert (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(len(w), dtype=torch.float64), atol=1e-6)
    # each mean is 1/K by exchangeability; standard error about 0.2/sqrt(5000) = 0.003
    torch.testing.assert_close(w.mean(0), torch.full((K,), 1 / K, dtype=torch.float64), atol=0.015, rtol=0)
    if distribution == "dirichlet":
        # Dirichlet(1, ..., 1) marginals are Beta(1, K-1): variance (K-1) / (K^2 (K+1)) = 1/18 for K = 3
        torch.testing.assert_close(w.var(0), torch.full((K,), (K - 1) / (K**2 * (K + 1)), dtype=torch.float64), atol=0.006, rtol=0)
        assert float(w.min()) < 0.01 and float(w.max()) > 0.95  # the whole simplex is reached


def test_rlw_rejects_bad_hyperparameters() -> None:
    with pytest.raises(ValueError, match="distribution"):
        create_balancer("rlw", K, distribution="uniform")
    for seed in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            create_balancer("rlw", K, seed=seed)


# ----------------------------------------------------------------------------------- uw
def test_uw_starts_as_the_mean_and_learns_log_losses() -> None:
    b = create_balancer("uw", K)
    torch.testing.assert_close(b(LOSSES), LOSSES.mean())  # s = 0: the mean
    opt = torch.optim.Adam(dict(b.named_learnables()).values(), lr=0.05)
    for _ in range(600):
        loss = b(LOSSES)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # argmin_s exp(-s) l + s is s = log l, where the effective weight exp(-s)/K is 1/(K l)
    torch.testing.assert_close(b.log_vars.detach(), LOSSES.log(), atol=0.02, rtol=0)
    b(LOSSES)
    torch.testing.assert_close(b.weights, 1 / (K * LOSSES), rtol=0.03, atol=0)


def test_uw_output_and_its_gradient_in_the_log_variances() -> None:
    b = create_balancer("uw", K)
    with torch.no_grad():
        b.log_vars.copy_(torch.tensor([0.3, -1.0, 2.0]))
    s = b.log_vars.detach()
    out = b(LOSSES)
    torch.testing.assert_close(out, (torch.exp(-s) * LOSSES + s).mean())
    torch.testing.assert_close(b.weights, torch.exp(-s) / K)
    (grad,) = torch.autograd.grad(out, b.log_vars)
    torch.testing.assert_close(grad, (1 - torch.exp(-s) * LOSSES) / K)


# ---------------------------------------------------------------------------------- dwa
@pytest.mark.parametrize("temperature", [2.0, 0.5])
def test_dwa_uniform_for_two_epochs_then_softmax_of_loss_ratios(temperature: float) -> None:
    b = create_balancer("dwa", K, temperature=temperature)
    epochs = [  # the losses of each step of each epoch, with known epoch means
        [[1.0, 2.0, 4.0], [3.0, 2.0, 2.0]],  # mean [2, 2, 3]
        [[1.0, 1.0, 3.0], [1.0, 2.0, 3.0], [1.0, 3.0, 3.0]],  # mean [1, 2, 3]
        [[0.5, 1.0, 2.0], [0.5, 3.0, 1.0]],  # mean [0.5, 2, 1.5]
        [[0.5, 1.0, 1.5]],  # mean [0.5, 1, 1.5]
    ]
    means = [[2.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.5, 2.0, 1.5], [0.5, 1.0, 1.5]]
    uniform = torch.full((K,), 1 / K)
    for e, epoch in enumerate(epochs):
        if e < 2:
            expected = uniform
        else:  # w_i = softmax_i(r_i / T), r_i = L_i(e-1) / L_i(e-2), computed by hand here
            ratio = [means[e - 1][i] / means[e - 2][i] for i in range(K)]
            exp = [math.exp(r / temperature) for r in ratio]
            expected = torch.tensor([x / sum(exp) for x in exp])
        for losses in epoch:
            out = b(torch.tensor(losses))
            torch.testing.assert_close(b.weights, expected, rtol=1e-6, atol=1e-7, msg=lambda m: f"epoch {e}: {m}")
            torch.testing.assert_close(out, (expected * torch.tensor(losses)).sum(), rtol=1e-6, atol=1e-7)
        b.epoch_end()
    assert float((b.weights - uniform).abs().max()) > 0.01


def test_dwa_empty_epoch_is_ignored_and_bad_temperature_rejected() -> None:
    b = create_balancer("dwa", K)
    b(torch.tensor([1.0, 1.0, 1.0]))
    b.epoch_end()
    b.epoch_end()  # no call in between: not an epoch
    b(torch.tensor([2.0, 1.0, 1.0]))
    torch.testing.assert_close(b.weights, torch.full((K,), 1 / K))  # still one epoch seen
    b.epoch_end()
    b(torch.tensor([2.0, 1.0, 1.0]))
    expected = torch.softmax(torch.tensor([2.0, 1.0, 1.0]) / 2.0, 0)
    torch.testing.assert_close(b.weights, expected)
    for temperature in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            create_balancer("dwa", K, temperature=temperature)
