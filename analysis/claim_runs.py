"""The runs the claims need, per scale, launched through experiments' public functions
(``experiments.trainer.train``, ``experiments.toy_runs.run_toy``) or reused when a finished run
directory with the same name already exists under ``--out``. Analysis itself only reads them.

Scales:

* ``tiny``: 2 seeds and the benchmark configs' ``tiny`` scale with minimal epochs (CI time;
  every seed-level verdict is then "inconclusive: too few seeds", by design).
* ``small``: 3 seeds, CPU-sized (under an hour on 2 cores in total; QM9 on a 1,000-molecule
  subset for 2 epochs).
* ``full``: 3 seeds (seed 000 Table 2 / seed 004 Fig. 3) at the configs' ``full`` scale (the
  papers' settings; meant for a GPU).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from balancers import balancer_info
from experiments import rundir
from experiments.config import CONFIG_DIR, deep_merge, load_run_config
from experiments.gradients import DEFAULT_COSINE_EVERY


@dataclass(frozen=True)
class ScalePlan:
    scale: str
    seeds: tuple[int, ...]
    #: extra overrides per benchmark config name (on top of the config's scale section)
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: balancers compared with uniform on the two-similar-tasks variants (F3) and for the gain (F5)
    balancers: tuple[str, ...] = ("famo", "marigold")
    cosine_every: int = DEFAULT_COSINE_EVERY


PLANS: dict[str, ScalePlan] = {
    "tiny": ScalePlan("tiny", (0, 1), {
        "multimnist": {"train": {"epochs": 2, "log_every": 1}},
        "synthetic": {"train": {"epochs": 2, "log_every": 2}},
        "qm9": {"train": {"epochs": 1, "max_steps_per_epoch": 2, "log_every": 1}},
    }, cosine_every=4),
    "small": ScalePlan("small", (0, 1, 2), {
        "multimnist": {"train": {"log_every": 4}},
        "synthetic": {"train": {"epochs": 10, "log_every": 4}},
        "qm9": {"benchmark": {"options": {"subset": 1000}}, "train": {"epochs": 2, "log_every": 4}},
    }, cosine_every=DEFAULT_COSINE_EVERY),
    "full": ScalePlan("full", (0, 1, 2), {
        "multimnist": {"train": {"log_every": 20}},
        "synthetic": {"train": {"log_every": 20}},
        "qm9": {"train": {"log_every": 20}},
    }, balancers=("famo", "marigold", "si", "rlw"), cosine_every=DEFAULT_COSINE_EVERY),
}

#: settings whose single-task references the claims train themselves (cheap at every scale);
#: QM9's eleven single-task runs are used only when already under ``out/<scale>/stl/qm9``
STL_CONFIGS = ("multimnist", "synthetic")
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

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.plan.seeds

    def say(self, text: str) -> None:
        if not self.quiet:
            print(f"[claims] {text}", file=sys.stderr, flush=True)

    def _config(self, config: str, overrides: dict[str, Any], variant: str | None, extra: dict[str, Any] | None) -> Any:
        if variant:
            overrides = deep_merge(overrides, {"benchmark": {"variant": variant}})
        merged = deep_merge(deep_merge(self.plan.overrides.get(config, {}), extra or {}), overrides)
        return load_run_config(CONFIG_DIR / f"{config}.yaml", self.plan.scale, merged)

    def stl_reference(self, config: str, variant: str | None = None, extra: dict[str, Any] | None = None) -> Path | None:
        """The setting's single-task reference file (``experiments.stl``: one run per task, seed
        0), trained when missing for the configs in ``STL_CONFIGS``; for the others (QM9: eleven
        single-task runs) only an existing file under ``out/<scale>/stl/<setting>`` is used."""
        from experiments.stl import REFERENCE_FILE, train_stl_references

        folder = self.root / "stl" / _setting(config, variant, extra)
        if (folder / REFERENCE_FILE).is_file():
            return folder / REFERENCE_FILE
        if config not in STL_CONFIGS:
            return None
        self.say(f"single-task references for {folder.name} -> {folder}")
        cfg = self._config(config, {"seed": 0, "train": {"progress": False}}, variant, extra)
        return train_stl_references(cfg, folder)

    def run(self, config: str, balancer: str, seed: int, *, variant: str | None = None, name: str | None = None,
            hparams: dict[str, Any] | None = None, extra: dict[str, Any] | None = None, cosine: bool = False) -> Path:
        """The run directory of ``balancer`` on ``configs/<config>.yaml`` at this scale and seed.

        Δm% (and model selection) is against the setting's STL reference when there is one (see
        ``stl_reference``), else the untrained model. Stochastic balancers get ``seed`` as their
        own seed too (independent draws per run seed). ``cosine`` switches the trainer's
        task-gradient probe on (uniform runs, for F5)."""
        from experiments.trainer import train

        label = name or balancer
        setting = _setting(config, variant, extra)
        run_dir = self.root / "runs" / setting / label / f"seed_{seed}"
        hp = dict(hparams or {})
        if balancer_info(balancer).stochastic:
            hp.setdefault("seed", seed)
        overrides: dict[str, Any] = {"balancer": {"name": balancer, "hparams": hp}, "seed": seed,
                                     "train": {"progress": False, "cosine_every": self.plan.cosine_every if cosine else 0}}
        stl = self.stl_reference(config, variant, extra)
        if stl is not None:
            overrides["reference"] = str(Path(stl).resolve())  # absolute: readable from any directory
        cfg = self._config(config, overrides, variant, extra)
        if _complete(run_dir):
            _check_same_config(run_dir, cfg)
            return run_dir
        self.say(f"training {setting} {label} seed {seed} -> {run_dir}")
        train(cfg, run_dir, resume=True)
        return run_dir

    def toy(self, toy_dir: str | Path | None = None) -> Any:
        """FAMO Fig. 1 runs (uniform and FAMO from the five starts, the ``official`` toy of
        configs/toy.yaml: the authors' objective, bounds and 50,000 steps, θ in float64): reused
        from ``toy_dir`` (e.g. ``balancebench toy --out DIR``) when given, else trained under
        ``out/<scale>/toy``. A finished run trained with another configuration (variant, steps,
        dtype, hyperparameters) is refused with one line, never reused (experiments.toy_runs)."""
        from experiments.toy_runs import run_toy

        out = Path(toy_dir) if toy_dir else self.root / "toy"
        self.say(f"toy runs (official; uniform, famo x 5 starts) in {out}")
        return run_toy(["uniform", "famo"], scale="tiny" if self.plan.scale == "tiny" else self.plan.scale,
                       overrides={"benchmark": {"variant": "official"}}, out=out, progress=False, workers=2)


def _setting(config: str, variant: str | None, extra: dict[str, Any] | None) -> str:
    return config + (f"-{variant}" if variant else "") + (f"-{extra_name(extra)}" if extra else "")


def extra_name(extra: dict[str, Any] | None) -> str:
    options = (extra or {}).get("benchmark", {}).get("options", {})
    return "_".join(f"{k}{v}" for k, v in sorted(options.items())) or "custom"


def _complete(run_dir: Path) -> bool:
    path = Path(run_dir) / rundir.SUMMARY
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("status") == "complete"
    except json.JSONDecodeError:
        return False


def _check_same_config(run_dir: Path, cfg: Any) -> None:
    """A reused run must have been trained with the config asked for now (else stale results)."""
    from experiments.config import to_dict
    from experiments.errors import UserError
    from experiments.trainer import load_run_dir_config

    def comparable(c: Any) -> dict[str, Any]:
        data = to_dict(c)
        data["train"] = {k: v for k, v in data["train"].items() if k not in ("progress", "num_threads", "device")}
        return data

    if comparable(load_run_dir_config(run_dir)) != comparable(cfg):
        raise UserError(f"{run_dir} was trained with a different configuration than the claims now ask for; "
                        "remove it (or choose another --out) to re-run it")
