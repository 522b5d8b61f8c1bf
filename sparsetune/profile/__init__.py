"""The contract with serving code: the budget, the profile file format, the floor rule, the bucket rule.

Imports nothing of the tuner (workload, evaluate, search, deploy, cli) and nothing heavy.
"""

from . import profile as _profile
from .budget import METHODS, Budget
from .profile import *  # noqa: F403 - the contract's names, listed once in profile.py's __all__

__all__ = ["METHODS", "Budget", *_profile.__all__]
