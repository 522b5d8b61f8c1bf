"""Pure statistics (standard library only): exact binomial bounds and the paired dense/sparse difference."""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["PairedBounds", "clopper_pearson_lower", "clopper_pearson_upper", "losses_allowed", "paired_bounds",
           "samples_needed"]


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (n can be thousands)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def clopper_pearson_lower(successes: int, trials: int, confidence: float) -> float:
    """One-sided Clopper–Pearson lower bound for a binomial proportion.

    The p with P(X >= successes | trials, p) = 1 - confidence (the Beta(k, n-k+1) quantile), found by
    bisection on the binomial tail, which is increasing in p; 0 when there are no successes.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes: must be in [0, {trials}], got {successes}")
    if successes == 0:
        return 0.0
    alpha = 1.0 - confidence
    lo, hi = 0.0, 1.0
    for _ in range(60):  # 2**-60: far below any accuracy we report
        mid = (lo + hi) / 2
        if _binom_sf(successes, trials, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


def clopper_pearson_upper(successes: int, trials: int, confidence: float) -> float:
    """One-sided Clopper–Pearson upper bound for a binomial proportion (1 when all trials succeed)."""
    return 1.0 - clopper_pearson_lower(trials - successes, trials, confidence)

def _restricted_loss_rate(b: int, c: int, n: int, delta: float) -> float:
    """The maximum-likelihood P(dense right, sparse wrong) given P(sparse right, dense wrong) minus it is
    `delta` (the trinomial likelihood is concave in it, so its derivative is bisected)."""
    m = n - b - c
    lo, hi = max(0.0, -delta), (1.0 - delta) / 2
    if hi - lo < 1e-15:
        return lo
    for _ in range(80):
        p = (lo + hi) / 2
        slope = (b / p if b else 0.0) + (c / (p + delta) if c else 0.0) - (2 * m / (1 - 2 * p - delta) if m else 0.0)
        if slope > 0:
            lo = p
        else:
            hi = p
    return (lo + hi) / 2


def _score_z(b: int, c: int, n: int, delta: float) -> float:
    """Tango's score statistic for H0: (sparse - dense accuracy) = delta, from the discordant counts."""
    p = _restricted_loss_rate(b, c, n, delta)
    variance = (2 * p + delta - delta * delta) / n  # Var of one (sparse - dense) in {-1, 0, 1} under H0
    diff = (c - b) / n
    if variance <= 0:
        return 0.0 if diff == delta else math.copysign(math.inf, diff - delta)
    return (diff - delta) / math.sqrt(variance)


@dataclass(frozen=True)
class PairedBounds:
    """One-sided score bounds (Tango 1998) on sparse minus dense accuracy from paired per-sample results.

    Unlike an interval conditional on the discordant pairs, it does not shrink to the point estimate when
    sparse never beats dense (with no losses and no gains at all the lower bound is -z^2 / (n + z^2)), and
    it credits the samples sparse gets right that dense misses, with their own uncertainty.
    """

    n: int
    lost: int  # dense right, sparse wrong
    gained: int  # dense wrong, sparse right
    lower: float  # of the difference, at `confidence`
    upper: float
    confidence: float


def paired_bounds(dense: Sequence[bool], sparse: Sequence[bool], confidence: float) -> PairedBounds:
    """Tango's score bounds on accuracy(sparse) - accuracy(dense), each one-sided at `confidence`."""
    if len(dense) != len(sparse):
        raise ValueError(f"paired samples: dense has {len(dense)} results, sparse {len(sparse)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")
    b = sum(1 for d, s in zip(dense, sparse) if d and not s)
    c = sum(1 for d, s in zip(dense, sparse) if s and not d)
    return _bounds(b, c, len(dense), confidence)


@functools.lru_cache(maxsize=4096)  # a search asks for the same few counts thousands of times
def _bounds(b: int, c: int, n: int, confidence: float) -> PairedBounds:
    """`paired_bounds` from the counts: `b` lost, `c` gained of `n` paired samples."""
    if n == 0:
        return PairedBounds(0, 0, 0, -1.0, 1.0, confidence)
    z = statistics.NormalDist().inv_cdf(confidence)
    diff = (c - b) / n

    def solve(lo: float, hi: float, target: float) -> float:
        # The score statistic falls as delta rises: bisect for where it crosses `target`.
        for _ in range(60):
            mid = (lo + hi) / 2
            if _score_z(b, c, n, mid) > target:
                lo = mid
            else:
                hi = mid
        return (lo + hi) / 2

    return PairedBounds(n, b, c, solve(-1.0, diff, z), solve(diff, 1.0, -z), confidence)


def losses_allowed(n: int, dense_right: int, ratio: float, confidence: float) -> int:
    """The most samples sparse may lose (gaining none) on `n` paired samples, `dense_right` of which dense
    gets right, with the lower bound still meeting ``ratio x dense accuracy``; -1 when even losing none
    cannot show it (too few samples)."""
    lost = -1
    slack = (1 - ratio) * dense_right / n
    while lost + 1 <= dense_right and _bounds(lost + 1, 0, n, confidence).lower >= -slack - 1e-12:
        lost += 1
    return lost


def samples_needed(ratio: float, dense_accuracy: float, confidence: float) -> int:
    """The fewest samples with which losing none shows ``sparse >= ratio x dense``: the score bound with
    no discordant pair is -z^2 / (n + z^2), so n >= z^2 (1 - slack) / slack, slack = (1 - ratio) x dense."""
    slack = (1 - ratio) * dense_accuracy
    if slack <= 0:
        raise ValueError("ratio: a floor of 1 x dense can never be shown on finite samples")
    z = statistics.NormalDist().inv_cdf(confidence)
    return math.ceil(z * z * (1 - slack) / slack - 1e-9)
