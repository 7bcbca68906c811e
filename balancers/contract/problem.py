"""The contract's test problem: a tiny multi-task model wired to a balancer as a trainer wires it.

``make_problem(config)`` builds, for any balancer of the registry (built-in or plug-in), everything
a trainer would: a tiny model (a shared ``Linear(4, 8)`` trunk and K ``Linear(8, 1)`` heads), its
Adam optimizer, one fixed batch, the K positive task losses and the same-batch
``closure(params=None)`` of :data:`balancers.LossClosure`; the balancer is attached to the model
and its learnables are added to the optimizer (their own param group, at ``learnables_lr``) as its
registry metadata asks. ``Problem.run`` then runs the trainer's steps. The same arguments give
bit-identical copies (no global RNG is consumed).

A :class:`BalancerConfig` is a registry name (or plug-in reference) plus the hyperparameters that
differ from its defaults; :func:`balancer_configs` lists the built-in ones the test suite covers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from balancers.base import Balancer
from balancers.registry import BalancerInfo, balancer_info, create_balancer, list_balancers

N_TASKS = 3
SEED = 0

#: Constructor arguments a balancer cannot be built without (function of the number of tasks), or
#: without which the suite's few-step runs would not reach its method (STCH's warm-up lasts 4 epochs).
REQUIRED_HPARAMS: dict[str, Callable[[int], dict[str, Any]]] = {
    "fixed": lambda k: {"weights": [float(i + 1) for i in range(k)]},
    "stch": lambda k: {"warmup_epochs": 1},
}
#: Variants of registered balancers that the contract suite covers too (only if registered).
EXTRA_HPARAMS: dict[str, list[dict[str, Any]]] = {
    "famo": [{"update": "lagged"}],
    "rlw": [{"distribution": "dirichlet"}],
    "marigold": [{"variant": "fused"}, {"objective": "auxiliary", "main_tasks": [0]}],
}
#: Per-task hyperparameters: a permutation of the tasks permutes them as well.
PER_TASK_HPARAMS = ("weights", "min_losses")


@dataclass(frozen=True)
class BalancerConfig:
    """A registry name plus the hyperparameters that differ from its defaults."""

    name: str
    extra: tuple[tuple[str, Any], ...] = ()

    @property
    def info(self) -> BalancerInfo:
        return balancer_info(self.name)

    def hparams(self, n_tasks: int = N_TASKS, perm: Sequence[int] | None = None) -> dict[str, Any]:
        hp = REQUIRED_HPARAMS.get(self.name, lambda k: {})(n_tasks)
        hp.update(dict(self.extra))
        if perm is not None:
            for key in PER_TASK_HPARAMS:
                if isinstance(hp.get(key), (list, tuple)) and len(hp[key]) == n_tasks:
                    hp[key] = [hp[key][p] for p in perm]
        return hp

    def build(self, n_tasks: int = N_TASKS, **overrides: Any) -> Balancer:
        return create_balancer(self.name, n_tasks, **{**self.hparams(n_tasks), **overrides})

    def __str__(self) -> str:
        if not self.extra:
            return self.name
        return f"{self.name}[{','.join(f'{k}={v}' for k, v in self.extra)}]"


def balancer_configs() -> list[BalancerConfig]:
    """Every registered balancer with its defaults, then the registered extra variants (the
    configurations the test suite runs the contract on)."""
    names = list_balancers()
    configs = [BalancerConfig(name) for name in names]
    for name, variants in EXTRA_HPARAMS.items():
        if name in names:
            configs += [BalancerConfig(name, tuple(sorted(v.items()))) for v in variants]
    return configs


# ------------------------------------------------------------------------------ the problem
class TinyMultiTask(nn.Module):
    """A shared trunk and K scalar heads: ``forward(x) -> (B, K)`` predictions."""

    def __init__(self, n_tasks: int, d_in: int = 4, d_hidden: int = 8) -> None:
        super().__init__()
        self.trunk = nn.Linear(d_in, d_hidden)
        self.heads = nn.ModuleList(nn.Linear(d_hidden, 1) for _ in range(n_tasks))

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.trunk(x))
        return torch.cat([head(h) for head in self.heads], dim=1)


@dataclass
class Problem:
    """A balancer wired to a tiny model, its optimizer and one fixed batch, as a trainer wires it."""

    config: BalancerConfig
    balancer: Balancer
    model: TinyMultiTask
    optimizer: torch.optim.Optimizer
    x: Tensor
    y: Tensor
    scales: Tensor
    epoch_every: int = 2
    steps_done: int = 0

    @property
    def info(self) -> BalancerInfo:
        return self.config.info

    def _losses_of(self, pred: Tensor) -> Tensor:
        # MSE + 0.1 keeps every loss > 0 (FAMO and MARIGOLD take logs)
        return self.scales * (((pred - self.y) ** 2).mean(dim=0) + 0.1)

    def losses(self) -> Tensor:
        """The K task losses at the current parameters, with autograd."""
        return self._losses_of(self.model(self.x))

    def closure(self, params: dict[str, Tensor] | None = None) -> Tensor:
        """The K losses on the same batch without autograd, at ``params`` or the current ones."""
        with torch.no_grad():
            if params is None:
                pred = self.model(self.x)
            else:
                pred = torch.func.functional_call(self.model, params, (self.x,))
            return self._losses_of(pred)

    def call(self, closure: Callable[..., Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """The trainer's forward: ``(losses_K, balanced loss)``; ``closure`` defaults to the problem's."""
        losses = self.losses()
        return losses, self.balancer(losses, closure=self.closure if closure is None else closure)

    def finish(self, loss: Tensor, closure: Callable[..., Tensor] | None = None, epoch_end: bool | None = None) -> None:
        """The rest of the trainer's step: backward, ``balancer.after_backward``, optimizer step,
        ``balancer.step``, epoch end."""
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.balancer.after_backward()
        self.optimizer.step()
        self.balancer.step(self.closure if closure is None else closure)
        self.steps_done += 1
        if (self.info.needs_epoch_end if epoch_end is None else epoch_end) and self.steps_done % self.epoch_every == 0:
            self.balancer.epoch_end()

    def train_step(self, closure: Callable[..., Tensor] | None = None, epoch_end: bool | None = None) -> Tensor:
        """One trainer step; returns the detached balanced loss.

        ``epoch_end()`` runs every ``epoch_every`` steps when the metadata says ``needs_epoch_end``
        (or when ``epoch_end`` is True; never when it is False).
        """
        _, loss = self.call(closure)
        self.finish(loss, closure, epoch_end)
        return loss.detach()

    def run(self, n_steps: int, **kwargs: Any) -> tuple[list[Tensor], list[Tensor]]:
        """``n_steps`` trainer steps: the list of weights after each call and of returned losses."""
        weights, outputs = [], []
        for _ in range(n_steps):
            outputs.append(self.train_step(**kwargs))
            weights.append(self.balancer.weights.detach().clone())
        return weights, outputs

    def snapshot(self) -> dict[str, Any]:
        """Deep copies of the model's and optimizer's states and the step counter (not the balancer's)."""
        return {
            "model": copy.deepcopy(self.model.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "steps_done": self.steps_done,
        }

    def restore_model(self, snap: dict[str, Any]) -> None:
        """Put model and optimizer (not the balancer) back to ``snap``, in place."""
        self.model.load_state_dict(snap["model"])
        self.optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))  # torch would alias its tensors
        self.steps_done = snap["steps_done"]


def make_problem(
    config: BalancerConfig | str,
    *,
    n_tasks: int = N_TASKS,
    seed: int = SEED,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    perm: Sequence[int] | None = None,
    scales: Sequence[float] | None = None,
    lr: float = 0.05,
    balancer_overrides: dict[str, Any] | None = None,
    epoch_every: int = 2,
) -> Problem:
    """A fresh problem; the same arguments give bit-identical copies (no global RNG is consumed).

    ``perm`` reorders the tasks: heads, targets, loss scales and per-task hyperparameters, so that
    the permuted problem's losses are exactly the original's permuted.
    """
    config = BalancerConfig(config) if isinstance(config, str) else config
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyMultiTask(n_tasks)
    x = torch.randn(16, 4, generator=gen)
    mix = torch.randn(4, n_tasks, generator=gen)
    # tasks of different difficulty and size, so that the weights have something to balance
    y = torch.sin(x @ mix) * torch.arange(1, n_tasks + 1) + 0.1 * torch.randn(16, n_tasks, generator=gen)
    s = torch.ones(n_tasks) if scales is None else torch.as_tensor(scales, dtype=torch.float64)
    if perm is not None:
        perm = list(perm)
        model.heads = nn.ModuleList([model.heads[p] for p in perm])
        y, s = y[:, perm], s[perm]
    model = model.to(device=device, dtype=dtype)
    x, y, s = (t.to(device=device, dtype=dtype) for t in (x, y, s))

    hparams = {**config.hparams(n_tasks, perm=perm), **(balancer_overrides or {})}
    balancer = create_balancer(config.name, n_tasks, **hparams).to(device)
    info = config.info
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if info.has_parameters:  # a param group of their own, at the balancer's learning rate (as the trainer)
        learnable_lr = lr if balancer.learnables_lr is None else balancer.learnables_lr
        optimizer.add_param_group({"params": list(dict(balancer.named_learnables()).values()), "lr": learnable_lr})
    if info.needs_model:
        balancer.attach(model, optimizer)
    return Problem(config, balancer, model, optimizer, x, y, s, epoch_every=epoch_every)
