"""Bracket refinement: bisect the gap between a family's largest miss and its smallest hold above it.

Within a family (budgets that differ only in keep or tau) accuracy does not rise as the ratio falls, so a
family's miss and a hold above it bracket its frontier. Bisecting the bracket finds the family's cheapest
holding budget in about log2(bracket / tolerance) trials, where TPE, which knows nothing of the monotone
order, walks down from the hold one feasible (and so full-length, confirmed) trial at a time. TPE finds
families; bisection takes each found one to its frontier.

A family whose candidate met the floor on the search part and then failed its confirmation is at its frontier,
but without a hold above it there is no bracket. Once a budget is confirmed, such a family is *probed* at the
largest keep that it is not within `COST_TOLERANCE` of: a hold there opens the bracket, a miss closes the
family. (On the demo at 2048 tokens the frontier family is often one whose first candidate failed confirmation.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..profile.budget import Budget
from .confirm import family

__all__ = ["COST_TOLERANCE", "Bisection", "Outcome", "midpoint", "probe", "worth_below"]

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
    near: bool = False  # met the floor on the search part, then failed its confirmation (so `held` is False)


@dataclass(frozen=True)
class Bisection:
    """The next trial to run: its parameters, and the trials (a miss, a hold) whose bracket it halves; for a
    probe, the family's confirmation failure and the confirmed budget (of another family) it must beat."""

    params: dict[str, Any]
    low: int
    high: int
    probe: bool = False


def _frontiers(outcomes: Sequence[Outcome]) -> list[tuple[Outcome, Outcome | None]]:
    """Per top-k family with a miss: its largest miss, and the smallest hold above it (None if none)."""
    out = []
    for fam in dict.fromkeys(family(o.budget) for o in outcomes if o.budget.method == "topk"):
        members = [o for o in outcomes if family(o.budget) == fam]
        misses = [o for o in members if not o.held]
        if not misses:
            continue
        low = max(misses, key=lambda o: (o.budget.ratio, -o.number))
        above = [o for o in members if o.held and o.budget.ratio > low.budget.ratio]
        out.append((low, min(above, key=lambda o: (o.budget.ratio, o.number)) if above else None))
    return out


def midpoint(outcomes: Sequence[Outcome], cost: Callable[[Budget], float], ceiling: float | None,
             tried: set[tuple], chosen: int | None = None) -> Bisection | None:
    """The next bisection trial, or None when every bracket is closed and no family is left to probe.

    A family's bracket is (its largest missing keep, the smallest holding keep above it); families are taken
    cheapest hold first. The midpoint is geometric (keep is searched on a log scale). A midpoint that plans to
    cost what an end does keeps that end's block counts (at short lengths a row has few blocks), so it stands
    in for that end and the other half is bisected instead, without a trial. A bracket is closed when its ends
    plan to cost within `COST_TOLERANCE`, when no keep between them plans another cost, when the midpoint
    would not save `COST_TOLERANCE` on `ceiling` (the budget already confirmed: the trial would be pruned), or when a
    trial with the midpoint's parameters exists (`tried`: parameter tuples of every trial, so a pruned or
    reused midpoint is never proposed again).

    With every bracket closed, the next probe (`probe`) when a budget is confirmed (`ceiling`, trial `chosen`).

    Top-k only: a coverage budget's planned cost is its sink and local floor whatever its tau, so its brackets
    cannot be told apart by cost before they run.
    """
    brackets = [(low, top) for low, top in _frontiers(outcomes) if top is not None]
    for low, top in sorted(brackets, key=lambda b: (cost(b[1].budget), b[1].budget.ratio)):
        lo_cost, hi_cost = cost(low.budget), cost(top.budget)
        if hi_cost - lo_cost <= COST_TOLERANCE * hi_cost:
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
        params = {**low.params, "keep": mid}
        if not lo < mid < hi or tuple(sorted(params.items())) in tried:
            continue
        if ceiling is not None and at >= worth_below(ceiling):
            continue
        return Bisection(params, low.number, top.number)
    return None if ceiling is None or chosen is None else probe(outcomes, cost, ceiling, tried, chosen)


def probe(outcomes: Sequence[Outcome], cost: Callable[[Budget], float], ceiling: float, tried: set[tuple],
          chosen: int) -> Bisection | None:
    """The next family probe, or None: for a family whose largest miss failed confirmation (`Outcome.near`) and
    which holds nowhere above it, the largest keep (to 4 decimals) that plans to cost under `worth_below(ceiling)`.
    The family with the cheapest near miss goes first; a probe tried already (`tried`) is not proposed again, so a
    family is probed once per confirmed cost."""
    found, limit = [], worth_below(ceiling)
    for low, top in _frontiers(outcomes):
        if not low.near or top is not None:
            continue
        lo, hi = low.budget.ratio, 1.0  # cost rises with keep: bisect for the largest keep under the limit
        if cost(low.budget) >= limit:
            continue
        for _ in range(20):
            if cost(low.budget.with_ratio((lo + hi) / 2)) < limit:
                lo = (lo + hi) / 2
            else:
                hi = (lo + hi) / 2
        keep = math.floor(lo * 10_000) / 10_000
        params = {**low.params, "keep": keep}
        if cost(low.budget.with_ratio(keep)) <= cost(low.budget) or tuple(sorted(params.items())) in tried:
            continue  # no keep above the miss keeps more blocks and could still win, or probed already
        found.append((cost(low.budget), low.number, params))
    if not found:
        return None
    _, number, params = min(found, key=lambda f: (f[0], f[1]))
    return Bisection(params, number, chosen, probe=True)
