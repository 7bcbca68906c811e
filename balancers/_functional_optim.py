"""Virtual optimizer steps: what ``optimizer.step()`` would do to the parameters, done out of place.

MARIGOLD's lower-level map ``A(lambda, theta)`` is one step of the model's *own* optimizer, from its
*current* state (momentum buffers, Adam moments and step counts, current learning rates). The
functions here apply that rule functionally: they read the optimizer's hyperparameters and state and
return new tensors, never touching the real parameters, their ``.grad`` or the optimizer state.
Every operation is out of place and differentiable, so the same rule also works inside
``torch.func.grad``/``vmap`` (the tests use that to get the exact hypergradient).

Supported: ``torch.optim.SGD`` (momentum, dampening, nesterov, weight_decay, maximize) and
``torch.optim.Adam``/``AdamW`` (betas, eps, weight_decay, amsgrad, maximize). The rules mirror the
single-tensor code paths of ``torch.optim`` (same operation order), so a virtual step matches a real
one to rounding. Anything else raises ``TypeError``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

#: name -> (param_group, state) of every parameter the optimizer owns; ``state`` is empty before
#: the parameter's first real step.
Slots = dict[str, tuple[dict[str, Any], Mapping[str, Any]]]


def _sgd(p: Tensor, g: Tensor, group: Mapping[str, Any], state: Mapping[str, Any]) -> Tensor:
    lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
    weight_decay = group["weight_decay"]
    if group.get("maximize", False):
        g = -g
    if weight_decay != 0:
        g = torch.add(g, p, alpha=weight_decay)
    if momentum != 0:
        buf = state.get("momentum_buffer")
        # First step: the buffer *is* the gradient (torch detaches its copy; the value is the same,
        # and keeping the graph is what makes this rule differentiable in the weights).
        buf = g if buf is None else torch.add(buf * momentum, g, alpha=1 - dampening)
        g = torch.add(g, buf, alpha=momentum) if group["nesterov"] else buf
    return p - lr * g if isinstance(lr, Tensor) else torch.add(p, g, alpha=-lr)


def _adam(p: Tensor, g: Tensor, group: Mapping[str, Any], state: Mapping[str, Any], decoupled: bool) -> Tensor:
    lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
    beta1, beta2 = group["betas"]
    if torch.is_complex(p):
        raise TypeError("virtual_step: complex parameters are not supported")
    if group.get("maximize", False):
        g = -g
    step = state.get("step")
    # Bias corrections in float64 like torch's Python-float path. torch's default Adam keeps the
    # step count in a CPU tensor and reads it with .item() itself (no device sync): so do we, and
    # then the update is torch's addcdiv. A step count on an accelerator (capturable/fused Adam)
    # stays a 0-d tensor, so that no device->host sync is needed.
    if isinstance(step, Tensor) and step.device.type != "cpu":
        step = step.to(torch.float64) + 1
    else:
        step = float(step if step is not None else 0) + 1
    if weight_decay != 0:
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = torch.add(g, p, alpha=weight_decay)
    exp_avg = state.get("exp_avg")
    exp_avg_sq = state.get("exp_avg_sq")
    exp_avg = torch.zeros_like(p) if exp_avg is None else exp_avg
    exp_avg_sq = torch.zeros_like(p) if exp_avg_sq is None else exp_avg_sq
    exp_avg = torch.lerp(exp_avg, g, 1 - beta1)
    exp_avg_sq = torch.addcmul(exp_avg_sq * beta2, g, g, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2_sqrt = (1 - beta2**step) ** 0.5
    step_size = lr / bias_correction1
    if group.get("amsgrad", False):
        max_sq = state.get("max_exp_avg_sq")
        exp_avg_sq = exp_avg_sq if max_sq is None else torch.maximum(max_sq, exp_avg_sq)
    if torch.is_grad_enabled():  # differentiable (e.g. inside torch.func.grad): sqrt keeps its output
        denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)  # in place on a fresh tensor, as torch
    else:  # no autograd: the same operations in place on the fresh exp_avg_sq (one temporary less)
        denom = exp_avg_sq.sqrt_().div_(bias_correction2_sqrt).add_(eps)
    del exp_avg_sq  # not needed below: freed before the update's output is allocated (peak memory)
    if isinstance(step_size, Tensor):
        return p + (-step_size) * exp_avg / denom
    return torch.addcdiv(p, exp_avg, denom, value=-step_size)


def _rule(optimizer: torch.optim.Optimizer):
    kind = type(optimizer)
    if kind is torch.optim.SGD:
        return lambda p, g, group, state: _sgd(p, g, group, state)
    if kind in (torch.optim.Adam, torch.optim.AdamW):
        default = kind is torch.optim.AdamW
        return lambda p, g, group, state: _adam(
            p, g, group, state, bool(group.get("decoupled_weight_decay", default)))
    raise TypeError(
        f"virtual_step supports torch.optim.SGD, Adam and AdamW (exact types), got {kind.__name__}; "
        "MARIGOLD needs the model optimizer's update rule to simulate one step out of place"
    )


def check_supported(optimizer: torch.optim.Optimizer) -> None:
    """Raise ``TypeError`` unless :func:`virtual_step` can simulate ``optimizer``."""
    _rule(optimizer)


def param_slots(optimizer: torch.optim.Optimizer, named_params: Mapping[str, Tensor]) -> Slots:
    """Map each parameter name to its optimizer group and state (by identity; read-only).

    ``optimizer.state`` is a defaultdict: it is read with ``.get`` so no entry is ever created.
    Names the optimizer does not own are left out.
    """
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    slots: Slots = {}
    for name, p in named_params.items():
        group = group_of.get(id(p))
        if group is not None:
            slots[name] = (group, optimizer.state.get(p, {}))
    return slots


def virtual_step(
    optimizer: torch.optim.Optimizer,
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor | None],
    slots: Slots | None = None,
) -> dict[str, Tensor]:
    """The parameters one ``optimizer.step()`` would produce from ``params`` with ``grads``.

    Returns a new name -> tensor dict with every name of ``params``; a name without a gradient (or
    not owned by the optimizer) keeps its tensor, as a real step would skip it. ``slots`` (from
    :func:`param_slots` on the real parameters) is needed when ``params`` are not the optimizer's
    own tensors, e.g. inside ``torch.func`` transforms; by default it is looked up by identity.
    """
    rule = _rule(optimizer)
    if slots is None:
        slots = param_slots(optimizer, params)
    out: dict[str, Tensor] = {}
    for name, p in params.items():
        g, slot = grads.get(name), slots.get(name)
        out[name] = p if g is None or slot is None else rule(p, g, slot[0], slot[1])
    return out


# ------------------------------------------------------------------------------ real steps
def adam_step_(optimizer: torch.optim.Optimizer, params: list[Tensor], grads: list[Tensor]) -> None:
    """``optimizer.step()`` of a ``torch.optim.Adam`` with these gradients, without ``.grad``.

    For the balancers' own tiny Adam optimizers (K logits): ``optimizer.step()`` costs ~45 us of
    Python per call (this ~25 us), more than the K-sized arithmetic itself. This repeats torch's
    single-tensor Adam update (its CPU default) operation by operation, in place, under no_grad, on
    the optimizer's own state tensors with the same lazy initialisation: ``state_dict`` and
    ``load_state_dict`` are unchanged and the results bit-identical (on CUDA torch defaults to its
    foreach implementation of the same formulas).
    Groups with options it does not repeat (amsgrad, maximize, capturable, differentiable, fused,
    decoupled weight decay, tensor hyperparameters) take the real ``optimizer.step()``.
    ``grads[i]`` is the gradient of ``params[i]``, a parameter (or buffer) of the optimizer; the
    optimizer's other parameters are skipped, as ``optimizer.step()`` skips those without ``.grad``.
    """
    if type(optimizer) is not torch.optim.Adam:
        raise TypeError(f"adam_step_ needs a torch.optim.Adam, got {type(optimizer).__name__}")
    by_id = {id(p): g for p, g in zip(params, grads)}
    if not all(_plain_adam(group) for group in optimizer.param_groups):
        _real_step(optimizer, by_id)
        return
    with torch.no_grad():
        for group in optimizer.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                grad = by_id.get(id(p))
                if grad is None:
                    continue
                state = optimizer.state[p]
                if len(state) == 0:  # torch's lazy initialisation (non-capturable, non-fused)
                    state["step"] = torch.tensor(0.0, dtype=_scalar_dtype(), device="cpu")
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                step_t, exp_avg, exp_avg_sq = state["step"], state["exp_avg"], state["exp_avg_sq"]
                step_t += 1
                if weight_decay != 0:
                    grad = grad.add(p, alpha=weight_decay)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = step_t.item()  # a CPU tensor: no device sync (torch reads it the same way)
                bias_correction1 = 1 - beta1**step
                bias_correction2 = 1 - beta2**step
                step_size = lr / bias_correction1
                bias_correction2_sqrt = bias_correction2**0.5
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)


def _plain_adam(group: Mapping[str, Any]) -> bool:
    flags = ("amsgrad", "maximize", "capturable", "differentiable", "fused", "decoupled_weight_decay")
    if any(group.get(flag) for flag in flags):
        return False
    scalars = (group["lr"], group["eps"], group["weight_decay"], *group["betas"])
    if any(isinstance(x, Tensor) for x in scalars):
        return False
    return all(torch.is_floating_point(p) and not torch.is_complex(p) for p in group["params"])


def _real_step(optimizer: torch.optim.Optimizer, by_id: Mapping[int, Tensor]) -> None:
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for p in params:
        p.grad = by_id.get(id(p))
    optimizer.step()
    for p in params:
        p.grad = None


def _scalar_dtype() -> torch.dtype:
    # torch.optim's choice for the step count of non-fused optimizers
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
