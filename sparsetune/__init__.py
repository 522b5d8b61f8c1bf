"""sparsetune: per-length block-sparse attention budgets, tuned under an accuracy floor.

The runtime API needs neither typer nor rich: `load_profile`, `Profile.lookup`, `enable`.

Importing sparsetune registers ``attn_implementation="sparsetune"`` with transformers (at once if
transformers' modeling code is loaded, else when it loads; see `runtime.autoload`), so a folder made by
`sparsetune apply` loads with its profile through plain `from_pretrained` calls.
"""

from .errors import (AttentionError, BudgetError, DeployError, ModelError, ProfileError, SearchError,
                     SparsetuneError, WorkloadError)
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
from .profile.budget import Budget
from .runtime import autoload as _autoload

# torch and transformers are imported on first use, so `import sparsetune` stays cheap (~40 ms).
_LAZY = {"enable": "runtime.hf_attention", "disable": "runtime.hf_attention", "record_sparsity": "runtime.hf_attention"}


def __getattr__(name: str):  # PEP 562: sparsetune.enable imports the transformers integration on first use
    if name == "__version__":  # read from the package metadata on first use (_version.py)
        from ._version import version

        return version()
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
    "AttentionError",
    "BudgetError",
    "DeployError",
    "ModelError",
    "ProfileError",
    "SearchError",
    "SparsetuneError",
    "WorkloadError",
    "__version__",
]

_autoload.install()  # last: registering may import sparsetune.runtime.hf_attention, which needs the names above
