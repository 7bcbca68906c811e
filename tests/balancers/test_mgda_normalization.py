"""MGDA's gradient normalisations, as ``gradient_normalizers`` in Sener & Koltun's code
(isl-org/MultiObjectiveOptimization, ``multi_task/min_norm_solvers.py``): ``none`` n_i = 1, ``l2``
n_i = ||g_i||, ``loss`` n_i = loss_i, ``loss+`` n_i = loss_i ||g_i||; the min-norm problem is solved on
g_i / n_i and the weights multiply the *unnormalised* losses.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from balancers import create_balancer
from balancers._task_grads import task_gradients
from tests.balancers.test_gradient_methods import Trunked, _losses

F64 = torch.float64
NORMALIZATIONS = ("none", "l2", "loss", "loss+")


def mgda(grads: torch.Tensor, losses: torch.Tensor, normalization: str) -> torch.Tensor:
    b = create_balancer("mgda", grads.shape[0], normalization=normalization)
    return b.solve(grads.to(F64), losses.to(F64))


def brute_force_min_norm(vectors: torch.Tensor) -> torch.Tensor:
    """The min-norm point of the convex hull of the rows, by the KKT point of every face."""
    k = vectors.shape[0]
    m = vectors @ vectors.T
    best: tuple[float, torch.Tensor] | None = None
    for size in range(1, k + 1):
        for support in itertools.combinations(range(k), size):
            s = list(support)
            x = torch.linalg.solve(m[s][:, s], torch.ones(size, dtype=F64))
            if (x < 0).any():
                continue
            w = torch.zeros(k, dtype=F64)
            w[s] = x / x.sum()
            if best is None or float(w @ m @ w) < best[0]:
                best = (float(w @ m @ w), w)
    assert best is not None
    return best[1]


# two orthogonal gradients, norms 1 and 2, losses 2 and 1/2. For orthogonal rows the min-norm weights
# are w_i ∝ 1/|g_i / n_i|^2 = n_i^2 / |g_i|^2:
#   none:  (1, 1/4)            -> (4/5, 1/5)
#   l2:    (1, 1)              -> (1/2, 1/2)
#   loss:  (2^2/1, 0.5^2/4)    -> (4, 1/16)  -> (64/65, 1/65)
#   loss+: (loss_i^2)          -> (4, 1/4)   -> (16/17, 1/17)
G2 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=F64)
L2 = torch.tensor([2.0, 0.5], dtype=F64)
EXPECTED_2 = {"none": [4 / 5, 1 / 5], "l2": [1 / 2, 1 / 2], "loss": [64 / 65, 1 / 65], "loss+": [16 / 17, 1 / 17]}
# three orthogonal gradients, norms 1, 2, 3, losses 1, 2, 3 (K = 3: the Frank-Wolfe path):
#   none: ∝ (1, 1/4, 1/9); l2: uniform; loss: |g_i|/loss_i = 1 -> uniform; loss+: ∝ loss_i^2 = (1, 4, 9)
G3 = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]], dtype=F64)
L3 = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
EXPECTED_3 = {"none": [36 / 49, 9 / 49, 4 / 49], "l2": [1 / 3] * 3, "loss": [1 / 3] * 3, "loss+": [1 / 14, 4 / 14, 9 / 14]}


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
def test_orthogonal_gradients_hand_derived(normalization: str) -> None:
    torch.testing.assert_close(mgda(G2, L2, normalization), torch.tensor(EXPECTED_2[normalization], dtype=F64),
                               rtol=0, atol=1e-12)
    torch.testing.assert_close(mgda(G3, L3, normalization), torch.tensor(EXPECTED_3[normalization], dtype=F64),
                               rtol=0, atol=1e-9)


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("k", [2, 4])
def test_equals_the_min_norm_point_of_the_normalised_vectors(normalization: str, k: int) -> None:
    """Against the definition: normalise the gradient *vectors*, then brute-force the min-norm point."""
    gen = torch.Generator().manual_seed(10 + k)
    g = torch.randn(k, 6, generator=gen, dtype=F64) * torch.logspace(-1, 1, k, dtype=F64)[:, None] + 0.2
    losses = torch.rand(k, generator=gen, dtype=F64) * 3 + 0.1
    n = {"none": torch.ones(k, dtype=F64), "l2": g.norm(dim=1), "loss": losses,
         "loss+": losses * g.norm(dim=1)}[normalization]
    expected = brute_force_min_norm(g / n[:, None])
    torch.testing.assert_close(mgda(g, losses, normalization), expected, rtol=0, atol=1e-8)


def test_weights_multiply_the_unnormalised_losses() -> None:
    """The trainer-facing path: the one backward applies sum_i w_i g_i (raw gradients) to the trunk."""
    torch.manual_seed(0)
    model = Trunked(3).double()
    b = create_balancer("mgda", 3, normalization="loss+").double()
    b.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    losses = _losses(model, 3)
    loss = b(losses)
    shared = list(model.trunk.parameters())
    grads = task_gradients(losses, shared)
    applied = torch.cat([x.reshape(-1) for x in torch.autograd.grad(loss, shared, retain_graph=True)])
    torch.testing.assert_close(applied, grads.T @ b.weights)
    n = losses.detach() * grads.norm(dim=1)
    torch.testing.assert_close(b.weights, brute_force_min_norm(grads / n[:, None]), rtol=0, atol=1e-8)
    assert float((b.weights - create_balancer("mgda", 3).solve(grads, losses.detach())).abs().max()) > 1e-3


@pytest.mark.parametrize("normalization", ["loss", "loss+"])
@pytest.mark.parametrize("k", [2, 3])
def test_loss_normalisations_need_positive_losses(normalization: str, k: int) -> None:
    g = G2 if k == 2 else G3
    bad = torch.tensor([1.0, -0.5, 2.0][:k], dtype=F64)
    assert torch.isnan(mgda(g, bad, normalization)).all()  # never a silent clamp
    assert torch.isnan(mgda(g, torch.tensor([0.0, 1.0, 2.0][:k], dtype=F64), normalization)).all()
    b = create_balancer("mgda", k, normalization=normalization)
    with pytest.raises(ValueError, match=r"must be > 0.*-0.5"):
        b.check_losses(bad)
    create_balancer("mgda", k, normalization="l2").check_losses(bad)  # l2 does not divide by losses


def test_unknown_normalisation_is_named() -> None:
    with pytest.raises(ValueError, match=r"normalization.*'loss\+'"):
        create_balancer("mgda", 3, normalization="norm")
