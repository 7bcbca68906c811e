"""``configs/studies/methods.yaml``: every registered balancer in one study, each new method of issue
16 with its published default as the first trial and its own space where its paper tunes one."""

from __future__ import annotations

from pathlib import Path

from balancers import list_balancers
from experiments.studies.config import load_study_config
from experiments.studies.plan import make_plan

METHODS_CONFIG = Path(__file__).resolve().parents[3] / "configs" / "studies" / "methods.yaml"


def test_methods_study_covers_every_balancer_with_its_published_defaults() -> None:
    plan = make_plan(load_study_config(METHODS_CONFIG))
    every = set(list_balancers()) - {"fixed"}  # fixed weights come in as fixed_from_famo
    assert every <= set(plan.searched), f"missing from the study: {sorted(every - set(plan.searched))}"
    assert "fixed_from_famo" in plan.methods
    # own spaces where the papers tune one, the published value enqueued first
    assert plan.spaces["cagrad"]["c"].choices == [0.2, 0.4, 0.5, 0.8] and plan.first_trial["cagrad"]["c"] == 0.4
    assert plan.spaces["stch"]["mu"].choices == [0.01, 0.1, 0.5, 1.0] and plan.first_trial["stch"]["mu"] == 1.0
    assert plan.fixed_hparams["stch"] == {"warmup_epochs": 1}
    assert plan.fixed_hparams["dbmtl"] == {"beta": 0.9, "beta_sigma": 0.0}
    assert plan.fixed_hparams["aligned_mtl"] == {"scale_mode": "min"}
    for method in ("imtl_l", "gls", "pcgrad", "upgrad"):  # nothing of their own to tune
        assert set(plan.spaces[method]) == set(plan.spaces["uniform"])
    assert all(plan.first_trial[m]["lr"] == plan.base.train.lr for m in plan.searched)
