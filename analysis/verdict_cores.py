"""The vectorised cores of :mod:`analysis.verdicts`: each works on arrays of shape (..., n), so the
simulation tests (tests/analysis/test_verdict_error_rates.py) run the very code that decides the
claims on many samples at once. The rules they implement are described in :mod:`analysis.verdicts`."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

#: a spread at most this times the values' largest magnitude counts as zero variance
RESOLUTION = 1e-9


def degenerate(diff: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """True where the spread of ``diff`` (last axis) is zero up to float rounding of ``scale``."""
    return np.std(diff, axis=-1, ddof=1) <= RESOLUTION * np.asarray(scale)


def paired_t_p(gain: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided paired t-test p-values (mean gain > 0, mean gain < 0); NaN where degenerate."""
    n = gain.shape[-1]
    se = np.std(gain, axis=-1, ddof=1) / math.sqrt(n)
    bad = degenerate(gain, scale)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(bad, np.nan, np.mean(gain, axis=-1) / np.where(bad, 1.0, se))
    return stats.t.sf(t, n - 1), stats.t.cdf(t, n - 1)


def tost_p(diff: np.ndarray, margin: float, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Paired TOST: (p_support, p_refute) for |mean diff| < margin; NaN where degenerate."""
    n = diff.shape[-1]
    bad = degenerate(diff, scale)
    se = np.where(bad, 1.0, np.std(diff, axis=-1, ddof=1) / math.sqrt(n))
    mean = np.mean(diff, axis=-1)
    t_low, t_high = (mean + margin) / se, (mean - margin) / se
    support = np.maximum(stats.t.sf(t_low, n - 1), stats.t.cdf(t_high, n - 1))
    refute = np.minimum(1.0, 2 * np.minimum(stats.t.sf(t_high, n - 1), stats.t.cdf(t_low, n - 1)))
    return np.where(bad, np.nan, support), np.where(bad, np.nan, refute)


def welch_p(a: np.ndarray, b: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Welch's one-sided p-values (mean a > mean b, mean a < mean b); NaN when both groups are
    degenerate (no variance estimate at all)."""
    na, nb = a.shape[-1], b.shape[-1]
    va, vb = np.var(a, axis=-1, ddof=1) / na, np.var(b, axis=-1, ddof=1) / nb
    bad = degenerate(a, scale) & degenerate(b, scale)
    var = np.where(bad, 1.0, va + vb)
    t = (np.mean(a, axis=-1) - np.mean(b, axis=-1)) / np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = var**2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return np.where(bad, np.nan, stats.t.sf(t, df)), np.where(bad, np.nan, stats.t.cdf(t, df))


def holm(p: np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values along the last axis (NaN counts as 1)."""
    p = np.where(np.isnan(p), 1.0, np.asarray(p, dtype=float))
    m = p.shape[-1]
    order = np.argsort(p, axis=-1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=-1) * (m - np.arange(m))
    adjusted = np.minimum(1.0, np.maximum.accumulate(ranked, axis=-1))
    out = np.empty_like(adjusted)
    np.put_along_axis(out, order, adjusted, axis=-1)
    return out


def holm_decide(p_support: np.ndarray, p_refute: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Per part (last axis), after Holm in each direction: (supported, not supported) masks."""
    return holm(p_support) <= alpha, holm(p_refute) <= alpha


def claim_decide(p_support: np.ndarray, p_refute: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """A claim of several statistical parts (last axis): (supported, not supported) — every part
    supported after Holm / at least one part refuted after Holm."""
    supported, refuted = holm_decide(p_support, p_refute, alpha)
    return supported.all(axis=-1) & ~refuted.any(axis=-1), refuted.any(axis=-1)


def correlation_p(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-sided p-values (r > 0, r < 0) of Pearson's r along the last axis (t with n − 2 df)."""
    n = x.shape[-1]
    xc, yc = x - x.mean(axis=-1, keepdims=True), y - y.mean(axis=-1, keepdims=True)
    r = (xc * yc).sum(-1) / np.sqrt((xc**2).sum(-1) * (yc**2).sum(-1))
    r = np.clip(r, -1.0, 1.0)
    with np.errstate(divide="ignore"):
        t = r * np.sqrt((n - 2) / np.maximum(1 - r**2, 0.0))
    return stats.t.sf(t, n - 2), stats.t.cdf(t, n - 2)
