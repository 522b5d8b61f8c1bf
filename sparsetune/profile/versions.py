"""Profile schema versions: the current one, and the steps that upgrade older files on load."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ProfileError
from ._typed import show
from .budget import METHODS

__all__ = ["PROFILE_SCHEMA_VERSION", "UPGRADES", "inherit_method", "upgrade"]

PROFILE_SCHEMA_VERSION = 3  # bump on any change old readers would misread; add an upgrade step


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 2 added `floor.per_task`, `buckets[].confirmation` and `buckets[].bound_by`, all optional:
    a schema-1 profile is a valid schema-2 one (its budgets were chosen without confirmation)."""
    return data


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """Schema 3 added `budget.estimator` (and its `stride`): every schema-2 budget was ranked by pooled q.k,
    the default, so a schema-2 profile reads as one whose budgets all say `estimator: pooled`."""
    return data


# Upgrade steps, keyed by the version they read: UPGRADES[1] turns a schema-1 mapping into a schema-2
# one. When the format changes, bump PROFILE_SCHEMA_VERSION and add the step here, so old profiles load.
UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


def upgrade(data: Mapping[str, Any]) -> Mapping[str, Any]:
    if "schema" not in data:
        raise ProfileError(f"schema: required field missing (this sparsetune reads schema {PROFILE_SCHEMA_VERSION})")
    version = data["schema"]
    if isinstance(version, bool) or not isinstance(version, int):
        raise ProfileError(f"schema: must be an integer, got {show(version)}")
    if version > PROFILE_SCHEMA_VERSION:
        from .._version import __version__

        raise ProfileError(f"schema: version {version} is newer than this sparsetune ({__version__}) reads "
                           f"({PROFILE_SCHEMA_VERSION}); upgrade sparsetune")
    while version < PROFILE_SCHEMA_VERSION:
        step = UPGRADES.get(version)
        if step is None:
            known = ", ".join(map(str, [*sorted(UPGRADES), PROFILE_SCHEMA_VERSION]))
            raise ProfileError(f"schema: unknown version {version}; this sparsetune reads {known}")
        data = {**step(dict(data)), "schema": version + 1}
        version += 1
    return data


def inherit_method(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """A bucket's budget may omit `method`; it then takes the profile's (copies, never mutates)."""
    method, buckets = data.get("method"), data.get("buckets")
    if method not in METHODS or not isinstance(buckets, list):
        return data  # the walk reports the bad method or buckets with their paths
    filled = []
    for bucket in buckets:
        budget = bucket.get("budget") if isinstance(bucket, Mapping) else None
        if isinstance(budget, Mapping) and "method" not in budget:
            bucket = {**bucket, "budget": {"method": method, **budget}}
        filled.append(bucket)
    return {**data, "buckets": filled}
