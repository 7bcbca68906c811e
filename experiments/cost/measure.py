"""How the cost benchmark counts: model passes (hooks), peak live bytes (a dispatch mode) and
the time a balancer adds to a step (its passes and its own work)."""

from __future__ import annotations

import contextlib
import statistics
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from experiments.cost.variants import Runner, shared_param

# ============================================================================ measurements
def count_passes(runner: Runner, steps: int = 2) -> dict[str, float]:
    """Model forwards and backward traversals per step (hooks), averaged over ``steps`` steps."""
    trainer = runner.trainer
    counts = {"fwd": 0, "bwd": 0}
    fwd = trainer.model.register_forward_hook(lambda *a: counts.__setitem__("fwd", counts["fwd"] + 1))
    bwd = shared_param(trainer).register_hook(lambda g: counts.__setitem__("bwd", counts["bwd"] + 1))
    try:
        runner.run(steps)
    finally:
        fwd.remove()
        bwd.remove()
    return {key: value / steps for key, value in counts.items()}


class _LiveBytes(TorchDispatchMode):
    """Live bytes of the tensor storages created under it (plus adopted ones) and their peak."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def adopt(self, tensors: Sequence[Tensor]) -> None:
        for t in tensors:
            self._track(t)
        self.peak = max(self.peak, self.live)

    def _track(self, t: Tensor) -> None:
        if t.device.type != "cpu":
            return
        try:
            storage = t.untyped_storage()
        except (RuntimeError, NotImplementedError):  # tensor subclasses without a storage
            return
        key, nbytes = storage._cdata, storage.nbytes()
        if key in self._seen or nbytes == 0:
            return
        self._seen.add(key)
        self.live += nbytes
        weakref.finalize(storage, self._free, key, nbytes)

    def _free(self, key: int, nbytes: int) -> None:
        if key in self._seen:
            self._seen.discard(key)
            self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, Tensor):
                self._track(t)
        self.peak = max(self.peak, self.live)
        return out

    def stop(self) -> None:
        self._seen.clear()  # later frees no longer count


def own_state(trainer: Any, batch: Any) -> list[Tensor]:
    """The tensors a trainer holds at the start of a step: parameters, gradients, optimizer and
    balancer state, the batch."""
    tensors: list[Tensor] = []
    for p in trainer.model.parameters():
        tensors.append(p.detach())
        if p.grad is not None:
            tensors.append(p.grad)
    for state in trainer.optimizer.state.values():
        tensors += [v for v in state.values() if isinstance(v, Tensor)]
    tensors += [t for t in trainer.balancer.state_dict().values() if isinstance(t, Tensor)]
    tensors += [t for t in tree_flatten(batch)[0] if isinstance(t, Tensor)]
    if hasattr(batch, "__dict__"):
        tensors += [t for t in vars(batch).values() if isinstance(t, Tensor)]
    return tensors


def _nbytes(tensors: Sequence[Tensor]) -> int:
    seen: dict[int, int] = {}
    for t in tensors:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
    return sum(seen.values())


def peak_memory(runner: Runner) -> int:
    """Peak bytes of one training step (see the module docstring)."""
    trainer = runner.trainer
    batch = runner.batches[runner.i % len(runner.batches)]
    if trainer.device.type == "cuda":
        runner.sync()
        before = torch.cuda.memory_allocated(trainer.device)
        own = _nbytes(own_state(trainer, batch))
        torch.cuda.reset_peak_memory_stats(trainer.device)
        runner.run(1)
        runner.sync()
        return int(torch.cuda.max_memory_allocated(trainer.device) - before + own)
    mode = _LiveBytes()
    mode.adopt(own_state(trainer, batch))
    try:
        with mode:
            runner.run(1)
    finally:
        mode.stop()
    return int(mode.peak)


@contextlib.contextmanager
def _overhead_probe(trainer: Any, clock: Callable[[], float] = time.perf_counter) -> Iterator[dict[str, float]]:
    """Times balancer calls and, inside them, the closure and model-parameter autograd.grad calls."""
    acc = {"balancer": 0.0, "model_passes": 0.0, "calls": 0}
    balancer, factory = trainer.balancer, trainer.closures
    model_params = {id(p) for p in trainer.model.parameters()}
    sync = (lambda: torch.cuda.synchronize(trainer.device)) if trainer.device.type == "cuda" else (lambda: None)
    depth = {"in_balancer": 0, "in_pass": 0}

    def timed(fn: Callable[..., Any], level: str, total: str, only_inside_balancer: bool) -> Callable[..., Any]:
        """``fn`` with its synchronised wall time added to ``acc[total]``; a model pass counts only
        when called from the balancer, and not when nested in another pass."""
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if only_inside_balancer and (not depth["in_balancer"] or depth["in_pass"]):
                return fn(*args, **kwargs)
            depth[level] += 1
            sync()
            start = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                sync()
                acc[total] += clock() - start
                depth[level] -= 1
        return wrapper

    def timed_pass(fn: Callable[..., Any]) -> Callable[..., Any]:
        return timed(fn, "in_pass", "model_passes", only_inside_balancer=True)

    def timed_balancer(fn: Callable[..., Any]) -> Callable[..., Any]:
        return timed(fn, "in_balancer", "balancer", only_inside_balancer=False)

    original_grad = torch.autograd.grad

    def grad(outputs: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        flat = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        if any(id(t) in model_params for t in flat):
            return timed_pass(original_grad)(outputs, inputs, *args, **kwargs)
        return original_grad(outputs, inputs, *args, **kwargs)

    original_make = factory.make
    factory.make = lambda batch, rng: timed_pass(original_make(batch, rng))  # type: ignore[method-assign]
    balancer.forward = timed_balancer(balancer.forward)  # type: ignore[method-assign]
    balancer.step = timed_balancer(balancer.step)  # type: ignore[method-assign]
    torch.autograd.grad = grad  # type: ignore[assignment]
    try:
        yield acc
    finally:
        torch.autograd.grad = original_grad  # type: ignore[assignment]
        del balancer.forward, balancer.step  # back to the class's methods
        del factory.make  # back to the class's method


def balancer_overhead(runner: Runner, steps: int = 5,
                      clock: Callable[[], float] = time.perf_counter) -> tuple[float, float]:
    """Median seconds per step of (the balancer's own arithmetic, the model passes it makes itself:
    closure forwards and backward calls) (see the module docstring)."""
    own, passes = [], []
    for _ in range(steps):
        with _overhead_probe(runner.trainer, clock) as acc:
            runner.run(1)
        own.append(max(acc["balancer"] - acc["model_passes"], 0.0))
        passes.append(acc["model_passes"])
    return statistics.median(own), statistics.median(passes)
