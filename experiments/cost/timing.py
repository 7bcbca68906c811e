"""Cost benchmark: step time, peak memory, model passes and own overhead of every balancer vs K.

Every measurement runs the trainer's real step, :meth:`experiments.training.trainer.Trainer.train_step`, on
a benchmark built from a :class:`RunConfig` (``mlp``: the synthetic K-task benchmark, whose model is
an MLP trunk + one linear layer of K heads; ``qm9``: the QM9 MPNN with its 11 tasks). For each K,
one trainer per balancer variant plus one uniform-loss trainer live in the same process, all
built with the same seed (same initial model), and run on the same pre-loaded batches.

What is measured, per variant and K (see :func:`bench` for the columns):

* **time**: blocks of ``steps_per_block`` training steps, *interleaved* with blocks of the uniform
  trainer (uniform, variant, uniform, variant, ... over the repeats, after warm-up steps; the
  order of the variants rotates between repeats; the O(K) methods come last, as their steps of
  seconds and hundreds of MB would disturb the others' timings). ``time_ratio`` is the median
  over repeats of (variant block time / the adjacent uniform block), so that drifts of the
  machine's load cancel (the uniform block comes first in even repeats and second in odd ones, so
  that neither position's cache state biases the ratio); ``time_ratio_iqr`` its interquartile range; ``time_ms`` /
  ``uniform_ms`` are medians of the per-step times. ``clock="wall"`` (elapsed time) or
  ``"process"`` (the process's CPU time, which does not count the time other jobs hold the cores:
  with one torch thread, the robust choice on a shared machine). On CUDA the device is
  synchronised before and after every block (not inside). The registered ``uniform`` balancer is
  measured like every other variant against the baseline: its ratio shows the noise floor.
* **peak memory**: the peak of live tensor bytes during one step, counting the trainer's own
  state at the start of the step (model parameters and gradients, optimizer state, balancer
  state, the batch) plus everything allocated during the step, minus what is freed. On CUDA this
  is ``max_memory_allocated`` during the step minus ``memory_allocated`` before it, plus that own
  state. On CPU, torch has no allocator statistics, so every tensor storage created during the
  step is tracked with a ``TorchDispatchMode`` (which sees every aten op, also inside backward,
  vmap and ``torch.func``) and a finaliser on the storage (subtracted when it is freed); the
  storages of the state present at the start are tracked the same way, so freeing last step's
  gradients counts. Memory outside tensors (Python objects, numpy arrays of the O(K) solvers,
  allocator caching) is not counted. ``mem_ratio`` = peak / uniform's peak.
* **passes**: model forwards counted by a forward hook on the model (closures evaluated through
  ``torch.func.functional_call`` call the model too), backward passes counted by a gradient hook
  on the first shared parameter (one per autograd traversal that reaches the model; a batched
  ``is_grads_batched`` traversal of several tasks counts once), and ``task_grads``: the number
  of per-task gradients the balancer forms (K for the O(K) methods).
* **overhead**: the balancer's own arithmetic, excluding model passes: in separate instrumented
  steps, the time inside ``balancer(losses, closure)`` and ``balancer.step(closure)`` minus the
  time spent there in the loss closure (model forwards) and in ``torch.autograd.grad`` calls that
  differentiate model parameters (model backwards, e.g. MARIGOLD's virtual step gradient or the
  O(K) methods' task gradients). What remains is the balancer's arithmetic: softmaxes and Adam
  on K logits, the MARIGOLD virtual optimizer step (O(P)), the Gram matrix and the solver of the
  O(K) methods. ``overhead_pct`` = that time / the uniform step time. ``balancer_passes_ms`` is
  the subtracted part: the model passes the balancer runs itself (FAMO same_batch's and MARIGOLD's
  closure forwards, MARIGOLD faithful's extra backward, the O(K) methods' task gradients), so
  that ``time_ratio ~ 1 + (balancer_passes_ms + overhead_ms - uniform's overhead) / uniform_ms``.

O(K) methods (registry ``needs_task_grads``) are measured only up to ``ok_max_k`` tasks (default
128): above it one step takes seconds; the table lists them as skipped.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

from experiments.cost.measure import balancer_overhead, count_passes, peak_memory
from experiments.cost.variants import MLP, QM9, SEGNET, Runner, Variant, build_trainer, default_variants, load_batches

DEFAULT_KS = (2, 8, 32, 128, 512, 1024)
OK_MAX_K = 128
BASELINE = "(uniform baseline)"
#: ``wall``: elapsed time; ``process``: CPU time of the process (all its threads), which does not
#: count the time other processes hold the cores: with one torch thread, the robust choice on a
#: machine shared with other jobs (with several threads it also counts their spin-waiting)
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


COLUMNS = ["model", "device", "K", "method", "fwd", "bwd", "task_grads", "time_ms", "uniform_ms", "time_ratio",
           "time_ratio_iqr", "peak_mb", "mem_ratio", "balancer_passes_ms", "overhead_ms", "overhead_pct", "note"]


def bench(
    ks: Sequence[int] = DEFAULT_KS,
    *,
    model: str = "mlp",
    device: str = "cpu",
    repeats: int = 15,
    steps_per_block: int = 2,
    warmup: int = 3,
    variants: Sequence[Variant] | None = None,
    ok_max_k: int = OK_MAX_K,
    ok_repeats: int = 3,
    options: dict[str, Any] | None = None,
    clock: str = "wall",
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """The cost table: one row per (K, variant); see the module docstring for every column.

    ``repeats`` interleaved (uniform, variant) block pairs per variant, ``steps_per_block`` steps
    each, after ``warmup`` steps of every trainer; O(K) methods get one warm-up step and
    ``min(repeats, ok_repeats)`` pairs of 1-step blocks, timed after all the O(1) variants, and
    are skipped above ``ok_max_k`` tasks.
    """
    log = log or (lambda msg: None)
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {clock!r}")
    if clock == "process" and device != "cpu":
        raise ValueError("clock='process' measures CPU time: only for device='cpu'")
    timer = CLOCKS[clock]
    variants = list(default_variants() if variants is None else variants)
    defaults = {"mlp": MLP, "qm9": QM9, **SEGNET}[model]
    options = {**defaults, **(options or {})}
    if model == "qm9":
        ks = [11]
    elif model in SEGNET:
        ks = [SEGNET[model]["k"]]
    rows: list[dict[str, Any]] = []
    for k in ks:
        rows += _measure_k(k, model=model, device=device, variants=variants, options=options, timer=timer,
                           repeats=repeats, steps_per_block=steps_per_block, warmup=warmup, ok_max_k=ok_max_k,
                           ok_repeats=ok_repeats, log=log)
    frame = pd.DataFrame(rows, columns=COLUMNS)
    order = {v.label: i for i, v in enumerate(variants)}
    frame["_order"] = frame["method"].map(order)
    return frame.sort_values(["K", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)


def _measure_k(k: int, *, model: str, device: str, variants: Sequence[Variant], options: dict[str, Any],
               timer: Callable[[], float], repeats: int, steps_per_block: int, warmup: int, ok_max_k: int,
               ok_repeats: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """The rows of one K: build every trainer on the same batches, count, then time in pairs."""
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    # the baseline every variant is interleaved with; the registered "uniform" variant is measured
    # against it like the others (its time ratio shows the noise floor of the measurement)
    uniform_variant = Variant(BASELINE, "uniform")
    base = build_trainer(uniform_variant, k, model, device, options)
    batches = load_batches(base, options.get("n_batches", 4))
    uniform = Runner(uniform_variant, base, batches)
    runners: list[Runner] = []
    for v in variants:
        if v.o_k and k > ok_max_k:
            rows.append({"model": model, "device": device, "K": k, "method": v.label,
                         "note": f"skipped: O(K) method, K > {ok_max_k} (--ok-max-k)"})
            continue
        runners.append(Runner(v, build_trainer(v, k, model, device, options), batches))
    for r in [uniform, *runners]:
        r.run(min(warmup, 1) if r.variant.o_k else warmup)  # O(K) steps take seconds at large K
    stats = {r.variant.label: _static_stats(r, k, timer) for r in [uniform, *runners]}
    _interleave(uniform, runners, stats, timer, repeats=repeats, steps_per_block=steps_per_block,
                ok_repeats=ok_repeats)
    all_uniform = [t for r in runners for t in stats[r.variant.label]["uniform"]]
    uniform_ms = 1e3 * statistics.median(all_uniform) if all_uniform else float("nan")
    for r in runners:
        rows.append(_row(stats[r.variant.label], stats[BASELINE]["peak"], uniform_ms,
                         model=model, device=device, k=k, label=r.variant.label))
    log(f"K={k}: {len(runners)} variants measured in {time.perf_counter() - started:.0f}s "
        f"(uniform step {uniform_ms:.2f} ms)")
    return rows


def _static_stats(r: Runner, k: int, timer: Callable[[], float]) -> dict[str, Any]:
    """Passes, task gradients, peak memory and the balancer's overhead of one variant (untimed
    pairs follow in :func:`_interleave`)."""
    passes = count_passes(r, steps=1 if r.variant.o_k else 2)
    return {
        **passes,
        "task_grads": k if r.variant.o_k else 0,
        "peak": peak_memory(r),
        **dict(zip(("overhead", "balancer_passes"),
                   balancer_overhead(r, steps=1 if r.variant.o_k else 9, clock=timer))),
        "times": [], "uniform": [], "ratios": [],
    }


def _interleave(uniform: Runner, runners: Sequence[Runner], stats: dict[str, dict[str, Any]],
                timer: Callable[[], float], *, repeats: int, steps_per_block: int, ok_repeats: int) -> None:
    """Timed (uniform, variant) block pairs, appended to ``stats``."""

    def pair(r: Runner, steps: int, variant_first: bool) -> None:
        if variant_first:
            t = r.timed(steps, timer)
            t_uniform = uniform.timed(steps, timer)
        else:
            t_uniform = uniform.timed(steps, timer)
            t = r.timed(steps, timer)
        s = stats[r.variant.label]
        s["times"].append(t)
        s["uniform"].append(t_uniform)
        s["ratios"].append(t / t_uniform)

    # the O(1) variants first, interleaved over all repeats in a rotating order (no variant
    # always follows the same one); then the O(K) methods, whose steps of seconds and hundreds
    # of MB would disturb the others' timings (allocator trims, page faults)
    order = [r for r in runners if not r.variant.o_k]
    for rep in range(repeats):
        order = order[1:] + order[:1]
        for r in order:
            pair(r, steps_per_block, variant_first=rep % 2 == 1)  # ABBA: no order bias
    for r in runners:
        if r.variant.o_k:
            for rep in range(min(repeats, ok_repeats)):
                pair(r, 1, variant_first=rep % 2 == 1)


def _row(s: dict[str, Any], uniform_peak: float, uniform_ms: float, *, model: str, device: str, k: int,
         label: str) -> dict[str, Any]:
    """One table row from one variant's measurements."""
    ratios = s["ratios"]
    own_uniform = 1e3 * statistics.median(s["uniform"]) if s["uniform"] else uniform_ms
    return {
        "model": model, "device": device, "K": k, "method": label,
        "fwd": s["fwd"], "bwd": s["bwd"], "task_grads": s["task_grads"],
        "time_ms": 1e3 * statistics.median(s["times"]),
        "uniform_ms": own_uniform,
        "time_ratio": statistics.median(ratios),
        "time_ratio_iqr": _iqr(ratios),
        "peak_mb": s["peak"] / 2**20, "mem_ratio": s["peak"] / uniform_peak,
        "balancer_passes_ms": 1e3 * s["balancer_passes"],
        "overhead_ms": 1e3 * s["overhead"], "overhead_pct": 100 * 1e3 * s["overhead"] / own_uniform,
        "note": "",
    }


def _iqr(values: Sequence[float]) -> float:
    if len(values) < 4:
        return float("nan")
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]
