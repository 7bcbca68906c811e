"""Verdict logic on synthetic numbers: supported / not supported / inconclusive for every test."""

from __future__ import annotations

import pytest

from analysis.verdicts import (INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, Verdict, bootstrap_equivalent, combine,
                               correlation, threshold, welch_better)

LOW = [1.0, 1.1, 0.9, 1.05, 0.95]
HIGH = [5.0, 5.2, 4.8, 5.1, 4.9]


def test_welch_supported_when_the_claimed_direction_is_significant() -> None:
    v = welch_better(LOW, HIGH, names=("famo", "uniform"))
    assert v.verdict == SUPPORTED and v.numbers["p"] < 0.05 and "Welch" in v.test
    assert welch_better(HIGH, LOW, lower_is_better=False).verdict == SUPPORTED


def test_welch_not_supported_when_the_opposite_is_significant() -> None:
    v = welch_better(HIGH, LOW)
    assert v.verdict == NOT_SUPPORTED and "opposite" in v.reason


def test_welch_inconclusive_without_a_significant_difference_or_with_too_few_seeds() -> None:
    v = welch_better([1.0, 2.0, 3.0], [1.5, 2.5, 2.0])
    assert v.verdict == INCONCLUSIVE and "no significant difference" in v.reason
    v = welch_better([1.0, 1.1], [5.0, 5.1])  # a huge gap, but only two seeds per group
    assert v.verdict == INCONCLUSIVE and "too few seeds" in v.reason and "need >= 3" in v.reason
    assert v.numbers["mean_a"] == pytest.approx(1.05)  # the numbers are still reported


def test_welch_with_constant_groups() -> None:
    assert welch_better([1.0] * 3, [2.0] * 3).verdict == SUPPORTED
    assert welch_better([2.0] * 3, [1.0] * 3).verdict == NOT_SUPPORTED
    assert welch_better([1.0] * 3, [1.0] * 3).verdict == INCONCLUSIVE


def test_bootstrap_equivalence_three_ways() -> None:
    close = bootstrap_equivalent([10.0, 10.2, 9.9, 10.1], [10.1, 9.95, 10.05, 10.0], margin=1.0)
    assert close.verdict == SUPPORTED and -1.0 < close.numbers["ci_low"] <= close.numbers["ci_high"] < 1.0
    far = bootstrap_equivalent([20.0, 20.2, 19.9], [10.1, 9.95, 10.05], margin=1.0)
    assert far.verdict == NOT_SUPPORTED and far.numbers["ci_low"] > 1.0
    noisy = bootstrap_equivalent([5.0, 15.0, 10.0], [10.0, 11.0, 9.0], margin=1.0)
    assert noisy.verdict == INCONCLUSIVE and "overlaps" in noisy.reason
    few = bootstrap_equivalent([1.0, 1.0], [1.0, 1.0], margin=1.0)
    assert few.verdict == INCONCLUSIVE and "too few seeds" in few.reason
    # deterministic: the same numbers give the same interval
    again = bootstrap_equivalent([10.0, 10.2, 9.9, 10.1], [10.1, 9.95, 10.05, 10.0], margin=1.0)
    assert again.numbers == close.numbers


def test_correlation_three_ways() -> None:
    x = [0.1, 0.3, 0.5, 0.7, 0.9]
    assert correlation(x, [9.0, 7.1, 5.0, 2.9, 1.0]).verdict == SUPPORTED
    assert correlation(x, [1.0, 2.9, 5.0, 7.1, 9.0]).verdict == NOT_SUPPORTED
    assert correlation(x, [1.0, 5.0, 2.0, 4.0, 3.0]).verdict == INCONCLUSIVE
    few = correlation([0.1, 0.5, 0.9], [3.0, 2.0, 1.0])
    assert few.verdict == INCONCLUSIVE and "too few points" in few.reason
    nan = correlation([0.1, 0.3, float("nan"), 0.7, 0.9], [9.0, 7.0, 5.0, 3.0, 1.0])
    assert nan.numbers["points"] == 4


def test_threshold_and_combine() -> None:
    assert threshold(0.0, 1e-6).verdict == SUPPORTED
    assert threshold(0.5, 1e-6).verdict == NOT_SUPPORTED
    assert threshold(5, 5, at_most=False).verdict == SUPPORTED
    assert threshold(4, 5, at_most=False).verdict == NOT_SUPPORTED
    assert threshold(float("nan"), 1.0).verdict == INCONCLUSIVE
    yes, no, maybe = (Verdict(k, "t", "r") for k in (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE))
    assert combine([("a", yes), ("b", yes)]).verdict == SUPPORTED
    assert combine([("a", yes), ("b", maybe)]).verdict == INCONCLUSIVE
    assert combine([("a", maybe), ("b", no)]).verdict == NOT_SUPPORTED
    assert combine([]).verdict == INCONCLUSIVE
    assert "a: supported" in combine([("a", yes), ("b", maybe)]).reason
