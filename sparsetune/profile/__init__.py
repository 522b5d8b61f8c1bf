"""The contract with serving code: the budget, the profile file format, the floor rule, the bucket rule.

Imports nothing of the tuner (workload, evaluate, search, deploy, cli) and nothing heavy.
"""

from .budget import METHODS, Budget
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

__all__ = [
    "METHODS",
    "PROFILE_SCHEMA_VERSION",
    "Accuracy",
    "Budget",
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
]
