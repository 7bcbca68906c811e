"""Run directories as analysis records: what ran (benchmark, variant, method, seed), its results,
the metric specifications and the Δm% reference of each run. Read-only: nothing here trains."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.training import rundir
from experiments.benchmarks import MetricSpec, create_benchmark
from experiments.config import load_yaml
from experiments.errors import UserError
from experiments.training.evaluation import PER_METRIC, PER_TASK, check_definition, delta_m, literature_reference

#: the paper whose numbers a benchmark's results are set beside (claims, README tables), and that
#: paper's Δm% / mean-rank definition. QM9: FAMO's Table 2 (seed 000; one metric per task, so the
#: definitions agree today). Multi-MNIST: Gama & Grassi (seed 003 §3.2–3.5, Eq. 1–2).
PAPER_OF_BENCHMARK: dict[str, tuple[str, str]] = {
    "qm9": ("seed 000 Table 2 (FAMO)", PER_METRIC),
    "multimnist": ("seed 003 §3.2–3.5 (Gama & Grassi)", PER_TASK),
}


def definition_for(benchmark: str, definition: str = "auto") -> str:
    """``definition`` itself, or for ``auto`` the definition of the paper the benchmark's numbers
    are compared with, else ``per_task`` (seed 003 Eq. 1, the trainer's validation objective)."""
    if definition == "auto":
        return PAPER_OF_BENCHMARK.get(benchmark, ("", PER_TASK))[1]
    return check_definition(definition)


@dataclass
class RunRecord:
    """One finished run directory (summary.json + config.yaml)."""

    run_dir: Path
    summary: dict[str, Any]
    config: dict[str, Any]
    #: the label runs are grouped by: summary ``method``/``label`` when a study wrote one, else the
    #: balancer name (``group_methods`` adds the differing hyperparameters when needed)
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def benchmark(self) -> str:
        return str(self.summary.get("benchmark") or self.config.get("benchmark", {}).get("name"))

    @property
    def variant(self) -> str | None:
        return self.summary.get("variant") or self.config.get("benchmark", {}).get("variant")

    @property
    def base_setting(self) -> str:
        """``benchmark`` or ``benchmark/variant``."""
        variant = self.variant
        return self.benchmark if variant in (None, "default") else f"{self.benchmark}/{variant}"

    @property
    def setting(self) -> str:
        """The unit tables and plots are made per: ``base_setting``, plus the benchmark options
        that differ between the runs loaded together (see ``group_settings``)."""
        return self.extra.get("setting") or self.base_setting

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.config.get("benchmark", {}).get("options") or {})

    @property
    def balancer(self) -> str:
        return str(self.summary.get("balancer") or self.config.get("balancer", {}).get("name"))

    @property
    def seed(self) -> int:
        return int(self.summary.get("seed", self.config.get("seed", 0)))

    @property
    def tasks(self) -> list[str]:
        return list(self.summary.get("tasks") or self.config.get("resolved", {}).get("tasks") or [])

    @property
    def hparams(self) -> dict[str, Any]:
        resolved = self.config.get("resolved", {}).get("balancer_hparams")
        return dict(resolved if resolved is not None else self.config.get("balancer", {}).get("hparams") or {})

    @property
    def specs(self) -> list[MetricSpec]:
        bench = self.config.get("benchmark", {})
        return metric_specs(self.benchmark, self.variant, json.dumps(bench.get("options") or {}, sort_keys=True))

    def metrics(self) -> pd.DataFrame:
        return rundir.read_table(self.run_dir, rundir.METRICS)


@functools.lru_cache(maxsize=32)
def metric_specs(benchmark: str, variant: str | None, options_json: str) -> list[MetricSpec]:
    """The benchmark's metric specs (direction, task, literature STL value). QM9 builds no data
    for this; the small benchmarks build theirs in about a second."""
    return list(create_benchmark(benchmark, variant, **json.loads(options_json)).metrics)


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    """Each path is a run directory (has summary.json) or a folder searched recursively for them."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserError(f"no such run directory or folder: {path}")
        if (path / rundir.SUMMARY).is_file():
            found.append(path)
        else:
            found += sorted(p.parent for p in path.rglob(rundir.SUMMARY))
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def load_run(run_dir: str | Path, method: str | None = None) -> RunRecord:
    """A run directory's record; missing/corrupt files are one-line UserErrors."""
    run_dir = Path(run_dir)
    summary = rundir.read_summary(run_dir)
    config = load_yaml(run_dir / rundir.CONFIG) if (run_dir / rundir.CONFIG).is_file() else {}
    label = method or summary.get("method") or summary.get("label") or ""
    return RunRecord(run_dir, summary, config, method=str(label))


def load_runs(paths: Iterable[str | Path], complete_only: bool = True,
              methods: dict[str, str] | None = None) -> list[RunRecord]:
    """Records of every run directory under ``paths`` (only ``complete`` ones by default);
    ``methods`` maps a run directory to a label (e.g. from a study storage)."""
    dirs = find_run_dirs(paths)
    labels = {str(Path(k).resolve()): v for k, v in (methods or {}).items()}
    records = [load_run(d, labels.get(str(d))) for d in dirs]
    if complete_only:
        records = [r for r in records if r.summary.get("status") == "complete"]
    if not records:
        where = ", ".join(str(p) for p in paths) or "(none given)"
        raise UserError(f"no complete run directories found in {where}")
    group_settings(records)
    group_methods(records)
    return records


def group_settings(records: Sequence[RunRecord]) -> None:
    """Runs of one benchmark/variant with different benchmark options (data sizes, synthetic
    correlation, ...) are different settings: their label gets the options that differ."""
    by_base: dict[str, list[RunRecord]] = {}
    for r in records:
        by_base.setdefault(r.base_setting, []).append(r)
    for base, group in by_base.items():
        differing = _differing([r.options for r in group])
        for r in group:
            r.extra["setting"] = base + (f"[{','.join(f'{k}={_short(r.options.get(k))}' for k in differing)}]"
                                         if differing else "")


def group_methods(records: Sequence[RunRecord]) -> None:
    """Fill ``method``: the balancer name, plus the hyperparameters that differ between runs of
    the same balancer in the same setting (runs with different hyperparameters are different
    methods, never seeds of one)."""
    by_key: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in records:
        if not r.method:
            by_key.setdefault((r.setting, r.balancer), {})[_hp_key(r.hparams)] = r.hparams
    for r in records:
        if r.method:
            continue
        variants = by_key[(r.setting, r.balancer)]
        if not _differing(list(variants.values())):
            r.method = r.balancer
            continue
        differing = _differing(list(variants.values()))
        r.method = f"{r.balancer}[{','.join(f'{k}={_short(r.hparams.get(k))}' for k in differing)}]"


def _hp_key(hparams: dict[str, Any]) -> str:
    return json.dumps(hparams, sort_keys=True, default=str)


#: hyperparameters that are a run's randomness, not its method (stochastic balancers' own seed)
NOT_A_METHOD = ("seed",)


def _differing(dicts: Sequence[dict[str, Any]]) -> list[str]:
    """Keys whose values differ between the dicts (a missing key counts as a value)."""
    keys = set().union(*dicts) if dicts else set()
    return sorted(k for k in keys if k not in NOT_A_METHOD
                  and len({json.dumps(d.get(k), sort_keys=True, default=str) for d in dicts}) > 1)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_short(v) for v in value) + ")"
    return str(value)


# ------------------------------------------------------------------------------ references
def reference_for(record: RunRecord, reference: str = "auto", split: str = "test") -> tuple[dict[str, float], str]:
    """The Δm% reference of one run's ``split`` metrics and its kind.

    ``auto``: what the run itself used for its validation objective (summary ``reference``): the
    literature STL values, an STL reference file (its test metrics for the test split), or the
    untrained model's metrics of the same split (metrics.csv epoch 0; identical for every method
    at a given seed). ``literature``, ``initial`` or the path of an STL reference file force one.
    """
    specs = record.specs
    kind = record.summary.get("reference", "") if reference == "auto" else reference
    if kind in ("literature", "literature_stl"):
        lit = literature_reference(specs)
        if lit is None:
            raise UserError(f"benchmark {record.benchmark!r} has no literature STL values (use --reference initial)")
        return lit, "literature STL"
    if kind.startswith("stl:") or (kind not in ("", "initial", "initial_model") and Path(kind).exists()):
        path = Path(kind[4:] if kind.startswith("stl:") else kind)
        return _stl_file(path, specs, split), f"STL ({path.name if path.is_file() else path})"
    metrics = record.metrics()
    first = metrics[metrics["epoch"] == 0]
    cols = [f"{split}_{s.name}" for s in specs]
    if first.empty or not set(cols) <= set(first.columns):
        raise UserError(f"{record.run_dir}: no epoch-0 {split} metrics for the initial-model reference")
    return {s.name: float(first.iloc[0][f"{split}_{s.name}"]) for s in specs}, "untrained model"


def _stl_file(path: Path, specs: Sequence[MetricSpec], split: str) -> dict[str, float]:
    file = path / "stl_reference.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"no STL reference file at {path}")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"corrupt STL reference file {file}: {exc}") from None
    values = data.get("val_metrics") if split == "val" and data.get("val_metrics") else data.get("metrics", data)
    missing = [s.name for s in specs if s.name not in values]
    if missing:
        raise UserError(f"STL reference {file} lacks metrics {missing}")
    return {s.name: float(values[s.name]) for s in specs}


def result_metrics(record: RunRecord, split: str = "test") -> tuple[dict[str, float], str]:
    """The metrics at the best epoch for ``split``; validation ones when the run has no test
    metrics (e.g. the toy, which evaluates no test split). Returns (values, split used)."""
    values = record.summary.get(f"{split}_metrics") or {}
    if not values and split == "test":
        return dict(record.summary.get("val_metrics") or {}), "val"
    return dict(values), split


def run_frame(records: Sequence[RunRecord], reference: str = "auto", split: str = "test",
              definition: str = "auto") -> pd.DataFrame:
    """One row per run: setting, method, seed, Δm% (``definition``, see :func:`definition_for`;
    the column ``delta_m_definition`` says which) and its reference, every metric, timings."""
    rows = []
    for r in records:
        used_definition = definition_for(r.benchmark, definition)
        values, used = result_metrics(r, split)
        specs = r.specs
        missing = [s.name for s in specs if s.name not in values]
        if missing:
            raise UserError(f"{r.run_dir}: summary lacks {used} metrics {missing}")
        ref, kind = reference_for(r, reference, used)
        row: dict[str, Any] = {
            "setting": r.setting, "benchmark": r.benchmark, "variant": r.variant, "method": r.method,
            "balancer": r.balancer, "seed": r.seed, "split": used, "reference": kind,
            "delta_m": delta_m(values, specs, ref, used_definition), "delta_m_definition": used_definition,
            "best_val_objective": r.summary.get("best_val_objective"),
            "epoch_seconds": float(epoch_seconds(r).mean()),
            "step_seconds": r.summary.get("step_seconds_median"),
            "run_dir": str(r.run_dir),
        }
        row.update({s.name: values[s.name] for s in specs})
        row.update({f"change_{task}": v for task, v in task_changes(values, specs, ref, r.tasks or None).items()})
        rows.append(row)
    return pd.DataFrame(rows)


def epoch_seconds(record: RunRecord) -> pd.Series:
    """Training seconds of each trained epoch (metrics.csv ``epoch_seconds``) without the time the
    task-gradient probe took inside it (cosine.csv; a probe row's ``epoch`` counts the epochs
    completed before it, so it ran in epoch ``epoch + 1``): time comparisons stay fair when only
    some runs carried the probe. Indexed by epoch."""
    metrics = record.metrics()
    if "epoch_seconds" not in metrics.columns:
        return pd.Series(dtype=float)
    trained = metrics[metrics["epoch"] > 0].set_index("epoch")["epoch_seconds"].astype(float)
    path = Path(record.run_dir) / rundir.COSINE
    if path.is_file():
        probes = rundir.read_table(record.run_dir, rundir.COSINE)
        inside = probes[probes["step"] > 0].groupby(probes["epoch"] + 1)["seconds"].sum()
        trained = trained.sub(inside.reindex(trained.index).fillna(0.0))
    return trained


def task_changes(values: dict[str, float], specs: Sequence[MetricSpec], ref: dict[str, float],
                 task_names: Sequence[str] | None = None) -> dict[str, float]:
    """Per task, the Δm% of its own metrics only (so the per-task changes average to the
    ``per_task`` Δm%; both definitions give the same value on one task's metrics).
    Keys are task indices as strings unless ``task_names`` are given."""
    out: dict[str, float] = {}
    for t in sorted({s.task for s in specs}):
        own = [s for s in specs if s.task == t]
        name = task_names[t] if task_names else f"task{t}"
        out[name] = delta_m(values, own, ref)
    return out
