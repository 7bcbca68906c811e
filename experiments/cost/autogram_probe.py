"""Probe: the Gramian ``G Gᵀ`` of the K task gradients by the project's engine or TorchJD's autogram.

Issue 16 asks whether TorchJD's ``autogram.Engine`` (which accumulates the Gramian module by module
without materialising the K × P Jacobian) lowers the O(K) methods' time and memory compared with
:func:`balancers._task_grads.task_gradients` + :func:`balancers._task_grads.gram` (a batched
backward over one-hot cotangents, then ``G @ Gᵀ``). This measures both on the cost benchmark's
model (the synthetic MLP trunk of :mod:`experiments.cost.variants`) at a few K, one torch thread:

* ``ms``: median process CPU time of forward + Gramian (the forward is in both: autogram hooks it);
* ``peak_mb``: peak live bytes of the tensors created meanwhile (``experiments.cost.measure._LiveBytes``);
* ``rel_diff``: max |G_autogram − G_project| / max |G_project| (both must be the same Gramian).

Run: ``python -m experiments.cost.autogram_probe [--ks 8,32,128] [--repeats 5]``. It measures and
prints; nothing here is asserted or used by the balancers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from balancers._task_grads import gram, shared_parameters, task_gradients
from experiments.cost.measure import _LiveBytes
from experiments.cost.variants import MLP, Variant, build_trainer, load_batches


def _measure(fn: Callable[[], Tensor], repeats: int) -> tuple[float, float, Tensor]:
    fn()  # warm-up (autogram builds its hooks' state, torch its kernels)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    tracker = _LiveBytes()
    with tracker:
        out = fn()
    tracker.stop()
    return 1e3 * statistics.median(times), tracker.peak / 2**20, out


def probe(ks: list[int], repeats: int = 5) -> list[dict[str, float]]:
    from torchjd.autogram import Engine  # noqa: PLC0415  (heavy import, only here)

    rows = []
    for k in ks:
        trainer = build_trainer(Variant("uniform", "uniform"), k, "mlp", "cpu", dict(MLP))
        model, (x, y) = trainer.model, load_batches(trainer, 1)[0][:2]
        shared = shared_parameters(model)

        def project() -> Tensor:
            losses = ((model(x) - y) ** 2).mean(dim=0)
            return gram(task_gradients(losses, shared))

        p_ms, p_mb, p_g = _measure(project, repeats)
        # created after the project engine's runs: its hooks expect every forward to be followed
        # by compute_gramian; the task losses are batch means, so there is no batch dimension
        engine = Engine(model.trunk, batch_dim=None)

        def autogram() -> Tensor:
            losses = ((model(x) - y) ** 2).mean(dim=0)
            return engine.compute_gramian(losses).to(torch.float64)

        a_ms, a_mb, a_g = _measure(autogram, repeats)
        rel = float((a_g - p_g).abs().max() / p_g.abs().max())
        rows.append({"K": k, "P_shared": sum(p.numel() for p in shared), "project_ms": p_ms, "autogram_ms": a_ms,
                     "project_peak_mb": p_mb, "autogram_peak_mb": a_mb, "rel_diff": rel})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="8,32,128")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| K | P shared | project ms | autogram ms | project peak MB | autogram peak MB | rel. diff |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for r in probe([int(k) for k in args.ks.split(",")], args.repeats):
        print(f"| {r['K']} | {r['P_shared']} | {r['project_ms']:.1f} | {r['autogram_ms']:.1f} | "
              f"{r['project_peak_mb']:.1f} | {r['autogram_peak_mb']:.1f} | {r['rel_diff']:.1e} |")


if __name__ == "__main__":
    main()
