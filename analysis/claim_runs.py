"""The runs the claims need, per scale, launched through experiments' public functions
(``experiments.training.trainer.train``, ``experiments.training.toy_runs.run_toy``) or reused when a finished run
directory with the same name already exists under ``--out``. Analysis itself only reads them.

Seeds and the sequential plan: every scale has an ordered list of evidence seeds (disjoint from
seed 0, the seed of single-task references and of hyperparameter searches) and a list of
*looks* — seed counts at which the claims are decided. A seed-level claim is first checked on
the first ``looks[0]`` seeds; while it is inconclusive, seeds are added (trained on demand,
earlier ones reused) up to the next look, until it is decided or the last look (the cap) is
reached. Every look tests at α / len(looks) (Bonferroni over the looks; see
:mod:`analysis.verdicts`), so the chance of a false decision over all looks stays <= α.

Scales:

* ``tiny``: 2 seeds, one look, and the benchmark configs' ``tiny`` scale with minimal epochs
  (CI time; every seed-level verdict is then "inconclusive: too few seeds", by design); searches
  of 2 trials per method (the published default and one shared draw).
* ``small``: looks at 5, 7 and 10 seeds, CPU-sized (QM9 on a 1,000-molecule subset for 2 epochs);
  searches of 10 trials per method.
* ``full``: looks at 5, 7 and 10 seeds at the configs' ``full`` scale (the papers' settings;
  meant for a GPU); searches of 24 trials per method.

Tuned configurations: every run of a seed-level claim trains its method's configuration chosen
on validation by a fair search at seed 0 (:mod:`analysis.claim_tuning`; budget table
``studies.csv`` next to ``claims.csv``); the run's ``config.yaml`` holds the chosen values. The
toy (F1) and the deterministic check (F6) are not tuned.

A run that diverges (non-finite loss) is kept as it is — its summary says ``diverged`` — and is
reused as such; the checks count it as that method's failure (see :mod:`analysis.verdicts`)
instead of aborting the table.
"""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from balancers import balancer_info
from experiments.training import rundir
from experiments.config import CONFIG_DIR, deep_merge, load_run_config
from experiments.errors import NonFiniteLossError
from analysis.claim_tuning import BUDGET_COLUMNS, SEARCH_SEED, ClaimTuning, Tuned, check_search_seed
from analysis.verdicts import ALPHA
from experiments.training.gradients import DEFAULT_COSINE_EVERY


@dataclass(frozen=True)
class ScalePlan:
    scale: str
    #: evidence seeds in the order they are added (the cap is ``looks[-1]``)
    seeds: tuple[int, ...]
    #: seed counts at which seed-level claims are decided (increasing; the last is the cap)
    #: extra overrides per benchmark config name (on top of the config's scale section)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: balancers compared with uniform on the two-similar-tasks variants (F3) and for the gain (F5)
    balancers: tuple[str, ...] = ("famo", "marigold")
    cosine_every: int = DEFAULT_COSINE_EVERY
    looks: tuple[int, ...] = (5, 7, 10)
    #: F9's settings (FAMO's γ ablation) by config name, and F13's two-similar-task variants
    gamma_configs: tuple[str, ...] = ("multimnist", "synthetic", "qm9")
    similar_variants: tuple[str, ...] = ("CL_CR", "RL_RR")
    #: search budget per method and setting (trials, every method the same; analysis.claim_tuning)
    trials: int = 10

    def __post_init__(self) -> None:
        if not self.looks or list(self.looks) != sorted(set(self.looks)) or self.looks[-1] > len(self.seeds):
            raise ValueError(f"looks must increase and end at most at len(seeds)={len(self.seeds)}, got {self.looks}")
        check_search_seed(self.seeds)

    @property
    def alpha(self) -> float:
        """The level each look tests at: α / number of looks (Bonferroni over the looks)."""
        return ALPHA / len(self.looks)


#: evidence seeds: 1, 2, ... (seed 0 trains single-task references and is the searches' seed)
EVIDENCE_SEEDS = tuple(range(1, 11))
assert SEARCH_SEED not in EVIDENCE_SEEDS

PLANS: dict[str, ScalePlan] = {
    "tiny": ScalePlan("tiny", EVIDENCE_SEEDS[:2], {
        "multimnist": {"train": {"epochs": 2, "log_every": 1}},
        "synthetic": {"train": {"epochs": 2, "log_every": 2}},
        "qm9": {"train": {"epochs": 1, "max_steps_per_epoch": 2, "log_every": 1}},
    }, cosine_every=4, looks=(2,), trials=2, gamma_configs=("multimnist",), similar_variants=("RL_RR",)),  # CI time
    "small": ScalePlan("small", EVIDENCE_SEEDS, {
        "multimnist": {"train": {"log_every": 4}},
        "synthetic": {"train": {"epochs": 10, "log_every": 4}},
        "qm9": {"benchmark": {"options": {"subset": 1000}}, "train": {"epochs": 2, "log_every": 4}},
    }, cosine_every=DEFAULT_COSINE_EVERY, trials=10),
    "full": ScalePlan("full", EVIDENCE_SEEDS, {
        "multimnist": {"train": {"log_every": 20}},
        "synthetic": {"train": {"log_every": 20}},
        "qm9": {"train": {"log_every": 20}},
    }, balancers=("famo", "marigold", "si", "rlw"), cosine_every=DEFAULT_COSINE_EVERY, trials=24),
}

#: settings whose single-task references the claims train themselves (one run per task at the
#: setting's scale and seed 0, once; QM9: eleven runs, minutes at small)
STL_CONFIGS = ("multimnist", "synthetic", "qm9")
#: at ``full`` scale these use the papers' published single-task numbers (``reference:
#: literature``, what the papers' own Δm% is computed against) instead of training them
LITERATURE_AT_FULL = ("qm9",)
#: synthetic settings for the cosine-vs-gain points (F5): (label, correlation, conflict) — aligned
#: tasks, partly related ones, and one half of the tasks pulling against the other half
SYNTHETIC_SETTINGS = (("aligned", 1.0, 0.0), ("mixed", 0.5, 0.25), ("opposed", 1.0, 0.5))


class ClaimRuns:
    """Trains (or reuses) named runs under ``out/<scale>/runs``; returns their directories."""

    def __init__(self, out: str | Path, scale: str, quiet: bool = False) -> None:
        if scale not in PLANS:
            from experiments.errors import UserError

            raise UserError(f"unknown scale {scale!r}; valid: {', '.join(PLANS)}")
        self.plan = PLANS[scale]
        self.root = Path(out) / scale
        self.quiet = quiet
        self.look = 0
        self.tuning = ClaimTuning(self.root, self.plan.scale, self.plan.trials, self.say)
        #: how the runs asked for since the last ``take_notes`` were configured (for the claims table)
        self.notes: set[str] = set()

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seeds of the current look (the first ``plan.looks[look]`` evidence seeds)."""
        return self.plan.seeds[: self.plan.looks[self.look]]

    @property
    def alpha(self) -> float:
        """The level the checks test at (per look; see ``ScalePlan.alpha``)."""
        return self.plan.alpha

    def at_look(self, look: int) -> "ClaimRuns":
        """Move to look ``look`` (0-based): ``seeds`` then has that look's seeds."""
        if not 0 <= look < len(self.plan.looks):
            raise ValueError(f"look must be in [0, {len(self.plan.looks)}), got {look}")
        self.look = look
        return self

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"[claims] {text}", file=sys.stderr, flush=True)

    def _config(self, config: str, overrides: dict[str, Any], variant: str | None, extra: dict[str, Any] | None) -> Any:
        if variant:
            overrides = deep_merge(overrides, {"benchmark": {"variant": variant}})
        merged = deep_merge(deep_merge(self.plan.overrides.get(config, {}), extra or {}), overrides)
        return load_run_config(CONFIG_DIR / f"{config}.yaml", self.plan.scale, merged)

    def stl_reference(self, config: str, variant: str | None = None, extra: dict[str, Any] | None = None) -> Path | None:
        """The setting's single-task reference file (``experiments.training.stl``: one run per task, seed
        0), trained when missing for the configs in ``STL_CONFIGS``; for any other config only an
        existing file under ``out/<scale>/stl/<setting>`` is used."""
        from experiments.training.stl import REFERENCE_FILE, train_stl_references

        # single-task references select on their own task: a setting that differs only in its
        # objective_tasks (F8's main task) shares them
        extra = {k: v for k, v in (extra or {}).items() if k != "objective_tasks"} or None
        folder = self.root / "stl" / _setting(config, variant, extra)
        if (folder / REFERENCE_FILE).is_file():
            return folder / REFERENCE_FILE
        if config not in STL_CONFIGS:
            return None
        self.say(f"single-task references for {folder.name} -> {folder}")
        cfg = self._config(config, {"seed": SEARCH_SEED, "train": {"progress": False}}, variant, extra)
        return train_stl_references(cfg, folder)

    def _reference(self, config: str, variant: str | None, extra: dict[str, Any] | None) -> dict[str, Any]:
        if self.plan.scale == "full" and config in LITERATURE_AT_FULL:
            return {"reference": "literature"}
        stl = self.stl_reference(config, variant, extra)
        # absolute: readable from anywhere; without single-task runs, the untrained model, explicitly
        # (the same in the setting's search, analysis.claim_tuning, and in its evidence runs)
        return {"reference": str(Path(stl).resolve()) if stl is not None else "initial"}

    def tuned(self, config: str, balancer: str, *, variant: str | None = None, name: str | None = None,
              hparams: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> Tuned:
        """The configuration of ``balancer`` (run label ``name``) chosen on validation in this
        setting by the claims' fair search (:mod:`analysis.claim_tuning`), searched on first use."""
        base = deep_merge(deep_merge(self.plan.overrides.get(config, {}), extra or {}),
                          {**self._reference(config, variant, extra), "train": {"progress": False}})
        return self.tuning.tuned(config, _setting(config, variant, extra), base, variant, balancer,
                                 name or balancer, dict(hparams or {}))

    def tuned_overrides(self, config: str, balancer: str, *, variant: str | None = None, name: str | None = None,
                        hparams: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The chosen configuration as run-config overrides (``train.lr``, ``model.dropout``, ...,
        ``balancer.hparams``)."""
        chosen = self.tuned(config, balancer, variant=variant, name=name, hparams=hparams, extra=extra)
        return copy.deepcopy(chosen.overrides)  # the caller's to change; the cached choice stays as it is

    def take_notes(self) -> list[str]:
        """How the runs since the last call were configured (and forget it)."""
        notes, self.notes = sorted(self.notes), set()
        return notes

    def run(self, config: str, balancer: str, seed: int, *, variant: str | None = None, name: str | None = None,
            hparams: dict[str, Any] | None = None, extra: dict[str, Any] | None = None, cosine: bool = False,
            tune: bool = True) -> Path:
        """The run directory of ``balancer`` on ``configs/<config>.yaml`` at this scale and seed.

        With ``tune`` (the default) the run trains the configuration the setting's fair search
        chose for this label (``tuned``); ``hparams`` are held fixed in that search. Δm% (and
        model selection) is against the setting's STL reference when there is one (see
        ``stl_reference``), else the untrained model. Stochastic balancers get ``seed`` as their
        own seed too (independent draws per run seed). ``cosine`` switches the trainer's
        task-gradient probe on (uniform runs, for F5)."""
        from experiments.training.trainer import train

        if seed == SEARCH_SEED:
            raise ValueError(f"seed {SEARCH_SEED} is the search seed, never evidence")
        label = name or balancer
        setting = _setting(config, variant, extra)
        run_dir = self.root / "runs" / setting / label / f"seed_{seed}"
        chosen = self.tuned_overrides(config, balancer, variant=variant, name=name, hparams=hparams, extra=extra) \
            if tune else {}
        self.notes.add(f"tuned (study budget {self.plan.trials}/method)" if tune else "untuned (config defaults)")
        hp = {**chosen.pop("balancer", {}).get("hparams", {}), **(hparams or {})}
        if balancer_info(balancer).stochastic:
            hp.setdefault("seed", seed)
        overrides: dict[str, Any] = deep_merge(chosen, {
            "balancer": {"name": balancer, "hparams": hp}, "seed": seed, **self._reference(config, variant, extra),
            "train": {"progress": False, "cosine_every": self.plan.cosine_every if cosine else 0}})
        cfg = self._config(config, overrides, variant, extra)
        if _finished(run_dir):
            _check_same_config(run_dir, cfg)
            return run_dir
        self.say(f"training {setting} {label} seed {seed} -> {run_dir}")
        try:
            train(cfg, run_dir, resume=True)
        except NonFiniteLossError as exc:  # the summary says "diverged"; the checks count it as a failure
            self.say(f"{setting} {label} seed {seed} diverged ({exc}); counted as {label}'s failure")
        return run_dir

    def interleaved_epoch_seconds(self, run_dirs: list[Path]) -> list[float | None]:
        """Seconds per training epoch of these runs' configurations (runs of one seed), measured
        interleaved in this process (:mod:`analysis.claim_timing`; cached under ``timing/``)."""
        from analysis.claim_timing import cached_epoch_seconds

        self.say(f"timing {', '.join(d.parent.name for d in run_dirs)} interleaved ({run_dirs[0].name})")
        return cached_epoch_seconds(self.root, run_dirs)

    def toy(self, toy_dir: str | Path | None = None) -> Any:
        """FAMO Fig. 1 runs (uniform and FAMO from the five starts, the ``official`` toy of
        configs/toy.yaml: the authors' objective, bounds and 50,000 steps, θ in float64): reused
        from ``toy_dir`` (e.g. ``balancebench toy --out DIR``) when given, else trained under
        ``out/<scale>/toy``. A finished run trained with another configuration (variant, steps,
        dtype, hyperparameters) is refused with one line, never reused (experiments.training.toy_runs)."""
        from experiments.training.toy_runs import run_toy

        out = Path(toy_dir) if toy_dir else self.root / "toy"
        self.notes.add("untuned (the toy's published settings)")
        self.say(f"toy runs (official; uniform, famo x 5 starts) in {out}")
        return run_toy(["uniform", "famo"], scale="tiny" if self.plan.scale == "tiny" else self.plan.scale,
                       overrides={"benchmark": {"variant": "official"}}, out=out, progress=False, workers=2)


def stl_budget(root: Path) -> pd.DataFrame:
    """Rows of the claims' budget table for the single-task references trained under
    ``root/stl`` (one per setting: its runs, epochs and wall time, as ``stl_reference.json`` records)."""
    from experiments.training.stl import REFERENCE_FILE

    rows = []
    for path in sorted(Path(root, "stl").glob(f"*/{REFERENCE_FILE}")):
        data = json.loads(path.read_text())
        n = len(data.get("runs", {}))
        rows.append({"setting": path.parent.name, "label": "single-task references", "method": "stl", "budget": n,
                     "complete": n, "pruned": 0, "failed": 0, "search_epochs": data.get("epochs"),
                     "search_wall_s": data.get("wall_seconds"),
                     "note": f"one run per task at seed {data.get('seed')}, trained once; the reference of every "
                             "search and evidence run of the setting"})
    return pd.DataFrame(rows, columns=BUDGET_COLUMNS)


def _setting(config: str, variant: str | None, extra: dict[str, Any] | None) -> str:
    return config + (f"-{variant}" if variant else "") + (f"-{extra_name(extra)}" if extra else "")


def extra_name(extra: dict[str, Any] | None) -> str:
    options = (extra or {}).get("benchmark", {}).get("options", {})
    parts = [f"{k}{v}" for k, v in sorted(options.items())]
    if (extra or {}).get("objective_tasks"):
        parts.append("main_" + "_".join(extra["objective_tasks"]))  # type: ignore[index]
    return "_".join(parts) or "custom"


#: final statuses: such a run is reused as it is (a diverged run diverges again when re-run)
FINISHED = ("complete", "diverged")


def _finished(run_dir: Path) -> bool:
    path = Path(run_dir) / rundir.SUMMARY
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("status") in FINISHED
    except json.JSONDecodeError:
        return False


def _check_same_config(run_dir: Path, cfg: Any) -> None:
    """A reused run must have been trained with the config asked for now (else stale results)."""
    from experiments.config import to_dict
    from experiments.errors import UserError
    from experiments.training.trainer import load_run_dir_config

    def comparable(c: Any) -> dict[str, Any]:
        data = to_dict(c)
        data["train"] = {k: v for k, v in data["train"].items() if k not in ("progress", "num_threads", "device")}
        return data

    if comparable(load_run_dir_config(run_dir)) != comparable(cfg):
        raise UserError(f"{run_dir} was trained with a different configuration than the claims now ask for; "
                        "remove it (or choose another --out) to re-run it")
