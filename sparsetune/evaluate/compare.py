"""Dense vs sparse per length bucket and task, from one paired run (what `sparsetune eval` prints)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import BudgetError
from ..profile.budget import Budget
from ..profile.profile import Profile, load_profile
from ..profile.buckets import bucket_index
from ..runtime.hf_attention import Policy
from ..profile.floor import measure_floor
from ..profile.profile import Floor
from ..workload.files import TokenSample
from ..workload.models import LoadedModel
from .decode import DEFAULT_BATCH_SIZE, evaluate

__all__ = ["BucketComparison", "compare", "eval_policy"]


def eval_policy(profile: str | os.PathLike[str] | None, budget: str | None,
                edges: Sequence[int] | None = None) -> tuple[Profile | Budget, Sequence[int] | None]:
    """The policy `sparsetune eval` compares with dense: a profile file or a fixed budget (exactly one),
    and the bucket edges of its table: `edges` if given, else a profile's own, else None (one bucket)."""
    if (profile is None) == (budget is None):
        raise BudgetError("eval: give exactly one of --profile and --budget")
    if profile is not None:
        loaded = load_profile(profile)
        return loaded, edges if edges is not None else loaded.edges
    return Budget.parse(budget), edges  # type: ignore[arg-type]


@dataclass(frozen=True)
class BucketComparison:
    """Dense and sparse accuracy of one length bucket (or one task within it), from one paired run."""

    first: int  # shortest length in the bucket's range
    last: int  # longest
    task: str  # "all" for the whole bucket
    n: int
    dense: float
    sparse: float
    lower_bound: float  # lower confidence bound of the sparse accuracy (the floor's paired score bound)
    sparsity: float  # achieved: skipped / visible key blocks (whole bucket)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compare(
    loaded: LoadedModel,
    samples: Sequence[TokenSample],
    policy: Budget | Policy,
    edges: Sequence[int] | None = None,
    confidence: float = 0.9,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[BucketComparison]:
    """Per bucket, and per task within it: dense and `policy` accuracy, the lower bound and the sparsity.

    `edges` None puts everything in one bucket. Samples beyond the last edge join the last bucket.
    """
    lengths = [s.length for s in samples]
    edges = list(edges) if edges else [max(lengths)]
    groups: list[list[int]] = [[] for _ in edges]
    for i, n in enumerate(lengths):
        groups[bucket_index(edges, n)].append(i)  # type: ignore[index]
    rows: list[BucketComparison] = []
    for b, idx in enumerate(groups):
        if not idx:
            continue
        part = [samples[i] for i in idx]
        dense = evaluate(loaded, part, None, batch_size).correct
        result = evaluate(loaded, part, policy, batch_size)
        first = edges[b - 1] + 1 if b else min(lengths)
        last = edges[b] if b < len(edges) - 1 else max(edges[b], max(lengths[i] for i in idx))
        tasks = sorted({s.task for s in part})
        for task in (["all"] + tasks if len(tasks) > 1 else ["all"]):
            sel = [j for j, s in enumerate(part) if task == "all" or s.task == task]
            d = [dense[j] for j in sel]
            s_ = [result.correct[j] for j in sel]
            # The floor's bound (profile.floor): dense accuracy plus the paired score bound on the difference.
            m = measure_floor(Floor(value=1.0), d, s_, confidence)
            rows.append(BucketComparison(first=first, last=last, task=task if len(tasks) > 1 else tasks[0],
                                         n=len(sel), dense=m.dense, sparse=m.sparse, lower_bound=m.lower_bound,
                                         sparsity=result.sparsity))
    return rows
