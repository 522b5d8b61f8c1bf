"""Bracket refinement: bisect the gap between a family's largest miss and its smallest hold above it.

Within a family (budgets that differ only in keep or tau) accuracy does not rise as the ratio falls, so a
family's miss and a hold above it bracket its frontier. Bisecting the bracket finds the family's cheapest
holding budget in about log2(bracket / tolerance) trials, where TPE, which knows nothing of the monotone
order, walks down from the hold one feasible (and so full-length, confirmed) trial at a time. TPE finds
families; bisection takes each found one to its frontier.

Every family holds at keep 1, which keeps every block: the dense trial measured it. So a family with a miss
and no hold above it is bracketed by its miss and the dense trial, and a miss found by TPE or an anchor
opens a bisection upward. (On the demo at 1,024 tokens every cheap point misses, and the few that hold lie
at keep 0.5 and above in families the anchors do not try: bisection from TPE's misses finds them in a few
trials where TPE alone took about 50.) A midpoint that would not save `COST_TOLERANCE` on the budget already
confirmed moves down to the largest keep that would: a hold there narrows the bracket, a miss closes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..profile.budget import Budget
from .confirm import family

__all__ = ["COST_TOLERANCE", "Bisection", "Outcome", "midpoint", "worth_below"]

# A bracket is closed once its ends' planned costs are within this share of the upper end's, and a trial is run
# only if the budget already confirmed is not within this share of its cost: the search-efficiency target
# counts a trial within 5% of the optimum as found.
COST_TOLERANCE = 0.05


def worth_below(confirmed: float) -> float:
    """The planned cost a trial must stay under to be worth running once a budget costing `confirmed` holds: at or
    above it, `confirmed` is already within `COST_TOLERANCE` of the trial's cost."""
    return confirmed / (1 + COST_TOLERANCE) - 1e-12


@dataclass(frozen=True)
class Outcome:
    """What one measured trial says about its family: its parameters, budget, and whether it held (met the
    floor on the search part and did not fail its confirmation)."""

    number: int  # the trial's
    params: dict[str, Any]
    budget: Budget
    held: bool


@dataclass(frozen=True)
class Bisection:
    """The next trial to run: its parameters, and the trials (a miss, a hold: the dense trial where its family
    holds nowhere above the miss) whose bracket it halves."""

    params: dict[str, Any]
    low: int
    high: int


def _frontiers(outcomes: Sequence[Outcome], dense: int | None) -> list[tuple[Outcome, Outcome]]:
    """Per top-k family with a miss: its largest miss, and the smallest hold above it; where none holds above,
    keep 1 measured by the dense trial (number `dense`; no bracket when None)."""
    out = []
    for fam in dict.fromkeys(family(o.budget) for o in outcomes if o.budget.method == "topk"):
        members = [o for o in outcomes if family(o.budget) == fam]
        misses = [o for o in members if not o.held]
        if not misses:
            continue
        low = max(misses, key=lambda o: (o.budget.ratio, -o.number))
        above = [o for o in members if o.held and o.budget.ratio > low.budget.ratio]
        if above:
            out.append((low, min(above, key=lambda o: (o.budget.ratio, o.number))))
        elif dense is not None:
            out.append((low, Outcome(dense, {**low.params, "keep": 1.0}, low.budget.with_ratio(1.0), True)))
    return out


def midpoint(outcomes: Sequence[Outcome], cost: Callable[[Budget], float], ceiling: float | None,
             tried: set[tuple], dense: int | None = None) -> Bisection | None:
    """The next bisection trial, or None when every bracket is closed.

    A family's bracket is (its largest missing keep, the smallest holding keep above it, or keep 1, which the
    dense trial `dense` measured); families are taken cheapest hold first. The midpoint is geometric (keep is
    searched on a log scale). A midpoint that plans to cost what an end does keeps that end's block counts (at
    short lengths a row has few blocks), so it stands in for that end and the other half is bisected instead,
    without a trial. A midpoint that would not save `COST_TOLERANCE` on `ceiling` (the budget already
    confirmed) moves down to the largest keep (to 4 decimals) that would. A bracket is closed when its ends
    plan to cost within `COST_TOLERANCE`, when no keep between them plans another cost, when its miss already
    could not save the tolerance on `ceiling`, or when a trial with the midpoint's parameters exists (`tried`:
    parameter tuples of every trial, so a pruned or reused midpoint is never proposed again).

    Top-k only: a coverage budget's planned cost is its sink and local floor whatever its tau, so its brackets
    cannot be told apart by cost before they run.
    """
    limit = math.inf if ceiling is None else worth_below(ceiling)
    for low, top in sorted(_frontiers(outcomes, dense), key=lambda b: (cost(b[1].budget), b[1].budget.ratio)):
        lo_cost, hi_cost = cost(low.budget), cost(top.budget)
        if hi_cost - lo_cost <= COST_TOLERANCE * hi_cost or lo_cost >= limit:
            continue
        lo, hi = low.budget.ratio, top.budget.ratio
        while True:
            mid = round(math.sqrt(lo * hi), 4)
            if not lo < mid < hi:
                break  # no keep between the ends plans another cost
            at = cost(low.budget.with_ratio(mid))
            if at == lo_cost:
                lo = mid
            elif at == hi_cost:
                hi = mid
            else:
                break
        if not lo < mid < hi:
            continue
        if at >= limit:
            mid = _largest_under(low.budget, cost, limit, lo, mid)
            if mid is None or cost(low.budget.with_ratio(mid)) <= lo_cost:
                continue  # no keep above the miss keeps more blocks and could still win
        params = {**low.params, "keep": mid}
        if tuple(sorted(params.items())) in tried:
            continue
        return Bisection(params, low.number, top.number)
    return None


def _largest_under(budget: Budget, cost: Callable[[Budget], float], limit: float, lo: float,
                   hi: float) -> float | None:
    """The largest keep in (lo, hi), to 4 decimals, whose budget plans to cost under `limit` (cost rises with
    keep), or None."""
    for _ in range(30):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cost(budget.with_ratio(mid)) < limit else (lo, mid)
    keep = math.floor(lo * 10_000) / 10_000
    return keep if keep > 0 and cost(budget.with_ratio(keep)) < limit else None
