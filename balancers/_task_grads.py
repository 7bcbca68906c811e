"""Shared machinery of the O(K) gradient-manipulation balancers (MGDA, IMTL-G, Nash-MTL).

These methods need the K per-task gradients of the *shared* parameters, stacked as a matrix
``G`` (K x P). They are computed from the graph of the trainer's own forward pass (no extra
forward): ``torch.autograd.grad`` with ``is_grads_batched=True`` on one-hot ``grad_outputs``
(vmap over the backward, in chunks of :data:`CHUNK` tasks to bound memory), falling back to K
separate ``autograd.grad(losses[i], shared, retain_graph=True)`` calls when the batched rule is
not available for some operation of the model, or when the model says the loop is faster
(``model.batched_task_gradients = False``, e.g. QM9's message passing: 4.1 s against 9.2 s
batched for its 11 tasks on the CPU). The graph is always retained, so that the
trainer's single ``backward`` of ``sum_i w_i losses_i`` can follow.

Shared parameters: ``model.trunk.parameters()`` when the attached model has a ``trunk`` attribute
(every benchmark model in this project has one, see ``MultiTaskModel``), else *all* of the
model's parameters (then the task-specific heads' gradients are part of ``G`` too).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from balancers.base import Balancer, LossClosure

#: tasks per batched backward (vmap over K one-hot grad_outputs); bounds the extra memory to about
#: CHUNK x (activations of the backward + shared parameters)
CHUNK = 64


def shared_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable shared parameters: ``model.trunk``'s if the model has a trunk, else all."""
    source = model.trunk if isinstance(getattr(model, "trunk", None), torch.nn.Module) else model
    return [p for p in source.parameters() if p.requires_grad]


def task_gradients(losses: Tensor, params: list[Tensor], batched: bool = True, chunk: int = CHUNK) -> Tensor:
    """``G``: (K, P) gradients of each loss w.r.t. ``params`` (flattened, concatenated), detached.

    The graph of ``losses`` is retained. Parameters a loss does not depend on get zero rows.
    """
    k = losses.shape[0]
    if batched:
        try:
            return _batched(losses, params, chunk)
        except (RuntimeError, NotImplementedError):  # an op without a batching rule: the loop below
            pass
    rows = []
    for i in range(k):
        grads = torch.autograd.grad(losses[i], params, retain_graph=True, allow_unused=True)
        rows.append(_flatten(grads, params, ()))
    return torch.stack(rows)


def _batched(losses: Tensor, params: list[Tensor], chunk: int) -> Tensor:
    k = losses.shape[0]
    eye = torch.eye(k, dtype=losses.dtype, device=losses.device)
    parts = []
    for start in range(0, k, chunk):
        outputs = eye[start : start + chunk]
        grads = torch.autograd.grad(losses, params, grad_outputs=outputs, retain_graph=True,
                                    allow_unused=True, is_grads_batched=True)
        parts.append(_flatten(grads, params, (outputs.shape[0],)))
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _flatten(grads: tuple[Tensor | None, ...], params: list[Tensor], lead: tuple[int, ...]) -> Tensor:
    flat = [
        (torch.zeros(lead + (p.numel(),), dtype=p.dtype, device=p.device) if g is None else g.reshape(lead + (-1,)))
        for g, p in zip(grads, params)
    ]
    return torch.cat(flat, dim=-1).detach()


class GradientBalancer(Balancer):
    """Base of the balancers that weight the losses by a function of the task-gradient matrix ``G``.

    ``attach(model, optimizer)`` stores the shared parameters (see :func:`shared_parameters`).
    ``combine`` computes ``G`` from the losses' graph, ``w = self.solve(G, losses)`` (detached, K),
    and returns ``sum_i w_i losses_i``: the trainer's one backward then applies ``sum_i w_i g_i`` to
    the shared parameters (and ``w_i`` times task i's gradient to task i's head). ``weights`` are
    exactly ``w``. The model's ``.grad`` and parameters are never touched.

    Costs per step: the trainer's 1 forward + 1 backward, plus K backward passes of the shared
    part for ``G`` (batched), ``O(K P)`` memory for ``G`` and ``O(K^2 P)`` time for its Gram matrix.
    """

    def __init__(self, n_tasks: int) -> None:
        super().__init__(n_tasks)
        self._shared: list[torch.nn.Parameter] | None = None  # a plain list: not part of the state
        self._batched = True

    def attach(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        shared = shared_parameters(model)
        if not shared:
            raise ValueError(f"{self}: the model has no trainable shared parameters")
        self._shared = shared
        # the model's choice between one batched backward over the K tasks and K backward passes
        self._batched = bool(getattr(model, "batched_task_gradients", True))

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        if self._shared is None:
            raise RuntimeError(f"{self}: call attach(model, optimizer) before training")
        if not losses.requires_grad:
            raise RuntimeError(f"{self}: losses must carry the model's autograd graph")
        grads = task_gradients(losses, self._shared, batched=self._batched)
        w = self.solve(grads, losses.detach()).detach()
        self._record(w)
        return (w.to(losses.dtype) * losses).sum()

    def solve(self, grads: Tensor, losses: Tensor) -> Tensor:
        """(K,) weights from the (K, P) task gradients and the (detached) losses."""
        raise NotImplementedError

    def hparams(self) -> dict[str, Any]:
        return {}


def gram(grads: Tensor) -> Tensor:
    """``G G^T`` (K x K) in float64, on the gradients' device (the product itself in ``G``'s dtype:
    a float64 copy of ``G`` would double its O(K P) memory)."""
    return (grads @ grads.T).to(torch.float64)
