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

import contextlib
import platform
import statistics
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from balancers import balancer_info, list_balancers

#: the synthetic MLP of the ``mlp`` model (see docs/cost.md): input 32, 3 hidden layers of 512, batch 256
MLP = {"input_dim": 32, "hidden": 512, "depth": 3, "batch_size": 256}
QM9 = {"subset": 2048, "batch_size": 32, "dim": 64}
DEFAULT_KS = (2, 8, 32, 128, 512, 1024)
OK_MAX_K = 128
BASELINE = "(uniform baseline)"
#: ``wall``: elapsed time; ``process``: CPU time of the process (all its threads), which does not
#: count the time other processes hold the cores: with one torch thread, the robust choice on a
#: machine shared with other jobs (with several threads it also counts their spin-waiting)
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "process": time.process_time}


# ============================================================================ variants
@dataclass(frozen=True)
class Variant:
    """One balancer configuration to measure: registry name + hyperparameters (a function of K)."""

    label: str
    name: str
    hparams: Callable[[int], dict[str, Any]] = field(default=lambda k: {})

    @property
    def o_k(self) -> bool:
        return balancer_info(self.name).needs_task_grads


#: variants beyond each balancer's defaults (label suffix, hyperparameters)
EXTRA_VARIANTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "famo": [("same_batch", {"update": "same_batch"}), ("lagged", {"update": "lagged"})],
    "marigold": [("faithful", {"variant": "faithful"}), ("fused", {"variant": "fused"}),
                 ("faithful,two_point", {"variant": "faithful", "estimator": "two_point"}),
                 ("fused,two_point", {"variant": "fused", "estimator": "two_point"})],
}
#: constructor arguments some balancers cannot be built without
REQUIRED = {"fixed": lambda k: {"weights": [float(i + 1) for i in range(k)]}}


def default_variants(two_point: bool = True) -> list[Variant]:
    """Every registered balancer; FAMO and MARIGOLD once per variant (MARIGOLD two_point optional)."""
    out = []
    for name in list_balancers():
        required = REQUIRED.get(name, lambda k: {})
        extras = EXTRA_VARIANTS.get(name)
        if not extras:
            out.append(Variant(name, name, required))
            continue
        for suffix, hp in extras:
            if not two_point and "two_point" in suffix:
                continue
            out.append(Variant(f"{name}[{suffix}]", name, lambda k, hp=hp, required=required: {**required(k), **hp}))
    return out


def select_variants(spec: str | None, two_point: bool = True) -> list[Variant]:
    """``spec``: comma-separated labels or registry names (a name selects all its variants)."""
    every = default_variants(two_point=two_point)
    if not spec:
        return every
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    chosen = [v for v in every if v.label in wanted or v.name in wanted]
    unknown = [w for w in wanted if not any(w in (v.label, v.name) for v in every)]
    if unknown:
        from experiments.errors import UserError

        raise UserError(f"unknown balancer/variant(s) {unknown}; valid: {', '.join(v.label for v in every)}")
    return chosen


# ============================================================================ set-up
def build_trainer(variant: Variant, k: int, model: str, device: str, options: dict[str, Any]):
    """A real :class:`Trainer` for ``variant`` with K tasks (``mlp``) or QM9's 11 tasks."""
    from experiments.config import BalancerConfig, BenchmarkConfig, RunConfig, TrainConfig
    from experiments.training.trainer import Trainer

    train = TrainConfig(batch_size=options["batch_size"], device=device, progress=False, epochs=1)
    if model == "mlp":
        n_train = options["batch_size"] * options.get("n_batches", 4)
        cfg = RunConfig(
            benchmark=BenchmarkConfig("synthetic", options={"n_tasks": k, "input_dim": options["input_dim"],
                                                            "n_train": n_train, "n_val": 16, "n_test": 16}),
            model={"hidden": options["hidden"], "depth": options["depth"]},
            balancer=BalancerConfig(variant.name, variant.hparams(k)), train=train, seed=0)
    elif model == "qm9":
        cfg = RunConfig(benchmark=BenchmarkConfig("qm9", options={"subset": options["subset"]}),
                        model={"dim": options["dim"]}, balancer=BalancerConfig(variant.name, variant.hparams(k)),
                        train=train, seed=0)
    else:
        raise ValueError(f"model must be mlp or qm9, got {model!r}")
    return Trainer(cfg, Path(tempfile.gettempdir()) / "balancebench-cost-unused")


def load_batches(trainer: Any, n: int) -> list[Any]:
    loader, _, _ = trainer.bench.loaders(trainer.cfg.train.batch_size, 0)
    batches = []
    for batch in loader:
        batches.append(trainer.bench.to_device(batch, trainer.device))
        if len(batches) == n:
            break
    return batches


def shared_param(trainer: Any) -> torch.nn.Parameter:
    model = trainer.model
    source = model.trunk if isinstance(getattr(model, "trunk", None), torch.nn.Module) else model
    return next(p for p in source.parameters() if p.requires_grad)


class Runner:
    """A trainer plus its batches; ``run(n)`` does n real training steps, cycling over the batches."""

    def __init__(self, variant: Variant, trainer: Any, batches: list[Any]) -> None:
        self.variant, self.trainer, self.batches, self.i = variant, trainer, batches, 0

    def run(self, n: int) -> None:
        for _ in range(n):
            self.trainer.train_step(self.batches[self.i % len(self.batches)])
            self.i += 1

    def sync(self) -> None:
        if self.trainer.device.type == "cuda":
            torch.cuda.synchronize(self.trainer.device)

    def timed(self, n: int, clock: Callable[[], float] = time.perf_counter) -> float:
        self.sync()
        start = clock()
        self.run(n)
        self.sync()
        return (clock() - start) / n


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


# ============================================================================ the benchmark
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
    defaults = MLP if model == "mlp" else QM9
    options = {**defaults, **(options or {})}
    if model == "qm9":
        ks = [11]
    rows: list[dict[str, Any]] = []
    # the baseline every variant is interleaved with; the registered "uniform" variant is measured
    # against it like the others (its time ratio shows the noise floor of the measurement)
    uniform_variant = Variant(BASELINE, "uniform")
    for k in ks:
        started = time.perf_counter()
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
        stats: dict[str, dict[str, Any]] = {}
        for r in [uniform, *runners]:
            passes = count_passes(r, steps=1 if r.variant.o_k else 2)
            stats[r.variant.label] = {
                **passes,
                "task_grads": k if r.variant.o_k else 0,
                "peak": peak_memory(r),
                **dict(zip(("overhead", "balancer_passes"),
                           balancer_overhead(r, steps=1 if r.variant.o_k else 9, clock=timer))),
                "times": [], "uniform": [], "ratios": [],
            }

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
        uniform_peak = stats[BASELINE]["peak"]
        all_uniform = [t for r in runners for t in stats[r.variant.label]["uniform"]]
        uniform_ms = 1e3 * statistics.median(all_uniform) if all_uniform else float("nan")
        for r in runners:
            s = stats[r.variant.label]
            ratios = s["ratios"]
            own_uniform = 1e3 * statistics.median(s["uniform"]) if s["uniform"] else uniform_ms
            rows.append({
                "model": model, "device": device, "K": k, "method": r.variant.label,
                "fwd": s["fwd"], "bwd": s["bwd"], "task_grads": s["task_grads"],
                "time_ms": 1e3 * statistics.median(s["times"]),
                "uniform_ms": own_uniform,
                "time_ratio": statistics.median(ratios),
                "time_ratio_iqr": _iqr(ratios),
                "peak_mb": s["peak"] / 2**20, "mem_ratio": s["peak"] / uniform_peak,
                "balancer_passes_ms": 1e3 * s["balancer_passes"],
                "overhead_ms": 1e3 * s["overhead"], "overhead_pct": 100 * 1e3 * s["overhead"] / own_uniform,
                "note": "",
            })
        log(f"K={k}: {len(runners)} variants measured in {time.perf_counter() - started:.0f}s "
            f"(uniform step {uniform_ms:.2f} ms)")
        del runners, uniform, base, batches
    frame = pd.DataFrame(rows, columns=COLUMNS)
    order = {v.label: i for i, v in enumerate(variants)}
    frame["_order"] = frame["method"].map(order)
    return frame.sort_values(["K", "_order"], kind="stable").drop(columns="_order").reset_index(drop=True)


def _iqr(values: Sequence[float]) -> float:
    if len(values) < 4:
        return float("nan")
    q = statistics.quantiles(values, n=4)
    return q[2] - q[0]


# ============================================================================ outputs
def machine_description(device: str) -> dict[str, str]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "threads": str(torch.get_num_threads())}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["device"] = torch.cuda.get_device_name()
    else:
        info["device"] = _cpu_model()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def to_markdown(frame: pd.DataFrame) -> str:
    shown = frame.copy()
    for col, fmt in (("fwd", "{:g}"), ("bwd", "{:g}"), ("task_grads", "{:.0f}"), ("time_ms", "{:.2f}"),
                     ("uniform_ms", "{:.2f}"), ("time_ratio", "{:.3f}"), ("time_ratio_iqr", "{:.3f}"),
                     ("peak_mb", "{:.1f}"), ("mem_ratio", "{:.3f}"), ("balancer_passes_ms", "{:.2f}"),
                     ("overhead_ms", "{:.3f}"),
                     ("overhead_pct", "{:.2f}")):
        shown[col] = [("" if pd.isna(x) else fmt.format(x)) for x in shown[col]]
    return shown.to_markdown(index=False)


def pivots(frame: pd.DataFrame) -> str:
    """Markdown: passes per method, then time ratio, memory ratio and own overhead (% of the uniform
    step) as method x K tables (``skip`` where an O(K) method was not measured)."""
    measured = frame[frame["note"].isna() | (frame["note"] == "")]
    methods = list(dict.fromkeys(frame["method"]))
    passes = measured.groupby("method", sort=False)[["fwd", "bwd"]].first()
    passes["task_grads"] = measured.groupby("method", sort=False)["task_grads"].max().map(
        lambda n: "K" if n > 0 else "0")
    parts = ["model passes per training step (fwd / bwd traversals / per-task gradients):\n\n"
             + passes.reindex(methods).to_markdown()]
    for col, title, fmt in (("time_ratio", "step time / uniform step time", "{:.3f}"),
                            ("mem_ratio", "peak memory / uniform peak memory", "{:.3f}"),
                            ("overhead_pct", "balancer's own arithmetic, % of the uniform step", "{:.2f}")):
        table = frame.pivot(index="method", columns="K", values=col).reindex(methods)
        table = table.apply(lambda c: c.map(lambda x: "skip" if pd.isna(x) else fmt.format(x)))
        table.columns = [f"K={k}" for k in table.columns]
        parts.append(f"{title}:\n\n" + table.to_markdown())
    return "\n\n".join(parts)


_O1 = ("famo[same_batch]", "famo[lagged]", "marigold[fused]", "marigold[faithful]")
#: the issue's targets for the O(1) balancers, ratios to uniform: (method, column, bound, which K)
TARGETS = [
    ("famo[lagged]", "time_ratio", 1.02, "all"), ("famo[same_batch]", "time_ratio", 1.30, "all"),
    ("marigold[fused]", "time_ratio", 1.30, "all"), ("marigold[faithful]", "time_ratio", 2.1, "all"),
    *[(m, "mem_ratio", 1.05, "max") for m in _O1],
    *[(m, "overhead_pct", 1.0, "max") for m in _O1],  # percent of the uniform step, strict
]


def check_targets(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per target: the worst measured value (over all K, or at the largest K) and met or not."""
    rows = []
    k_max = frame["K"].max()
    for method, col, bound, which in TARGETS:
        data = frame[(frame["method"] == method) & frame[col].notna()]
        if which == "max":
            data = data[data["K"] == k_max]
        if data.empty:
            continue
        worst = data.loc[data[col].idxmax()]
        pct = col == "overhead_pct"
        rows.append({"method": method, "quantity": col, "target": f"< {bound}%" if pct else f"<= {bound}",
                     "K": "all" if which == "all" else int(k_max), "worst": round(float(worst[col]), 3),
                     "at K": int(worst["K"]), "met": bool(worst[col] < bound if pct else worst[col] <= bound)})
    return pd.DataFrame(rows)


def plot(frame: pd.DataFrame, path: Path) -> Path:
    """Log-log plot of the time ratio to uniform against K, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = frame[frame["method"] != "uniform"].dropna(subset=["time_ratio"])
    fig, ax = plt.subplots(figsize=(8, 5.5))
    colors = plt.get_cmap("tab20").colors
    markers = "os^vD<>pPX*h"
    for i, (method, group) in enumerate(data.groupby("method", sort=False)):
        group = group.sort_values("K")
        o_k = bool((group["task_grads"] > 0).any())
        color = colors[(2 * i) % 20 + (i // 10) % 2]
        ax.plot(group["K"], group["time_ratio"], marker=markers[i % len(markers)], color=color,
                linestyle="--" if o_k else "-", label=method + (" (O(K))" if o_k else ""))
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("number of tasks K")
    ax.set_ylabel("step time / uniform-loss step time")
    model, device = frame["model"].iloc[0], frame["device"].iloc[0]
    ax.set_title(f"balancer step cost vs K ({model}, {device})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(frame: pd.DataFrame, out: Path, header: str = "") -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"cost_{frame['model'].iloc[0]}_{frame['device'].iloc[0]}"
    paths = {"csv": out / f"{stem}.csv", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    frame.to_csv(paths["csv"], index=False)
    targets = check_targets(frame)
    text = [header] if header else []
    text += [pivots(frame)]
    if not targets.empty:
        text += ["targets (issue 7):\n\n" + targets.to_markdown(index=False)]
    text += ["all columns:\n\n" + to_markdown(frame)]
    paths["md"].write_text("\n\n".join(text) + "\n")
    plot(frame, paths["png"])
    return paths
