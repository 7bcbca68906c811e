"""Seed 003 Prop. 6, checked numerically: with equal task losses and equal initial logits, FAMO keeps
equal weights.

The problem: a shared ``tanh(Linear)`` trunk and K *identical* linear heads (copies of one head)
fitting the same target, so every task loss is bit-for-bit the same at every step; FAMO (the
paper's same-batch update, default hyperparameters) and Adam train it for ``steps`` steps and the
largest deviation of any weight from 1/K is recorded. A control run with different targets per
task shows the check can see weights move when the losses differ.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from balancers import create_balancer


class _IdenticalHeads(nn.Module):
    def __init__(self, n_tasks: int, d_in: int = 8, d_hidden: int = 16) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(d_in, d_hidden), nn.Tanh())
        head = nn.Linear(d_hidden, 1)
        self.heads = nn.ModuleList(copy.deepcopy(head) for _ in range(n_tasks))

    def forward(self, x: Tensor) -> Tensor:
        z = self.trunk(x)
        return torch.cat([h(z) for h in self.heads], dim=1)


def famo_max_weight_deviation(n_tasks: int = 4, steps: int = 1000, equal_losses: bool = True, seed: int = 0,
                              lr: float = 1e-3) -> float:
    """max over steps and tasks of |w_i − 1/K| for FAMO on the identical-heads problem
    (``equal_losses=False``: the control, targets scaled by 1..K)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _IdenticalHeads(n_tasks)
    x = torch.randn(32, 8, generator=gen)
    target = torch.sin(x @ torch.randn(8, 1, generator=gen))
    scale = torch.ones(n_tasks) if equal_losses else torch.arange(1, n_tasks + 1, dtype=torch.float32)
    y = target * scale

    def losses_of(pred: Tensor) -> Tensor:
        return ((pred - y) ** 2).mean(dim=0) + 0.1  # > 0: FAMO takes logs

    def closure(params: dict[str, Tensor] | None = None) -> Tensor:
        with torch.no_grad():
            pred = model(x) if params is None else torch.func.functional_call(model, params, (x,))
            return losses_of(pred)

    famo = create_balancer("famo", n_tasks)  # equal initial logits (zeros), the paper's update
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    worst = torch.zeros(())
    for _ in range(steps):
        loss = famo(losses_of(model(x)), closure=closure)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        famo.step(closure)
        worst = torch.maximum(worst, (famo.weights - 1.0 / n_tasks).abs().max())
    return float(worst)
