"""The config entry that names a model's policy, as a serving process reads it.

A deploy folder's config.json carries ``"sparsetune": {"profile": "sparsetune_profile.yaml", "version": 1}``
(written by `sparsetune.deploy`); a vLLM / SGLang override carries the flat lookup table itself
(`runtime.table`). `policy_from_config` turns either into a policy; `hf_attention` calls it on a
model's first attention call. Nothing here imports torch or transformers at module level.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ProfileError
from ..profile.profile import Profile, load_profile
from .table import TablePolicy, lookup_table

__all__ = ["CONFIG_KEY", "ENTRY_VERSION", "PROFILE_FILE", "config_entry", "hf_overrides", "policy_from_config",
           "untuned_warning"]

CONFIG_KEY = "sparsetune"  # the config.json entry (and config attribute) the runtime looks for
PROFILE_FILE = "sparsetune_profile.yaml"  # the profile's name inside a deploy folder
ENTRY_VERSION = 1  # version of the config entry's own format; bump if its keys change meaning


def config_entry() -> dict[str, Any]:
    """The value `deploy` writes under config.json's "sparsetune" key."""
    return {"profile": PROFILE_FILE, "version": ENTRY_VERSION}


def hf_overrides(profile: Profile) -> dict[str, Any]:
    """For vLLM ``--hf-overrides`` / SGLang ``--json-model-override-args``: the table as config.sparsetune."""
    return {CONFIG_KEY: lookup_table(profile)}


def policy_from_config(config: Any) -> Profile | TablePolicy:
    """The policy a model config's "sparsetune" entry names: the deployed profile file, or an inline table.

    Called by `hf_attention` on a model's first attention call; errors are ProfileError naming the entry.
    """
    entry = getattr(config, CONFIG_KEY, None)
    if not isinstance(entry, Mapping):
        raise ProfileError(f"config.{CONFIG_KEY}: must be an object, got {type(entry).__name__}")
    if "buckets" in entry:  # the table itself, e.g. from --hf-overrides
        return TablePolicy(entry, where=f"config.{CONFIG_KEY}")
    version, name = entry.get("version"), entry.get("profile")
    if version != ENTRY_VERSION:
        raise ProfileError(f"config.{CONFIG_KEY}.version: this sparsetune reads {ENTRY_VERSION}, got {version!r}; "
                           "upgrade sparsetune or re-run `sparsetune apply`")
    if not isinstance(name, str) or not name:
        raise ProfileError(f"config.{CONFIG_KEY}.profile: must be the profile's file name, got {name!r}")
    source = str(getattr(config, "name_or_path", "") or "")
    if not source:
        raise ProfileError(f"config.{CONFIG_KEY}: names {name!r}, but the config was not loaded from a folder; "
                           "load it with from_pretrained(folder) or call sparsetune.enable(model, profile)")
    if Path(source).is_dir():
        path = Path(source) / name
        if not path.is_file():
            raise ProfileError(f"config.{CONFIG_KEY}.profile: {path} is missing; re-run `sparsetune apply` "
                               "(saving a deployed model does not copy its profile)")
        return load_profile(path)
    try:  # a Hub repository id: the file sits beside config.json in the same snapshot
        from transformers.utils import cached_file

        found = cached_file(source, name)
    except (OSError, ValueError) as exc:
        raise ProfileError(f"config.{CONFIG_KEY}.profile: cannot fetch {name!r} from {source!r}: {exc}") from None
    if found is None:
        raise ProfileError(f"config.{CONFIG_KEY}.profile: {source!r} has no file {name!r}")
    return load_profile(found)


def untuned_warning(policy: Any, device: str | None) -> str | None:
    """A warning when `device` (a GPU name; None: no GPU here) has no kernel configs in `policy` while
    other devices have measured ones; None when there is nothing to say.

    The one "is this GPU tuned" rule: of a profile (cost-model sections are the kernel's defaults
    anyway, so they do not count) and of a lookup table (which holds measured sections only).
    """
    devices = getattr(policy, "devices", None) or {}
    measured = sorted(n for n, s in devices.items() if getattr(s, "timing", "measured") == "measured")
    if device is None or not measured or device in devices:
        return None
    return (f"the profile's kernel configs were tuned on {', '.join(map(repr, measured))}, not on {device!r}: "
            "this GPU uses the kernel's default launch configs (re-time the profile on it for tuned ones)")
