"""``balancebench bench``: the cost benchmark command (parsing; the work is in :mod:`experiments.cost`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from experiments.errors import UserError


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("bench", help="step time, peak memory and passes of every balancer vs the number of tasks K")
    p.add_argument("--ks", default="2,8,32,128,512,1024", help="comma-separated numbers of tasks (mlp only)")
    p.add_argument("--model", choices=("mlp", "qm9", "segnet", "segnet_cityscapes"), default="mlp",
                   help="mlp: synthetic K-task benchmark (MLP trunk 32-512-512-512, batch 256); "
                        "qm9: the QM9 MPNN (K = 11 tasks, a 2048-molecule subset); segnet / segnet_cityscapes: "
                        "the MTAN SegNet on NYU-v2 (K = 3, 288x384, batch 2) / CityScapes (K = 2, 128x256, batch 8), "
                        "seed 004 Table 3, on random images of the real size")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--repeats", type=int, default=15, help="interleaved (uniform, method) block pairs per method")
    p.add_argument("--steps-per-block", type=int, default=2, help="training steps per timed block")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps of every trainer first")
    p.add_argument("--balancers", default=None,
                   help="comma-separated registry names or variant labels (default: all, every variant)")
    p.add_argument("--no-two-point", action="store_true", help="leave out MARIGOLD's two_point variants")
    p.add_argument("--ok-max-k", type=int, default=128,
                   help="measure O(K) methods (MGDA, IMTL-G, Nash-MTL) only up to this K (default 128)")
    p.add_argument("--ok-repeats", type=int, default=3, help="timed block pairs for O(K) methods (1 step each)")
    p.add_argument("--hidden", type=int, default=None, help="mlp hidden width (default 512)")
    p.add_argument("--depth", type=int, default=None, help="mlp hidden layers (default 3)")
    p.add_argument("--batch-size", type=int, default=None, help="default 256 (mlp) / 32 (qm9) / 2 (segnet) / 8 (segnet_cityscapes)")
    p.add_argument("--clock", choices=("wall", "process"), default="wall",
                   help="wall: elapsed time; process: the process's CPU time (robust to other jobs on a "
                        "shared machine when used with --threads 1)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's, = cores)")
    p.add_argument("--out", default="runs/bench", help="directory for the CSV, Markdown and PNG")
    p.set_defaults(func=bench_command)


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--ks must be comma-separated integers, got {text!r}") from None
    if not ks or any(k < 2 for k in ks):
        raise UserError(f"--ks: every K must be >= 2, got {text!r}")
    return ks


def bench_command(args: argparse.Namespace) -> int:
    import torch

    from experiments import cost

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda requested but CUDA is not available on this machine")
    if args.device not in ("cpu",) and not args.device.startswith("cuda"):
        raise UserError(f"--device must be cpu or cuda, got {args.device!r}")
    for name in ("repeats", "steps_per_block", "ok_repeats"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1")
    ks = parse_ks(args.ks)
    if args.threads is not None:
        if args.threads < 1:
            raise UserError("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    if args.model != "mlp" and args.ks != "2,8,32,128,512,1024":
        print(f"balancebench bench: --model {args.model} has a fixed number of tasks; --ks is ignored", file=sys.stderr)
    variants = cost.select_variants(args.balancers, two_point=not args.no_two_point)
    options = {k: v for k, v in (("hidden", args.hidden), ("depth", args.depth), ("batch_size", args.batch_size))
               if v is not None}
    started, load_before = time.perf_counter(), _load()
    frame = cost.bench(ks, model=args.model, device=args.device, repeats=args.repeats,
                       steps_per_block=args.steps_per_block, warmup=args.warmup, variants=variants,
                       ok_max_k=args.ok_max_k, ok_repeats=args.ok_repeats, options=options, clock=args.clock,
                       log=lambda msg: print(msg, file=sys.stderr, flush=True))
    machine = cost.machine_description(args.device)
    header = (f"balancebench bench --model {args.model} --device {args.device}: {machine['device']}, "
              f"{machine['threads']} threads, torch {machine['torch']}, {time.strftime('%Y-%m-%d %H:%M')}, "
              f"{args.clock} clock, {time.perf_counter() - started:.0f}s, "
              f"load average (1/5/15 min) {load_before} before, {_load()} after")
    paths = cost.write_outputs(frame, Path(args.out), header)
    print(header)
    print()
    print(cost.pivots(frame))
    targets = cost.check_targets(frame)
    if not targets.empty:
        print("\ntargets (issue 7):\n")
        print(targets.to_markdown(index=False))
    print()
    for path in paths.values():
        print(path)
    return 0


def _load() -> str:
    try:
        import os

        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"
