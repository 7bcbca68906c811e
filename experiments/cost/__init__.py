"""Cost: what each balancer costs per training step (time, peak memory, passes) as K grows.

``variants`` (what is measured: balancer variants and real trainers for them), ``measure`` (how:
pass counts, peak live bytes, a balancer's own overhead), ``timing`` (``bench``: the interleaved
timing loop that makes the table), ``tables`` (pivots, targets, plot, output files), and
``autogram_probe`` (a side measurement of TorchJD's autogram engine). The command is
``balancebench bench``; everything it uses is exported here.
"""

from experiments.cost.measure import _LiveBytes, balancer_overhead, count_passes, peak_memory
from experiments.cost.tables import check_targets, machine_description, pivots, plot, to_markdown, write_outputs
from experiments.cost.timing import BASELINE, CLOCKS, COLUMNS, DEFAULT_KS, OK_MAX_K, bench
from experiments.cost.variants import MLP, MODELS, QM9, SEGNET, Runner, Variant, build_trainer, default_variants, load_batches, select_variants

__all__ = ["BASELINE", "CLOCKS", "COLUMNS", "DEFAULT_KS", "MLP", "MODELS", "OK_MAX_K", "QM9", "SEGNET", "Runner", "Variant", "_LiveBytes",
           "balancer_overhead", "bench", "build_trainer", "check_targets", "count_passes", "default_variants",
           "load_batches", "machine_description", "peak_memory", "pivots", "plot", "select_variants", "to_markdown",
           "write_outputs"]
