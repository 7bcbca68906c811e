"""What the cost benchmark measures: the balancer variants, and real trainers built for them.

A :class:`Variant` is a registry name plus hyperparameters (a function of K); ``build_trainer``
makes the same :class:`~experiments.training.trainer.Trainer` that ``balancebench train`` uses, on
the synthetic K-task MLP or on QM9; a :class:`Runner` steps it over a few fixed batches.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from balancers import balancer_info, list_balancers

#: the synthetic MLP of the ``mlp`` model (see docs/cost.md): input 32, 3 hidden layers of 512, batch 256
MLP = {"input_dim": 32, "hidden": 512, "depth": 3, "batch_size": 256}
QM9 = {"subset": 2048, "batch_size": 32, "dim": 64}
#: the dense models (seed 004 Table 3's): benchmark, its K and the reference batch size (Table 3 reports
#: seconds per epoch: NYU-v2 has 795 / 2 = 398 steps per epoch, CityScapes 2,975 / 8 = 372); ``filters``
#: None: the reference's widths. They run on random images of the releases' size written by
#: :func:`experiments.benchmarks.fixtures.temporary_fixture` (step time does not depend on pixel values)
SEGNET = {"segnet": {"benchmark": "nyuv2", "k": 3, "batch_size": 2, "arch": "mtan", "filters": None},
          "segnet_cityscapes": {"benchmark": "cityscapes", "k": 2, "batch_size": 8, "arch": "mtan", "filters": None}}
MODELS = ("mlp", "qm9", *SEGNET)


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
    elif model in SEGNET:
        from experiments.benchmarks.fixtures import temporary_fixture

        root = temporary_fixture(options["benchmark"], options["batch_size"] * options.get("n_batches", 4))
        resize = {"resize": list(options["resize"])} if options.get("resize") else {}  # smaller images: tests
        cfg = RunConfig(benchmark=BenchmarkConfig(options["benchmark"], options={"root": str(root), "n_test": 1, **resize}),
                        model={"arch": options["arch"], "filters": options["filters"]},
                        balancer=BalancerConfig(variant.name, variant.hparams(k)),
                        train=train, seed=0)
    else:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
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
