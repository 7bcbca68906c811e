"""A balancebench balancer in a plain PyTorch training loop (quoted in docs/usage.md).

Run it: ``python examples/plain_loop.py [balancer ...]`` (default: uniform, famo, marigold, uw).
The loop reads what a balancer needs from its registry metadata, so the same loop runs every
registered balancer: the same-batch closure for FAMO and MARIGOLD, ``attach`` for the balancers
that need the model and its optimizer (MARIGOLD, the O(K) gradient methods), the balancer's own
parameters in the optimizer (UW), the epoch hook (DWA, STCH).
"""

from __future__ import annotations

import sys

import torch
from torch import Tensor, nn
from torch.func import functional_call

from balancers import balancer_info, create_balancer

K = 3  # tasks


class MultiTaskNet(nn.Module):
    """A shared trunk and one head per task; ``forward(x)`` -> (B, K) predictions. O(K) balancers
    compute per-task gradients of ``trunk``'s parameters (all parameters if there is no trunk)."""

    def __init__(self, d_in: int = 8, hidden: int = 32) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(hidden, 1) for _ in range(K))

    def forward(self, x: Tensor) -> Tensor:
        z = self.trunk(x)
        return torch.cat([head(z) for head in self.heads], dim=1)


def make_data(n: int = 1024, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Inputs and K regression targets on very different scales (0.1, 1, 10)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    mix = torch.randn(8, K, generator=gen) / 8**0.5
    y = torch.sin(x @ mix) * torch.tensor([0.1, 1.0, 10.0])
    return x, y


def task_losses(pred: Tensor, y: Tensor) -> Tensor:
    """The (K,) vector of per-task losses: what every balancer takes."""
    return ((pred - y) ** 2).mean(dim=0)


def make_closure(model: nn.Module, x: Tensor, y: Tensor):
    """FAMO's and MARIGOLD's ``closure(params=None)``: the K losses on the SAME batch, without
    autograd, at the current parameters or at ``params`` (a name -> tensor mapping).
    This model has no dropout or BatchNorm; with them, replay the forward's RNG state and run on
    copies of the buffers (as balancebench's trainer does) so the closure sees the same function."""

    def closure(params: dict[str, Tensor] | None = None) -> Tensor:
        with torch.no_grad():
            pred = model(x) if params is None else functional_call(model, params, (x,))
            return task_losses(pred, y)

    return closure


def train(name: str, epochs: int = 10, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
          **hparams) -> list[float]:
    """Train with balancer ``name``; returns the mean validation loss of each task."""
    torch.manual_seed(seed)
    x, y = make_data(seed=seed)
    (x_train, x_val), (y_train, y_val) = x.split([768, 256]), y.split([768, 256])
    model = MultiTaskNet()
    info = balancer_info(name)
    balancer = create_balancer(name, n_tasks=K, **hparams)

    groups = [{"params": list(model.parameters())}]
    if info.has_parameters:  # e.g. UW's log-variances: trained by the model optimizer, own group
        own_lr = lr if balancer.learnables_lr is None else balancer.learnables_lr
        groups.append({"params": [p for _, p in balancer.named_learnables()], "lr": own_lr, "weight_decay": 0.0})
    optimizer = torch.optim.Adam(groups, lr=lr)
    if info.needs_model:  # MARIGOLD simulates the optimizer's step; O(K) methods take task gradients
        balancer.attach(model, optimizer)

    shuffle = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        for batch in torch.randperm(len(x_train), generator=shuffle).split(batch_size):
            xb, yb = x_train[batch], y_train[batch]
            optimizer.zero_grad(set_to_none=True)
            losses = task_losses(model(xb), yb)                         # (K,), with autograd
            closure = make_closure(model, xb, yb) if balancer.uses_closure else None
            loss = balancer(losses, closure=closure)                   # the scalar to back-propagate
            loss.backward()
            balancer.after_backward()                                  # Nash-MTL clips here; else no-op
            # clip gradients here if you do (never with MARIGOLD: it models the unclipped step)
            optimizer.step()
            balancer.step(closure)                                     # after the step: FAMO's update
        balancer.epoch_end()                                           # DWA, STCH; no-op otherwise
    with torch.no_grad():
        return task_losses(model(x_val), y_val).tolist()


if __name__ == "__main__":
    for balancer_name in sys.argv[1:] or ["uniform", "famo", "marigold", "uw"]:
        val = train(balancer_name)
        print(f"{balancer_name:<10} validation losses: " + ", ".join(f"{v:.4g}" for v in val))
