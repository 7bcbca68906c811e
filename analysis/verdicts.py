"""Declared statistical tests that turn measured numbers into a verdict — never written by hand.

Every test returns a :class:`Verdict`: ``supported``, ``not supported`` or ``inconclusive``, the
test's name and threshold, and the reason in words. The rules:

* **better** (Welch's t-test, one-sided, α = 0.05): *supported* when the claimed direction is
  significant; *not supported* when the opposite direction is significant; *inconclusive* when
  neither is, or with fewer than ``MIN_SEEDS`` seeds per group.
* **equivalent** (bootstrap over seeds): the (1 − 2α) = 90 % percentile interval of the difference
  of means (10,000 resamples of each group, fixed generator) — the interval form of two one-sided
  tests. *Supported* when it lies inside ±margin, *not supported* when it lies entirely outside,
  *inconclusive* otherwise or with too few seeds.
* **correlation** (Pearson, one-sided, α = 0.05) over at least ``MIN_POINTS`` points.
* **threshold** checks (counts, numerical tolerances) compare a measured number with a declared
  bound; they need no seeds.
* A claim made of several parts is supported when every part is, not supported when any part is
  not, and inconclusive otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

ALPHA = 0.05
#: fewer seeds per group than this and a seed-level test answers "inconclusive"
MIN_SEEDS = 3
#: fewer points than this and a correlation answers "inconclusive"
MIN_POINTS = 4
BOOTSTRAP_SAMPLES = 10_000

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"


@dataclass
class Verdict:
    verdict: str
    test: str
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)


def _clean(values: Sequence[float]) -> np.ndarray:
    return np.array([v for v in values if v is not None and math.isfinite(float(v))], dtype=float)


def _too_few(groups: dict[str, np.ndarray], min_seeds: int) -> str | None:
    short = {k: len(v) for k, v in groups.items() if len(v) < min_seeds}
    if short:
        have = ", ".join(f"{k}: {n}" for k, n in short.items())
        return f"too few seeds ({have}; need >= {min_seeds} per group)"
    return None


def welch_better(a: Sequence[float], b: Sequence[float], *, lower_is_better: bool = True, alpha: float = ALPHA,
                 min_seeds: int = MIN_SEEDS, names: tuple[str, str] = ("a", "b")) -> Verdict:
    """Claim: group ``a`` is better than group ``b`` (lower values when ``lower_is_better``)."""
    x, y = _clean(a), _clean(b)
    sign = "<" if lower_is_better else ">"
    test = f"Welch t-test, one-sided ({names[0]} {sign} {names[1]}), α={alpha}"
    numbers = {"mean_a": float(x.mean()) if len(x) else math.nan, "mean_b": float(y.mean()) if len(y) else math.nan}
    short = _too_few({names[0]: x, names[1]: y}, min_seeds)
    if short:
        return Verdict(INCONCLUSIVE, test, short, numbers)
    if np.ptp(x) == 0 and np.ptp(y) == 0:  # both groups constant: no variance to test against
        if numbers["mean_a"] == numbers["mean_b"]:
            return Verdict(INCONCLUSIVE, test, "identical constant groups: no difference to test", numbers)
        better = (numbers["mean_a"] < numbers["mean_b"]) == lower_is_better
        return Verdict(SUPPORTED if better else NOT_SUPPORTED, test, "zero variance in both groups; "
                       f"{names[0]} is {'better' if better else 'worse'} on every seed", numbers)
    claimed = "less" if lower_is_better else "greater"
    opposite = "greater" if lower_is_better else "less"
    p_claim = float(stats.ttest_ind(x, y, equal_var=False, alternative=claimed).pvalue)
    p_opp = float(stats.ttest_ind(x, y, equal_var=False, alternative=opposite).pvalue)
    numbers.update(p=p_claim, p_opposite=p_opp)
    if p_claim < alpha:
        return Verdict(SUPPORTED, test, f"{names[0]} {sign} {names[1]} is significant (p={p_claim:.3g} < {alpha})", numbers)
    if p_opp < alpha:
        return Verdict(NOT_SUPPORTED, test, f"the opposite is significant (p={p_opp:.3g} < {alpha})", numbers)
    return Verdict(INCONCLUSIVE, test, f"no significant difference (p={p_claim:.3g} >= {alpha})", numbers)


def bootstrap_equivalent(a: Sequence[float], b: Sequence[float], margin: float, *, alpha: float = ALPHA,
                         min_seeds: int = MIN_SEEDS, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0,
                         names: tuple[str, str] = ("a", "b")) -> Verdict:
    """Claim: the means of ``a`` and ``b`` differ by less than ``margin`` (equivalence)."""
    x, y = _clean(a), _clean(b)
    level = 1 - 2 * alpha
    test = f"bootstrap {level:.0%} CI of mean({names[0]}) − mean({names[1]}) within ±{margin:g}"
    numbers = {"mean_a": float(x.mean()) if len(x) else math.nan, "mean_b": float(y.mean()) if len(y) else math.nan}
    short = _too_few({names[0]: x, names[1]: y}, min_seeds)
    if short:
        return Verdict(INCONCLUSIVE, test, short, numbers)
    gen = np.random.default_rng(seed)
    diffs = (gen.choice(x, size=(samples, len(x))).mean(axis=1) - gen.choice(y, size=(samples, len(y))).mean(axis=1))
    low, high = (float(v) for v in np.quantile(diffs, [alpha, 1 - alpha]))
    numbers.update(diff=float(x.mean() - y.mean()), ci_low=low, ci_high=high)
    interval = f"[{low:.3g}, {high:.3g}]"
    if -margin < low and high < margin:
        return Verdict(SUPPORTED, test, f"CI {interval} inside ±{margin:g}", numbers)
    if low > margin or high < -margin:
        return Verdict(NOT_SUPPORTED, test, f"CI {interval} entirely outside ±{margin:g}", numbers)
    return Verdict(INCONCLUSIVE, test, f"CI {interval} overlaps the margin ±{margin:g}", numbers)


def correlation(x: Sequence[float], y: Sequence[float], *, negative: bool = True, alpha: float = ALPHA,
                min_points: int = MIN_POINTS) -> Verdict:
    """Claim: ``x`` and ``y`` are negatively (or positively) correlated across points."""
    pairs = [(float(a), float(b)) for a, b in zip(x, y) if math.isfinite(float(a)) and math.isfinite(float(b))]
    direction = "negative" if negative else "positive"
    test = f"Pearson correlation, one-sided ({direction}), α={alpha}, >= {min_points} points"
    if len(pairs) < min_points:
        return Verdict(INCONCLUSIVE, test, f"too few points ({len(pairs)}; need >= {min_points})", {"points": len(pairs)})
    xs, ys = np.array(pairs).T
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Verdict(INCONCLUSIVE, test, "a constant variable: correlation undefined", {"points": len(pairs)})
    claimed = stats.pearsonr(xs, ys, alternative="less" if negative else "greater")
    opposite = stats.pearsonr(xs, ys, alternative="greater" if negative else "less")
    numbers = {"r": float(claimed.statistic), "p": float(claimed.pvalue), "points": len(pairs)}
    if claimed.pvalue < alpha:
        return Verdict(SUPPORTED, test, f"r={claimed.statistic:.3f}, p={claimed.pvalue:.3g} < {alpha}", numbers)
    if opposite.pvalue < alpha:
        return Verdict(NOT_SUPPORTED, test, f"r={claimed.statistic:.3f}: the opposite correlation is significant "
                       f"(p={opposite.pvalue:.3g})", numbers)
    return Verdict(INCONCLUSIVE, test, f"r={claimed.statistic:.3f}, p={claimed.pvalue:.3g} >= {alpha}", numbers)


def threshold(value: float, bound: float, *, at_most: bool = True, what: str = "value") -> Verdict:
    """Claim: ``value <= bound`` (or ``>=`` when ``at_most`` is False)."""
    op = "<=" if at_most else ">="
    test = f"{what} {op} {bound:g}"
    if value is None or not math.isfinite(value):
        return Verdict(INCONCLUSIVE, test, f"{what} could not be measured", {"value": math.nan})
    ok = value <= bound if at_most else value >= bound
    return Verdict(SUPPORTED if ok else NOT_SUPPORTED, test, f"{what} = {value:.4g} ({'meets' if ok else 'fails'} {op} {bound:g})",
                   {"value": float(value)})


def combine(parts: Sequence[tuple[str, Verdict]]) -> Verdict:
    """All parts supported → supported; any not supported → not supported; else inconclusive."""
    if not parts:
        return Verdict(INCONCLUSIVE, "—", "nothing was measured")
    kinds = [v.verdict for _, v in parts]
    if NOT_SUPPORTED in kinds:
        overall = NOT_SUPPORTED
    elif all(k == SUPPORTED for k in kinds):
        overall = SUPPORTED
    else:
        overall = INCONCLUSIVE
    reason = "; ".join(f"{name}: {v.verdict} ({v.reason})" for name, v in parts)
    tests = "; ".join(sorted(set(v.test for _, v in parts)))
    return Verdict(overall, tests, reason)
