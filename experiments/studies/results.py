"""Results of a study, read from its Optuna storage alone (no run directory is needed).

Per method: the best configuration within the budget, its validation objective, the test metrics
of its reruns as mean ± standard error over seeds (seed 003 §3), the test Δm% against the same
reference as the objective (named in every table's header: "Δm% vs STL" by default), and the budget
actually used (trials complete / pruned / failed, epochs, wall time), with the single-task reference
runs' cost as its own row.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from experiments.training import rundir
from experiments.errors import UserError, mask_url
from experiments.studies.reference import REFERENCE_LABELS, stl_record
from experiments.studies.storage import budget_trials, counted_trials, open_storage

PM = "\u00b1"


@dataclass
class MethodData:
    method: str
    budget: int | None
    search: list[FrozenTrial]  # the first ``budget`` counted trials (empty for derived methods)
    requeued: int
    best: FrozenTrial | None
    reruns: list[FrozenTrial]
    rerun_attrs: dict[str, Any]
    #: every counted trial in the storage (the budget table counts these; beyond the budget only
    #: with a study older than the protocol check or a storage without an exact budget lock)
    counted: list[FrozenTrial] = field(default_factory=list)
    #: trials created past the budget by a concurrent worker (storages without an exact lock)
    over_budget: int = 0
    #: why a requested method has no reruns (a derived method whose weights could not be extracted)
    reason: str = ""


def _trials(storage: BaseStorage, study: Any) -> list[FrozenTrial]:
    return storage.get_all_trials(study._study_id, deepcopy=False)


def _best(trials: list[FrozenTrial]) -> FrozenTrial | None:
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return min(done, key=lambda t: (t.value, t.number)) if done else None


def collect(storage: BaseStorage, group: str | None, label: str) -> tuple[str, list[MethodData], list[dict[str, Any]]]:
    """(group, per-method data in study order, metric specs) of one study group in ``storage``."""
    studies = [s for s in storage.get_all_studies() if s.user_attrs.get("kind") in ("search", "rerun", "derived")
               and s.direction == StudyDirection.MINIMIZE]
    groups = sorted({s.user_attrs.get("group") for s in studies})
    if not groups:
        raise UserError(f"no balancebench study in storage {label}")
    if group is None:
        if len(groups) > 1:
            raise UserError(f"storage {label} holds several studies ({', '.join(groups)}); choose one with --study")
        group = groups[0]
    elif group not in groups:
        raise UserError(f"no study {group!r} in storage {label}; available: {', '.join(groups)}")
    mine = sorted((s for s in studies if s.user_attrs.get("group") == group), key=lambda s: s._study_id)
    reruns = {s.study_name: s for s in mine if s.user_attrs["kind"] == "rerun"}
    out: list[MethodData] = []
    specs: list[dict[str, Any]] = []
    best_of: dict[str, int] = {}
    for study in (s for s in mine if s.user_attrs["kind"] == "search"):
        method, budget = study.user_attrs["method"], int(study.user_attrs["n_trials"])
        specs = study.user_attrs.get("metric_specs", specs)
        trials = _trials(storage, study)
        within = budget_trials(trials, budget)
        best = _best(within)
        rerun = reruns.get(f"{group}/{method}/rerun-t{best.number}") if best else None
        if best is not None:
            best_of[method] = best.number
        counted = counted_trials(trials)
        numbers = {t.number for t in counted}
        failed_out = [t for t in trials if t.state == TrialState.FAIL and t.number not in numbers]
        over = sum(t.user_attrs.get("failure_kind") == "over_budget" for t in failed_out)
        out.append(MethodData(method, budget, within, len(failed_out) - over, best,
                              _trials(storage, rerun) if rerun else [], dict(rerun.user_attrs) if rerun else {},
                              counted, over))
    out += _derived(storage, mine, reruns, best_of, {m.method for m in out})
    if not any(t.state.is_finished() for m in out for t in m.search + m.reruns):
        raise UserError(f"study {group!r} in storage {label} has no finished trial yet")
    return group, out, specs


def _derived(storage: BaseStorage, mine: list[Any], reruns: dict[str, Any], best_of: dict[str, int],
             searched: set[str]) -> list[MethodData]:
    """Derived methods (``fixed_from_X``): the reruns on weights extracted from X's best trial's
    reruns. Every derived method the study declared (a ``derived`` record) is listed, with the
    reason when it has no reruns; storages without records list those that have reruns."""
    out: dict[str, MethodData] = {}
    for study in reruns.values():
        attrs = study.user_attrs
        source = attrs.get("source_method")
        if attrs["method"] in searched or source is None or best_of.get(source) != attrs.get("source_trial"):
            continue
        out[attrs["method"]] = MethodData(attrs["method"], None, [], 0, None, _trials(storage, study), dict(attrs))
    declared = [s.user_attrs for s in mine if s.user_attrs["kind"] == "derived"]
    for attrs in declared:
        method, source = attrs["method"], attrs.get("source_method")
        if method in out:
            continue
        reason = attrs.get("unavailable")
        if reason in (None, "pending"):  # extracted (its reruns not created yet) or not reached yet
            reason = f"not trained yet: waits for {source}'s search and reruns"
        out[method] = MethodData(method, None, [], 0, None, [], {"source_method": source,
                                                                 "seeds": attrs.get("seeds", [])}, reason=reason)
    order = [a["method"] for a in declared]
    return sorted(out.values(), key=lambda m: order.index(m.method) if m.method in order else len(order))


def _mean_se(values: list[float]) -> tuple[float, float]:
    arr = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1) / math.sqrt(arr.size)) if arr.size > 1 else math.nan


def _seconds(t: FrozenTrial) -> float:
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return float(t.user_attrs.get("wall_seconds") or 0.0)


def _epochs(t: FrozenTrial) -> int:
    value = t.user_attrs.get("epochs_trained")
    return int(value) if value is not None else len(t.intermediate_values)


def _failures(trials: list[FrozenTrial]) -> str:
    return "; ".join(f"t{t.number}: {t.user_attrs.get('failure_kind') or 'failed'}"
                     for t in trials if t.state == TrialState.FAIL)


def _row(m: MethodData, specs: list[dict[str, Any]]) -> dict[str, Any]:
    done = [t for t in m.reruns if t.state == TrialState.COMPLETE]
    row: dict[str, Any] = {"method": m.method}
    if m.budget is None and m.reason:
        row.update(budget=0, complete=0, pruned=0, failed=0, requeued=0, search_epochs=0, search_wall_s=0.0,
                   best_trial=None, best_params="", best_val_delta_m=math.nan, note=f"no result: {m.reason}")
    elif m.budget is None:
        source, k = m.rerun_attrs.get("source_method"), m.rerun_attrs.get("source_trial")
        row.update(budget=0, complete=0, pruned=0, failed=0, requeued=0, search_epochs=0, search_wall_s=0.0,
                   best_trial=None, best_params=json.dumps(m.rerun_attrs.get("params", {}), sort_keys=True),
                   best_val_delta_m=math.nan,
                   note=f"no own search: weights {[round(w, 4) for w in m.rerun_attrs.get('weights', [])]} "
                        f"extracted (EMA {m.rerun_attrs.get('ema')}) from {source}'s reruns of trial {k}; "
                        f"{source}'s trial-{k} hyperparameters")
    else:
        counted = m.counted or m.search  # what the storage holds, not only what selection may use
        states = [t.state for t in counted]
        beyond = [f"t{t.number}" for t in counted[m.budget:]]
        notes = [_failures(counted) or ("no completed trial" if m.best is None else "")]
        if beyond:
            notes.append(f"{len(beyond)} trial(s) beyond the budget of {m.budget} ({', '.join(beyond)}) are in "
                         "the storage but not used to select the best configuration")
        if m.over_budget:
            notes.append(f"{m.over_budget} trial(s) created past the budget by concurrent workers, stopped, not counted")
        row.update(budget=m.budget, complete=states.count(TrialState.COMPLETE), pruned=states.count(TrialState.PRUNED),
                   failed=states.count(TrialState.FAIL), requeued=m.requeued,
                   search_epochs=sum(_epochs(t) for t in counted),
                   search_wall_s=round(sum(_seconds(t) for t in counted), 1),
                   best_trial=m.best.number if m.best else None,
                   best_params=json.dumps(m.best.params, sort_keys=True) if m.best else "",
                   best_val_delta_m=m.best.value if m.best else math.nan,
                   note="; ".join(n for n in notes if n))
    row["seeds"] = f"{len(done)}/{len(m.rerun_attrs.get('seeds', []))}" if m.rerun_attrs else "0/0"
    row["test_delta_m_mean"], row["test_delta_m_se"] = _mean_se([t.user_attrs.get("test_delta_m") for t in done])
    for spec in specs:
        name = spec["name"]
        values = [(t.user_attrs.get("test_metrics") or {}).get(name) for t in done]
        row[f"test_{name}_mean"], row[f"test_{name}_se"] = _mean_se(values)
    row["rerun_epochs"] = sum(_epochs(t) for t in m.reruns if t.state.is_finished())
    row["rerun_wall_s"] = round(sum(_seconds(t) for t in m.reruns if t.state.is_finished()), 1)
    rerun_failures = _failures(m.reruns)
    if rerun_failures:
        row["note"] = "; ".join(x for x in (row["note"], f"reruns: {rerun_failures}") if x)
    return row


def results_table(storage: str | BaseStorage, group: str | None = None) -> pd.DataFrame:
    """One row per method (numeric columns: ``*_mean`` / ``*_se``); ``storage`` is a URL, a journal
    path or an open storage. An empty or unknown study is a one-line UserError."""
    label = mask_url(storage) if isinstance(storage, str) else type(storage).__name__
    if isinstance(storage, str):
        if "://" not in storage and not Path(storage).is_file():
            raise UserError(f"no study storage at {storage} (a journal file path or an Optuna RDB URL)")
        storage = open_storage(storage)
    group, methods, specs = collect(storage, group, label)
    frame = pd.DataFrame([_row(m, specs) for m in methods])
    protocol = _protocol(storage, group)
    kinds = {str(t.user_attrs.get("reference") or "") for m in methods for t in m.search + m.reruns}
    frame["delta_m_reference"] = reference_label(kinds, protocol.get("reference"))
    frame.attrs.update(group=group, storage=label, metrics=[s["name"] for s in specs],
                       objective=protocol.get("objective"), reference=frame["delta_m_reference"].iloc[0],
                       stl_budget=_stl_budget_row(stl_record(storage, group)))
    return frame


def reference_label(kinds: set[str], protocol_reference: str | None) -> str:
    """What the Δm% of a study is measured against ("STL", "untrained model", "literature STL"), from
    the references its runs recorded; the protocol's choice when no run recorded one."""
    labels = {_KIND_LABELS.get(k, "STL" if k.startswith("stl:") else "") for k in kinds} - {""}
    if not labels:
        return REFERENCE_LABELS.get(protocol_reference or "", "the run config's reference")
    return " + ".join(sorted(labels))  # several only in a storage written by mixed versions


_KIND_LABELS = {"initial_model": REFERENCE_LABELS["untrained"], "literature_stl": REFERENCE_LABELS["literature"]}


def _stl_budget_row(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The budget table's row for the single-task reference runs (None: the study trained none)."""
    if record is None:
        return None
    runs = len(record.get("runs") or {})
    return {"method": "STL reference", "budget": 0, "complete": runs, "pruned": 0, "failed": 0, "requeued": 0,
            "search_epochs": int(record.get("epochs") or 0),
            "search_wall_s": round(float(record.get("wall_seconds") or 0.0), 1), "seeds": "1/1",
            "rerun_epochs": 0, "rerun_wall_s": 0.0,
            "note": f"{runs} single-task runs (one per task: fixed one-hot weights, each selected on its own task) "
                    f"at seed {record.get('seed')}, trained once before the search; every method's Δm% is against them"}


def _protocol(storage: BaseStorage, group: str) -> dict[str, Any]:
    """The group's protocol (its objective's test counterpart is the table's test Δm%)."""
    for study in storage.get_all_studies():
        if study.user_attrs.get("group") == group and study.user_attrs.get("kind") == "search":
            return study.user_attrs.get("protocol") or {}
    return {}


BUDGET_COLUMNS = ["method", "budget", "complete", "pruned", "failed", "requeued", "search_epochs", "search_wall_s",
                  "seeds", "rerun_epochs", "rerun_wall_s", "note"]


def budget_table(results: pd.DataFrame) -> pd.DataFrame:
    """The budget columns per method, and the single-task reference runs' cost as a last row."""
    table = results[BUDGET_COLUMNS].copy()
    stl = results.attrs.get("stl_budget")
    if stl is not None:
        table = pd.concat([table, pd.DataFrame([stl], columns=BUDGET_COLUMNS)], ignore_index=True)
    return table


def display_table(results: pd.DataFrame, pm: str = f" {PM} ") -> pd.DataFrame:
    """Readable results: ``mean ± se`` strings, best configuration and validation objective."""
    def fmt(mean: float, se: float) -> str:
        if not math.isfinite(mean):
            return "n/a"
        return f"{mean:.4g}" + (f"{pm}{se:.2g}" if math.isfinite(se) else "")

    delta = f"test Δm% vs {results.attrs.get('reference') or 'reference'}"
    rows = []
    for _, r in results.iterrows():
        row = {"method": r["method"], "best trial": "-" if pd.isna(r["best_trial"]) else int(r["best_trial"]),
               "best config": _compact(r["best_params"]),
               "val Δm% (search)": "n/a" if pd.isna(r["best_val_delta_m"]) else f"{r['best_val_delta_m']:.4g}",
               "seeds": _seeds_text(r["seeds"]), delta: fmt(r["test_delta_m_mean"], r["test_delta_m_se"])}
        for name in results.attrs.get("metrics", []):
            row[f"test {name}"] = fmt(r[f"test_{name}_mean"], r[f"test_{name}_se"])
        # a requested method without a number says why (failed trials or reruns, no weights, ...)
        row["why no number"] = (r["note"] or "no completed rerun") if not math.isfinite(r["test_delta_m_mean"]) else ""
        rows.append(row)
    shown = pd.DataFrame(rows)
    if shown.empty or shown["why no number"].astype(bool).any():
        return shown
    return shown.drop(columns="why no number")


_REFERENCE_NOTES = {
    "STL": "single-task learning, one run per task of the same setting and scale (see the budget table)",
    "untrained model": "the untrained model's metrics (chosen explicitly; not comparable with the papers' Δm%)",
    "literature STL": "the papers' single-task values at full scale",
}


def _seeds_text(seeds: str) -> str:
    """``done/asked``, marked "survivors only" when a rerun failed (the means leave it out)."""
    done, _, asked = str(seeds).partition("/")
    return f"{seeds} (survivors only)" if asked and done != asked and done != "0" else str(seeds)


def _compact(params: str) -> str:
    try:
        data = json.loads(params) if params else {}
    except ValueError:
        return str(params)
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in data.items())


def render(results: pd.DataFrame, fmt: str = "md") -> str:
    """The results and budget tables as Markdown, CSV (numeric) or LaTeX."""
    if fmt == "csv":
        return results.to_csv(index=False)
    budget = budget_table(results)
    if fmt == "latex":
        marker = "PLUSMINUSMARK"
        shown = display_table(results, pm=f" {marker} ")
        text = (shown.to_latex(index=False, escape=True) + "\n"
                + budget.to_latex(index=False, escape=True, float_format="%.1f"))
        return text.replace(marker, r"$\pm$").replace("Δ", r"$\Delta$")
    if fmt != "md":
        raise UserError(f"unknown format {fmt!r}; valid: md, csv, latex")
    objective, reference = results.attrs.get("objective"), results.attrs.get("reference") or "reference"
    head = (f"Δm% vs {reference}. Study `{results.attrs.get('group')}` (storage {results.attrs.get('storage')}): "
            f"test metrics are mean {PM} standard error over the rerun seeds of each method's best configuration "
            "(over the completed reruns only where a row says \"survivors only\"); "
            "Δm%: metrics averaged within each task first, then over tasks (seed 003 Eq. 1, the search objective's)"
            + (f"; test Δm% is the test counterpart of the objective, {objective}" if objective else "")
            + f"; reference: {_REFERENCE_NOTES.get(reference, reference)}.\n\n")
    return (head + display_table(results).to_markdown(index=False) + "\n\nBudget (the same for every searched "
            "method; failed and pruned trials count; requeued = killed/interrupted trials re-run with the same "
            "parameters, not counted):\n\n" + budget.to_markdown(index=False) + "\n")


def write_results(results: pd.DataFrame, out: str | Path) -> dict[str, Path]:
    """``results.md``, ``results.csv`` (numeric), ``results.tex`` and ``budget.csv`` under ``out``."""
    out = Path(out)
    files = {"md": out / "results.md", "csv": out / "results.csv", "latex": out / "results.tex",
             "budget": out / "budget.csv"}
    rundir.atomic_write_text(files["md"], render(results, "md"))
    rundir.atomic_write_text(files["csv"], render(results, "csv"))
    rundir.atomic_write_text(files["latex"], render(results, "latex"))
    rundir.write_table(files["budget"], budget_table(results))
    return files
