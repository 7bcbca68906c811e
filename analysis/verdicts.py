"""Declared statistical tests that turn measured numbers into a verdict — never written by hand.

Every test returns a :class:`Verdict`: ``supported``, ``not supported`` or ``inconclusive``, the
test's name and level, the reason in words, and two p-values: ``p_support`` (the test whose
rejection supports the claim; null hypothesis "the claim is false") and ``p_refute`` (the test
whose rejection refutes it; null hypothesis "the claim is true"). At level α a test says
*supported* when ``p_support <= α``, *not supported* when ``p_refute <= α``, *inconclusive*
otherwise; the two cannot both hold (shown per rule below). The rules (docs/analysis.md, "Verdict
rules", says the same in prose; every rule's error rate under its null is simulated in
tests/analysis/test_verdict_error_rates.py):

* **better, paired** (:func:`paired_better`): runs of two methods at the same seed share the
  initial model, the data order and the dropout masks (tested in
  tests/experiments/training/test_seed_pairing.py), so the test is a one-sided paired t-test on the
  per-seed differences (df = n − 1). ``p_support``: the claimed direction; ``p_refute``: the
  opposite direction (they sum to 1).
* **better, unpaired** (:func:`welch_better`): Welch's t-test, for the one comparison whose
  groups are not paired by design (FAMO's weight spread on two different variants).
* **equivalent** (:func:`tost_equivalent`): paired TOST — two one-sided paired t-tests of
  H0: δ <= −margin and H0: δ >= +margin at α, δ = mean difference; ``p_support`` = the larger
  of the two p-values (equivalently: the (1 − 2α) t-interval lies inside ±margin).
  ``p_refute`` = 2 × the smaller p-value of H0: δ <= margin / H0: δ >= −margin (Bonferroni over
  the two ways of lying outside, so a true |δ| <= margin is refuted with probability <= α).
* **correlation** (:func:`correlation`): Pearson's r, one-sided t-test with n − 2 df.
* **threshold** (:func:`threshold`): a measured number against a declared bound; no sampling
  model, so it is *exact* (``p`` 0 or 1) and is not part of a multiplicity correction.

Shared rules:

* **Too few**: fewer than ``MIN_SEEDS`` seeds (``MIN_POINTS`` points) → inconclusive, numbers
  still reported.
* **No shortcut for zero variance**: when the spread of the differences (of a group, for
  Welch) is at most ``RESOLUTION`` × the largest magnitude of the values — zero, or float
  rounding — the t statistic is undefined or meaningless: *inconclusive* ("zero variance"),
  whatever the means; 1 vs 1.0000001 on every seed is not evidence of anything.
* **Failures count**: a value that is ``None`` or not finite (a diverged, failed or missing run)
  is never dropped. With ``failure="worst"`` (performance numbers) it is replaced by the worst
  value observed in the comparison (the highest when lower is better), so a failure counts
  against the method that failed — also when that helps the claim (a baseline that diverged
  lost that seed); a seed where both methods failed is a tie. With ``failure="against"``
  (diagnostics without a performance direction) the replacement is the observed value least
  favourable to the claim. No finite value at all → inconclusive.
* **Several parts** (:func:`combine`): Holm's step-down correction over the statistical parts of
  a claim, separately in both directions, at the claim's α. A part is supported when its
  Holm-adjusted ``p_support`` <= α, not supported when its adjusted ``p_refute`` <= α. The claim
  is *supported* when every part is supported, *not supported* when at least one part is not
  supported, *inconclusive* otherwise. This bounds the family-wise rate of false per-part
  statements by α in each direction: false "not supported" when every part is true, and false
  "supported" for each part (for the claim as a whole this is conservative: an
  intersection-union test would need each part at α only; Holm is the price of printing every
  part's verdict as valid simultaneously). Exact parts (thresholds) enter with their own
  verdict. The claim-level p-values are max(adjusted p_support) and min(adjusted p_refute).
* **Repeated looks** (sequential seeds, :mod:`analysis.claims`): a check at a look of a plan
  with L looks runs at α/L (Bonferroni over looks); its reported p-value is L × the claim-level
  p-value (capped at 1), comparable with α = 0.05.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

from analysis.verdict_cores import (RESOLUTION, claim_decide, correlation_p, degenerate, holm, holm_decide,  # noqa: F401
                                    paired_t_p, tost_p, welch_p)

ALPHA = 0.05
#: fewer seeds per group than this and a seed-level test answers "inconclusive"
MIN_SEEDS = 3
#: fewer points than this and a correlation answers "inconclusive"
MIN_POINTS = 4

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
Values = Sequence[float | None]


@dataclass
class Panel:
    """The data one test decided on, kept for the claims' plots (:mod:`analysis.claim_plots`):
    ``groups`` of per-seed values as given to the test (``None``/NaN = a failed run, shown as
    such), or for ``kind="xy"`` the two coordinates of the points (``labels`` name them), or for
    ``kind="threshold"`` one measured value against ``bound``."""
    title: str
    groups: dict[str, list[float | None]]
    kind: str = "groups"
    #: values at the same index come from the same seed (drawn joined)
    paired: bool = False
    #: TOST margin on the mean difference (first group − second), and the level of the t-interval
    #: that decides it (1 − 2α): drawn at that level, so the picture shows the decision
    margin: float | None = None
    level: float | None = None
    bound: float | None = None
    labels: list[str] = field(default_factory=list)
    #: the part's verdict (after Holm, when it is a part of a claim); set by the test or ``combine``
    verdict: str = ""


def _values(v: Values | Sequence[float]) -> list[float | None]:
    return [None if x is None else float(x) for x in v]


@dataclass
class Verdict:
    verdict: str
    test: str
    reason: str
    numbers: dict[str, float] = field(default_factory=dict)
    #: p-value of the test supporting the claim (H0: the claim is false); NaN when none ran
    p_support: float = math.nan
    #: p-value of the test refuting the claim (H0: the claim is true); NaN when none ran
    p_refute: float = math.nan
    #: a deterministic check (no sampling model): decided by its own verdict, not by p-values
    exact: bool = False
    #: what the test(s) decided on, for the plots (``combine`` gathers its parts')
    panels: list[Panel] = field(default_factory=list)

    def __post_init__(self) -> None:
        for panel in self.panels:
            panel.verdict = panel.verdict or self.verdict


def decide(p_support: float, p_refute: float, alpha: float) -> str:
    """The verdict of one test (or one Holm-adjusted part) at level ``alpha``; NaN never decides."""
    if p_support <= alpha:  # NaN compares False
        return SUPPORTED
    if p_refute <= alpha:
        return NOT_SUPPORTED
    return INCONCLUSIVE


# ------------------------------------------------------------------------------ failures
def impute_failures(groups: Sequence[Values], worst_high: Sequence[bool]) -> tuple[list[np.ndarray], list[int]] | None:
    """Replace each group's missing / non-finite values by the extreme of all finite values of
    every group (the highest for a group whose ``worst_high``, else the lowest); None when no
    value is finite. Returns (arrays, failures per group)."""
    raw = [np.array([math.nan if v is None else float(v) for v in g], dtype=float) for g in groups]
    if not any(np.isfinite(g).any() for g in raw):
        return None
    return impute_core(raw, worst_high), [int((~np.isfinite(g)).sum()) for g in raw]


def impute_core(groups: Sequence[np.ndarray], worst_high: Sequence[bool]) -> list[np.ndarray]:
    """:func:`impute_failures` on arrays (..., n_i) with non-finite entries for failures; each row
    needs at least one finite value."""
    stacked = np.concatenate([np.where(np.isfinite(g), g, np.nan) for g in groups], axis=-1)
    high, low = np.nanmax(stacked, axis=-1, keepdims=True), np.nanmin(stacked, axis=-1, keepdims=True)
    return [np.where(np.isfinite(g), g, high if h else low) for g, h in zip(groups, worst_high)]


def _failure_note(names: Sequence[str], failures: Sequence[int], rule: str) -> str:
    counted = [f"{n}: {k}" for n, k in zip(names, failures) if k]
    return f"; failed runs counted as {rule} ({', '.join(counted)})" if counted else ""


def _prepare(a: Values, b: Values, names: tuple[str, str], min_seeds: int, worst_high: tuple[bool, bool],
             rule: str, paired: bool) -> tuple[np.ndarray, np.ndarray, float, str] | str:
    """Shared checks of the two-group tests: (x, y, scale, failure note) or the reason to stop."""
    if paired and len(a) != len(b):
        raise ValueError(f"paired test needs values per seed for both groups, got {len(a)} and {len(b)}")
    short = {n: len(v) for n, v in zip(names, (a, b)) if len(v) < min_seeds}
    if short:
        have = ", ".join(f"{k}: {n}" for k, n in short.items())
        return f"too few seeds ({have}; need >= {min_seeds} per group)"
    imputed = impute_failures([a, b], worst_high)
    if imputed is None:
        return "no finite value in either group (every run failed)"
    (x, y), failures = imputed
    scale = float(max(np.abs(x).max(), np.abs(y).max()))
    return x, y, scale, _failure_note(names, failures, rule)


def _means(a: Values, b: Values) -> dict[str, float]:
    def mean(v: Values) -> float:
        finite = [float(x) for x in v if x is not None and math.isfinite(float(x))]
        return float(np.mean(finite)) if finite else math.nan

    return {"mean_a": mean(a), "mean_b": mean(b), "n_a": len(a), "n_b": len(b)}


# ------------------------------------------------------------------------------ tests
def paired_better(a: Values, b: Values, *, lower_is_better: bool = True, alpha: float = ALPHA,
                  min_seeds: int = MIN_SEEDS, names: tuple[str, str] = ("a", "b"), failure: str = "worst") -> Verdict:
    """Claim: ``a`` is better than ``b`` (lower when ``lower_is_better``); ``a[i]`` and ``b[i]``
    come from the same seed. ``numbers``: finite-run means, ``diff`` = mean(a − b) after failures
    are counted, ``p`` / ``p_opposite``."""
    sign = "<" if lower_is_better else ">"
    test = f"paired t-test, one-sided ({names[0]} {sign} {names[1]}), α={alpha:.3g}"
    numbers = _means(a, b)
    panels = [Panel(f"{names[0]} {sign} {names[1]}", {names[0]: _values(a), names[1]: _values(b)}, paired=True)]
    worst_high = _worst_high(lower_is_better, failure)
    prepared = _prepare(a, b, names, min_seeds, worst_high, _rule(failure), paired=True)
    if isinstance(prepared, str):
        return Verdict(INCONCLUSIVE, test, prepared, numbers, panels=panels)
    x, y, scale, note = prepared
    gain = (y - x) if lower_is_better else (x - y)
    numbers["diff"] = float(np.mean(x - y))
    p_claim, p_opp = (float(p) for p in paired_t_p(gain, scale))
    if math.isnan(p_claim):
        return Verdict(INCONCLUSIVE, test, f"zero variance of the per-seed differences (all {numbers['diff']:.6g}): "
                       f"the t statistic is undefined, no test{note}", numbers, math.nan, math.nan, panels=panels)
    numbers.update(p=p_claim, p_opposite=p_opp)
    return Verdict(decide(p_claim, p_opp, alpha), test, _better_reason(names, sign, p_claim, p_opp, alpha) + note,
                   numbers, p_claim, p_opp, panels=panels)


def welch_better(a: Values, b: Values, *, lower_is_better: bool = True, alpha: float = ALPHA,
                 min_seeds: int = MIN_SEEDS, names: tuple[str, str] = ("a", "b"), failure: str = "worst") -> Verdict:
    """Claim: group ``a`` is better than group ``b`` — unpaired groups (Welch's t-test)."""
    sign = "<" if lower_is_better else ">"
    test = f"Welch t-test, one-sided ({names[0]} {sign} {names[1]}), α={alpha:.3g}"
    numbers = _means(a, b)
    panels = [Panel(f"{names[0]} {sign} {names[1]}", {names[0]: _values(a), names[1]: _values(b)})]
    worst_high = _worst_high(lower_is_better, failure)
    prepared = _prepare(a, b, names, min_seeds, worst_high, _rule(failure), paired=False)
    if isinstance(prepared, str):
        return Verdict(INCONCLUSIVE, test, prepared, numbers, panels=panels)
    x, y, scale, note = prepared
    p_greater, p_less = (float(p) for p in welch_p(x, y, scale))
    if math.isnan(p_greater):
        return Verdict(INCONCLUSIVE, test, f"zero variance in both groups: the t statistic is undefined, no test{note}",
                       numbers, math.nan, math.nan, panels=panels)
    p_claim, p_opp = (p_less, p_greater) if lower_is_better else (p_greater, p_less)
    numbers.update(p=p_claim, p_opposite=p_opp)
    return Verdict(decide(p_claim, p_opp, alpha), test, _better_reason(names, sign, p_claim, p_opp, alpha) + note,
                   numbers, p_claim, p_opp, panels=panels)


def tost_equivalent(a: Values, b: Values, margin: float, *, alpha: float = ALPHA, min_seeds: int = MIN_SEEDS,
                    names: tuple[str, str] = ("a", "b"), lower_is_better: bool = True) -> Verdict:
    """Claim: |mean(a − b)| < ``margin`` with ``a[i]``, ``b[i]`` from the same seed (paired TOST).
    ``numbers``: ``diff``, the (1 − 2α) t-interval ``ci_low`` / ``ci_high``, ``p`` (support)."""
    test = f"paired TOST, |mean({names[0]} − {names[1]})| < {margin:g}, α={alpha:.3g}"
    numbers = _means(a, b)
    panels = [Panel(f"{names[0]} ≈ {names[1]} (±{margin:g})", {names[0]: _values(a), names[1]: _values(b)},
                    paired=True, margin=margin, level=1 - 2 * alpha)]
    prepared = _prepare(a, b, names, min_seeds, (lower_is_better, lower_is_better), "the worst value observed",
                        paired=True)
    if isinstance(prepared, str):
        return Verdict(INCONCLUSIVE, test, prepared, numbers, panels=panels)
    x, y, scale, note = prepared
    diff = x - y
    n = len(diff)
    numbers["diff"] = float(diff.mean())
    p_support, p_refute = (float(p) for p in tost_p(diff, margin, scale))
    if math.isnan(p_support):
        return Verdict(INCONCLUSIVE, test, f"zero variance of the per-seed differences (all {numbers['diff']:.6g}): "
                       f"the t statistic is undefined, no test{note}", numbers, math.nan, math.nan, panels=panels)
    half = float(stats.t.ppf(1 - alpha, n - 1) * diff.std(ddof=1) / math.sqrt(n))
    low, high = numbers["diff"] - half, numbers["diff"] + half
    numbers.update(ci_low=low, ci_high=high, p=p_support, p_refute=p_refute)
    interval = f"{1 - 2 * alpha:.1%} t-interval [{low:.3g}, {high:.3g}]"
    verdict = decide(p_support, p_refute, alpha)
    how = {SUPPORTED: f"inside ±{margin:g}", NOT_SUPPORTED: f"outside ±{margin:g} (refuting p={p_refute:.3g})",
           INCONCLUSIVE: f"overlaps ±{margin:g}"}[verdict]
    return Verdict(verdict, test, f"{interval} {how}; TOST p={p_support:.3g}{note}", numbers, p_support, p_refute,
                   panels=panels)


def correlation(x: Sequence[float], y: Sequence[float], *, negative: bool = True, alpha: float = ALPHA,
                min_points: int = MIN_POINTS, names: tuple[str, str] = ("x", "y"),
                labels: Sequence[str] = ()) -> Verdict:
    """Claim: ``x`` and ``y`` are negatively (or positively) correlated across points (pairs with
    a non-finite coordinate are left out and counted in ``points``); ``names`` / ``labels`` name
    the axes and the points in the plot."""
    panel = Panel(f"{names[1]} against {names[0]}", {names[0]: _values(x), names[1]: _values(y)}, kind="xy",
                  labels=[str(t) for t in labels])
    verdict = _correlation(x, y, negative=negative, alpha=alpha, min_points=min_points)
    verdict.panels = [panel]
    panel.verdict = verdict.verdict
    return verdict


def _correlation(x: Sequence[float], y: Sequence[float], *, negative: bool, alpha: float, min_points: int) -> Verdict:
    pairs = [(float(a), float(b)) for a, b in zip(x, y) if math.isfinite(float(a)) and math.isfinite(float(b))]
    direction = "negative" if negative else "positive"
    test = f"Pearson correlation, one-sided ({direction}), α={alpha:.3g}, >= {min_points} points"
    if len(pairs) < min_points:
        return Verdict(INCONCLUSIVE, test, f"too few points ({len(pairs)}; need >= {min_points})",
                       {"points": len(pairs)})
    xs, ys = np.array(pairs).T
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return Verdict(INCONCLUSIVE, test, "a constant variable: correlation undefined", {"points": len(pairs)})
    p_pos, p_neg = (float(p) for p in correlation_p(xs, ys))
    r = float(np.corrcoef(xs, ys)[0, 1])
    p_claim, p_opp = (p_neg, p_pos) if negative else (p_pos, p_neg)
    numbers = {"r": r, "p": p_claim, "p_opposite": p_opp, "points": len(pairs)}
    verdict = decide(p_claim, p_opp, alpha)
    how = {SUPPORTED: f"p={p_claim:.3g} <= {alpha:.3g}", NOT_SUPPORTED: f"the opposite correlation is significant "
           f"(p={p_opp:.3g})", INCONCLUSIVE: f"p={p_claim:.3g} > {alpha:.3g}"}[verdict]
    return Verdict(verdict, test, f"r={r:.3f}, {how}", numbers, p_claim, p_opp)


def threshold(value: float | None, bound: float, *, at_most: bool = True, what: str = "value") -> Verdict:
    """Claim: ``value <= bound`` (or ``>=`` when ``at_most`` is False); exact (no sampling model)."""
    op = "<=" if at_most else ">="
    test = f"{what} {op} {bound:g}"
    panels = [Panel(test, {what: _values([value])}, kind="threshold", bound=bound)]
    if value is None or not math.isfinite(value):
        return Verdict(INCONCLUSIVE, test, f"{what} could not be measured", {"value": math.nan}, exact=True,
                       panels=panels)
    ok = value <= bound if at_most else value >= bound
    return Verdict(SUPPORTED if ok else NOT_SUPPORTED, test, f"{what} = {value:.4g} ({'meets' if ok else 'fails'} "
                   f"{op} {bound:g})", {"value": float(value)}, 0.0 if ok else 1.0, 1.0 if ok else 0.0, exact=True,
                   panels=panels)


def combine(parts: Sequence[tuple[str, Verdict]], alpha: float = ALPHA) -> Verdict:
    """One claim from its parts: Holm over the statistical parts in both directions, exact parts
    by their own verdict (see the module docstring)."""
    if not parts:
        return Verdict(INCONCLUSIVE, "—", "nothing was measured")
    statistical = [(i, v) for i, (_, v) in enumerate(parts) if not v.exact]
    kinds = [v.verdict for _, v in parts]
    p_support, p_refute = [], []
    if statistical:
        raw_s = np.array([v.p_support for _, v in statistical])
        raw_r = np.array([v.p_refute for _, v in statistical])
        yes, no = holm_decide(raw_s, raw_r, alpha)
        for (i, _), y, n in zip(statistical, yes, no):
            kinds[i] = SUPPORTED if y else NOT_SUPPORTED if n else INCONCLUSIVE
        p_support, p_refute = list(holm(raw_s)), list(holm(raw_r))
    for _, v in parts:
        if v.exact:
            p_support.append(0.0 if v.verdict == SUPPORTED else 1.0)
            p_refute.append(0.0 if v.verdict == NOT_SUPPORTED else 1.0)
    overall = NOT_SUPPORTED if NOT_SUPPORTED in kinds else SUPPORTED if all(k == SUPPORTED for k in kinds) else INCONCLUSIVE
    correction = f" (Holm over {len(statistical)} tested parts)" if len(statistical) > 1 else ""
    reason = "; ".join(f"{name}: {kind}{' after Holm' if correction and not v.exact else ''} ({v.reason})"
                       for (name, v), kind in zip(parts, kinds))
    tests = "; ".join(dict.fromkeys(v.test for _, v in parts)) + correction
    exact = not statistical
    # a statistical part that ran no test (too few seeds, zero variance) leaves the claim without
    # a p-value in that direction: NaN, not a number that looks like evidence
    untested_s = any(math.isnan(v.p_support) for _, v in statistical)
    untested_r = all(math.isnan(v.p_refute) for _, v in statistical)
    p_claim_s = math.nan if exact or untested_s else float(max(p_support))
    p_claim_r = math.nan if exact or untested_r else float(min(p_refute))
    panels = [replace(panel, title=name, verdict=kind) for (name, v), kind in zip(parts, kinds) for panel in v.panels]
    return Verdict(overall, tests, reason, {}, p_claim_s, p_claim_r, exact=exact, panels=panels)


# ------------------------------------------------------------------------------ small helpers
def _rule(failure: str) -> str:
    if failure not in ("worst", "against"):
        raise ValueError(f"failure must be 'worst' or 'against', got {failure!r}")
    return "the worst value observed" if failure == "worst" else "the value least favourable to the claim"


def _worst_high(lower_is_better: bool, failure: str) -> tuple[bool, bool]:
    """Per group (a, b): is the imputed value the highest observed one?"""
    if failure == "worst":
        return lower_is_better, lower_is_better
    # against the claim "a better than b": a gets the value that makes it look worst, b the best
    return lower_is_better, not lower_is_better


def _better_reason(names: tuple[str, str], sign: str, p_claim: float, p_opp: float, alpha: float) -> str:
    if p_claim <= alpha:
        return f"{names[0]} {sign} {names[1]} is significant (p={p_claim:.3g} <= {alpha:.3g})"
    if p_opp <= alpha:
        return f"the opposite is significant (p={p_opp:.3g} <= {alpha:.3g})"
    return f"no significant difference (p={p_claim:.3g} > {alpha:.3g})"
