"""The balancer contract shared by every method in the registry.

A balancer turns the vector of K task losses into the one scalar that the trainer back-propagates.
It never calls ``.backward()`` on the training loss and never steps the model's optimizer itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

#: ``closure(params=None) -> losses_K``: the K task losses on the *same* batch as the last call,
#: evaluated without autograd at ``params`` (a name -> tensor mapping for
#: ``torch.func.functional_call``) or, when ``params`` is None, at the model's current parameters.
#: The trainer builds it so that it neither updates BatchNorm statistics nor draws new dropout masks.
LossClosure = Callable[..., Tensor]


class Balancer(torch.nn.Module):
    """Base class of every balancer; its lifecycle, in the order a trainer runs it.

    1. ``create_balancer(name, n_tasks, **hparams)`` builds it. If the registry metadata says
       ``has_parameters``, the trainer adds ``named_learnables()`` to the model optimizer as a
       param group of their own, at learning rate ``learnables_lr`` (the model's when None) and
       without weight decay; if it says ``needs_model``, the trainer then calls
       ``attach(model, optimizer)`` once, before training.
    2. Every training step::

           loss = balancer(losses_K, closure=closure)   # validates, then ``combine``
           loss.backward()
           balancer.after_backward()                    # may rescale the model's .grad (Nash-MTL)
           # the trainer's own clipping (train.grad_clip), if any, comes here
           optimizer.step()
           balancer.step(closure)                       # after the optimizer step

       ``closure`` (see :data:`LossClosure`) is only used by balancers whose metadata says
       ``needs_closure``; others ignore it. ``weights`` then holds d loss / d losses_i of the last
       call (detached), the effective weight of each task gradient (before ``after_backward``).
       A balancer whose metadata says ``needs_unclipped_step`` models the optimizer step itself
       (MARIGOLD): a trainer refuses to run it with gradient clipping.
    3. After every training epoch the trainer calls ``epoch_end()`` (no-op by default).
    4. ``reset()`` returns the balancer to its freshly constructed state; ``state_dict()`` /
       ``load_state_dict()`` save and restore everything needed to resume (weights, optimizer
       state of learnable logits, generator state).

    Subclasses implement ``combine`` and, when they need them, ``after_backward``, ``step``,
    ``epoch_end``, ``reset``.
    Hot paths never synchronise with the host (no ``.item()``/``.cpu()``).
    """

    #: True when ``weights`` are never negative.
    nonnegative_weights: bool = True
    #: True when ``weights`` sum to one (a point of the simplex).
    weights_sum_to_one: bool = True

    def __init__(self, n_tasks: int) -> None:
        super().__init__()
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, int) or n_tasks < 2:
            raise ValueError(f"n_tasks must be an integer >= 2 (multi-task), got {n_tasks=}")
        self.n_tasks = n_tasks
        self.register_buffer("_weights", torch.full((n_tasks,), 1.0 / n_tasks))

    # ----------------------------------------------------------------------------------- public
    @property
    def weights(self) -> Tensor:
        """(K,) detached effective weights of the last call: d loss / d losses_i."""
        return self._weights

    def forward(self, losses: Tensor, closure: LossClosure | None = None) -> Tensor:
        """Validate ``losses`` (1-D, length K, finite) and return the scalar to back-propagate."""
        self._validate(losses)
        return self.combine(losses, closure)

    def combine(self, losses: Tensor, closure: LossClosure | None) -> Tensor:
        """The method's own rule; ``losses`` is already validated."""
        raise NotImplementedError

    def after_backward(self) -> None:
        """Run after the trainer's backward of the returned loss and before the optimizer step; the
        one place where a balancer may change the model's ``.grad`` (Nash-MTL clips the shared
        parameters' gradient there, as its authors' code does). No-op by default."""

    def step(self, closure: LossClosure | None = None) -> None:
        """Run after the model optimizer's step. No-op by default."""

    def epoch_end(self) -> None:
        """Run after each training epoch. No-op by default."""

    def attach(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Give the balancer the model and its optimizer (only for ``needs_model`` balancers)."""
        raise TypeError(f"{self} does not take a model; check its registry metadata")

    def reset(self) -> None:
        """Return to the freshly constructed state."""
        self._weights.fill_(1.0 / self.n_tasks)

    def hparams(self) -> dict[str, Any]:
        """The constructor keyword arguments (besides ``n_tasks``) that rebuild this balancer."""
        return {}

    @property
    def uses_closure(self) -> bool:
        """Whether this instance calls the closure (registry ``needs_closure`` narrowed by its
        configuration, e.g. FAMO ``lagged`` does not); a trainer skips building it otherwise."""
        info = getattr(type(self), "registry_info", None)
        return bool(info.needs_closure) if info is not None else False

    # ------------------------------------------------------------------------------ internals
    def _validate(self, losses: Tensor) -> None:
        if not isinstance(losses, Tensor):
            raise ValueError(f"{self}: losses must be a torch.Tensor, got {type(losses).__name__}")
        if losses.dim() != 1 or losses.shape[0] != self.n_tasks:
            raise ValueError(
                f"{self}: losses must be a 1-D tensor of length n_tasks={self.n_tasks}, "
                f"got shape {tuple(losses.shape)}"
            )
        if not losses.is_floating_point():
            raise ValueError(f"{self}: losses must be floating point, got {losses.dtype}")
        # Value checks need a device->host boolean; the trainer disables them and checks lazily
        # itself (see ``check_values``).
        if self.check_values:
            self.check_losses(losses)

    def check_losses(self, losses: Tensor) -> None:
        """Raise ValueError when loss values are unusable: non-finite, or outside the method's range
        (e.g. FAMO below ``min_losses``). One host sync; a trainer that runs with ``check_values``
        off calls it to explain a non-finite balanced loss."""
        if not bool(torch.isfinite(losses.detach()).all()):
            raise ValueError(f"{self}: losses must be finite, got {losses.detach().tolist()}")
        self._check_range(losses.detach())

    def _check_range(self, losses: Tensor) -> None:
        """Method-specific value range (no-op by default)."""

    #: Check values (finite; method-specific ranges) on every call. Each check costs one host sync,
    #: so the trainer turns it off and checks the losses itself, lazily, naming step and task.
    check_values: bool = True

    def _record(self, weights: Tensor) -> None:
        self._weights.copy_(weights.detach())

    def extra_repr(self) -> str:
        args = [f"n_tasks={self.n_tasks}"] + [f"{k}={v!r}" for k, v in self.hparams().items()]
        return ", ".join(args)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"

    def __str__(self) -> str:
        return getattr(type(self), "registry_name", type(self).__name__.lower())

    def get_extra_state(self) -> dict[str, Any]:
        # torch stores this under "<prefix>_extra_state", so a balancer nested in another module
        # checkpoints too; the content must stay loadable with torch.load(weights_only=True)
        return self._extra_state()

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._load_extra_state(dict(state))

    def _extra_state(self) -> dict[str, Any]:
        """Non-tensor state (optimizer state, generator state) under keys starting ``extra.``."""
        return {}

    def _load_extra_state(self, extra: dict[str, Any]) -> None:
        pass

    def named_learnables(self) -> Iterator[tuple[str, torch.nn.Parameter]]:
        """Parameters the *model* optimizer trains (uncertainty weighting's log-variances)."""
        return iter(())

    @property
    def learnables_lr(self) -> float | None:
        """Learning rate of the ``named_learnables()`` param group; None: the model's."""
        return None
