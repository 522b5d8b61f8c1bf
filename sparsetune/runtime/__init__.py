"""What a serving process imports: the policy a model config names, the flat table, the transformers
attention implementation (`hf_attention`, imported lazily: it needs torch and transformers) and the
import hook that registers it (`autoload`).

Imports nothing of the tuner (workload, evaluate, search, deploy, cli).
"""

from .policy import (CONFIG_KEY, ENTRY_VERSION, PROFILE_FILE, config_entry, hf_overrides, policy_from_config,
                     untuned_warning)
from .table import TablePolicy, lookup_table

__all__ = [
    "CONFIG_KEY",
    "ENTRY_VERSION",
    "PROFILE_FILE",
    "TablePolicy",
    "config_entry",
    "hf_overrides",
    "lookup_table",
    "policy_from_config",
    "untuned_warning",
]
