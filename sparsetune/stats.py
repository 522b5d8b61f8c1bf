"""Pure statistics (standard library only): exact binomial bounds and the paired dense/sparse difference."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["PairedDifference", "Retention", "base_needed", "clopper_pearson_lower", "clopper_pearson_upper",
           "losses_allowed", "paired_lower_bound", "retention"]


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


@dataclass(frozen=True)
class PairedDifference:
    """Sparse minus dense accuracy on the same samples, with a one-sided lower confidence bound."""

    n: int
    dense_only: int  # b: dense right, sparse wrong
    sparse_only: int  # c: dense wrong, sparse right
    dense_accuracy: float
    sparse_accuracy: float
    difference: float  # point estimate (c - b) / n
    lower_bound: float  # the difference is >= this with probability `confidence`
    confidence: float

    @property
    def sparse_lower_bound(self) -> float:
        """Lower bound of sparse accuracy: dense accuracy plus the difference's lower bound."""
        return self.dense_accuracy + self.lower_bound

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sparse_lower_bound": self.sparse_lower_bound}


def paired_lower_bound(dense: Sequence[bool], sparse: Sequence[bool], confidence: float = 0.9) -> PairedDifference:
    """Exact lower bound on accuracy(sparse) - accuracy(dense) from the discordant pairs.

    With b = #(dense right, sparse wrong), c = #(dense wrong, sparse right), n_d = b + c and
    p = c / n_d, the difference is (c - b) / n = n_d / n * (2p - 1). Conditional on n_d, c is
    Binomial(n_d, p); the one-sided Clopper–Pearson lower bound p_L at `confidence` gives
    ``lower_bound = n_d / n * (2 p_L - 1)``. With no discordant pairs both are 0.

    The bound is conditional on n_d, so it never falls below -n_d / n: it says how sure we are
    that the discordant pairs lean one way, not how many there would be on more samples.
    """
    if len(dense) != len(sparse):
        raise ValueError(f"paired samples: dense has {len(dense)} results, sparse {len(sparse)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")
    n = len(dense)
    b = sum(1 for d, s in zip(dense, sparse) if d and not s)
    c = sum(1 for d, s in zip(dense, sparse) if s and not d)
    nd = b + c
    if n == 0 or nd == 0:
        diff = lower = 0.0
    else:
        diff = (c - b) / n
        lower = nd / n * (2 * clopper_pearson_lower(c, nd, confidence) - 1)
    return PairedDifference(
        n=n, dense_only=b, sparse_only=c,
        dense_accuracy=sum(map(bool, dense)) / n if n else 0.0,
        sparse_accuracy=sum(map(bool, sparse)) / n if n else 0.0,
        difference=diff, lower_bound=lower, confidence=confidence)


def clopper_pearson_upper(successes: int, trials: int, confidence: float) -> float:
    """One-sided Clopper–Pearson upper bound for a binomial proportion (1 when all trials succeed)."""
    return 1.0 - clopper_pearson_lower(trials - successes, trials, confidence)


@dataclass(frozen=True)
class Retention:
    """How many of the samples dense gets right sparse keeps right, with exact one-sided bounds.

    Retention r = P(sparse right | dense right). Sparse accuracy is at least r x dense accuracy
    (sparse may also fix some of dense's misses), so ``lower >= f`` shows a relative floor f holds
    and ``upper < f`` shows it is broken, at `confidence`, whether or not sparse ever beats dense.
    """

    kept: int  # dense right and sparse right
    base: int  # dense right
    gained: int  # dense wrong, sparse right (not credited by the bounds)
    lower: float
    upper: float
    confidence: float

    @property
    def point(self) -> float:
        return self.kept / self.base if self.base else 1.0


def retention(dense: Sequence[bool], sparse: Sequence[bool], confidence: float) -> Retention:
    """Exact Clopper–Pearson bounds on retention from paired per-sample results."""
    if len(dense) != len(sparse):
        raise ValueError(f"paired samples: dense has {len(dense)} results, sparse {len(sparse)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")
    base = sum(1 for d in dense if d)
    kept = sum(1 for d, s in zip(dense, sparse) if d and s)
    gained = sum(1 for d, s in zip(dense, sparse) if s and not d)
    if base == 0:
        return Retention(kept, base, gained, 1.0, 1.0, confidence)  # nothing to lose
    return Retention(kept, base, gained, clopper_pearson_lower(kept, base, confidence),
                     clopper_pearson_upper(kept, base, confidence), confidence)


def losses_allowed(base: int, ratio: float, confidence: float) -> int:
    """The most of `base` dense-right samples sparse may lose with the lower bound of retention still
    >= `ratio`; -1 when even losing none cannot show it (too few samples)."""
    lost = -1
    while lost + 1 < base and clopper_pearson_lower(base - lost - 1, base, confidence) >= ratio:
        lost += 1
    return lost


def base_needed(ratio: float, confidence: float) -> int:
    """The fewest dense-right samples with which losing none shows retention >= `ratio`:
    ``confidence``-level lower bound of n/n is (1 - confidence)^(1/n)."""
    if ratio >= 1.0:
        raise ValueError("ratio: a floor of 1 can never be shown on finite samples")
    return math.ceil(math.log(1.0 - confidence) / math.log(ratio) - 1e-9)
