"""Search: one Optuna study per length bucket, budgets under an accuracy floor, written as a profile.

space (what may be chosen) -> storage (where trials live) -> study (typed records in storage) ->
sampler -> objective (one trial) -> run (workers and buckets) -> results (outcomes, progress, profile).
Imports optuna and torch: import this package only where a search runs.
"""

from .results import BucketOutcome, BucketProgress, BucketStatus, bucket_outcomes, profile_from_storage, study_progress
from .run import SearchRun, TrialEvent, run_search, search
from .space import SearchSettings, SearchSpace
from .storage import heartbeat_settings, open_storage
from .study import BucketMeta, TrialRecord

__all__ = [
    "BucketMeta",
    "BucketOutcome",
    "BucketProgress",
    "BucketStatus",
    "SearchRun",
    "SearchSettings",
    "SearchSpace",
    "TrialEvent",
    "TrialRecord",
    "bucket_outcomes",
    "heartbeat_settings",
    "open_storage",
    "profile_from_storage",
    "run_search",
    "search",
    "study_progress",
]
