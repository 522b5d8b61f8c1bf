"""Accuracy: teacher-forced decoding, dense vs sparse tables, and the pre-deployment gate.

`evaluate` and `compare` import torch; import this package only where a model runs.
"""

from .compare import BucketComparison, compare
from .decode import DEFAULT_BATCH_SIZE, EvalResult, Score, evaluate, fill_answers
from .gate import BucketCheck, CheckReport, Verdict, check_profile
from .inputs import load_inputs

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "BucketCheck",
    "BucketComparison",
    "CheckReport",
    "EvalResult",
    "Score",
    "Verdict",
    "check_profile",
    "compare",
    "evaluate",
    "fill_answers",
    "load_inputs",
]
