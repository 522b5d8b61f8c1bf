"""Accuracy: teacher-forced decoding, dense vs sparse tables, and the pre-deployment gate.

`evaluate` and `compare` import torch, so the names load on first use: a command can check its arguments
(`evaluate.arguments`) and refuse bad ones before torch is imported.
"""

from .._lazy import lazy_exports

_EXPORTS = {
    "BucketComparison": ".compare", "compare": ".compare",
    "DEFAULT_BATCH_SIZE": ".decode", "EvalResult": ".decode", "Score": ".decode", "evaluate": ".decode",
    "fill_answers": ".decode",
    "BucketCheck": ".gate", "CheckReport": ".gate", "Verdict": ".gate", "check_profile": ".gate",
    "load_inputs": ".inputs",
}
__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
