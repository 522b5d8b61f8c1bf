"""The pre-deployment gate: a profile on held-out samples, per bucket, against its own floor.

The search chose each budget on a lower confidence bound, on samples it never selected on; the gate
asks the plainer question of fresh data: does the point estimate hold the floor (and, with a
per-task floor, every task's)? Each row also says whether a miss is beyond noise (the upper bound
is below the floor too) and which task bound the bucket. A gate judged on a lower bound instead
would fail good profiles whenever held-out n is small.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Sequence

from ..profile.floor import DEFAULT_CONFIDENCE, judge_floor
from ..profile.profile import Profile
from .decode import DEFAULT_BATCH_SIZE, evaluate
from .progress import Progress, per_batch

__all__ = ["BucketCheck", "CheckReport", "Verdict", "check_profile"]


class Verdict(str, enum.Enum):
    """A profile bucket's verdict on held-out samples."""

    PASS = "pass"  # meets the floor
    FAIL = "fail"  # misses it: the gate fails
    DENSE = "dense"  # the profile runs this range dense: nothing to check
    UNTESTED = "untested"  # sparse, but no held-out sample falls in it (does not fail the gate)


@dataclass(frozen=True)
class BucketCheck:
    """One profile bucket on held-out samples: dense vs the profile, against the profile's floor."""

    first: int  # shortest length of the bucket's range
    last: int | None  # longest (None: the last bucket, open-ended)
    label: str  # the bucket's `Span` label, as every table shows it
    n: int
    dense_bucket: bool  # the profile runs this range dense: nothing to check
    dense: float | None = None
    sparse: float | None = None
    lower_bound: float | None = None  # of the sparse accuracy, at CheckReport.confidence (`profile.floor`)
    upper_bound: float | None = None
    floor: float | None = None  # the accuracy this bucket had to reach (absolute)
    measured: float | None = None  # what was compared with `floor`: the point estimate
    sparsity: float | None = None
    beyond_noise: bool = False  # a miss (of the bucket or a task) that even the upper bound confirms
    bound_by: str | None = None  # the task furthest below (or closest to) its floor
    verdict: Verdict = Verdict.UNTESTED
    method: str | None = None  # how the bucket's budget ranks blocks (`Budget.ranking`); None: dense

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "verdict": self.verdict.value}


@dataclass(frozen=True)
class CheckReport:
    buckets: list[BucketCheck]
    floor: dict[str, Any]  # the profile's floor
    confidence: float  # level of the lower bounds shown
    judged_on: str  # "lower_bound" or "sparse"
    workload: str
    samples: int
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(b.verdict is not Verdict.FAIL for b in self.buckets)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "floor": self.floor, "confidence": self.confidence, "judged_on": self.judged_on,
                "workload": self.workload, "samples": self.samples, "warnings": self.warnings,
                "buckets": [b.to_dict() for b in self.buckets]}


def check_profile(profile: Profile, loaded: Any, samples: Sequence[Any], workload: str = "",
                  batch_size: int | None = None, progress: Progress | None = None) -> CheckReport:
    """Per profile bucket: dense and profile accuracy on `samples` (with answers), judged against the floor.

    The profile itself is the policy, so every attention call looks its budget up by KV length exactly
    as in serving. Each bucket is judged on the point estimate, and, with a per-task floor, every task
    (see the module docstring); bounds are at the floor's confidence. Dense buckets are not run
    (nothing changes there); a sparse bucket without samples is "untested", which does not fail the gate.
    `progress("evaluate", done, total)` follows every batch of the sparse buckets' dense and profile runs.
    """
    confidence = profile.floor.confidence if profile.floor.confidence is not None else DEFAULT_CONFIDENCE
    floor = replace(profile.floor, confidence=None)  # the verdict on point estimates
    groups: dict[int | None, list[Any]] = {}
    for s in samples:
        groups.setdefault(profile.bucket_index(s.length), []).append(s)
    rows = []
    if None in groups:  # shorter than min_len: dense by the profile's rule
        span = profile.span(None)
        rows.append(BucketCheck(first=span.first, last=span.last, label=span.label, n=len(groups[None]),
                                dense_bucket=True, verdict=Verdict.DENSE))
    checked = sum(len(groups.get(i, [])) for i, b in enumerate(profile.buckets) if not b.dense)
    on_batch = per_batch(progress, "evaluate", checked, passes=2)  # dense and the profile, per sample
    for i, bucket in enumerate(profile.buckets):
        span = profile.span(i)
        part = groups.get(i, [])
        head = dict(first=span.first, last=span.max_len, label=span.label, n=len(part), dense_bucket=bucket.dense,
                    method=None if bucket.dense else bucket.budget.ranking)
        if bucket.dense:
            rows.append(BucketCheck(**head, verdict=Verdict.DENSE))
            continue
        if not part:
            rows.append(BucketCheck(**head, verdict=Verdict.UNTESTED))
            continue
        size = batch_size or DEFAULT_BATCH_SIZE
        dense = evaluate(loaded, part, None, batch_size=size, on_batch=on_batch)
        sparse = evaluate(loaded, part, profile, batch_size=size, on_batch=on_batch)
        v = judge_floor(floor, dense.correct, sparse.correct, [s.task for s in part], confidence=confidence)
        m = v.overall
        rows.append(BucketCheck(**head, dense=m.dense, sparse=m.sparse, lower_bound=m.lower_bound,
                                upper_bound=m.upper_bound, floor=m.target, measured=m.measured,
                                sparsity=sparse.sparsity, bound_by=v.binding,
                                beyond_noise=not v.met and (m.broken or any(t.broken for t in v.tasks.values())),
                                verdict=Verdict.PASS if v.met else Verdict.FAIL))
    return CheckReport(buckets=rows, floor=asdict(profile.floor), confidence=confidence, judged_on="sparse",
                       workload=workload, samples=len(samples))

