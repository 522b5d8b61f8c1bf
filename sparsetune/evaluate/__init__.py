"""Accuracy: teacher-forced decoding, dense vs sparse tables, and the pre-deployment gate.

`evaluate` and `compare` import torch, so the names load on first use: a command can check its arguments
(`evaluate.arguments`) and refuse bad ones before torch is imported.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BucketComparison": ".compare", "compare": ".compare",
    "DEFAULT_BATCH_SIZE": ".decode", "EvalResult": ".decode", "Score": ".decode", "evaluate": ".decode",
    "fill_answers": ".decode",
    "BucketCheck": ".gate", "CheckReport": ".gate", "Verdict": ".gate", "check_profile": ".gate",
    "load_inputs": ".inputs",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
