"""Verdict logic on hand-made numbers: supported / not supported / inconclusive for every test,
agreement with scipy's reference implementations, zero variance, failures and Holm."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.verdicts import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict, combine, correlation, holm,
                               impute_failures, paired_better, threshold, tost_equivalent, welch_better)

LOW = [1.0, 1.1, 0.9, 1.05, 0.95]
HIGH = [5.0, 5.2, 4.8, 5.1, 4.9]


def test_paired_better_three_ways_and_agrees_with_scipy() -> None:
    v = paired_better(LOW, HIGH, names=("famo", "uniform"))
    assert v.verdict == SUPPORTED and "paired t-test" in v.test and "famo < uniform" in v.test
    assert v.p_support == pytest.approx(stats.ttest_rel(LOW, HIGH, alternative="less").pvalue, rel=1e-9)
    assert v.p_support + v.p_refute == pytest.approx(1.0)
    assert paired_better(HIGH, LOW, lower_is_better=False).verdict == SUPPORTED
    no = paired_better(HIGH, LOW)
    assert no.verdict == NOT_SUPPORTED and "opposite" in no.reason
    maybe = paired_better([1.0, 2.0, 3.0], [1.5, 2.5, 2.0])
    assert maybe.verdict == INCONCLUSIVE and "no significant difference" in maybe.reason


def test_pairing_removes_the_seed_effect_welch_cannot() -> None:
    """Seed effects shared by both methods (same init and data) cancel in the paired test."""
    seed_effect = np.array([0.0, 10.0, -10.0, 20.0, -20.0])
    a, b = list(seed_effect + 1.0 + np.array([0, 0.1, -0.1, 0.05, -0.05])), list(seed_effect + 2.0)
    assert paired_better(a, b).verdict == SUPPORTED
    assert welch_better(a, b).verdict == INCONCLUSIVE
    assert welch_better(a, b).p_support == pytest.approx(stats.ttest_ind(a, b, equal_var=False, alternative="less").pvalue)


def test_too_few_seeds_is_inconclusive_with_the_numbers_reported() -> None:
    v = paired_better([1.0, 1.1], [5.0, 5.1])  # a huge gap, but only two seeds per group
    assert v.verdict == INCONCLUSIVE and "too few seeds" in v.reason and "need >= 3" in v.reason
    assert v.numbers["mean_a"] == pytest.approx(1.05)
    with pytest.raises(ValueError, match="paired test needs values per seed"):
        paired_better([1.0, 2.0, 3.0], [1.0, 2.0, 3.0, 4.0])


@pytest.mark.parametrize("test", [paired_better, welch_better])
def test_zero_variance_is_never_a_shortcut(test) -> None:
    # 1 vs 1.0000001 on every seed: constant differences, no variance to test against
    for a, b in (([1.0] * 3, [1.0000001] * 3), ([1.0] * 3, [2.0] * 3), ([2.0] * 5, [1.0] * 5), ([1.0] * 3, [1.0] * 3)):
        v = test(a, b)
        assert v.verdict == INCONCLUSIVE and "zero variance" in v.reason and "undefined" in v.reason, (a, b)
        assert math.isnan(v.p_support) and math.isnan(v.p_refute)
    # float rounding of a constant offset counts as zero variance too (differences 1e-7 ± 1e-16)
    a = [0.1 + 0.2, 0.3, 0.7 - 0.4]
    assert paired_better(a, [x + 1e-7 for x in a]).verdict == INCONCLUSIVE


def test_zero_variance_in_tost() -> None:
    v = tost_equivalent([1.0] * 4, [1.0000001] * 4, margin=1.0)
    assert v.verdict == INCONCLUSIVE and "zero variance" in v.reason
    # a real spread, however small, is tested
    assert tost_equivalent([1.0, 1.001, 0.999, 1.0], [1.0] * 4, margin=1.0).verdict == SUPPORTED


def test_failures_count_against_the_method_that_failed() -> None:
    a = [1.0, None, 0.9, None, float("nan")]  # three failed runs of the claimed-better method
    v = paired_better(a, HIGH, names=("famo", "uniform"))
    assert "failed runs counted as the worst value observed (famo: 3)" in v.reason
    assert v.numbers["n_a"] == 5 and v.numbers["mean_a"] == pytest.approx((1.0 + 0.9) / 2)
    assert v.verdict == INCONCLUSIVE  # 5.2 imputed three times: no longer significant
    assert v.numbers["diff"] == pytest.approx(np.mean(np.array([1.0, 5.2, 0.9, 5.2, 5.2]) - HIGH))
    # a failure of the baseline is the baseline's loss
    assert paired_better(LOW, [5.0, None, 4.8, 5.1, 4.9]).verdict == SUPPORTED
    # "against": the claimed-better group gets the highest value, the other the lowest
    (x, y), counts = impute_failures([[1.0, None], [3.0, None]], [True, False])
    assert list(x) == [1.0, 3.0] and list(y) == [3.0, 1.0] and counts == [1, 1]
    assert impute_failures([[None], [float("inf")]], [True, True]) is None
    assert paired_better([None] * 3, [None] * 3).verdict == INCONCLUSIVE


def test_tost_three_ways_and_its_interval() -> None:
    close = tost_equivalent([10.0, 10.2, 9.9, 10.1], [10.1, 9.95, 10.05, 10.0], margin=1.0)
    assert close.verdict == SUPPORTED and -1.0 < close.numbers["ci_low"] <= close.numbers["ci_high"] < 1.0
    d = np.array([10.0, 10.2, 9.9, 10.1]) - np.array([10.1, 9.95, 10.05, 10.0])
    half = stats.t.ppf(0.95, 3) * d.std(ddof=1) / 2
    assert close.numbers["ci_high"] == pytest.approx(d.mean() + half)
    # TOST p = max of the two one-sided tests against ±margin (scipy's one-sample t-tests)
    p_low = stats.ttest_1samp(d, -1.0, alternative="greater").pvalue
    p_high = stats.ttest_1samp(d, 1.0, alternative="less").pvalue
    assert close.p_support == pytest.approx(max(p_low, p_high))
    far = tost_equivalent([20.0, 20.2, 19.9], [10.1, 9.95, 10.05], margin=1.0)
    assert far.verdict == NOT_SUPPORTED and far.numbers["ci_low"] > 1.0
    noisy = tost_equivalent([5.0, 15.0, 10.0], [10.0, 11.0, 9.0], margin=1.0)
    assert noisy.verdict == INCONCLUSIVE and "overlaps" in noisy.reason
    few = tost_equivalent([1.0, 1.0], [1.0, 1.0], margin=1.0)
    assert few.verdict == INCONCLUSIVE and "too few seeds" in few.reason


def test_correlation_three_ways_and_agrees_with_scipy() -> None:
    x = [0.1, 0.3, 0.5, 0.7, 0.9]
    yes = correlation(x, [9.0, 7.1, 5.0, 2.9, 1.0])
    assert yes.verdict == SUPPORTED
    y = [3.0, 1.0, 2.5, 0.5, 0.7]
    assert correlation(x, y).p_support == pytest.approx(stats.pearsonr(x, y, alternative="less").pvalue)
    assert correlation(x, [1.0, 2.9, 5.0, 7.1, 9.0]).verdict == NOT_SUPPORTED
    assert correlation(x, [1.0, 5.0, 2.0, 4.0, 3.0]).verdict == INCONCLUSIVE
    few = correlation([0.1, 0.5, 0.9], [3.0, 2.0, 1.0])
    assert few.verdict == INCONCLUSIVE and "too few points" in few.reason
    nan = correlation([0.1, 0.3, float("nan"), 0.7, 0.9], [9.0, 7.0, 5.0, 3.0, 1.0])
    assert nan.numbers["points"] == 4
    assert correlation(x, [1.0] * 5).verdict == INCONCLUSIVE


def test_holm_adjusted_p_values() -> None:
    # by hand: sorted 0.01, 0.03, 0.04, 0.5 -> 4*0.01, max(0.04, 3*0.03), max(0.09, 2*0.04), max(0.09, 0.5)
    assert list(holm(np.array([0.01, 0.04, 0.03, 0.5]))) == pytest.approx([0.04, 0.09, 0.09, 0.5])
    assert list(holm(np.array([0.3, np.nan]))) == pytest.approx([0.6, 1.0])
    batch = holm(np.array([[0.01, 0.04, 0.03, 0.5], [0.5, 0.5, 0.5, 0.5]]))
    assert batch.shape == (2, 4) and list(batch[1]) == pytest.approx([1.0, 1.0, 1.0, 1.0])


def part(p_support: float, p_refute: float) -> Verdict:
    return Verdict(INCONCLUSIVE, "t", "r", {}, p_support, p_refute)


def test_combine_applies_holm_in_both_directions() -> None:
    # each part alone would be decided at 0.05; Holm over 3 parts needs 0.05/3 for the smallest
    assert combine([("a", part(0.03, 0.97)), ("b", part(0.04, 0.96)), ("c", part(0.045, 0.955))]).verdict == INCONCLUSIVE
    ok = combine([("a", part(0.01, 0.99)), ("b", part(0.02, 0.98)), ("c", part(0.04, 0.96))])
    assert ok.verdict == SUPPORTED and ok.p_support == pytest.approx(0.04) and "Holm over 3" in ok.test
    refuted = combine([("a", part(0.9, 0.01)), ("b", part(0.01, 0.99))])
    assert refuted.verdict == NOT_SUPPORTED and refuted.p_refute == pytest.approx(0.02)
    assert "a: not supported after Holm" in refuted.reason and "b: supported after Holm" in refuted.reason
    weak = combine([("a", part(0.9, 0.03)), ("b", part(0.01, 0.99))])
    assert weak.verdict == INCONCLUSIVE  # 2 x 0.03 > 0.05
    # a part that ran no test leaves the claim without a support p-value (NaN, never 1 or 0)
    few = paired_better([1.0, 1.1], [5.0, 5.1])
    assert math.isnan(few.p_support) and math.isnan(few.p_refute)
    untested = combine([("a", part(0.001, 0.999)), ("b", few)])
    assert untested.verdict == INCONCLUSIVE and math.isnan(untested.p_support) and untested.p_refute == pytest.approx(1.0)
    assert combine([("a", part(0.01, 0.99))], alpha=0.05 / 3).verdict == SUPPORTED
    assert combine([("a", part(0.02, 0.98))], alpha=0.05 / 3).verdict == INCONCLUSIVE


def test_threshold_and_exact_parts() -> None:
    assert threshold(0.0, 1e-6).verdict == SUPPORTED
    assert threshold(0.5, 1e-6).verdict == NOT_SUPPORTED
    assert threshold(5, 5, at_most=False).verdict == SUPPORTED
    assert threshold(4, 5, at_most=False).verdict == NOT_SUPPORTED
    assert threshold(float("nan"), 1.0).verdict == INCONCLUSIVE
    assert threshold(math.inf, 1.0).verdict == INCONCLUSIVE and threshold(None, 1.0).exact
    yes, no, maybe = (threshold(v, 1.0) for v in (0.5, 2.0, math.nan))
    assert combine([("a", yes), ("b", yes)]).verdict == SUPPORTED
    assert combine([("a", yes), ("b", maybe)]).verdict == INCONCLUSIVE
    assert combine([("a", maybe), ("b", no)]).verdict == NOT_SUPPORTED
    assert combine([]).verdict == INCONCLUSIVE
    assert "a: supported" in combine([("a", yes), ("b", maybe)]).reason
    only_exact = combine([("a", yes), ("b", yes)])
    assert only_exact.exact and math.isnan(only_exact.p_support)
    # an exact part does not enlarge the Holm family of the statistical ones
    mixed = combine([("a", yes), ("b", part(0.04, 0.96))])
    assert mixed.verdict == SUPPORTED and mixed.p_support == pytest.approx(0.04) and not mixed.exact
    assert combine([("a", no), ("b", part(0.001, 0.999))]).verdict == NOT_SUPPORTED
