"""The functions behind ``balancebench list | train | stl | toy`` (tests call them directly)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from experiments.config import RunConfig, deep_merge, load_run_config, parse_set


def list_command(args: argparse.Namespace) -> int:
    from balancers import balancer_info, list_balancers
    from experiments.benchmarks import benchmark_class, list_benchmarks

    print("balancers:")
    for name in list_balancers():
        print(f"  {name:<16} {balancer_info(name).description}")
    print("benchmarks:")
    for name in list_benchmarks():
        try:
            cls = benchmark_class(name)
        except ImportError as exc:  # e.g. an optional dependency missing
            print(f"  {name:<16} unavailable: {exc}")
            continue
        doc = next(iter((cls.__doc__ or name).strip().splitlines()), name)
        print(f"  {name:<16} variants: {', '.join(cls.variants):<20} {doc}")
    return 0


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> RunConfig:
    """YAML + scale + CLI flags + ``--set`` overrides (later ones win)."""
    overrides: dict[str, Any] = dict(extra or {})
    if getattr(args, "balancer", None):
        overrides.setdefault("balancer", {})["name"] = args.balancer
    if getattr(args, "seed", None) is not None:
        overrides["seed"] = args.seed
    if getattr(args, "out", None):
        overrides["out"] = args.out
    if getattr(args, "device", None):
        overrides.setdefault("train", {})["device"] = args.device
    if getattr(args, "quiet", False):
        overrides.setdefault("train", {})["progress"] = False
    from experiments.config import deep_merge

    overrides = deep_merge(overrides, parse_set(getattr(args, "overrides", []) or []))
    return load_run_config(args.config, args.scale, overrides)


def train_command(args: argparse.Namespace) -> int:
    from experiments.trainer import load_run_dir_config, train

    if args.resume:
        resumed = Path(args.resume)
        result = train(load_run_dir_config(resumed), resumed, resume=True)
    else:
        if not args.config:
            from experiments.errors import UserError

            raise UserError("train needs --config FILE (or --resume RUN_DIR)")
        cfg = config_from_args(args)
        result = train(cfg)
    summary = result.summary
    print(f"status: {summary['status']}  best epoch: {summary['best_epoch']}  "
          f"best val objective (Δm% vs {summary['reference']}): {summary['best_val_objective']}")
    print(f"test metrics at best epoch: {summary['test_metrics']}")
    print(result.run_dir)
    return 0


def stl_command(args: argparse.Namespace) -> int:
    from experiments.stl import train_stl_references

    cfg = config_from_args(args)
    out = Path(args.out) if args.out else Path(cfg.out) / f"stl_{cfg.benchmark.name}"
    path = train_stl_references(cfg, out)
    print(path)
    return 0


def toy_command(args: argparse.Namespace) -> int:
    from experiments.toy_runs import run_toy

    names = [n.strip() for n in args.balancers.split(",") if n.strip()]
    chosen: dict[str, Any] = {"benchmark": {}}
    if getattr(args, "variant", None):
        chosen["benchmark"]["variant"] = args.variant
    if getattr(args, "dtype", None):
        chosen["benchmark"]["options"] = {"dtype": args.dtype}
    overrides = deep_merge(chosen, parse_set(args.overrides))  # --set wins
    table = run_toy(names, scale=args.scale, overrides=overrides, out=Path(args.out),
                    progress=not args.quiet, workers=args.workers)
    print(table.drop(columns=["run_dir"]).to_markdown(index=False, floatfmt=".4g"))
    print(Path(args.out) / "toy_pareto.csv")
    return 0
