"""sparsetune: per-length block-sparse attention budgets, tuned under an accuracy floor.

The runtime API needs neither typer nor rich: `load_profile`, `Profile.lookup`, `enable`.

Importing sparsetune registers ``attn_implementation="sparsetune"`` with transformers (at once if
transformers' modeling code is loaded, else when it loads; see `_autoload`), so a folder made by
`sparsetune apply` loads with its profile through plain `from_pretrained` calls.
"""

from . import _autoload
from .budget import Budget
from .errors import BudgetError, ModelError, ProfileError, SearchError, SparsetuneError, WorkloadError
from .profile import (
    PROFILE_SCHEMA_VERSION,
    Accuracy,
    Bucket,
    DeviceSection,
    Floor,
    KernelConfig,
    ModelInfo,
    Profile,
    Provenance,
    TaskAccuracy,
    WorkloadInfo,
    load_profile,
)

__version__ = "0.1.0"

# torch and transformers are imported on first use, so `import sparsetune` stays cheap (~40 ms).
_LAZY = {"enable": "hf_attention", "disable": "hf_attention", "record_sparsity": "hf_attention"}


def __getattr__(name: str):  # PEP 562: sparsetune.enable imports the transformers integration on first use
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PROFILE_SCHEMA_VERSION",
    "Accuracy",
    "Bucket",
    "DeviceSection",
    "Floor",
    "KernelConfig",
    "ModelInfo",
    "Profile",
    "Provenance",
    "TaskAccuracy",
    "WorkloadInfo",
    "load_profile",
    "enable",
    "disable",
    "record_sparsity",
    "Budget",
    "BudgetError",
    "ModelError",
    "ProfileError",
    "SearchError",
    "SparsetuneError",
    "WorkloadError",
    "__version__",
]

_autoload.install()  # last: registering may import sparsetune.hf_attention, which needs the names above
