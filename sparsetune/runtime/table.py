"""The flat lookup table: a profile as plain JSON for serving code in any language, and its reader.

`lookup_table` writes it (``sparsetune apply --format json``); `policy.hf_overrides` wraps it as a
config entry (vLLM ``--hf-overrides``, SGLang ``--json-model-override-args``); `TablePolicy` reads it back and
looks up exactly like the profile it came from. Fields: README, "Serving".
"""

from __future__ import annotations

import dataclasses
from bisect import bisect_right
from collections.abc import Mapping
from typing import Any

from ..errors import ProfileError
from ..kernels.configs import LAUNCH_KEYS
from ..profile.budget import Budget
from ..profile.profile import KernelConfig, Profile

__all__ = ["TABLE_FORMAT", "TABLE_VERSION", "TablePolicy", "lookup_table"]

TABLE_FORMAT = "sparsetune-lookup"  # `format` of the flat table
TABLE_VERSION = 1


def lookup_table(profile: Profile) -> dict[str, Any]:
    """The profile as a flat lookup table for serving code in any language (fields: README)."""
    rows = []
    last = len(profile.buckets) - 1
    for i, bucket in enumerate(profile.buckets):
        first, upto = profile.bucket_range(i)
        row: dict[str, Any] = {"min_len": first, "max_len": None if i == last else upto, "dense": bucket.dense}
        if bucket.budget is not None and not bucket.dense:
            row.update(bucket.budget.to_dict())
            row["kernels"] = {name: {k: getattr(section.kernels[bucket.max_len], k) for k in LAUNCH_KEYS}
                              for name, section in sorted(profile.devices.items())
                              if section.timing == "measured" and bucket.max_len in section.kernels}
        if bucket.sparsity is not None:
            row["sparsity"] = bucket.sparsity
        rows.append(row)
    return {
        "format": TABLE_FORMAT,
        "version": TABLE_VERSION,
        "lookup": "kv_len in [min_len, max_len] (max_len null: no upper limit); no row: dense",
        "model": {"name": profile.model.name, "config_sha256": profile.model.config_sha256},
        "method": profile.method,
        "buckets": rows,
    }


class TablePolicy:
    """A policy read back from a flat lookup table; looks up like the profile it came from."""

    def __init__(self, table: Mapping[str, Any], where: str = "table") -> None:
        if table.get("format") != TABLE_FORMAT or table.get("version") != TABLE_VERSION:
            raise ProfileError(f"{where}: expected format {TABLE_FORMAT!r} version {TABLE_VERSION}, "
                               f"got {table.get('format')!r} version {table.get('version')!r}")
        rows = table.get("buckets")
        if not isinstance(rows, list) or not rows:
            raise ProfileError(f"{where}.buckets: must be a non-empty list")
        self._starts: list[int] = []
        self._ends: list[float] = []
        self._budgets: list[Budget | None] = []
        self._kernels: list[dict[str, KernelConfig]] = []
        self.devices: dict[str, None] = {}  # device names with tuned configs (for the untuned-GPU warning)
        for i, row in enumerate(rows):
            at = f"{where}.buckets[{i}]"
            try:
                first, upto = int(row["min_len"]), row["max_len"]
                # A row holds `Budget.to_dict()`: its fields, less the unset ones (which take their defaults);
                # these four every budget writes, so a row without one is damaged.
                budget = None
                if not row.get("dense"):
                    missing = [k for k in ("method", "block_size", "sink", "local") if k not in row]
                    if missing:
                        raise KeyError(missing[0])
                    budget = Budget(**{f.name: row[f.name] for f in dataclasses.fields(Budget) if f.name in row})
                kernels = {name: KernelConfig(**{k: cfg[k] for k in LAUNCH_KEYS})
                           for name, cfg in (row.get("kernels") or {}).items()}
            except (KeyError, TypeError, ValueError, AttributeError) as exc:  # BudgetError is a ValueError
                detail = f"missing field {exc}" if isinstance(exc, KeyError) else str(exc)
                raise ProfileError(f"{at}: {detail}") from None
            if self._ends and first <= self._ends[-1]:
                raise ProfileError(f"{at}.min_len: must be after the previous row's max_len, got {first}")
            self._starts.append(first)
            self._ends.append(float("inf") if upto is None else int(upto))
            self._budgets.append(budget)
            self._kernels.append(kernels)
            self.devices.update(dict.fromkeys(kernels))

    def _row(self, seq_len: int) -> int | None:
        i = bisect_right(self._starts, seq_len) - 1
        return i if i >= 0 and seq_len <= self._ends[i] else None

    def lookup(self, seq_len: int) -> Budget | None:
        i = self._row(seq_len)
        return None if i is None else self._budgets[i]

    def kernel_config(self, seq_len: int, device: str) -> KernelConfig | None:
        i = self._row(seq_len)
        return None if i is None else self._kernels[i].get(device)
