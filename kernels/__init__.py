"""Triton kernels and their plain launchers; installed as `sparsetune.kernels`.

Nothing here knows about models, Optuna or YAML. The config space is imported eagerly; the
kernel module lazily (on first attribute access), because importing it runs ``@triton.jit``,
which fixes compiled-vs-interpreted from ``TRITON_INTERPRET`` at that moment.
"""

from __future__ import annotations

import importlib
from typing import Any

from .configs import CONFIGS, QUICK_CONFIGS, SMEM_LIMIT_BYTES, configs_for, default_config, keep_config

__all__ = [
    "CONFIGS",
    "QUICK_CONFIGS",
    "SMEM_LIMIT_BYTES",
    "block_sparse_attn_fwd",
    "configs_for",
    "default_config",
    "keep_config",
]


def __getattr__(name: str) -> Any:
    if name == "block_sparse_attn_fwd":
        return importlib.import_module(".block_sparse_attn", __name__).block_sparse_attn_fwd
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
