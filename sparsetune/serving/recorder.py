"""Per-request visibility for `sparsetune serve`: which bucket and budget each request ran, and totals.

How a request is seen. The server (`app`) runs every ``model.generate`` of its model on one inference
thread, one request at a time (`app` wraps each submitted call in `Recorder.run`). During that call:

- the attention asks the policy for a budget at every layer and step (`RecordingPolicy.lookup`, the
  profile's own lookup): the request's KV length is the longest one asked about, i.e. its length at
  its last query (prompt plus generated tokens, less the last token, which is never fed back);
- `record_sparsity` counts the sparse and dense attention calls and the key blocks kept and skipped.

A request's bucket is the bucket of that KV length (the profile's rule, `Profile.bucket_index`); a
request that crossed an edge while generating names the bucket its prompt started in as well. Totals
are kept per bucket: requests, attention calls, and sparsity = skipped / visible key blocks over the
sparse calls (block-weighted, as `AttentionStats` defines it). The last `keep_recent` records are kept
too (bounded, so memory stays flat), for a client to check its own requests by id.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..profile.buckets import Span
from ..profile.budget import Budget
from ..profile.profile import Profile

__all__ = ["Recorder", "RecordingPolicy", "RequestRecord", "ServingStats", "budget_text"]

log = logging.getLogger("sparsetune.serve")


def budget_text(budget: Budget | None) -> str:
    """``topk keep=0.491 block=32 sink=1 local=2``, or ``dense``."""
    if budget is None or budget.is_dense:
        return "dense"
    ratio = f"keep={budget.keep:.3f}" if budget.method == "topk" else f"tau={budget.tau:.3f}"
    estimator = "" if budget.estimator == "pooled" else f" estimator={budget.estimator}" + (
        f" stride={budget.stride}" if budget.stride else "")
    return f"{budget.method} {ratio} block={budget.block_size} sink={budget.sink} local={budget.local}{estimator}"


class RecordingPolicy:
    """The profile as the attention's policy (`lookup`, `kernel_config`, `devices` are the profile's),
    noting the KV lengths the request running on the calling thread asks about."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self._local = threading.local()

    @property
    def devices(self) -> Any:  # read by the "is this GPU tuned" warning
        return self.profile.devices

    def lookup(self, seq_len: int) -> Budget | None:
        record = getattr(self._local, "record", None)
        if record is not None and seq_len > record.kv_len:
            record.kv_len = seq_len
        return self.profile.lookup(seq_len)

    def kernel_config(self, seq_len: int, device: str) -> Any:
        return self.profile.kernel_config(seq_len, device)

    def watch(self, record: RequestRecord | None) -> None:
        """Attribute this thread's lookups to `record` (None: to nobody)."""
        self._local.record = record


@dataclass
class RequestRecord:
    request_id: str
    prompt_tokens: int
    kv_len: int = 0  # longest KV length an attention call saw: the length at the last query
    bucket: str = ""  # label of kv_len's bucket (`ServingStats` labels)
    first_bucket: str = ""  # label of the prompt's bucket (differs when generation crossed an edge)
    budget: dict[str, Any] | None = None  # the budget of kv_len's bucket; None: dense
    sparsity: float = 0.0
    sparse_calls: int = 0
    dense_calls: int = 0
    fallback_calls: int = 0
    seconds: float = 0.0
    error: str | None = None
    visible_blocks: float = field(default=0.0, repr=False)
    skipped_blocks: float = field(default=0.0, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["visible_blocks"], out["skipped_blocks"]
        return out

    def line(self) -> str:
        """The request's log line."""
        crossed = f" (from {self.first_bucket})" if self.first_bucket != self.bucket else ""
        budget = budget_text(Budget(**self.budget) if self.budget else None)
        error = f" error={self.error}" if self.error else ""
        return (f"request {self.request_id} prompt={self.prompt_tokens} kv={self.kv_len} "
                f"bucket={self.bucket}{crossed} budget={budget} sparsity={self.sparsity:.3f} "
                f"calls={self.sparse_calls} sparse/{self.dense_calls} dense"
                + (f"/{self.fallback_calls} fallback" if self.fallback_calls else "")
                + f" {self.seconds:.3f}s{error}")


class ServingStats:
    """Totals per bucket and the last `keep_recent` request records; safe to read from any thread."""

    def __init__(self, profile: Profile, keep_recent: int = 1024) -> None:
        self.profile = profile
        self._lock = threading.Lock()
        self._recent: deque[dict[str, Any]] = deque(maxlen=keep_recent)
        self._rows: dict[int | None, dict[str, Any]] = {}
        below = profile.span(None) if profile.min_len > 1 else Span(None, 1, 0)  # below the first bucket: dense
        for span in [below, *profile.spans]:
            self._rows[span.index] = self._row(span)
        self.requests = self.errors = 0

    def _row(self, span: Span) -> dict[str, Any]:
        budget = None if span.index is None else self.profile.lookup(span.last)
        return {**span.to_dict(),
                "budget": None if budget is None or budget.is_dense else budget.to_dict(),
                "requests": 0, "errors": 0, "sparse_calls": 0, "dense_calls": 0, "fallback_calls": 0,
                "visible_blocks": 0.0, "skipped_blocks": 0.0}

    def label(self, kv_len: int) -> str:
        return self._rows[self.profile.bucket_index(kv_len)]["bucket"]

    def add(self, record: RequestRecord) -> None:
        index = self.profile.bucket_index(record.kv_len)
        with self._lock:
            self.requests += 1
            self.errors += record.error is not None
            row = self._rows[index]
            row["requests"] += 1
            row["errors"] += record.error is not None
            for key in ("sparse_calls", "dense_calls", "fallback_calls", "visible_blocks", "skipped_blocks"):
                row[key] += getattr(record, key)
            self._recent.append(record.to_dict())

    def snapshot(self, recent: int = 0) -> dict[str, Any]:
        """Plain data: totals, per bucket (sparsity = skipped / visible blocks), and the last `recent` records."""
        with self._lock:
            rows = [dict(r) for k, r in self._rows.items()
                    if k is not None or self.profile.min_len > 1 or r["requests"]]  # no empty 0-length row
            tail = list(self._recent)[-recent:] if recent > 0 else []
            requests, errors = self.requests, self.errors
        visible = sum(r["visible_blocks"] for r in rows)
        skipped = sum(r["skipped_blocks"] for r in rows)
        for r in rows:
            r["sparsity"] = r["skipped_blocks"] / r["visible_blocks"] if r["visible_blocks"] else 0.0
            del r["visible_blocks"], r["skipped_blocks"]
        return {"requests": requests, "errors": errors, "sparsity": skipped / visible if visible else 0.0,
                "buckets": rows, "recent": tail}


class Recorder:
    """Runs each generate call with its request's record, then logs one line and adds it to the totals."""

    def __init__(self, profile: Profile, keep_recent: int = 1024) -> None:
        self.profile = profile
        self.policy = RecordingPolicy(profile)
        self.stats = ServingStats(profile, keep_recent)
        self.model: Any = None  # set once the server has loaded (and enabled) its model

    def run(self, fn: Callable[..., Any], request_id: str, prompt_tokens: int, *args: Any, **kwargs: Any) -> Any:
        """Call ``fn(*args, **kwargs)`` (a generate call, on the inference thread) as request `request_id`."""
        from ..runtime.hf_attention import record_sparsity

        record = RequestRecord(request_id, prompt_tokens)
        start = time.perf_counter()
        self.policy.watch(record)
        try:
            with record_sparsity(self.model) as counts:
                try:
                    return fn(*args, **kwargs)
                except BaseException as exc:
                    record.error = type(exc).__name__
                    raise
                finally:
                    for key in ("sparse_calls", "dense_calls", "fallback_calls", "visible_blocks", "skipped_blocks"):
                        setattr(record, key, getattr(counts, key))
                    record.sparsity = counts.sparsity
        finally:
            self.policy.watch(None)
            record.seconds = time.perf_counter() - start
            self._finish(record)

    def _finish(self, record: RequestRecord) -> None:
        record.kv_len = record.kv_len or record.prompt_tokens  # no attention call ran (an early error)
        record.bucket = self.stats.label(record.kv_len)
        record.first_bucket = self.stats.label(record.prompt_tokens)
        budget = self.profile.lookup(record.kv_len)
        record.budget = None if budget is None or budget.is_dense else budget.to_dict()
        self.stats.add(record)
        log.info("%s", record.line())
