"""Search: one Optuna study per length bucket, budgets under an accuracy floor, written as a profile.

space (what may be chosen) -> storage (where trials live) -> study (typed records in storage) ->
sampler -> objective (one trial) -> run (workers and buckets) -> results (outcomes, progress, profile).
`run` imports torch, so the names load on first use: `search` checks its settings (`search.space`) and
refuses bad ones before torch is imported.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "BucketOutcome": ".results", "BucketProgress": ".results", "BucketStatus": ".results",
    "bucket_outcomes": ".results", "profile_from_storage": ".results", "study_progress": ".results",
    "SearchRun": ".run", "TrialEvent": ".run", "run_search": ".run", "search": ".run",
    "SearchSettings": ".space", "SearchSpace": ".space",
    "heartbeat_settings": ".storage", "open_storage": ".storage",
    "BucketMeta": ".study", "TrialRecord": ".study",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
