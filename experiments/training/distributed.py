"""Data-parallel training: process groups from torchrun's environment, batch shards, all-reduces.

One config means the same optimisation at any number of processes N: ``train.batch_size`` stays
the *global* batch; every rank builds each global batch exactly as a 1-process run does (same
loader, same seed, same order) and keeps its own contiguous slice of it. The task losses the
balancer sees are the global-batch means (one all-reduce of K numbers per step), so every rank
computes the same weights, and the model's gradient, averaged by DDP, is the 1-process gradient:

    local_r = mean of the task losses over rank r's n_r samples (what the benchmark returns)
    global  = Σ_r n_r local_r / n                  (values: one all-reduce of K + 1 numbers)
    fed to the balancer: global + (N n_r / n) (local_r − local_r.detach())   (value: global)

so ``d balanced / d θ`` on rank r is ``Σ_i w_i (N n_r / n) ∂local_r,i/∂θ``, and DDP's average over
the N ranks is ``Σ_i w_i ∂global_i/∂θ`` — exactly the 1-process gradient, with equal or unequal
shards. FAMO's closure losses and MARIGOLD's virtual-step gradients (``autograd.grad`` bypasses
DDP's hooks) are all-reduced the same way. Balancers that compute per-task gradients (O(K)
methods) are refused with N > 1 (see :func:`check_balancer`).

Not shard-consistent (documented in the README): dropout masks (each rank draws its own) and
BatchNorm statistics (per shard; DDP broadcasts rank 0's buffers). The equivalence test uses a
model without either.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from experiments.errors import ConfigError, UserError

#: the environment variables torchrun (and ``balancebench train --nproc``) set for every worker
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Replica:
    """This process's place in a data-parallel run (``world == 1``: a plain 1-process run)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    #: started by torchrun / ``--nproc`` (even with one process: DDP and the all-reduces then run,
    #: e.g. the GPU check's 1-GPU DDP smoke run)
    launched: bool = False

    @property
    def active(self) -> bool:
        return self.launched

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory, logs and checkpoints."""
        return self.rank == 0

    # ------------------------------------------------------------------------ setup
    def device(self, device: torch.device) -> torch.device:
        """One GPU per local rank (``cuda`` -> ``cuda:LOCAL_RANK``); CPU stays CPU."""
        if self.active and device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return device

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size % self.world:
            raise ConfigError(f"train.batch_size {batch_size} is the global batch and must be divisible by the "
                              f"number of processes {self.world} (each holds batch_size / {self.world})")

    def check_balancer(self, name: str, needs_task_grads: bool) -> None:
        """O(K) methods back-propagate every task loss through the model themselves; under data
        parallelism each per-task gradient would need its own all-reduce (K × the model's size per
        step). They are refused rather than run wrongly."""
        if self.active and needs_task_grads:
            raise ConfigError(f"balancer {name!r} computes per-task gradients and does not support data-parallel "
                              f"training; run it with one process (no --nproc / torchrun)")

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module the training forward runs through: DDP when N > 1, else ``model`` itself."""
        if not self.active:
            return model
        ids = [device.index] if device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    # ------------------------------------------------------------------------ per step
    def shard(self, batch: Any) -> Any:
        """This rank's contiguous slice of a global batch (tensors, tuples, lists, dicts of them,
        sliced on dim 0); a benchmark whose batches are other objects gives ``shard_batch``."""
        if not self.active:
            return batch
        return _slice(batch, self.rank, self.world)

    def global_losses(self, local: Tensor, n_local: int, n_global: int) -> Tensor:
        """The global-batch task losses, carrying this rank's autograd graph scaled so that DDP's
        gradient average is the global-batch gradient (see the module docstring)."""
        if not self.active:
            return local
        values = self.mean(local.detach(), n_local, n_global)
        scale = self.world * n_local / n_global
        return values + scale * (local - local.detach())

    def mean(self, local: Tensor, n_local: int, n_global: int) -> Tensor:
        """``Σ_r n_r local_r / n`` over the ranks: one all-reduce of ``local.numel()`` numbers."""
        if not self.active:
            return local
        total = local * (n_local / n_global)
        dist.all_reduce(total)
        return total

    def closure(self, closure: Callable[..., Tensor] | None, n_local: int, n_global: int
                ) -> Callable[..., Tensor] | None:
        """FAMO's / MARIGOLD's same-batch closure, returning global-batch losses on every rank."""
        if closure is None or not self.active:
            return closure

        def global_closure(params: dict[str, Tensor] | None = None) -> Tensor:
            return self.mean(closure(params), n_local, n_global)

        return global_closure

    def reduce_grads(self, n_local: int, n_global: int) -> Callable[[tuple[Tensor | None, ...]], tuple[Tensor | None, ...]]:
        """The all-reduce MARIGOLD applies to its virtual step's gradients: ``autograd.grad`` does
        not go through DDP's hooks, so the average DDP would take is taken here, as one flat buffer.
        The gradients already carry the ``N n_r / n`` factor of :meth:`global_losses`."""

        def reduce(grads: tuple[Tensor | None, ...]) -> tuple[Tensor | None, ...]:
            present = [g for g in grads if g is not None]
            if not present:
                return grads
            flat = torch.cat([g.reshape(-1) for g in present]) / self.world
            dist.all_reduce(flat)
            out, offset = [], 0
            for g in grads:
                if g is None:
                    out.append(None)
                    continue
                out.append(flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
            return tuple(out)

        return reduce

    def prepare_balancer(self, balancer: torch.nn.Module, n_local: int, n_global: int) -> None:
        """Give a balancer that back-propagates by itself (MARIGOLD's ``reduce_grads``) this step's
        gradient all-reduce; others are left alone."""
        if self.active and hasattr(balancer, "reduce_grads"):
            balancer.reduce_grads = self.reduce_grads(n_local, n_global)

    def agree(self, obj: Any) -> Any:
        """Rank 0's value of a small picklable object on every rank (e.g. the epoch's metrics, so
        that the scheduler and early stopping decide identically everywhere)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def offset_rng(self, seed: int, step: int) -> None:
        """Independent dropout draws per rank (rank 0 keeps the 1-process stream)."""
        if self.active and self.rank:
            torch.manual_seed((seed * 1_000_003 + self.rank * 7919 + step) % 2**63)


def _slice(batch: Any, rank: int, world: int) -> Any:
    if isinstance(batch, Tensor):
        n = batch.shape[0]
        if n < world:
            raise UserError(f"a batch of {n} samples cannot be split over {world} processes")
        return torch.tensor_split(batch, world)[rank]
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):
        return type(batch)(*(_slice(b, rank, world) for b in batch))
    if isinstance(batch, (tuple, list)):
        return type(batch)(_slice(b, rank, world) for b in batch)
    if isinstance(batch, dict):
        return {k: _slice(v, rank, world) for k, v in batch.items()}
    raise UserError(f"batches of type {type(batch).__name__} cannot be split over processes; this benchmark "
                    "does not support data-parallel training (run it with one process)")


def current() -> Replica:
    """This process's replica, from the environment torchrun sets (absent: one process)."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return Replica()
    return Replica(rank=int(os.environ["RANK"]), world=int(os.environ["WORLD_SIZE"]),
                   local_rank=int(os.environ.get("LOCAL_RANK", "0")), launched=True)


@contextmanager
def session(device_name: str) -> Iterator[Replica]:
    """Join the process group for the length of a run (``gloo`` on CPU, ``nccl`` on CUDA) when the
    environment says there are several processes; leave it afterwards if this call joined it."""
    replica = current()
    if not replica.active or dist.is_initialized():
        yield replica
        return
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise UserError(f"RANK and WORLD_SIZE set but {', '.join(missing)} unset: launch with torchrun "
                        "or balancebench train --nproc N")
    cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield replica
    finally:
        dist.destroy_process_group()


def on_main(replica: Replica, prepare: Callable[[], Any]) -> Any:
    """Run ``prepare`` (run-directory checks and creation) on rank 0 alone and give every rank its
    result, or raise rank 0's one-line error on every rank (no rank is left waiting)."""
    if not replica.active:
        return prepare()
    outcome: tuple[str, Any] = ("ok", None)
    if replica.is_main:
        try:
            outcome = ("ok", prepare())
        except UserError as exc:
            outcome = ("error", str(exc))
    kind, value = replica.agree(outcome)
    if kind == "error":
        raise UserError(value)
    return value


@contextmanager
def work_dir(replica: Replica, run_dir: Any, resume: bool) -> Iterator[Any]:
    """Where this rank's trainer writes: the run directory on rank 0; elsewhere a scratch copy
    (of the checkpoint and logs, when resuming), removed afterwards, so that rank 0 alone writes
    the run directory while every rank runs the same code."""
    if replica.is_main:
        yield run_dir
        return
    import shutil
    import tempfile
    from pathlib import Path

    scratch = Path(tempfile.mkdtemp(prefix=f"balancebench-rank{replica.rank}-"))
    try:
        if resume:
            shutil.copytree(run_dir, scratch, dirs_exist_ok=True)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
