"""The fair searches behind the claims: each method's configuration chosen on validation, per
setting, before the claims re-train it on their evidence seeds.

For every setting a seed-level claim trains (benchmark config + variant + options, e.g.
Multi-MNIST CL_RR, a synthetic setting, the QM9 subset) and every run label it trains there, a
search-only study (:func:`experiments.studies.driver.run_search`) of ``configs/studies/claims.yaml``
runs at the search seed ``SEARCH_SEED`` = 0, which is never an evidence seed (asserted). The
protocol is the same for every method, uniform included: the shared space (lr, weight decay,
dropout where the model has one), the scale's budget (``ScalePlan.trials`` per method), the
random sampler with seed 0, no pruner (every trial runs all its epochs), the epochs and the
validation objective of the evidence runs. Trial 0 is the method's published default and trials
1..N−1 take the SAME N−1 shared-space points, drawn once from the seed (``shared_draws``); only a
method's own parameters (FAMO's γ, MARIGOLD's β, ...) differ between methods. Hyperparameters a
claim fixes (``hparams``) are held fixed in every trial and taken out of the method's space.

Derived methods: ``fixed_from_<X>`` (fixed weights extracted by EMA from X's evidence runs, F4)
gets no search of its own: it trains with X's best shared values (lr, weight decay, dropout),
as the studies' ``fixed_from_X`` does (seed 003 §3.5).

Studies live in one journal per setting, ``out/<scale>/studies/<setting>/study.journal``, one
study group per run label; a second ``claims`` call reads a finished search and trains nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.config import CONFIG_DIR, deep_merge, load_yaml
from experiments.studies.config import FIXED_FROM, study_config_from_dict
from experiments.studies.plan import HPARAMS, StudyPlan, set_path

#: the seed of every search (and of the single-task references); evidence seeds never include it
SEARCH_SEED = 0
STUDY_TEMPLATE = CONFIG_DIR / "studies" / "claims.yaml"
#: the budget table, next to claims.csv
BUDGET_FILE = "studies.csv"
BUDGET_COLUMNS = ["setting", "label", "method", "budget", "complete", "pruned", "failed", "search_epochs",
                  "search_wall_s", "best_trial", "best_val_delta_m", "best_params", "note"]


@dataclass(frozen=True)
class Tuned:
    """A method's chosen configuration in a setting, as run-config overrides."""

    setting: str
    label: str
    method: str
    #: the chosen values by parameter name (shared and the method's own)
    params: dict[str, Any]
    #: nested run-config overrides: the shared values at their paths, ``balancer.hparams``
    overrides: dict[str, Any]
    row: dict[str, Any] = field(default_factory=dict)
    plan: StudyPlan | None = field(default=None, repr=False, compare=False)


def check_search_seed(evidence_seeds: tuple[int, ...]) -> None:
    """The search never sees an evidence seed (issue 13: search kept apart from evidence)."""
    if SEARCH_SEED in evidence_seeds:
        raise ValueError(f"the search seed {SEARCH_SEED} must not be an evidence seed, got {evidence_seeds}")


def study_group(label: str, hparams: dict[str, Any]) -> str:
    """The study group of a run label; runs asked for with fixed hyperparameters under the
    balancer's own name get a group of their own (a hash of the values)."""
    if not hparams:
        return label
    digest = hashlib.sha256(json.dumps(hparams, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{label}-{digest}"


def as_overrides(plan: StudyPlan, method: str, params: dict[str, Any], shared_only: bool = False) -> dict[str, Any]:
    """Run-config overrides of a trial's parameters (and the method's fixed hyperparameters)."""
    out: dict[str, Any] = {}
    hparams = {} if shared_only else dict(plan.fixed_hparams[method])
    for name, value in params.items():
        path = plan.paths[name]
        if path.startswith(HPARAMS):
            if not shared_only:
                hparams[path[len(HPARAMS):]] = value
            continue
        set_path(out, path, value)
    if hparams:
        out["balancer"] = {"hparams": hparams}
    return out


class ClaimTuning:
    """Runs (or reads) the claims' searches under ``root/studies`` and keeps the budget table."""

    def __init__(self, root: Path, scale: str, trials: int, say: Callable[[str], None]) -> None:
        self.root, self.scale, self.trials, self.say = Path(root), scale, trials, say
        self.chosen: dict[tuple[str, str], Tuned] = {}

    def study_dict(self, config: str, setting: str, overrides: dict[str, Any], variant: str | None,
                   method: str, group: str, hparams: dict[str, Any]) -> dict[str, Any]:
        """The study config of one method in one setting (``configs/studies/claims.yaml`` + the
        setting, the scale's budget and the hyperparameters the claim fixes)."""
        template = load_yaml(STUDY_TEMPLATE)
        spaces = dict(template.pop("method_spaces", None) or {})
        published = dict(template.pop("published_defaults", None) or {})
        own = {k: v for k, v in (spaces.get(method) or {}).items() if k not in hparams}
        folder = self.root / "studies" / setting
        overrides = dict(overrides)
        reference = overrides.pop("reference", "initial")  # the claims' own STL file, or "initial"
        template.update({"reference": "untrained"} if reference == "initial"
                        else {"reference": "stl", "reference_file": reference})
        return deep_merge(template, {
            "benchmark_config": str(CONFIG_DIR / f"{config}.yaml"), "variant": variant, "scale": self.scale,
            "name": group, "overrides": deep_merge(overrides, {"seed": SEARCH_SEED}), "methods": [method],
            "method_spaces": {method: own} if own else {},
            "published_defaults": {method: {**(published.get(method) or {}), **hparams}},
            "n_trials": self.trials, "out": str(folder), "storage": str(folder / "study.journal")})

    def tuned(self, config: str, setting: str, overrides: dict[str, Any], variant: str | None, method: str,
              label: str, hparams: dict[str, Any]) -> Tuned:
        """``label``'s chosen configuration in ``setting`` (searched once, then read)."""
        from experiments.studies.driver import run_search

        if label.startswith(FIXED_FROM) and method == "fixed":
            return self._derived(config, setting, overrides, variant, label)
        hparams = {k: v for k, v in hparams.items() if k != "seed"}  # the search seed is the study's own
        group = study_group(label, hparams)
        if (setting, group) in self.chosen:
            return self.chosen[(setting, group)]
        self.say(f"search {setting} {group} ({method}): {self.trials} trials, seed {SEARCH_SEED} "
                 f"-> {self.root / 'studies' / setting}")
        data = self.study_dict(config, setting, overrides, variant, method, group, hparams)
        plan, results = run_search(study_config_from_dict(data))
        row = results.set_index("method").loc[method].to_dict()
        params = json.loads(row["best_params"]) if row["best_params"] else dict(plan.first_trial[method])
        note = row["note"] if row["best_params"] else f"no completed trial: the published default; {row['note']}"
        tuned = Tuned(setting, group, method, params, as_overrides(plan, method, params),
                      {"setting": setting, "label": group, "method": method, **{k: row.get(k) for k in BUDGET_COLUMNS[3:]},
                       "best_params": json.dumps(params, sort_keys=True), "note": note}, plan)
        self.chosen[(setting, group)] = tuned
        return tuned

    def _derived(self, config: str, setting: str, overrides: dict[str, Any], variant: str | None, label: str) -> Tuned:
        if (setting, label) in self.chosen:
            return self.chosen[(setting, label)]
        source = label[len(FIXED_FROM):]
        base = self.tuned(config, setting, overrides, variant, source, source, {})
        plan = base.plan
        assert plan is not None
        shared = plan.shared_values(base.params)
        row = {"setting": setting, "label": label, "method": "fixed", "budget": 0, "complete": 0, "pruned": 0,
               "failed": 0, "search_epochs": 0, "search_wall_s": 0.0, "best_trial": None, "best_val_delta_m": None,
               "best_params": json.dumps(shared, sort_keys=True),
               "note": f"no own search: {source}'s best shared values; weights extracted from {source}'s runs"}
        tuned = Tuned(setting, label, "fixed", shared, as_overrides(plan, source, shared, shared_only=True), row, plan)
        self.chosen[(setting, label)] = tuned
        return tuned

    def table(self) -> pd.DataFrame:
        """The budget table of every search used so far (``BUDGET_COLUMNS``)."""
        rows = [t.row for t in sorted(self.chosen.values(), key=lambda t: (t.setting, t.label))]
        return pd.DataFrame(rows, columns=BUDGET_COLUMNS)
