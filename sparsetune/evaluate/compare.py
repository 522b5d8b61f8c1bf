"""Dense vs sparse per length bucket and task, from one paired run (what `sparsetune eval` prints)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from ..profile.budget import Budget
from ..profile.buckets import MIN_PER_BUCKET, auto_edges, bucket_index, spans
from ..profile.floor import measure_floor
from ..profile.profile import Floor, Profile
from ..runtime.hf_attention import Policy
from ..workload.files import TokenSample
from ..workload.models import LoadedModel
from .arguments import AUTO
from .decode import DEFAULT_BATCH_SIZE, evaluate
from .progress import Progress, per_batch

__all__ = ["BucketComparison", "compare"]


@dataclass(frozen=True)
class BucketComparison:
    """Dense and sparse accuracy of one length bucket (or one task within it), from one paired run."""

    first: int  # shortest length in the bucket's range
    last: int  # longest
    label: str  # the bucket's `Span` label (the profile's, when the edges are a profile's)
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
    policy: Budget | Policy | None,
    edges: Sequence[int] | Literal["auto"] | None = None,
    confidence: float = 0.9,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
) -> list[BucketComparison]:
    """Per bucket, and per task within it: dense and `policy` accuracy, the lower bound and the sparsity.

    `policy` None is dense (evaluated once: the baseline alone). `edges` None puts everything in one
    bucket; `AUTO` makes them from the lengths as `search` does. Samples beyond the last edge join the last
    bucket. `progress("evaluate", done, total)` follows every batch, dense and policy runs together.
    """
    lengths = [s.length for s in samples]
    if edges == AUTO:
        edges = auto_edges(lengths, min_per_bucket=MIN_PER_BUCKET)
    edges = list(edges) if edges else [max(lengths)]
    groups: list[list[int]] = [[] for _ in edges]
    for i, n in enumerate(lengths):
        groups[bucket_index(edges, n)].append(i)  # type: ignore[index]
    rows: list[BucketComparison] = []
    labels = [s.label for s in spans(edges, min(lengths))]
    on_batch = per_batch(progress, "evaluate", len(samples), passes=1 if policy is None else 2)
    for b, idx in enumerate(groups):
        if not idx:
            continue
        part = [samples[i] for i in idx]
        base = evaluate(loaded, part, None, batch_size, on_batch)
        dense = base.correct
        result = base if policy is None else evaluate(loaded, part, policy, batch_size, on_batch)
        first = edges[b - 1] + 1 if b else min(lengths)
        last = edges[b] if b < len(edges) - 1 else max(edges[b], max(lengths[i] for i in idx))
        tasks = sorted({s.task for s in part})
        for task in (["all"] + tasks if len(tasks) > 1 else ["all"]):
            sel = [j for j, s in enumerate(part) if task == "all" or s.task == task]
            d = [dense[j] for j in sel]
            s_ = [result.correct[j] for j in sel]
            # The floor's bound (profile.floor): dense accuracy plus the paired score bound on the difference.
            m = measure_floor(Floor(value=1.0), d, s_, confidence)
            rows.append(BucketComparison(first=first, last=last, label=labels[b], task=task if len(tasks) > 1 else tasks[0],
                                         n=len(sel), dense=m.dense, sparse=m.sparse, lower_bound=m.lower_bound,
                                         sparsity=result.sparsity))
    return rows
