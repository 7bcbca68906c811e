"""The claims' plots show what each test decided on: the panels travel with the verdicts (through
Holm), every claim with a tested part gets ``plots/<id>.png``, and ``claims.md`` links it."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.image as mpimg
import pandas as pd
import pytest

from analysis import claims
from analysis.claim_plots import interval, plot_claim, plot_toy
from analysis.claims import Claim, run_claims
from analysis.verdicts import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict, combine, correlation, paired_better,
                               threshold, tost_equivalent, welch_better)


def test_each_test_keeps_the_values_it_decided_on_failures_included() -> None:
    better = paired_better([1.0, None, 3.0, 2.0], [2.0, 3.0, 4.0, 3.5], names=("famo", "uniform"))
    (panel,) = better.panels
    assert panel.groups == {"famo": [1.0, None, 3.0, 2.0], "uniform": [2.0, 3.0, 4.0, 3.5]}
    assert panel.paired and panel.kind == "groups" and panel.verdict == better.verdict
    equal = tost_equivalent([1, 2, 3], [1.1, 2.1, 2.9], 2.0, names=("fixed", "famo"))
    assert equal.panels[0].margin == 2.0 and equal.panels[0].paired
    assert not welch_better([1, 2, 3], [2, 3, 4]).panels[0].paired  # different variants: not paired
    too_few = paired_better([1.0], [2.0])  # inconclusive without a test: the values are still shown
    assert too_few.verdict == INCONCLUSIVE and too_few.panels[0].groups == {"a": [1.0], "b": [2.0]}
    xy = correlation([0.1, 0.5, 0.9, 0.3], [3.0, 1.0, -1.0, 2.0], names=("cos", "gain"), labels=list("abcd"))
    assert xy.panels[0].kind == "xy" and xy.panels[0].labels == list("abcd")
    assert threshold(0.04, 0.1).panels[0].bound == 0.1


def test_combined_panels_carry_each_parts_name_and_its_verdict_after_holm() -> None:
    # raw p ~0.03 each: supported alone at 0.05, but not both after Holm (0.03 * 2 > 0.05)
    a = [0.0, 0.1, -0.2, 0.3, 0.05, -0.1, 0.2, 0.0]
    b = [x + d for x, d in zip(a, [0.5, -0.1, 0.6, 0.2, 0.4, -0.3, 0.5, 0.1])]  # p = 0.037
    part = paired_better(a, b)
    assert part.verdict == SUPPORTED and 0.03 < part.p_support < 0.045, part.p_support
    claim = combine([("first", part), ("second", paired_better(a, b))])
    assert [(p.title, p.verdict) for p in claim.panels] == [("first", INCONCLUSIVE), ("second", INCONCLUSIVE)]
    assert part.panels[0].verdict == SUPPORTED  # the part's own verdict object is left as it was


def test_plot_claim_draws_one_panel_per_part(tmp_path: Path) -> None:
    parts = [(f"part {i}", paired_better([1, 2, 3, 4 + i], [2, 3, 4.5, 5], names=("x", "y"))) for i in range(4)]
    four = plot_claim("F0", "claim", "inconclusive", combine(parts).panels, tmp_path / "four.png")
    two = plot_claim("F0", "claim", "inconclusive", combine(parts[:2]).panels, tmp_path / "two.png")
    h4, w4 = mpimg.imread(four).shape[:2]
    h2, w2 = mpimg.imread(two).shape[:2]
    assert h4 > 1.5 * h2 and w4 > w2  # 2 rows x 3 columns against 1 row x 2 columns
    assert plot_claim("F0", "claim", SUPPORTED, [], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_interval_is_the_90_percent_t_interval() -> None:
    import numpy as np

    mean, low, high = interval(np.array([1.0, 2.0, 3.0]))
    assert mean == 2.0 and high - mean == pytest.approx(2.919986 * 1.0 / math.sqrt(3), rel=1e-5)
    assert math.isnan(interval(np.array([1.0]))[1])


def test_the_equivalence_inset_shows_the_interval_that_decided(monkeypatch) -> None:
    """The drawn interval of the differences is the TOST's own (1 − 2α), not a fixed 90 %."""
    import numpy as np

    from analysis import claim_plots

    a, b = [1.0, 2.0, 1.5, 3.0, 2.5], [1.2, 2.1, 1.4, 3.3, 2.2]
    verdict = tost_equivalent(a, b, 2.0, alpha=0.05 / 3)
    (panel,) = verdict.panels
    assert panel.level == pytest.approx(1 - 2 * 0.05 / 3)
    drawn = []
    real = claim_plots.interval
    monkeypatch.setattr(claim_plots, "interval", lambda v, level=claim_plots.LEVEL: drawn.append(level) or real(v, level))
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    claim_plots._draw_groups(ax, panel)
    plt.close(fig)
    mean, low, high = real(np.array(a) - np.array(b), panel.level)
    assert drawn[-1] == panel.level
    assert (low, high) == pytest.approx((verdict.numbers["ci_low"], verdict.numbers["ci_high"]))


def test_plot_toy_draws_the_runs_trajectories(tmp_path: Path) -> None:
    rows = []
    for method in ("uniform", "famo"):
        run = tmp_path / method
        run.mkdir()
        pd.DataFrame({"step": [100, 200], "loss_L1": [0.5, -0.5], "loss_L2": [0.0, -10.0]}).to_csv(run / "steps.csv")
        rows.append({"balancer": method, "start": "(0, 0)", "front": "on" if method == "famo" else "off",
                     "L1": -0.5, "L2": -10.0, "run_dir": str(run)})
    out = plot_toy(pd.DataFrame(rows), tmp_path / "F1.png")
    assert mpimg.imread(out).shape[1] > mpimg.imread(out).shape[0]  # two panels side by side
    assert plot_toy(pd.DataFrame(), tmp_path / "empty.png") is None


def test_run_claims_writes_a_plot_per_tested_claim_and_links_it(tmp_path: Path, monkeypatch) -> None:
    exact = Verdict(SUPPORTED, "count >= 5", "5 of 5", {}, exact=True)  # no panel: no plot
    tested = paired_better([1, 2, 3, 4], [3, 2.5, 4, 6], names=("famo", "uniform"))
    monkeypatch.setitem(claims.CLAIMS, "F6", Claim("F6", "c6", "seed 003", lambda r: ("m6", "1 (deterministic)", exact),
                                                   sequential=False))
    monkeypatch.setitem(claims.CLAIMS, "F2", Claim("F2", "c2", "seed 000", lambda r: ("m2", "4", tested)))
    run_claims("tiny", only="F6,F2", out=tmp_path, quiet=True)
    plots = tmp_path / "tiny" / "plots"
    assert sorted(p.name for p in plots.iterdir()) == ["F2.png"]
    report = (tmp_path / "tiny" / "claims.md").read_text()
    assert "![F2](plots/F2.png)" in report and "plots/F6.png" not in report
    assert NOT_SUPPORTED not in report.split("## Plots")[1].split("## Tuning")[0]  # the section is prose + links
