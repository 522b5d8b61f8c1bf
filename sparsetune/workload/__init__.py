"""What a search runs on: workload files (JSONL samples tokenized for one model), synthetic task
generators, and model loading. Heavy imports (torch, transformers) stay inside `models`.
"""

from ..profile.buckets import auto_edges, bucketize
from . import files as _files
from .files import *  # noqa: F403 - listed once in files.py's __all__

__all__ = [*_files.__all__, "auto_edges", "bucketize"]
