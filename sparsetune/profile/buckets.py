"""THE length -> bucket rule, and the bucket edges' own rules (parse, check, choose).

Bucket i covers lengths ``(edges[i-1], edges[i]]`` (the first from `min_len`, default 0). A length is
a sample's prompt plus answer tokens, i.e. the KV length at its last query. Workload bucketing,
evaluation tables, profile lookup and the deploy gate all place lengths through `bucket_index`.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from ..errors import SearchError, WorkloadError

__all__ = ["MIN_PER_BUCKET", "Span", "auto_edges", "below", "bucket_index", "bucketize", "check_edges", "parse_edges", "spans"]

MIN_PER_BUCKET = 16  # samples per automatic bucket (`--buckets auto`, search and eval alike)


class _HasLength(Protocol):
    @property
    def length(self) -> int: ...

    line: int


S = TypeVar("S", bound=_HasLength)


@dataclass(frozen=True)
class Span:
    """The lengths one bucket serves (`bucket_index`'s rule): THE range and label every table, plot, gate and
    serving stat shows for it."""

    index: int | None  # None: the lengths below the first bucket's start, which run dense
    first: int
    last: int
    final: bool = False  # the last bucket: longer inputs use it too

    @property
    def max_len(self) -> int | None:
        """The upper end as tables write it: None when longer inputs use the bucket too."""
        return None if self.final else self.last

    @property
    def label(self) -> str:
        return f"{self.first}-{self.last}" + ("+" if self.final else "")

    def to_dict(self) -> dict[str, object]:
        return {"bucket": self.label, "min_len": self.first, "max_len": self.max_len}


def spans(edges: Sequence[int], first: int = 1) -> list[Span]:
    """Every bucket's `Span` for ascending `edges`, the first starting at `first` (a profile's min_len)."""
    starts = [first, *(e + 1 for e in edges[:-1])]
    return [Span(i, start, edge, final=i == len(edges) - 1) for i, (start, edge) in enumerate(zip(starts, edges))]


def below(first: int) -> Span | None:
    """The dense span below a first bucket starting at `first` (lengths from 1), or None when there is none."""
    return Span(None, 1, first - 1) if first > 1 else None


def bucket_index(edges: Sequence[int], length: int, min_len: int = 0) -> int | None:
    """Index of the bucket of `length` for ascending `edges`: None below `min_len`; the last bucket
    beyond the last edge (longer inputs tolerate at least as much sparsity)."""
    if length < min_len:
        if length < 0:
            raise ValueError(f"seq_len: must be >= 0, got {length!r}")
        return None
    return min(bisect.bisect_left(edges, length), len(edges) - 1)


def check_edges(edges: Sequence[int]) -> list[int]:
    """`edges` as a list, or WorkloadError unless they are positive and strictly increasing."""
    if not edges:
        raise WorkloadError("buckets: need at least one edge, got none")
    for e in edges:
        if isinstance(e, bool) or not isinstance(e, int) or e <= 0:
            raise WorkloadError(f"buckets: edges must be positive integers, got {e!r}")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise WorkloadError(f"buckets: edges must be strictly increasing, got {list(edges)}")
    return list(edges)


def bucketize(samples: Iterable[S], edges: Sequence[int]) -> list[list[S]]:
    """Samples per bucket of `edges` (order within a bucket kept); one beyond the last edge is an error."""
    edges = check_edges(edges)
    buckets: list[list[S]] = [[] for _ in edges]
    for s in samples:
        if s.length > edges[-1]:
            raise WorkloadError(
                f"buckets: the sample at line {s.line} has {s.length} tokens, above the last edge {edges[-1]}")
        buckets[bucket_index(edges, s.length)].append(s)  # type: ignore[index]
    return buckets


def parse_edges(text: str | None) -> tuple[int, ...] | None:
    """``512,1024,2048`` -> edges; ``auto`` or None -> None (quantiles of the workload's lengths)."""
    if text is None or text.strip() == "auto":
        return None
    try:
        edges = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise SearchError(f"buckets: must be 'auto' or comma-separated token counts like 512,1024,2048, got {text!r}") from None
    if not edges or any(e <= 0 for e in edges) or list(edges) != sorted(set(edges)):
        raise SearchError(f"buckets: edges must be positive and strictly increasing, got {text!r}")
    return edges


def auto_edges(
    lengths: Sequence[int], n_buckets: int | None = None, min_per_bucket: int | None = None,
) -> list[int]:
    """Bucket edges at length quantiles: `n_buckets` equal-count buckets, or as many as keep
    `min_per_bucket` samples in each. Ties can make buckets fewer; the last edge is the longest length."""
    if (n_buckets is None) == (min_per_bucket is None):
        raise WorkloadError("buckets: give exactly one of n_buckets and min_per_bucket")
    if not lengths:
        raise WorkloadError("buckets: no samples to place")
    for name, v in (("n_buckets", n_buckets), ("min_per_bucket", min_per_bucket)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise WorkloadError(f"buckets: {name} must be an integer >= 1, got {v!r}")
    ordered = sorted(lengths)
    n = len(ordered)
    # Fewer samples than min_per_bucket still make one bucket.
    wanted = n_buckets if n_buckets is not None else max(n // min_per_bucket, 1)  # type: ignore[operator]
    edges: list[int] = []
    for k in range(1, wanted + 1):
        edge = ordered[math.ceil(k * n / wanted) - 1]
        if not edges or edge > edges[-1]:
            edges.append(edge)
    if min_per_bucket is not None:  # ties can leave a bucket short: merge it into its neighbour
        counts = [bisect.bisect_right(ordered, e) for e in edges]
        sizes = [c - (counts[i - 1] if i else 0) for i, c in enumerate(counts)]
        merged: list[int] = []
        carry = 0
        for edge, size in zip(edges, sizes):
            carry += size
            if carry >= min_per_bucket:
                merged.append(edge)
                carry = 0
        if carry:  # the tail is short: extend the previous bucket to the end
            if merged:
                merged[-1] = edges[-1]
            else:
                merged = [edges[-1]]
        edges = merged
    return edges
