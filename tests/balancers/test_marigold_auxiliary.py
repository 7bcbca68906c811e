"""MARIGOLD's auxiliary objective (seed 004 Sec. 3.5, Eq. 13-14): the zeroth-order estimate of the
main tasks' hypergradient against the exact one, the update's direction, passes per step in both
objectives, validation, and the worst case left as it was."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from balancers.marigold import Marigold
from balancers.registry import create_balancer
from tests.balancers.test_marigold import (CountBackward, Counted, exact_phi_and_grad, make_closure, make_setup,
                                           real_step_params, task_losses, train_step)


def aux_balancer(model, opt, main_tasks, n_tasks=None, **kwargs) -> Marigold:
    bal = Marigold(n_tasks or len(model.heads), objective="auxiliary", main_tasks=main_tasks, **kwargs)
    bal.attach(model, opt)
    return bal


def sphere_grid(p: int, n: int = 16) -> torch.Tensor:
    """An antipodally symmetric equispaced grid on S^{p-1} (p = 1: {+1, -1}; p = 2: n angles).

    Its mean of p (g.d) d is g exactly and it cancels every term even in d, so the grid mean of
    Alg. 1's estimate is the central difference of R along each axis: exact up to O(r^2)."""
    if p == 1:
        return torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    angles = 2.0 * math.pi * (torch.arange(n, dtype=torch.float64) + 0.123) / n
    return torch.stack([angles.cos(), angles.sin()], dim=-1)


# ---------------------------------------------------------------- 1. the estimator vs the exact one
@pytest.mark.parametrize("estimator", ["single_point", "two_point"])
@pytest.mark.parametrize(("n_heads", "main_tasks"), [(2, [0]), (3, [1]), (3, [0, 2])],
                         ids=["K2_main0", "K3_main1", "K3_main02"])
def test_auxiliary_estimate_matches_the_exact_hypergradient(n_heads, main_tasks, estimator):
    """Mean of the balancer's own estimate (its lambda(omega), perturbation of the auxiliary
    coordinates, virtual step, R = main-task sum and factor p/r) over a grid of directions equals
    d R(A(lambda(omega), theta)) / d omega computed exactly with torch.func."""
    model, opt, x, y = make_setup("adam", n_heads=n_heads, dtype=torch.float64)
    bal = aux_balancer(model, opt, main_tasks, r=1e-4, estimator=estimator).double()
    aux = [i for i in range(n_heads) if i not in main_tasks]
    bal.omega.copy_(torch.linspace(0.6, 1.4, len(aux), dtype=torch.float64))  # away from omega^0 = 1
    lam = bal._aux_lambda()
    assert lam[main_tasks].eq(1).all() and torch.equal(lam[aux], bal.omega)

    rho = torch.zeros(n_heads, dtype=torch.float64).index_fill_(0, torch.tensor(main_tasks), 1.0)
    _, grad_r = exact_phi_and_grad(model, opt, x, y, rho)  # d/dlambda sum_{main} f_i(A(lambda))
    exact = grad_r(lam)[aux]

    closure = make_closure(model, x, y)
    losses = task_losses(model(x), y)
    base = bal._virtual_losses(losses, lam, closure) if estimator == "two_point" else None
    grid = sphere_grid(len(aux))
    samples = torch.stack([bal._aux_hypergradient(bal._virtual_losses(losses, bal._aux_perturb(lam, d), closure),
                                                  base, d) for d in grid])
    assert samples.shape == (len(grid), len(aux))
    assert exact.abs().min() > 1e-4, "degenerate test: hypergradient ~ 0"
    error = (samples.mean(0) - exact).norm() / exact.norm()
    assert error < 1e-5, f"grid mean {samples.mean(0).tolist()} vs exact {exact.tolist()}"
    # the exact hypergradient ignores the auxiliary tasks' own losses: R only sees the main tasks
    assert not torch.allclose(grad_r(lam)[aux], exact_phi_and_grad(model, opt, x, y, torch.ones(n_heads,
                              dtype=torch.float64))[1](lam)[aux], rtol=1e-3)


@pytest.mark.parametrize("estimator", ["single_point", "two_point"])
@pytest.mark.parametrize("variant", ["faithful", "fused"])
def test_one_training_step_moves_omega_down_the_main_task_hypergradient(variant, estimator):
    """One real training step with a hand-picked direction, against an independent reference:
    f(A(.)) from REAL optimizer steps on deep copies, R = the main task's loss, g = (p/r) R d."""
    model, opt, x, y = make_setup("adam", n_heads=3, dtype=torch.float64)
    r, w_lr = 1e-2, 1e-3
    bal = aux_balancer(model, opt, [1], r=r, w_lr=w_lr, variant=variant, estimator=estimator).double()
    direction = torch.tensor([0.6, -0.8], dtype=torch.float64)
    bal._direction = lambda like, dim=None: direction.to(like)
    lam0 = torch.ones(3, dtype=torch.float64)
    pert = lam0 + r * torch.tensor([0.6, 0.0, -0.8], dtype=torch.float64)  # tasks 0 and 2: auxiliary
    main_after = task_losses(real_step_params(model, opt, pert, x, y)(x), y).detach()[1]
    if estimator == "two_point":
        main_after = main_after - task_losses(real_step_params(model, opt, lam0, x, y)(x), y).detach()[1]
    grad = (2 / r) * main_after * direction

    start_model, start_opt = copy.deepcopy((model, opt))
    train_step(model, opt, bal, x, y)
    assert (grad.abs() > 1e-6).all()
    torch.testing.assert_close(bal.omega, 1.0 - w_lr * torch.sign(grad), rtol=1e-3, atol=0)  # Adam's first step
    # the real step's weights: lambda(omega^{k+1}) (faithful, Alg. 2 line 5) or the perturbation (fused)
    expected_weights = torch.stack([bal.omega[0], lam0[1], bal.omega[1]]) if variant == "faithful" else pert
    torch.testing.assert_close(bal.weights, expected_weights)
    stepped = real_step_params(start_model, start_opt, expected_weights, x, y)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, dict(stepped.named_parameters())[name], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("aligned", "rises"), [(True, True), (False, False)], ids=["aligned_aux", "opposed_aux"])
def test_omega_learns_whether_the_auxiliary_task_helps_the_main_one(aligned, rises):
    """With SGD (scale matters) on one shared linear model: an auxiliary target equal to the main
    one speeds the main task up (omega rises); an opposite target hurts it (omega falls)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g, dtype=torch.float64)
    y = x @ torch.randn(4, generator=g, dtype=torch.float64)
    targets = torch.stack([y, y if aligned else -y], dim=-1)

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 1).double()

        def forward(self, inp):
            return self.lin(inp).expand(-1, 2)

    torch.manual_seed(0)
    model = Shared()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    bal = aux_balancer(model, opt, [0], n_tasks=2, r=1e-2, w_lr=1e-2, estimator="two_point").double()
    for _ in range(40):
        train_step(model, opt, bal, x, targets)
    omega = float(bal.omega)
    assert (omega > 1.1) if rises else (omega < 0.9), f"omega = {omega}"


# ---------------------------------------------------------------------- 2. passes per step
@pytest.mark.parametrize("objective", ["worst_case", "auxiliary"])
@pytest.mark.parametrize(
    ("variant", "estimator", "fwd", "bwd"),
    [("faithful", "single_point", 2, 2), ("faithful", "two_point", 3, 3),
     ("fused", "single_point", 2, 1), ("fused", "two_point", 3, 2)],
)
def test_model_passes_per_step_are_the_same_for_both_objectives(objective, variant, estimator, fwd, bwd):
    inner, _, x, y = make_setup("adam", n_heads=3, warm=0)
    model = Counted(inner)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    main = {"main_tasks": [0, 2]} if objective == "auxiliary" else {}
    bal = Marigold(3, variant=variant, estimator=estimator, objective=objective, **main)
    bal.attach(model, opt)
    model.forwards, CountBackward.calls = 0, 0
    for _ in range(3):
        train_step(model, opt, bal, x, y)
    assert (model.forwards, CountBackward.calls) == (3 * fwd, 3 * bwd)


# -------------------------------------------------------------- 3. validation, state, defaults
@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [({"objective": "min_max"}, "objective='min_max'"),
     ({"main_tasks": [0]}, "main_tasks=[0]"),
     ({"objective": "auxiliary"}, "main_tasks=None"),
     ({"objective": "auxiliary", "main_tasks": []}, "main_tasks=[]"),
     ({"objective": "auxiliary", "main_tasks": 0}, "main_tasks=0"),
     ({"objective": "auxiliary", "main_tasks": "left_cls"}, "main_tasks='left_cls'"),
     ({"objective": "auxiliary", "main_tasks": ["left_cls"]}, "main_tasks=['left_cls']"),
     ({"objective": "auxiliary", "main_tasks": [True]}, "main_tasks=[True]"),
     ({"objective": "auxiliary", "main_tasks": [1.0]}, "main_tasks=[1.0]"),
     ({"objective": "auxiliary", "main_tasks": [3]}, "main_tasks=[3]"),
     ({"objective": "auxiliary", "main_tasks": [-1]}, "main_tasks=[-1]"),
     ({"objective": "auxiliary", "main_tasks": [1, 1]}, "main_tasks=[1, 1]"),
     ({"objective": "auxiliary", "main_tasks": [0, 1, 2]}, "main_tasks=[0, 1, 2]")],
)
def test_bad_objective_or_main_tasks_is_a_one_line_value_error(kwargs, shown):
    with pytest.raises(ValueError) as err:
        create_balancer("marigold", 3, **kwargs)
    message = str(err.value)
    assert shown in message and "\n" not in message and message.startswith("MARIGOLD ")


def test_defaults_state_and_flags_per_objective():
    worst = Marigold(3)
    assert worst.hparams()["objective"] == "worst_case" and worst.hparams()["main_tasks"] is None
    assert set(worst.state_dict()) == {"_weights", "u", "v", "_extra_state"}
    assert worst.nonnegative_weights and worst.weights_sum_to_one
    aux = Marigold(3, objective="auxiliary", main_tasks=(2,))
    assert aux.hparams()["main_tasks"] == [2] and isinstance(aux.main_tasks, list)
    assert set(aux.state_dict()) == {"_weights", "omega", "_extra_state"}  # mask and index are derived
    assert torch.equal(aux.omega, torch.ones(2)) and torch.equal(aux.weights, torch.ones(3))
    assert not aux.nonnegative_weights and not aux.weights_sum_to_one
    assert repr(aux) == ("Marigold(n_tasks=3, beta=1.0, r=0.001, w_lr=0.0001, variant='faithful', "
                         "estimator='single_point', objective='auxiliary', main_tasks=[2], seed=0)")


def test_auxiliary_losses_need_not_be_positive():
    """No softmax temperature in the auxiliary objective: zero or negative losses are fine."""
    model, opt, x, y = make_setup("adam", n_heads=2)
    bal = aux_balancer(model, opt, [0])
    losses = task_losses(model(x), y) - torch.tensor([0.0, 10.0])
    loss = bal(losses, closure=make_closure(model, x, y))
    assert torch.isfinite(loss) and torch.isfinite(bal.omega).all()
    with pytest.raises(ValueError, match="temperature"):
        wc = Marigold(2)
        wc.attach(model, opt)
        wc(losses, closure=make_closure(model, x, y))
