"""A run's parts built from its config: benchmark, model, balancer, optimizer and scheduler.

Their options are free mappings in the config (``benchmark.options``, ``model``,
``balancer.hparams``); each is checked against the signature of the constructor it is passed to
(names and type hints, :func:`experiments.schema.check_options`), and a constructor's own
``ValueError``/``TypeError`` about a value becomes one line naming the option's config path.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from balancers import Balancer, PluginError, balancer_info, create_balancer
from experiments.benchmarks import Benchmark, benchmark_class, create_benchmark
from experiments.config import RunConfig
from experiments.errors import ConfigError, UserError
from experiments.schema import check_options, naming_errors


def build_benchmark(cfg: RunConfig) -> Benchmark:
    """The configured benchmark (unknown names and variants: the registry's one-line errors)."""
    options = check_options(benchmark_class(cfg.benchmark.name), cfg.benchmark.options, "benchmark.options",
                            ("self", "variant"))
    with naming_errors(options, "benchmark.options"):
        return create_benchmark(cfg.benchmark.name, cfg.benchmark.variant, **options)


def build_balancer(cfg: RunConfig, bench: Benchmark) -> Balancer:
    """The configured balancer. Unless the config sets them: a benchmark's loss lower bounds go to
    a ``min_losses`` hyperparameter, and the run seed to a stochastic balancer's ``seed``."""
    try:
        info = balancer_info(cfg.balancer.name)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if info.needs_unclipped_step and cfg.train.grad_clip is not None:  # e.g. MARIGOLD's virtual step
        raise ConfigError(f"train.grad_clip must be null for {info.name!r}: it differentiates the optimizer step "
                          "on unclipped gradients, so clipping would make the step taken differ from it")
    defaults = cfg.method_defaults.get(cfg.balancer.name) or {}
    hparams = {**defaults, **cfg.balancer.hparams}
    origins = {k: f"method_defaults.{cfg.balancer.name}.{k}" for k in defaults if k not in cfg.balancer.hparams}
    accepted = inspect.signature(info.cls.__init__).parameters
    bounds = getattr(bench, "loss_lower_bounds", None)
    if bounds is not None and "min_losses" in accepted:
        hparams.setdefault("min_losses", list(bounds))
    if info.stochastic and "seed" in accepted:  # each run seed gets its own balancer draws
        hparams.setdefault("seed", cfg.seed)
    hparams = check_options(info.cls.__init__, hparams, "balancer.hparams", ("self", "n_tasks"), origins)
    with naming_errors(hparams, "balancer.hparams", origins):  # the constructor checks the ranges
        try:
            return create_balancer(cfg.balancer.name, bench.n_tasks, **hparams)
        except PluginError as exc:  # a plug-in's constructor failed: one line naming the plug-in
            raise UserError(str(exc)) from exc


def build_model(cfg: RunConfig, bench: Benchmark) -> torch.nn.Module:
    """The benchmark's model from ``cfg.model``; bad options (a size <= 0 among them) are one line."""
    options = check_options(bench.build_model, cfg.model, "model")
    with naming_errors(options, "model", kinds=(ValueError, TypeError, RuntimeError)):
        model = bench.build_model(**options)
    if any(p.numel() == 0 for p in model.parameters()):  # e.g. a width of 0: an empty layer
        raise ConfigError(f"model: {options} gives a layer with no parameters (model sizes must be > 0)")
    return model


def build_optimizer(cfg: RunConfig, params: list[torch.nn.Parameter], balancer: Balancer | None = None
                    ) -> torch.optim.Optimizer:
    """The model's optimizer; a balancer's ``named_learnables()`` (UW's log-variances) get a group of
    their own at its ``learnables_lr`` (None: the model's), without weight decay, as in the references."""
    t = cfg.train
    if not t.lr > 0:
        raise ConfigError(f"train.lr must be > 0, got {t.lr}")
    if t.weight_decay < 0:
        raise ConfigError(f"train.weight_decay must be >= 0, got {t.weight_decay}")
    groups: list[dict[str, Any]] = [{"params": params}]
    if balancer is not None and (learnables := [p for _, p in balancer.named_learnables()]):
        lr = balancer.learnables_lr
        groups.append({"params": learnables, "weight_decay": 0.0, "lr": t.lr if lr is None else lr})
    if t.optimizer == "adam":
        return torch.optim.Adam(groups, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)
    raise ConfigError(f"train.optimizer must be adam, adamw or sgd, got {t.optimizer!r}")


def build_scheduler(cfg: RunConfig, optimizer: torch.optim.Optimizer) -> Any:
    t = cfg.train
    if t.scheduler == "none":
        return None
    if t.scheduler == "plateau":  # the QM9 reference: on the validation objective
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=t.scheduler_factor, patience=t.scheduler_patience, min_lr=t.scheduler_min_lr)
    if t.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(t.epochs, 1))
    if t.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=t.scheduler_step_size, gamma=t.scheduler_factor)
    raise ConfigError(f"train.scheduler must be none, plateau, cosine or step, got {t.scheduler!r}")
