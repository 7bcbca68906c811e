"""MARIGOLD: virtual optimizer steps, exact and zeroth-order hypergradients, pass counts, state."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from balancers._functional_optim import param_slots, virtual_step
from balancers.marigold import Marigold
from balancers.registry import balancer_info, create_balancer


# ------------------------------------------------------------------------------------ fixtures
class Heads(nn.Module):
    """A 4 -> 8 trunk (tanh: smooth, no dead units) with one scalar regression head per task."""

    def __init__(self, n_heads: int = 2) -> None:
        super().__init__()
        self.trunk = nn.Linear(4, 8)
        self.heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(n_heads))

    def forward(self, x):
        z = torch.tanh(self.trunk(x))
        return torch.cat([h(z) for h in self.heads], dim=-1)


def task_losses(out, y):
    return ((out - y) ** 2).mean(0)


OPTIMIZERS = {
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2),
    "sgd_nesterov": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "sgd_dampening": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.5, dampening=0.3, maximize=False),
    "sgd_plain": lambda ps: torch.optim.SGD(ps, lr=0.1),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2, weight_decay=1e-2),
    "adam_amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-2, betas=(0.8, 0.99), amsgrad=True),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
}


def make_setup(opt_name="adam", n_heads=2, warm=3, dtype=torch.float32, seed=0, opt_fn=None):
    """Model, optimizer warmed up by ``warm`` real steps (so its state exists), one fixed batch."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = Heads(n_heads).to(dtype)
    opt = (opt_fn or OPTIMIZERS[opt_name])(model.parameters())
    for _ in range(warm):
        xw, yw = torch.randn(16, 4, generator=g, dtype=dtype), torch.randn(16, n_heads, generator=g, dtype=dtype)
        opt.zero_grad()
        task_losses(model(xw), yw).sum().backward()
        opt.step()
    x, y = torch.randn(16, 4, generator=g, dtype=dtype), torch.randn(16, n_heads, generator=g, dtype=dtype)
    return model, opt, x, y


def make_closure(model, x, y):
    def closure(params=None):
        with torch.no_grad():
            out = model(x) if params is None else functional_call(model, dict(params), (x,))
            return task_losses(out, y)

    return closure


def train_step(model, opt, bal, x, y):
    """What the trainer does each step (base.py lifecycle)."""
    closure = make_closure(model, x, y)
    loss = bal(task_losses(model(x), y), closure=closure)
    opt.zero_grad()
    loss.backward()
    opt.step()
    bal.step(closure)
    return loss


def snapshot(model, opt):
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    return params, grads, copy.deepcopy(opt.state_dict())


def assert_same_snapshot(a, b):
    for n in a[0]:
        assert torch.equal(a[0][n], b[0][n]), f"parameter {n} changed"
        assert (a[1][n] is None) == (b[1][n] is None) and (a[1][n] is None or torch.equal(a[1][n], b[1][n]))
    sa, sb = a[2]["state"], b[2]["state"]
    assert sa.keys() == sb.keys(), "optimizer state entries were created or dropped"
    for k in sa:
        assert sa[k].keys() == sb[k].keys()
        for key in sa[k]:
            va, vb = sa[k][key], sb[k][key]
            assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, f"state {k}.{key} changed"


def real_step_params(model, opt, weights, x, y):
    """Parameters after a REAL optimizer step on sum_i weights_i f_i, on deep copies."""
    model_c, opt_c = copy.deepcopy((model, opt))
    opt_c.zero_grad()
    (weights * task_losses(model_c(x), y)).sum().backward()
    opt_c.step()
    return model_c


# ------------------------------------------------------------------------ 1. the virtual step
@pytest.mark.parametrize("warm", [0, 3], ids=["first_step", "with_state"])
@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_virtual_step_matches_a_real_step_and_mutates_nothing(opt_name, warm):
    model, opt, x, y = make_setup(opt_name, warm=warm)
    for p in model.parameters():  # stale .grad must be left exactly as it is
        p.grad = torch.full_like(p, 0.25)
    before = snapshot(model, opt)
    lam = torch.tensor([0.3, 0.7])
    named = dict(model.named_parameters())
    grads = torch.autograd.grad((lam * task_losses(model(x), y)).sum(), list(named.values()))
    virtual = virtual_step(opt, named, dict(zip(named, grads)))
    expected = dict(real_step_params(model, opt, lam, x, y).named_parameters())
    assert virtual.keys() == named.keys()
    for n in named:
        torch.testing.assert_close(virtual[n], expected[n].detach(), rtol=0, atol=1e-6)
        assert not torch.equal(virtual[n], named[n].detach()), f"{n} did not move"
    assert_same_snapshot(before, snapshot(model, opt))


def test_virtual_step_skips_parameters_without_grad_or_optimizer():
    torch.manual_seed(0)
    model = Heads(2)
    opt = torch.optim.Adam(list(model.heads.parameters()), lr=1e-2)  # the trunk is not optimized
    named = dict(model.named_parameters())
    grads = {n: torch.ones_like(p) for n, p in named.items()}
    grads["heads.1.bias"] = None
    out = virtual_step(opt, named, grads)
    assert out["trunk.weight"] is named["trunk.weight"] and out["heads.1.bias"] is named["heads.1.bias"]
    assert not torch.equal(out["heads.0.weight"], named["heads.0.weight"])
    assert opt.state == {}, "reading the state must not create entries"


def test_unsupported_optimizer_is_a_type_error():
    model = Heads(2)
    opt = torch.optim.RMSprop(model.parameters())
    with pytest.raises(TypeError, match="SGD, Adam and AdamW"):
        virtual_step(opt, dict(model.named_parameters()), {})
    with pytest.raises(TypeError, match="RMSprop"):
        Marigold(2).attach(model, opt)


# ------------------------------------------------------------------ 2. the exact hypergradient
def exact_phi_and_grad(model, opt, x, y, rho):
    """lambda -> f(A(lambda, theta)) built with torch.func and the project's (differentiable) rule."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    slots = param_slots(opt, dict(model.named_parameters()))

    def losses_at(p):
        return task_losses(functional_call(model, p, (x,)), y)

    def virtual_losses(lam):
        grads = torch.func.grad(lambda p: (lam * losses_at(p)).sum())(params)
        return losses_at(virtual_step(opt, params, grads, slots))

    def phi(lam):
        return (rho * virtual_losses(lam)).sum()

    return virtual_losses, torch.func.grad(phi)


_SGD_MOMENTUM = lambda ps: torch.optim.SGD(ps, lr=0.2, momentum=0.9, dampening=0.1, weight_decay=1e-2)  # noqa: E731
_SGD_NESTEROV = lambda ps: torch.optim.SGD(ps, lr=0.2, momentum=0.9, nesterov=True)  # noqa: E731
# higher's Adam puts eps at sqrt(v) + eps (pre-2018 form), torch at sqrt(v)/sqrt(bc2) + eps: eps = 0
# makes the two rules the same function. (A *first* Adam step with eps = 0 is lr * sign(g), flat in
# lambda, so Adam is only compared once its state exists.)
_ADAM = lambda ps: torch.optim.Adam(ps, lr=0.05, eps=0.0, weight_decay=1e-2)  # noqa: E731


@pytest.mark.parametrize(
    ("opt_fn", "warm"),
    [(_SGD_MOMENTUM, 0), (_SGD_MOMENTUM, 3), (_SGD_NESTEROV, 0), (_SGD_NESTEROV, 3), (_ADAM, 3)],
    ids=["sgd_momentum_first_step", "sgd_momentum", "sgd_nesterov_first_step", "sgd_nesterov", "adam"],
)
def test_exact_hypergradient_matches_higher(opt_fn, warm):
    higher = pytest.importorskip("higher")
    model, opt, x, y = make_setup(opt_fn=opt_fn, warm=warm, dtype=torch.float64)
    before = snapshot(model, opt)
    lam = torch.tensor([0.35, 0.65], dtype=torch.float64)
    rho = torch.tensor([0.6, 0.4], dtype=torch.float64)
    _, grad_phi = exact_phi_and_grad(model, opt, x, y, rho)
    ours = grad_phi(lam)

    lam_h = lam.clone().requires_grad_()
    with higher.innerloop_ctx(model, opt, copy_initial_weights=True, track_higher_grads=True) as (fmodel, diffopt):
        diffopt.step((lam_h * task_losses(fmodel(x), y)).sum())
        (theirs,) = torch.autograd.grad((rho * task_losses(fmodel(x), y)).sum(), lam_h)
    assert ours.abs().min() > 1e-6, "degenerate test: hypergradient ~ 0"
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=0)
    assert_same_snapshot(before, snapshot(model, opt))


# -------------------------------------------------------------- 3. the zeroth-order estimator
def estimator_mean(virtual_losses, lam, rho, dirs, r, two_point):
    perturbed = torch.func.vmap(virtual_losses)(lam + r * dirs)
    base = virtual_losses(lam) if two_point else None
    samples = Marigold.zo_hypergradient(rho, perturbed, base, dirs, r)
    return samples.mean(0), samples


def test_two_point_estimator_converges_to_exact_hypergradient_as_r_shrinks():
    model, opt, x, y = make_setup("adam", n_heads=2, dtype=torch.float64)
    lam = torch.tensor([0.45, 0.55], dtype=torch.float64)
    rho = torch.tensor([0.3, 0.7], dtype=torch.float64)
    virtual_losses, grad_phi = exact_phi_and_grad(model, opt, x, y, rho)
    exact = grad_phi(lam)
    # A randomly rotated equispaced grid on S^1: each point is marginally Unif(S^1) and the mean is
    # E_u[...] up to (exponentially small) quadrature error, so what remains is the bias in r.
    angles = 2.0 * math.pi * (torch.arange(2000, dtype=torch.float64) + 0.123) / 2000
    grid = torch.stack([angles.cos(), angles.sin()], dim=-1)
    errors = {r: (estimator_mean(virtual_losses, lam, rho, grid, r, True)[0] - exact).norm() / exact.norm()
              for r in (3e-1, 1e-1, 1e-3)}
    assert errors[1e-3] < errors[1e-1] < errors[3e-1]
    assert errors[1e-3] < 1e-4


def test_zeroth_order_estimators_are_unbiased_over_random_directions():
    model, opt, x, y = make_setup("adam", n_heads=3, dtype=torch.float64)
    lam = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
    rho = torch.tensor([0.5, 0.2, 0.3], dtype=torch.float64)
    virtual_losses, grad_phi = exact_phi_and_grad(model, opt, x, y, rho)
    exact = grad_phi(lam)
    z = torch.randn(20_000, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dirs = z / z.norm(dim=-1, keepdim=True)
    r = 1e-3
    two_mean, two = estimator_mean(virtual_losses, lam, rho, dirs, r, True)
    assert torch.nn.functional.cosine_similarity(two_mean, exact, dim=0) > 0.99
    stderr = two.std(0) / math.sqrt(len(dirs))
    assert ((two_mean - exact).abs() < 5 * stderr).all()
    # single point: same mean, variance ~ ((m/r) Phi)^2. Its samples differ from two-point ones by
    # exactly (m/r) rho.f(A(lam)) u, a zero-mean term; the sample mean is within a few std errors.
    one_mean, one = estimator_mean(virtual_losses, lam, rho, dirs, r, False)
    shift = (3 / r) * (rho * virtual_losses(lam)).sum() * dirs
    torch.testing.assert_close(one - two, shift, rtol=1e-6, atol=1e-6)
    one_stderr = one.std(0) / math.sqrt(len(dirs))
    assert ((one_mean - exact).abs() < 5 * one_stderr).all()
    # with antithetic pairs (u, -u: still uniform marginals) the single-point mean is accurate.
    anti = torch.cat([dirs[:2000], -dirs[:2000]])
    anti_mean, _ = estimator_mean(virtual_losses, lam, rho, anti, r, False)
    assert torch.nn.functional.cosine_similarity(anti_mean, exact, dim=0) > 0.99


# ------------------------------------------------------------------------- 4. pass counting
class CountBackward(torch.autograd.Function):
    calls = 0

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        CountBackward.calls += 1
        return grad


class Counted(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.forwards = 0
        self.register_forward_hook(lambda *_: setattr(self, "forwards", self.forwards + 1))

    def forward(self, x):
        return CountBackward.apply(self.inner(x))


@pytest.mark.parametrize(
    ("variant", "estimator", "fwd", "bwd"),
    [("faithful", "single_point", 2, 2), ("faithful", "two_point", 3, 3),
     ("fused", "single_point", 2, 1), ("fused", "two_point", 3, 2)],
)
def test_model_passes_per_step(variant, estimator, fwd, bwd):
    inner, _, x, y = make_setup("adam", warm=0)
    model = Counted(inner)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    bal = Marigold(2, variant=variant, estimator=estimator)
    bal.attach(model, opt)
    model.forwards, CountBackward.calls = 0, 0
    for _ in range(3):
        train_step(model, opt, bal, x, y)
    assert (model.forwards, CountBackward.calls) == (3 * fwd, 3 * bwd)


# ---------------------------------------------------------------- 5. update directions, purity
@pytest.mark.parametrize("estimator", ["single_point", "two_point"])
@pytest.mark.parametrize("variant", ["faithful", "fused"])
def test_u_descends_v_ascends_and_the_real_model_is_untouched(variant, estimator):
    model, opt, x, y = make_setup("adam")
    beta, r, w_lr = 2.0, 1e-2, 1e-3
    bal = Marigold(2, beta=beta, r=r, w_lr=w_lr, variant=variant, estimator=estimator)
    bal.attach(model, opt)
    direction = torch.tensor([0.6, -0.8])
    bal._direction = lambda like: direction.to(like)  # a hand-picked d on S^1
    f = task_losses(model(x), y).detach()
    lam0 = rho0 = torch.full((2,), 0.5)  # u = v = 0
    # Independent reference: f(A(.)) from REAL optimizer steps on deep copies.
    f_pert = task_losses(real_step_params(model, opt, lam0 + r * direction, x, y)(x), y).detach()
    phi = (rho0 * f_pert).sum()
    if estimator == "two_point":
        phi = phi - (rho0 * task_losses(real_step_params(model, opt, lam0, x, y)(x), y).detach()).sum()
    g_lam, g_rho = (2 / r) * phi * direction, f_pert - f
    # softmax(beta u / f) pulled back by hand: d/du_j = (beta / f_j) lam_j (g_j - lam.g)
    grad_u = beta / f * lam0 * (g_lam - (lam0 * g_lam).sum())
    grad_v = beta / f * rho0 * (g_rho - (rho0 * g_rho).sum())

    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    before = snapshot(model, opt)
    closure = make_closure(model, x, y)
    loss = bal(task_losses(model(x), y), closure=closure)
    assert_same_snapshot(before, snapshot(model, opt))  # combine never touches the real model
    opt.zero_grad()
    loss.backward()
    opt.step()
    bal.step(closure)
    # First Adam step moves every coordinate by lr * g / (|g| + eps): u down its gradient, v up.
    assert (grad_u.abs() > 1e-4).all() and (grad_v.abs() > 1e-4).all()
    torch.testing.assert_close(bal.u, -w_lr * torch.sign(grad_u), rtol=1e-3, atol=0)
    torch.testing.assert_close(bal.v, w_lr * torch.sign(grad_v), rtol=1e-3, atol=0)
    if variant == "faithful":
        torch.testing.assert_close(bal.weights, torch.softmax(beta * bal.u / f, 0))
    else:
        torch.testing.assert_close(bal.weights, lam0 + r * direction)


def test_weights_simplex_flags_and_loss():
    for variant, on_simplex in (("faithful", True), ("fused", False)):
        model, opt, x, y = make_setup("adam")
        bal = Marigold(2, r=0.05, variant=variant, w_lr=1e-2)
        bal.attach(model, opt)
        losses = task_losses(model(x), y)
        loss = bal(losses, closure=make_closure(model, x, y))
        torch.testing.assert_close(loss, (bal.weights * losses).sum())
        assert bal.nonnegative_weights is on_simplex and bal.weights_sum_to_one is on_simplex
        assert math.isclose(float(bal.weights.sum()), 1.0, rel_tol=1e-6) is on_simplex


# ---------------------------------------------------------------------- 6. determinism, state
def run(bal, model, opt, x, y, steps):
    out = []
    for _ in range(steps):
        train_step(model, opt, bal, x, y)
        out.append(torch.cat([bal.u, bal.v, bal.weights]).clone())
    return torch.stack(out)


@pytest.mark.parametrize("variant", ["faithful", "fused"])
def test_seeds_state_dict_and_reset(variant):
    def fresh(seed=0):
        model, opt, x, y = make_setup("adam")
        bal = Marigold(2, variant=variant, estimator="two_point", w_lr=1e-2, seed=seed)
        bal.attach(model, opt)
        return bal, model, opt, x, y

    bal, model, opt, x, y = fresh()
    start = copy.deepcopy((model, opt))
    traj = run(bal, model, opt, x, y, 6)
    assert torch.equal(traj, run(*fresh(), 6))
    assert not torch.equal(traj, run(*fresh(seed=1), 6))

    # state_dict mid-run: resume on copies of model/optimizer, continue identically
    bal, model, opt, x, y = fresh()
    run(bal, model, opt, x, y, 3)
    state = copy.deepcopy(bal.state_dict())
    assert {"u", "v", "_extra_state"} <= state.keys()
    assert {"extra.adam", "extra.generator"} <= state["_extra_state"].keys()
    model2, opt2 = copy.deepcopy((model, opt))
    tail = run(bal, model, opt, x, y, 3)
    bal2 = Marigold(2, **bal.hparams())
    bal2.load_state_dict(state)
    bal2.attach(model2, opt2)
    assert torch.equal(run(bal2, model2, opt2, x, y, 3), tail)
    torch.testing.assert_close(traj[3:], tail)

    # reset: the fresh state again (u = v = 0, new Adam, generator reseeded)
    bal.reset()
    assert not bal.u.any() and not bal.v.any() and torch.equal(bal.weights, torch.full((2,), 0.5))
    model3, opt3 = copy.deepcopy(start)
    bal.attach(model3, opt3)
    assert torch.equal(run(bal, model3, opt3, x, y, 6), traj)


# ------------------------------------------------------------------------- 7. validation etc.
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"beta": 0.0}, "beta"), ({"beta": -1.0}, "beta"), ({"r": 0.0}, "r"), ({"r": float("nan")}, "r"),
     ({"w_lr": -1e-4}, "w_lr"), ({"variant": "lazy"}, "variant"), ({"estimator": "three_point"}, "estimator"),
     ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed")],
)
def test_bad_hyperparameters(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Marigold(2, **kwargs)


def test_nonpositive_losses_and_missing_pieces():
    model, opt, x, y = make_setup("adam")
    bal = Marigold(2)
    closure = make_closure(model, x, y)
    with pytest.raises(RuntimeError, match="attach"):
        bal(task_losses(model(x), y), closure=closure)
    bal.attach(model, opt)
    with pytest.raises(ValueError, match="closure"):
        bal(task_losses(model(x), y))
    for shift in (0.0, 5.0):  # a zero loss and a negative loss
        losses = task_losses(model(x), y) * torch.tensor([1.0, 0.0]) - torch.tensor([0.0, shift])
        with pytest.raises(ValueError, match="temperature"):
            bal(losses, closure=closure)
    bal.check_values = False  # no host sync: the weights turn NaN instead of being silently clamped
    bal.reset()
    losses = task_losses(model(x), y) * torch.tensor([1.0, 0.0])
    assert torch.isnan(bal(losses, closure=closure)).item()
    fused = Marigold(2, variant="fused")
    with pytest.raises(RuntimeError, match="combine"):
        fused.step(closure)


def test_registry_metadata_and_repr():
    info = balancer_info("marigold")
    assert info.cls is Marigold
    assert (info.needs_closure, info.needs_model, info.stochastic, info.stateful) == (True, True, True, True)
    assert not info.has_parameters and list(Marigold(2).parameters()) == []
    bal = create_balancer("marigold", 3, beta=0.03, variant="fused")
    assert "beta=0.03" in repr(bal) and "variant='fused'" in repr(bal)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("opt_name", ["sgd_momentum", "adam", "adamw"])
def test_cuda_virtual_step_and_training(opt_name):
    model, opt, x, y = make_setup(opt_name)
    model, x, y = model.cuda(), x.cuda(), y.cuda()
    opt = OPTIMIZERS[opt_name](model.parameters())
    for _ in range(2):
        opt.zero_grad()
        task_losses(model(x), y).sum().backward()
        opt.step()
    lam = torch.tensor([0.3, 0.7], device="cuda")
    named = dict(model.named_parameters())
    grads = torch.autograd.grad((lam * task_losses(model(x), y)).sum(), list(named.values()))
    virtual = virtual_step(opt, named, dict(zip(named, grads)))
    expected = dict(real_step_params(model, opt, lam, x, y).named_parameters())
    for n in named:
        torch.testing.assert_close(virtual[n], expected[n].detach(), rtol=0, atol=1e-6)
    bal = Marigold(2, estimator="two_point").cuda()
    bal.attach(model, opt)
    run(bal, model, opt, x, y, 3)
    assert bal.u.is_cuda and torch.isfinite(bal.u).all()
