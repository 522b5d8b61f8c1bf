"""sparsetune: per-length block-sparse attention budgets, tuned under an accuracy floor.

The runtime API needs neither typer nor rich: `load_profile`, `Profile.lookup`, `enable`.
"""

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
    "Budget",
    "BudgetError",
    "ModelError",
    "ProfileError",
    "SearchError",
    "SparsetuneError",
    "WorkloadError",
    "__version__",
]
