"""The functions behind ``balancebench train | stl | toy`` (tests call them directly)."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from experiments.config import RunConfig, deep_merge, load_run_config, parse_set, run_config_from_dict, to_dict


def cli_overrides(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The config values set on the command line: flags, then ``--set`` (later ones win)."""
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
    if getattr(args, "tensorboard", False):
        overrides.setdefault("train", {})["tensorboard"] = True
    return deep_merge(overrides, parse_set(getattr(args, "overrides", []) or []))


def config_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> RunConfig:
    """YAML + scale + CLI flags + ``--set`` overrides (later ones win)."""
    return load_run_config(args.config, args.scale, cli_overrides(args, extra))


def train_command(args: argparse.Namespace) -> int:
    from experiments.training import distributed
    from experiments.errors import RunInterrupted, UserError
    from experiments.training.trainer import load_run_dir_config, train

    if getattr(args, "nproc", 1) != 1:  # N workers, each running this command without --nproc
        from experiments.errors import ConfigError
        from balancebench.launch import launch

        if not args.resume and args.config and config_from_args(args).train.batch_size % max(args.nproc, 1):
            raise ConfigError(f"train.batch_size is the global batch and must be divisible by --nproc {args.nproc}")
        return launch(args.nproc, args.argv, args.entry)

    if args.resume:
        if args.config or args.scale:
            raise UserError("--resume continues a run with the config it was trained with; leave out --config/--scale")
        run_dir = Path(args.resume)
        # flags and --set apply on top of the run's config; train() refuses any that changes what is trained
        cfg = run_config_from_dict(deep_merge(to_dict(load_run_dir_config(run_dir)), cli_overrides(args)))
    elif not args.config:
        raise UserError("train needs --config FILE (or --resume RUN_DIR)")
    else:
        run_dir, cfg = None, config_from_args(args)
    try:
        result = train(cfg, run_dir, resume=bool(args.resume))
    except RunInterrupted as exc:
        if exc.run_dir is not None:
            exc.continue_with = f"balancebench train --resume {shlex.quote(str(exc.run_dir))}"
        raise
    summary = result.summary
    if distributed.current().rank > 0:  # under torchrun: rank 0 reports the run
        return 0
    if result.already_finished:
        print(f"balancebench: {result.run_dir} is already finished ({summary.get('epochs_trained')} epochs); "
              "left as it is", file=sys.stderr)
    print(f"status: {summary.get('status')}  best epoch: {summary.get('best_epoch')}  "
          f"best val objective (Δm% vs {summary.get('reference')}): {summary.get('best_val_objective')}")
    print(f"test metrics at best epoch: {summary.get('test_metrics')}")
    print(result.run_dir)
    return 0


def stl_command(args: argparse.Namespace) -> int:
    from experiments.training.stl import train_stl_references

    cfg = config_from_args(args)
    out = Path(args.out) if args.out else Path(cfg.out) / f"stl_{cfg.benchmark.name}"
    path = train_stl_references(cfg, out)
    print(path)
    return 0


def toy_command(args: argparse.Namespace) -> int:
    from experiments.training.toy_runs import run_toy

    from balancers import balancer_info
    from experiments.errors import UserError

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
