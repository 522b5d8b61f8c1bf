"""Search: one Optuna study per length bucket, budgets under an accuracy floor, written as a profile.

space (what may be chosen) -> storage (where trials live) -> study (typed records in storage) ->
sampler -> objective (one trial) -> run (workers and buckets) -> results (outcomes, progress, profile).
`run` imports torch, so the names load on first use: `search` checks its settings (`search.space`) and
refuses bad ones before torch is imported.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BucketOutcome": ".results", "BucketProgress": ".results", "BucketStatus": ".results",
    "bucket_outcomes": ".results", "profile_from_storage": ".results", "study_progress": ".results",
    "SearchRun": ".run", "TrialEvent": ".run", "run_search": ".run", "search": ".run",
    "SearchSettings": ".space", "SearchSpace": ".space",
    "heartbeat_settings": ".storage", "open_storage": ".storage",
    "BucketMeta": ".study", "TrialRecord": ".study",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
