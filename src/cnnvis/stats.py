"""Uncertainty for claims tables: 95 % intervals over images (bootstrap, Wilson) or over seeds/folds (Student t),
and one printed form for every estimate, so a verdict is decided on an interval and a reader sees n.

Rules of thumb used across the experiments: a mean over images gets a percentile bootstrap interval; a proportion
gets a Wilson score interval; a mean over a handful of seeds or folds gets a t interval (a bootstrap over 3 values
is meaningless, so below ``MIN_RANGE_N`` values ``bootstrap_mean`` gives the t interval); one run prints ``n = 1``
and no interval, never ``± 0.0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as _stats

LEVEL = 0.95
N_BOOT = 10_000
# A percentile interval never leaves the sample's range, and the range of n draws covers even the median only with
# probability 1 - 2 ** (1 - n) (the order-statistic interval): fewer values than this cannot reach LEVEL (6 at 95 %).
# Below it the t interval, which Hesterberg (2015, Am. Stat. 69:371) finds more accurate for small samples.
MIN_RANGE_N = int(np.ceil(1 + np.log2(1 / (1 - LEVEL))))


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95 % interval (``lo``/``hi`` are NaN when n = 1) over ``n`` samples."""

    value: float
    lo: float
    hi: float
    n: int

    @property
    def has_interval(self) -> bool:
        return self.n > 1 and np.isfinite(self.lo) and np.isfinite(self.hi)

    def above(self, threshold: float) -> bool:
        """The whole interval lies above ``threshold`` (never true without an interval)."""
        return self.has_interval and self.lo > threshold

    def below(self, threshold: float) -> bool:
        """The whole interval lies below ``threshold`` (never true without an interval)."""
        return self.has_interval and self.hi < threshold

    def format(self, digits: int = 3, scale: float = 1.0) -> str:
        """'0.936 [0.921, 0.949] (n = 1389)'; one sample: '0.936 (n = 1)'."""
        v = f"{self.value * scale:.{digits}f}"
        if not self.has_interval:
            return f"{v} (n = {self.n})"
        return f"{v} [{self.lo * scale:.{digits}f}, {self.hi * scale:.{digits}f}] (n = {self.n})"

    def __str__(self) -> str:
        return self.format()


def _clean(values) -> np.ndarray:
    values = np.asarray(values, dtype=float).ravel()
    return values[np.isfinite(values)]


def bootstrap_mean(values, seed: int = 0, n_boot: int = N_BOOT) -> Estimate:
    """Mean with a percentile bootstrap interval (resampling the values, e.g. images, with replacement); fewer than
    ``MIN_RANGE_N`` values get the Student-t interval (``t_mean``), since no percentile interval of so few reaches
    95 % coverage."""
    values = _clean(values)
    n = len(values)
    if n < MIN_RANGE_N:
        return t_mean(values)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 1000):  # chunks keep memory at 1000 x n
        stop = min(start + 1000, n_boot)
        means[start:stop] = values[rng.integers(0, n, (stop - start, n))].mean(1)
    lo, hi = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return Estimate(float(values.mean()), float(lo), float(hi), n)


def paired_difference(a, b, seed: int = 0) -> Estimate:
    """Mean of a - b over paired samples (the same images) with a bootstrap interval over the pairs."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.shape} vs {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    return bootstrap_mean(a[keep] - b[keep], seed)


def proportion(successes, n: int | None = None) -> Estimate:
    """A share with its Wilson score interval: ``proportion(bools)`` or ``proportion(k, n)``."""
    if n is None:
        flags = np.asarray(successes, dtype=bool).ravel()
        k, n = int(flags.sum()), len(flags)
    else:
        k = int(successes)
    if n == 0:
        raise ValueError("a proportion of nothing")
    z = _stats.norm.ppf((1 + LEVEL) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Estimate(p, float(max(0.0, centre - half)), float(min(1.0, centre + half)), n)


def t_mean(values) -> Estimate:
    """Mean over a few runs (seeds, folds) with a Student-t interval; one run has none."""
    values = _clean(values)
    n = len(values)
    if n == 0:
        raise ValueError("no finite values to estimate a mean from")
    mean = float(values.mean())
    if n == 1:
        return Estimate(mean, float("nan"), float("nan"), 1)
    half = _stats.t.ppf((1 + LEVEL) / 2, n - 1) * values.std(ddof=1) / np.sqrt(n)
    return Estimate(mean, mean - half, mean + half, n)


def slopes(values) -> np.ndarray:
    """Per row of ``values`` (samples x steps), the least-squares slope over the step index 0, 1, 2, ... (a trend
    over all steps, not the last minus the first); a row with a non-finite value gives NaN."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    if values.shape[1] < 2:
        raise ValueError("a slope needs at least two steps")
    steps = np.arange(values.shape[1]) - (values.shape[1] - 1) / 2
    return (values - values.mean(1, keepdims=True)) @ steps / (steps @ steps)
