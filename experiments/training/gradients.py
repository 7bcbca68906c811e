"""Per-task gradients of the shared trunk and their cosine similarity (seed 003 §A.2.1, Fig. 7).

``task_gradients(model, bench, batch)`` returns ``grads_KxP``: row ``i`` is the gradient of task
``i``'s loss on ``batch`` with respect to the shared parameters (``model.trunk``'s, flattened and
concatenated). It is computed with ``torch.func``: one ``vjp`` of the functional loss vector
(one forward pass), then ``vmap`` of the pullback over one-hot cotangents, ``chunk`` tasks at a
time so that memory stays bounded for large K. Models with an operation that ``vmap`` cannot batch
(some scatter kernels of graph networks, fused RNN cells) fall back to K separate autograd
backward passes through one retained graph: same numbers, K times the backward cost.

``CosineProbe`` is the trainer's ``train.cosine_every`` option: every N steps it measures the
mean pairwise cosine (and, for K <= ``MATRIX_MAX_TASKS``, the K×K matrix) on one fixed probe
batch, in eval mode (no dropout, no BatchNorm update) and without consuming the training RNG, so
a run with the probe trains exactly as one without it. Rows go to ``cosine.csv``.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap

from experiments.training import rundir

#: tasks per vmapped pullback (bounds extra memory to about CHUNK x one backward's activations)
CHUNK = 64
#: cosine.csv keeps the full K×K matrix (upper triangle) up to this many tasks
MATRIX_MAX_TASKS = 16
#: the cadence the analysis commands use when they switch the probe on (cost: docs/analysis.md)
DEFAULT_COSINE_EVERY = 50


def shared_parameter_names(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_parameters()``) of the shared trunk's trainable parameters;
    all trainable parameters when the model has no ``trunk``."""
    trunk = getattr(model, "trunk", None)
    if isinstance(trunk, nn.Module):
        own = {id(p) for p in trunk.parameters()}
        names = [n for n, p in model.named_parameters() if id(p) in own and p.requires_grad]
    else:
        names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError("the model has no trainable shared parameters")
    return names


def _loss_function(model: nn.Module, bench: Any, batch: Any, shared: list[str]) -> Callable[[dict[str, Tensor]], Tensor]:
    """``f(shared_params) -> losses_K``: the model's K task losses on ``batch`` as a pure function
    of the shared parameters (everything else, buffers included, held fixed)."""
    fixed = {n: p.detach() for n, p in model.named_parameters() if n not in shared}
    fixed.update({n: b.clone() for n, b in model.named_buffers()})  # no in-place update of the live buffers
    inputs = bench.inputs(batch)

    def losses_of(params: dict[str, Tensor]) -> Tensor:
        outputs = functional_call(model, {**fixed, **params}, (inputs,))
        return bench.losses(outputs, batch).float()

    return losses_of


def _flatten(grads: dict[str, Tensor], names: list[str], lead: tuple[int, ...]) -> Tensor:
    return torch.cat([grads[n].reshape(lead + (-1,)) for n in names], dim=-1)


def _vmapped(losses_of: Callable, params: dict[str, Tensor], names: list[str], chunk: int) -> Tensor:
    losses, pullback = vjp(losses_of, params)
    eye = torch.eye(losses.shape[0], dtype=losses.dtype, device=losses.device)
    rows = []
    for start in range(0, losses.shape[0], chunk):
        (grads,) = vmap(pullback)(eye[start : start + chunk])
        rows.append(_flatten(grads, names, (min(chunk, losses.shape[0] - start),)))
    return rows[0] if len(rows) == 1 else torch.cat(rows)


def _looped(losses_of: Callable, params: dict[str, Tensor], names: list[str]) -> Tensor:
    leaves = {n: p.detach().requires_grad_(True) for n, p in params.items()}
    with torch.enable_grad():
        losses = losses_of(leaves)
        rows = []
        for i in range(losses.shape[0]):
            grads = torch.autograd.grad(losses[i], [leaves[n] for n in names], retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(torch.zeros_like(leaves[n]) if g is None else g).reshape(-1)
                                   for n, g in zip(names, grads)]))
    return torch.stack(rows)


def task_gradients(model: nn.Module, bench: Any, batch: Any, *, method: str = "auto", chunk: int = CHUNK) -> Tensor:
    """``grads_KxP`` (detached) of the K task losses on ``batch`` w.r.t. the shared parameters.

    ``method``: ``"vmap"`` (torch.func), ``"loop"`` (one autograd backward per task) or
    ``"auto"`` (vmap, falling back to the loop when an operation has no batching rule).
    The model's mode (train/eval) is used as it is; parameters and ``.grad`` are not touched.
    """
    if method not in ("auto", "vmap", "loop"):
        raise ValueError(f"method must be auto, vmap or loop, got {method!r}")
    names = shared_parameter_names(model)
    params = {n: p.detach() for n, p in model.named_parameters() if n in names}
    losses_of = _loss_function(model, bench, batch, names)
    if method != "loop":
        try:
            return _vmapped(losses_of, params, names, chunk).detach()
        except Exception as exc:  # no batching rule for some op (e.g. PyG scatter): the loop is exact too
            if method == "vmap":
                raise
            warnings.warn(f"task_gradients: vmap failed ({type(exc).__name__}: {str(exc)[:120]}); "
                          "using one backward pass per task", RuntimeWarning, stacklevel=2)
    return _looped(losses_of, params, names).detach()


def cosine_matrix(grads_KxP: Tensor) -> Tensor:
    """``cos_KxK`` (float64): pairwise cosine similarity of the rows; NaN where a row is zero."""
    norms = grads_KxP.norm(dim=1)
    unit = grads_KxP / norms.clamp_min(torch.finfo(grads_KxP.dtype).tiny).unsqueeze(1)
    cos = (unit @ unit.T).to(torch.float64).clamp(-1.0, 1.0)
    zero = norms == 0
    cos[zero, :] = float("nan")
    cos[:, zero] = float("nan")
    return cos


def mean_pairwise_cosine(grads_KxP: Tensor) -> float:
    """Mean of the off-diagonal cosines, in O(K P) without the K×K matrix:
    ``Σ_{i≠j} u_i·u_j = |Σ u_i|² − Σ |u_i|²`` for unit rows ``u``; rows that are zero are left out."""
    norms = grads_KxP.norm(dim=1)
    keep = norms > 0
    k = int(keep.sum())
    if k < 2:
        return float("nan")
    unit = (grads_KxP[keep] / norms[keep].unsqueeze(1)).to(torch.float64)
    total = unit.sum(dim=0)
    return float((total @ total - (unit * unit).sum()) / (k * (k - 1)))


def matrix_columns(tasks: list[str]) -> list[tuple[int, int, str]]:
    """``(i, j, column)`` for the upper triangle: column ``cos_<task i>__<task j>``."""
    return [(i, j, f"cos_{tasks[i]}__{tasks[j]}") for i in range(len(tasks)) for j in range(i + 1, len(tasks))]


class CosineProbe:
    """The ``train.cosine_every`` measurement (see the module docstring). Rows: ``step``,
    ``epoch`` (completed epochs, as in steps.csv), ``mean_cosine``, ``seconds`` (probe cost) and,
    for K <= ``MATRIX_MAX_TASKS``, one ``cos_<a>__<b>`` column per task pair."""

    def __init__(self, model: nn.Module, bench: Any, device: torch.device, every: int) -> None:
        if every < 1:
            raise ValueError(f"cosine_every must be >= 1 for a probe, got {every}")
        self.model, self.bench, self.device, self.every = model, bench, device, int(every)
        self.tasks = list(bench.task_names)
        self.batch: Any = None
        #: vmap until an operation without a batching rule makes it fail once; then the loop
        self.method = "vmap"
        self.rows: list[dict[str, Any]] = []

    def set_batch(self, loader: Any) -> None:
        """Take the fixed probe batch: the first batch of ``loader`` (the trainer passes the
        validation loader, once). Starting a DataLoader iterator draws from the global RNG, so
        it runs under ``fork_rng``: training sees the same random stream as without the probe."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            batch = next(iter(loader))
        self.batch = self.bench.to_device(batch, self.device)

    def measure(self, step: int, epoch: int) -> None:
        started = time.perf_counter()
        was_training = self.model.training
        devices = [self.device] if self.device.type == "cuda" else []
        method = self.method
        try:
            self.model.eval()
            with torch.random.fork_rng(devices=devices):
                try:
                    grads = task_gradients(self.model, self.bench, self.batch, method=method)
                except Exception:
                    if method != "vmap":
                        raise
                    method = self.method = "loop"  # no batching rule for some op: loop from now on
                    grads = task_gradients(self.model, self.bench, self.batch, method="loop")
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        finally:
            self.model.train(was_training)
        row: dict[str, Any] = {"step": step, "epoch": epoch, "mean_cosine": mean_pairwise_cosine(grads)}
        if len(self.tasks) <= MATRIX_MAX_TASKS:
            cos = cosine_matrix(grads).cpu()
            row.update({name: float(cos[i, j]) for i, j, name in matrix_columns(self.tasks)})
        row["method"] = method
        row["seconds"] = time.perf_counter() - started
        self.rows.append(row)

    def flush(self, run_dir: Path) -> None:
        if self.rows:
            rundir.write_table(Path(run_dir) / rundir.COSINE, pd.DataFrame(self.rows))

    def load(self, run_dir: Path, epoch: int) -> None:
        """On resume: the rows measured before the checkpointed epoch ended."""
        path = Path(run_dir) / rundir.COSINE
        if path.is_file():
            table = rundir.read_table(run_dir, rundir.COSINE)
            self.rows = table[table["epoch"] < epoch].to_dict("records")
