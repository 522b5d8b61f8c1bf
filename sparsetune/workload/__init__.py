"""What a search runs on: workload files (JSONL samples tokenized for one model), synthetic task
generators, and model loading. Heavy imports (torch, transformers) stay inside `models`.
"""

from ..profile.buckets import auto_edges, bucketize
from .files import (
    DEFAULT_ANSWER_TOKENS,
    DEFAULT_TASK,
    DEMO_WORKLOAD,
    TokenSample,
    Workload,
    load_workload,
    synth_workload,
    write_jsonl,
)

__all__ = [
    "DEFAULT_ANSWER_TOKENS",
    "DEFAULT_TASK",
    "DEMO_WORKLOAD",
    "TokenSample",
    "Workload",
    "auto_edges",
    "bucketize",
    "load_workload",
    "synth_workload",
    "write_jsonl",
]
