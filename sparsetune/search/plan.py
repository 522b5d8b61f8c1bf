"""What a budget will do on a bucket, known before it runs: its kept-block counts and its density.

A top-k budget keeps ``max(ceil(keep * visible), always-kept)`` blocks of each row whatever the scores
(`attention.select`), so its block counts, and so its cost, follow from the block size, sink, local, dense
tail and keep alone. Two budgets of one family whose counts agree at every row length the bucket can see
keep the same blocks everywhere: the second needs no evaluation (`mask_key`). A budget whose planned cost
is not below one already confirmed for the bucket cannot make the profile cheaper: it need not run
(`planned_density`).
Coverage budgets keep a data-dependent count, so only their always-kept blocks are known: their key is
their own and their planned density a lower bound.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from functools import lru_cache

from ..profile.budget import Budget

__all__ = ["Shape", "dense_shares", "kept_blocks", "mask_key", "planned_density"]

# (prompt tokens, answer tokens) of one sample: a prefill of the prompt, then one decode step per answer token.
Shape = tuple[int, int]

_CEIL_EPS = 1e-9  # as attention.select: keep * visible within EPS of an integer is that integer


def _always(budget: Budget, visible: int) -> int:
    """Always-kept blocks of a row with `visible` blocks: the sink ones and the local ones (with the diagonal).
    The sink is a prefix of the row and the local blocks a suffix, so they overlap by max(0, a + b - visible) for
    a = min(sink, visible) and b = min(local, visible), and their union is min(visible, a + b)."""
    return min(visible, min(budget.sink, visible) + min(budget.local, visible))


def kept_blocks(budget: Budget, visible: int) -> int:
    """Blocks a sparse row with `visible` visible blocks keeps (top-k exactly; coverage: at least)."""
    if budget.is_dense:
        return visible
    floor = _always(budget, visible)
    if budget.method == "topk":
        floor = max(floor, max(math.ceil(visible * budget.keep - _CEIL_EPS), 1))
    return min(visible, floor)


def _rows(shape: Shape, block_size: int, dense_tail: int) -> list[tuple[int, bool]]:
    """(visible blocks, dense) of every row the sample's forwards compute: the prefill's query blocks, then
    each decode step's single query (dense when the budget keeps a dense tail, as select does)."""
    prompt, answer = shape
    blocks = math.ceil(prompt / block_size)
    rows = [(v, v > blocks - dense_tail) for v in range(1, blocks + 1)]
    rows += [(math.ceil((prompt + t) / block_size), dense_tail > 0) for t in range(1, answer)]
    return rows


@lru_cache(maxsize=64)
def _row_counts(shapes: tuple[Shape, ...], block_size: int, dense_tail: int) -> tuple[tuple[int, bool, int], ...]:
    """(visible blocks, dense, how many) over every row of the samples' forwards: a search plans hundreds of
    budgets on one bucket's shapes, and rows of one length keep one count."""
    rows = Counter(row for shape in shapes for row in _rows(shape, block_size, dense_tail))
    return tuple((v, dense, n) for (v, dense), n in sorted(rows.items()))


def planned_density(budget: Budget, shapes: Sequence[Shape]) -> float:
    """Kept over visible key blocks of the bucket's forwards under `budget` (as `AttentionStats` counts them,
    padding aside): exact for top-k, a lower bound for coverage."""
    kept = visible = 0
    for v, dense, n in _row_counts(tuple(shapes), budget.block_size, budget.dense_tail):
        visible += n * v
        kept += n * (v if dense else kept_blocks(budget, v))
    return kept / visible if visible else 1.0


def mask_key(budget: Budget, shapes: Sequence[Shape]) -> Hashable:
    """Equal for two budgets that keep the same blocks in every forward of these samples (same ranking,
    same counts per row length); a coverage budget's key is its own."""
    ranking = (budget.method, budget.estimator, budget.stride, budget.block_size, budget.sink, budget.local,
               budget.dense_layers, budget.dense_tail)
    if budget.method != "topk" or budget.is_dense:
        return (*ranking, budget.ratio)
    longest = max((math.ceil((p + a) / budget.block_size) for p, a in shapes), default=0)
    return (*ranking, tuple(kept_blocks(budget, v) for v in range(1, longest + 1)))


def dense_shares(prompt_lengths: Sequence[Sequence[int]]) -> list[float]:
    """Each bucket's share of the workload's dense attention FLOPs, given its prompts' lengths (a prefill
    attends L^2/2 pairs): the most that any budget there could save of the whole (`SearchSettings.min_share`)."""
    flops = [sum(length * length for length in lengths) for lengths in prompt_lengths]
    return [f / sum(flops) for f in flops]
