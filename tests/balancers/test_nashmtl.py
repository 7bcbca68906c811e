"""Nash-MTL as its authors' code runs it (AvivNavon/nash-mtl, ``methods/weight_methods.py``): the
unnormalised system ``(G G^T) a = 1/a``, the shared gradient clipped to ``max_norm`` after the
backward, and ``update_weights_every``. Hand-derived values, plus weights recorded once from the
authors' own solver.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import balancers._task_grads as task_grads
from balancers import create_balancer
from tests.conftest import BalancerConfig, make_problem

F64 = torch.float64
# Weights the authors' NashMTL (cvxpy/ECOS, max_norm 1.0, optim_niter 20) returned for these task
# gradients (losses l_i = g_i^T theta + 1 on one shared parameter vector theta), run once from
# AvivNavon/nash-mtl at commit cce18403ef5557a6b30f4ba43b896117107d6902 with cvxpy 1.9.3 / ECOS
# 2.0.14; its residual max|G G^T a - 1/a| was 1.9e-8 and 5.2e-7, and its clipped gradient norm
# 0.99999942 for both (= sqrt(3) / (sqrt(3) + 1e-6)).
REFERENCE = {
    "general": ([[1.0, 0.2, -0.3, 0.0], [0.1, 1.5, 0.4, 0.2], [-0.5, 0.3, 2.0, 1.0]],
                [1.1193854419362919, 0.46738850945143956, 0.4831028855864779]),
    "scaled": ([[10.0, 2.0, -3.0, 0.0], [1.0, 15.0, 4.0, 2.0], [-5.0, 3.0, 20.0, 10.0]],
               [0.11193854724001659, 0.04673885108636832, 0.048310288936706094]),
}


class LinearTasks(nn.Module):
    """Task i's loss is ``g_i^T theta + c_i + head_i``: its shared gradient is exactly ``g_i``."""

    def __init__(self, grads: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("g", grads.clone())
        self.trunk = nn.Module()
        self.trunk.theta = nn.Parameter(torch.zeros(grads.shape[1], dtype=grads.dtype))
        self.heads = nn.Parameter(torch.zeros(grads.shape[0], dtype=grads.dtype))

    def forward(self) -> torch.Tensor:
        return self.g @ self.trunk.theta + 1.0 + self.heads


def attached(grads: torch.Tensor, **hparams) -> tuple[LinearTasks, torch.nn.Module]:
    model = LinearTasks(grads)
    b = create_balancer("nashmtl", grads.shape[0], **hparams).double()
    b.attach(model, torch.optim.SGD(model.parameters(), lr=0.1))
    return model, b


@pytest.mark.parametrize("case", sorted(REFERENCE))
def test_weights_equal_the_authors_solver(case: str) -> None:
    g, expected = REFERENCE[case]
    grads = torch.tensor(g, dtype=F64)
    a = create_balancer("nashmtl", 3).solve(grads, torch.ones(3, dtype=F64))
    torch.testing.assert_close(a, torch.tensor(expected, dtype=F64), rtol=1e-7, atol=0)
    m = grads @ grads.T
    assert float((a * (m @ a) - 1).abs().max()) < 1e-12  # ours: machine precision


@pytest.mark.parametrize("max_norm, expected_norm", [(1.0, 3**0.5 / (3**0.5 + 1e-6)), (0.0, 3**0.5), (5.0, 3**0.5)])
def test_orthogonal_gradients_update_norm_sqrt_k_then_clipped(max_norm: float, expected_norm: float) -> None:
    """a_i = 1/|g_i|; the shared gradient G^T a has norm sqrt(K) after backward, and after_backward
    scales it by max_norm / (sqrt(K) + 1e-6) (torch's clip_grad_norm_) when that is below one."""
    n = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    grads = torch.diag(n)
    model, b = attached(grads, max_norm=max_norm)
    loss = b(model())
    torch.testing.assert_close(b.weights, 1 / n, rtol=1e-12, atol=0)
    loss.backward()
    before = model.trunk.theta.grad.clone()
    torch.testing.assert_close(before, grads.T @ (1 / n), rtol=1e-12, atol=0)  # = (1, 1, 1)
    assert abs(float(before.norm()) - 3**0.5) < 1e-12
    head_grad = model.heads.grad.clone()
    b.after_backward()
    after = model.trunk.theta.grad
    assert abs(float(after.norm()) - expected_norm) < 1e-12
    torch.testing.assert_close(after / after.norm(), before / before.norm(), rtol=1e-12, atol=0)  # same direction
    assert torch.equal(model.heads.grad, head_grad)  # task-specific parameters are not clipped


def test_general_gradients_update_norm_is_sqrt_k() -> None:
    gen = torch.Generator().manual_seed(5)
    for k in (2, 5, 12):
        grads = torch.randn(k, 30, generator=gen, dtype=F64) * torch.logspace(-3, 3, k, dtype=F64)[:, None] + 0.3
        model, b = attached(grads, max_norm=0.0)
        b(model()).backward()
        assert abs(float(model.trunk.theta.grad.norm()) / k**0.5 - 1) < 1e-10


@pytest.mark.parametrize("every", [1, 3])
def test_update_weights_every_reuses_the_last_weights(every: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Recomputed at calls 0, n, 2n, ... (the task gradients are not even computed in between, as in
    the reference); clipping runs at every step."""
    calls: list[int] = []
    original = task_grads.task_gradients

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(task_grads, "task_gradients", counting)
    p = make_problem(BalancerConfig("nashmtl", (("update_weights_every", every),)), dtype=F64)
    weights, recomputed = [], []
    for t in range(7):
        before = len(calls)
        p.train_step()
        weights.append(p.balancer.weights.clone())
        recomputed.append(len(calls) > before)
    assert recomputed == [t % every == 0 for t in range(7)]
    for t in range(7):
        last = t - t % every
        assert torch.equal(weights[t], weights[last])
    assert not torch.equal(weights[0], weights[every])  # the problem moves: recomputing matters


def test_update_weights_every_resumes_exactly_mid_cycle() -> None:
    config = BalancerConfig("nashmtl", (("update_weights_every", 3),))
    p = make_problem(config)
    p.run(4)  # one call into the second cycle
    buf = io.BytesIO()
    torch.save({"model": p.model.state_dict(), "optimizer": p.optimizer.state_dict(),
                "balancer": p.balancer.state_dict()}, buf)
    expected, _ = p.run(5)
    buf.seek(0)
    state = torch.load(buf)
    q = make_problem(config)
    q.model.load_state_dict(state["model"])
    q.optimizer.load_state_dict(state["optimizer"])
    q.balancer.load_state_dict(state["balancer"])
    got, _ = q.run(5)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    p.balancer.reset()
    assert p.balancer.state_dict()["_extra_state"] == {"extra.calls": 0}


def test_repr_and_hparams() -> None:
    b = create_balancer("nashmtl", 3, max_norm=0.5, update_weights_every=2)
    assert b.hparams()["max_norm"] == 0.5 and b.hparams()["update_weights_every"] == 2
    assert repr(b).startswith("NashMTL(n_tasks=3, max_norm=0.5, update_weights_every=2")
    default = create_balancer("nashmtl", 3)
    assert (default.max_norm, default.update_weights_every) == (1.0, 1)  # the reference's defaults


@pytest.mark.parametrize("bad", [{"max_norm": -1.0}, {"max_norm": float("inf")}, {"max_norm": True},
                                 {"update_weights_every": 0}, {"update_weights_every": 1.5}])
def test_bad_hyperparameters_are_named(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        create_balancer("nashmtl", 3, **bad)
