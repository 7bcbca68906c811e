"""MGDA, IMTL-G and Nash-MTL: weights against hand-computed values on small gradient matrices, and
the trainer-facing path (per-task gradients of the shared trunk, ``weights`` == d loss / d losses).

The registry-wide contract (``test_contract.py``) covers them too; these tests pin the numbers.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from balancers import create_balancer
from balancers._task_grads import shared_parameters, task_gradients
from balancers.imtlg import imtlg_weights
from balancers.mgda import frank_wolfe, min_norm_weights
from balancers.nashmtl import nash_weights

F64 = torch.float64
METHODS = ("mgda", "imtlg", "nashmtl")


def solve(name: str, grads: torch.Tensor, losses: torch.Tensor | None = None, **hparams) -> torch.Tensor:
    """The weights the balancer ``name`` computes from the (K, P) gradient matrix."""
    b = create_balancer(name, grads.shape[0], **hparams)
    return b.solve(grads.to(F64), torch.ones(grads.shape[0], dtype=F64) if losses is None else losses)


def nash_residual(grads: torch.Tensor, a: torch.Tensor) -> float:
    """max_i |a_i (M a)_i - 1| with M = G G^T: the unnormalised system Nash-MTL solves, in the units
    of its meaning (every task's directional derivative a_i g_i^T G^T a along the update is 1)."""
    m = grads.to(F64) @ grads.to(F64).T
    return float((a * (m @ a) - 1).abs().max())


def projections(grads: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """``u_i^T d`` for ``d = G^T a`` and unit gradients ``u_i``."""
    g = grads.to(F64)
    return (g / g.norm(dim=1, keepdim=True)) @ (g.T @ a)


ORTHO_2 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], dtype=F64)  # norms 1 and 2
ORTHO_3 = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]], dtype=F64)


# ------------------------------------------------------------------ hand-computed weights
def test_two_orthogonal_gradients() -> None:
    # MGDA: min_a a^2 |g1|^2 + (1-a)^2 |g2|^2 = a^2 + 4 (1-a)^2  =>  a = 4/5
    torch.testing.assert_close(solve("mgda", ORTHO_2), torch.tensor([0.8, 0.2], dtype=F64))
    # IMTL-G: equal projections a1 |g1| = a2 |g2| with a1 + a2 = 1  =>  (2/3, 1/3)
    a = solve("imtlg", ORTHO_2)
    torch.testing.assert_close(a, torch.tensor([2 / 3, 1 / 3], dtype=F64))
    p = projections(ORTHO_2, a)
    assert float(p.max() - p.min()) < 1e-12
    # Nash-MTL: diag(1, 4) a = 1/a  =>  a = (1, 1/2) = 1/|g_i|, and |G^T a| = sqrt(2)
    a = solve("nashmtl", ORTHO_2)
    torch.testing.assert_close(a, torch.tensor([1.0, 0.5], dtype=F64), rtol=1e-12, atol=0)
    assert nash_residual(ORTHO_2, a) < 1e-12
    assert abs(float((ORTHO_2.T @ a).norm()) - 2**0.5) < 1e-12


def test_three_orthogonal_gradients() -> None:
    n = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    # MGDA on orthogonal gradients: w_i ∝ 1/|g_i|^2 (all tasks improve equally: w_i |g_i|^2 equal)
    torch.testing.assert_close(solve("mgda", ORTHO_3), (1 / n**2) / (1 / n**2).sum())
    # IMTL-G: w_i |g_i| equal  =>  w ∝ 1/|g_i| = (6, 3, 2)/11
    a = solve("imtlg", ORTHO_3)
    torch.testing.assert_close(a, torch.tensor([6, 3, 2], dtype=F64) / 11)
    # Nash-MTL: a_i^2 |g_i|^2 = 1  =>  a = 1/|g_i|, and |G^T a| = sqrt(3)
    a = solve("nashmtl", ORTHO_3)
    torch.testing.assert_close(a, 1 / n, rtol=1e-12, atol=0)
    assert nash_residual(ORTHO_3, a) < 1e-12
    assert abs(float((ORTHO_3.T @ a).norm()) - 3**0.5) < 1e-12


def test_three_general_gradients() -> None:
    g = torch.tensor([[1.0, 0.2, -0.3, 0.0], [0.1, 1.5, 0.4, 0.2], [-0.5, 0.3, 2.0, 1.0]], dtype=F64)
    m = g @ g.T
    # MGDA: brute force over all faces of the simplex (the KKT point of each support set)
    best = None
    for size in (1, 2, 3):
        for support in itertools.combinations(range(3), size):
            s = list(support)
            x = torch.linalg.solve(m[s][:, s], torch.ones(size, dtype=F64))
            if (x < 0).any():
                continue
            w = torch.zeros(3, dtype=F64)
            w[s] = x / x.sum()
            value = float(w @ m @ w)
            if best is None or value < best[0]:
                best = (value, w)
    assert best is not None
    torch.testing.assert_close(solve("mgda", g), best[1], rtol=1e-6, atol=1e-8)
    # IMTL-G: the paper's closed form a_{2..K} = g_1 U^T (D U^T)^{-1}, a_1 = 1 - sum
    u = g / g.norm(dim=1, keepdim=True)
    d_mat, u_mat = g[0] - g[1:], u[0] - u[1:]
    tail = g[0] @ u_mat.T @ torch.linalg.inv(d_mat @ u_mat.T)
    expected = torch.cat([1 - tail.sum().reshape(1), tail])
    a = solve("imtlg", g)
    torch.testing.assert_close(a, expected)
    p = projections(g, a)
    assert float(p.max() - p.min()) < 1e-10 and abs(float(a.sum()) - 1) < 1e-12
    # Nash-MTL: solved to machine precision; the update G^T a has norm sqrt(K) (a^T M a = sum_i 1)
    a = solve("nashmtl", g)
    assert (a > 0).all() and nash_residual(g, a) < 1e-12
    assert abs(float((g.T @ a).norm()) - 3**0.5) < 1e-12


@pytest.mark.parametrize("k", [2, 3, 5])
def test_identical_gradients(k: int) -> None:
    g = torch.tensor([[0.5, -1.0, 2.0]], dtype=F64).repeat(k, 1)
    uniform = torch.full((k,), 1 / k, dtype=F64)
    torch.testing.assert_close(solve("mgda", g), uniform)  # every point is optimal; uniform kept
    torch.testing.assert_close(solve("imtlg", g), uniform)  # the minimum-norm solution
    # Nash-MTL: M = |g|^2 11^T with |g|^2 = 5.25, |g|^2 sum(a) = 1/a_i  =>  a_i = 1/sqrt(5.25 K)
    a = solve("nashmtl", g)
    torch.testing.assert_close(a, torch.full((k,), (5.25 * k) ** -0.5, dtype=F64), rtol=1e-12, atol=0)
    assert nash_residual(g, a) < 1e-12


def test_mgda_dominated_and_opposite_gradients() -> None:
    # g2 = 2 g1: the min-norm point is g1 itself
    torch.testing.assert_close(solve("mgda", torch.tensor([[1.0, 0.0], [2.0, 0.0]], dtype=F64)),
                               torch.tensor([1.0, 0.0], dtype=F64))
    # opposite gradients of norms 1 and 3: the zero vector 3/4 g1 + 1/4 g2 (Pareto stationary)
    opposite = torch.tensor([[1.0, 0.0], [-3.0, 0.0]], dtype=F64)
    torch.testing.assert_close(solve("mgda", opposite), torch.tensor([0.75, 0.25], dtype=F64))
    # IMTL-G and Nash-MTL stay finite there (no combination with a positive projection exists)
    assert torch.isfinite(solve("imtlg", opposite)).all()
    a = solve("nashmtl", opposite)
    assert torch.isfinite(a).all() and (a > 0).all()


@pytest.mark.parametrize("k", [2, 3, 8, 40])
def test_frank_wolfe_matches_the_kkt_conditions(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    g = torch.randn(k, 30, generator=gen, dtype=F64) + 0.3
    m = g @ g.T
    w = min_norm_weights(m)
    assert abs(float(w.sum()) - 1) < 1e-12 and (w >= 0).all()
    mw = m @ w
    # KKT: (M w)_i >= w^T M w everywhere, with equality on the support
    assert float(w @ mw - mw.min()) <= 1e-9 * float(m.diagonal().max())
    support = w > 1e-9
    assert float((mw[support] - w @ mw).abs().max()) <= 1e-6 * float(m.diagonal().max())
    if k == 2:  # the closed form and the iterative solver agree
        np.testing.assert_allclose(frank_wolfe(m.numpy()), w.numpy(), atol=1e-6)


@pytest.mark.parametrize("k", [3, 16, 64])
def test_nash_and_imtlg_on_random_gradients(k: int) -> None:
    gen = torch.Generator().manual_seed(k)
    scales = torch.logspace(-2, 2, k, dtype=F64)[:, None]
    g = scales * (torch.randn(k, 200, generator=gen, dtype=F64) + 0.5)
    a = solve("nashmtl", g)
    assert (a > 0).all() and nash_residual(g, a) < 1e-10
    assert abs(float((g.T @ a).norm()) / k**0.5 - 1) < 1e-10  # the update norm is sqrt(K)
    a = solve("imtlg", g)
    p = projections(g, a)
    assert float((p.max() - p.min()) / p.abs().max()) < 1e-8 and abs(float(a.sum()) - 1) < 1e-10
    # the normalised system's solution is the unnormalised one times ||G G^T||_F^(1/2)
    m = g @ g.T
    torch.testing.assert_close(nash_weights(m, normalize=True), torch.linalg.norm(m) ** 0.5 * nash_weights(m),
                               rtol=1e-10, atol=0)


# -------------------------------------------------------------------- the trainer-facing path
class Trunked(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh())
        self.heads = nn.Linear(16, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(x))


class NoTrunk(nn.Module):
    def __init__(self, k: int) -> None:
        super().__init__()
        self.a = nn.Linear(5, 8)
        self.b = nn.Linear(8, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def _losses(model: nn.Module, k: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=gen, dtype=F64)
    y = torch.randn(32, k, generator=gen, dtype=F64) * torch.arange(1, k + 1, dtype=F64)
    return ((model(x) - y) ** 2).mean(0) + 0.1


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("model_cls", [Trunked, NoTrunk], ids=["trunk", "no-trunk"])
def test_combine_applies_the_weighted_task_gradient(name: str, k: int, model_cls: type) -> None:
    torch.manual_seed(0)
    model = model_cls(k).double()
    shared = shared_parameters(model)
    expected_shared = list(model.trunk.parameters()) if hasattr(model, "trunk") else list(model.parameters())
    assert [id(p) for p in shared] == [id(p) for p in expected_shared]
    b = create_balancer(name, k).double()  # float64 weights buffer, like the model
    b.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    losses = _losses(model, k)
    loss = b(losses)
    (dl,) = torch.autograd.grad(loss, losses, retain_graph=True)
    torch.testing.assert_close(b.weights, dl, rtol=1e-12, atol=0)  # weights == d loss / d losses
    # the one backward of the returned loss applies sum_i w_i g_i to the shared parameters
    grads = task_gradients(losses, shared)
    applied = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, shared, retain_graph=True)])
    torch.testing.assert_close(applied, grads.T @ b.weights)
    assert all(p.grad is None for p in model.parameters())
    # the weights are the method's function of exactly those gradients
    torch.testing.assert_close(b.weights, b.solve(grads, losses.detach()))


def test_batched_and_looped_task_gradients_agree() -> None:
    model = Trunked(5).double()
    losses = _losses(model, 5)
    params = shared_parameters(model)
    batched = task_gradients(losses, params, batched=True, chunk=2)  # 3 chunks
    looped = task_gradients(losses, params, batched=False)
    assert batched.shape == (5, sum(p.numel() for p in params))
    torch.testing.assert_close(batched, looped)
    for i in range(5):  # row i is the gradient of loss i alone
        row = torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[i], params, retain_graph=True)])
        torch.testing.assert_close(batched[i], row)


@pytest.mark.parametrize("name", METHODS)
@pytest.mark.parametrize("batched", [True, False])
def test_the_model_chooses_batched_or_looped_task_gradients(name: str, batched: bool, monkeypatch) -> None:
    """A model with ``batched_task_gradients = False`` (QM9's) gets the K backward passes one by
    one, any other the batched one; the weights are the same either way."""
    import balancers._task_grads as tg

    calls: list[str] = []
    real = tg._batched
    monkeypatch.setattr(tg, "_batched", lambda *a, **k: calls.append("batched") or real(*a, **k))
    torch.manual_seed(0)
    model = Trunked(3).double()
    if not batched:
        model.batched_task_gradients = False
    b = create_balancer(name, 3).double()
    b.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    losses = _losses(model, 3)
    b(losses)
    assert calls == (["batched"] if batched else [])
    both = task_gradients(losses, shared_parameters(model), batched=not batched)  # the other path
    torch.testing.assert_close(b.weights, b.solve(both, losses.detach()))


def test_qm9_model_takes_its_task_gradients_one_by_one() -> None:
    from experiments.benchmarks.qm9.model import build_qm9_model

    assert build_qm9_model(11).batched_task_gradients is False


def test_unattached_balancer_raises() -> None:
    for name in METHODS:
        b = create_balancer(name, 3)
        with pytest.raises(RuntimeError, match="attach"):
            b(torch.ones(3, requires_grad=True) * 2)


@pytest.mark.parametrize("name, bad", [("mgda", {"normalization": "l1"}), ("mgda", {"tol": 0.0}),
                                       ("imtlg", {"rcond": 0.0}), ("nashmtl", {"max_iter": 0})])
def test_bad_hyperparameters_raise(name: str, bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        create_balancer(name, 3, **bad)
