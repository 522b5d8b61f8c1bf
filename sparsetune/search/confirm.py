"""Selection with confirmation: split each bucket, then re-measure the cheapest candidates on fresh samples.

The cheapest budget that met the floor on the samples the search explored met it partly by luck
(the winner's curse: among many budgets near the edge, the one that scraped past is chosen). So
each bucket's samples are split, per task, into a search part, which Optuna explores, and a
confirmation part, which only judges. Candidates (budgets feasible on the search part) are
confirmed in cost order and the profile takes the first that meets the floor on the confirmation
part too.

Accuracy does not rise as keep (or tau) falls at a fixed block size, sink and local, so a
candidate of the same family that keeps no more than a confirmed failure is not worth confirming:
it is skipped without being evaluated.

`walk` is the one rule that decides, used both by the search (which evaluates what it asks for)
and by the profile writer (which only reads stored confirmations), so every worker and `collect`
choose the same budget.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ..profile import Budget

__all__ = ["CONFIRM_FRACTION", "CONFIRM_LIMIT", "Candidate", "Walk", "family", "keeps_no_more", "split_for_confirmation",
           "walk"]

CONFIRM_FRACTION = 1 / 3  # share of each bucket's samples (per task) kept for confirmation: search:confirm = 2:1
CONFIRM_LIMIT = 6  # after this many failed confirmations below the choice, nothing cheaper is confirmed

S = TypeVar("S")


def _key(sample: object) -> str:
    ids = getattr(sample, "input_ids")
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def split_for_confirmation(samples: Sequence[S], fraction: float = CONFIRM_FRACTION) -> tuple[list[S], list[S]]:
    """(search part, confirmation part) of one bucket, stratified by task.

    Samples are ordered by task, then by a hash of their tokens, and evenly spaced positions of that
    order go to confirmation (`fraction` of them, at least one when there are two or more samples):
    each task gets its share, and the split depends on the samples alone, not on their order in the
    file or a seed, so every worker and every resumed run splits the same way.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"fraction: must be in (0, 1), got {fraction!r}")
    order = sorted(samples, key=lambda s: (getattr(s, "task"), _key(s)))
    n = len(order)
    take = max(1, round(n * fraction)) if n >= 2 else 0
    picks = {int((j + 0.5) * n / take) for j in range(take)}
    search = [s for i, s in enumerate(order) if i not in picks]
    confirm = [s for i, s in enumerate(order) if i in picks]
    # Tasks interleaved (hash order), so an early stop after a few batches has seen several tasks.
    return sorted(search, key=_key), sorted(confirm, key=_key)


def family(budget: Budget) -> tuple:
    """Budgets that differ only in keep (or tau): their kept blocks are nested, so accuracy is monotone in it."""
    b = budget
    return (b.method, b.estimator, b.stride, b.block_size, b.sink, b.local, b.dense_layers, b.dense_tail)


def keeps_no_more(budget: Budget, other: Budget) -> bool:
    """`budget` keeps a subset of `other`'s blocks (same family, no larger keep or tau), so where `other` missed
    the floor `budget` cannot hold: the rule the walk and the search's pruning share."""
    return family(budget) == family(other) and budget.ratio <= other.ratio


@dataclass(frozen=True)
class Candidate:
    """A budget feasible on the search part, identified by its trial number."""

    number: int
    cost: float
    budget: Budget

    @property
    def ratio(self) -> float:
        b = self.budget
        return b.ratio


@dataclass(frozen=True)
class Walk:
    """Where the walk through the candidates stopped."""

    chosen: Candidate | None = None  # the first candidate that held on the confirmation part
    missing: Candidate | None = None  # the next candidate to evaluate (its confirmation is not known yet)
    confirmed: tuple[Candidate, ...] = ()  # evaluated, in order (the last is `chosen` when there is one)
    pruned: tuple[Candidate, ...] = ()  # skipped: no more keep than a confirmed failure of their family
    failed: tuple[Candidate, ...] = ()
    spent: bool = False  # `limit` candidates cheaper than the choice failed: no cheaper one will be confirmed

    @property
    def done(self) -> bool:
        return self.missing is None


def walk(candidates: Sequence[Candidate], held: Mapping[int, bool], limit: int = CONFIRM_LIMIT) -> Walk:
    """Go through `candidates` cheapest first; `held[number]` is a stored confirmation verdict.

    Stops at the first candidate that held (chosen), or at the first one without a stored verdict while
    fewer than `limit` cheaper candidates failed (missing: evaluate it and walk again). After `limit`
    failures no other candidate is confirmed, but a stored hold further up is still chosen: a candidate that
    held stays chosen when cheaper ones found after it fail (stopping the walk there instead would leave
    the bucket dense with a held candidate). Duplicate budgets count once (the earliest trial).
    """
    seen: dict[Budget, Candidate] = {}
    for c in sorted(candidates, key=lambda c: (c.cost, c.number)):
        if c.budget not in seen or c.number < seen[c.budget].number:
            seen[c.budget] = c
    order = sorted(seen.values(), key=lambda c: (c.cost, -c.ratio, c.number))
    confirmed: list[Candidate] = []
    failed: list[Candidate] = []
    pruned: list[Candidate] = []
    for c in order:
        if any(keeps_no_more(c.budget, f.budget) for f in failed):
            pruned.append(c)
            continue
        if c.number not in held:
            if len(failed) >= limit:
                continue
            return Walk(missing=c, confirmed=tuple(confirmed), pruned=tuple(pruned), failed=tuple(failed))
        confirmed.append(c)
        if held[c.number]:
            return Walk(chosen=c, confirmed=tuple(confirmed), pruned=tuple(pruned), failed=tuple(failed),
                        spent=len(failed) >= limit)
        failed.append(c)
    return Walk(confirmed=tuple(confirmed), pruned=tuple(pruned), failed=tuple(failed), spent=len(failed) >= limit)
