"""The budget profile: sparsetune's file format and the contract with serving code.

A profile says, per range of request lengths, which sparse attention budget meets the
accuracy floor (or that the range stays dense, and why), what that was measured at, and
which kernel launch config is fastest on each GPU. Serving code does::

    profile = sparsetune.load_profile("profile.yaml")
    budget = profile.lookup(kv_len)          # None means: run dense attention
    config = profile.kernel_config(kv_len, torch.cuda.get_device_name())

The dataclasses below are the single source of truth: validation, YAML/JSON and
``profiles/profile.schema.json`` (`json_schema`) are all derived from them.

Buckets are contiguous and sorted by `max_len`: bucket i covers lengths
``(buckets[i-1].max_len, buckets[i].max_len]``, the first one starts at the profile's
`min_len`. Lengths below `min_len` are dense; lengths above the last edge use the last
bucket's budget, since longer inputs tolerate at least as much sparsity.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from .._io import atomic_write, redact_url
from ..errors import ProfileError
from ..kernels.configs import LAUNCH_KEYS, config_problem
from . import _yaml
from ._typed import check_fields, convert, rule, show, to_plain
from .budget import Budget
from .buckets import Span, below, bucket_index, spans as _spans
from .versions import PROFILE_SCHEMA_VERSION, inherit_method, upgrade

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
]


_SHA256 = dict(pattern="[0-9a-f]{64}", pattern_doc="64 lowercase hex digits (a sha256)")
_TILES = (16, 32, 64, 128, 256)  # Triton tile sizes worth trying for attention; tl.dot needs >= 16
_WARPS = (1, 2, 4, 8, 16, 32)


@dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """The model the budgets were tuned for; `config_sha256` lets tools refuse another model."""

    name: str = rule("model name or folder the profile was tuned on", nonempty=True)
    config_sha256: str = rule("sha256 of the model's config, to detect a profile applied to another model",
                              **_SHA256)
    layers: int = rule("decoder layers", min=1)
    heads: int = rule("query heads per layer", min=1)
    kv_heads: int = rule("key/value heads per layer (GQA); divides heads", min=1)
    head_dim: int = rule("dimension of one attention head", min=1)
    max_positions: int | None = rule("longest sequence the model supports, if known", default=None, min=1)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.heads % self.kv_heads:
            raise ProfileError(f"kv_heads: must divide heads ({self.heads}), got {self.kv_heads}")


@dataclass(frozen=True, kw_only=True)
class WorkloadInfo:
    """The samples accuracy was measured on; a different `sha256` means different data."""

    name: str = rule("workload name or file", nonempty=True)
    sha256: str = rule("sha256 of the workload's samples", **_SHA256)
    samples: int = rule("number of samples in the workload", min=1)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, kw_only=True)
class Floor:
    """The accuracy a sparse budget had to keep to be chosen."""

    metric: Literal["exact_match"] = rule("accuracy metric (teacher-forced exact match)",
                                          default="exact_match")
    kind: Literal["relative", "absolute"] = rule(
        "relative: sparse >= value * dense; absolute: sparse >= value", default="relative")
    value: float = rule("the floor", min=0, min_open=True, max=1)
    confidence: float | None = rule(
        "if set, the floor applies to a one-sided lower confidence bound at this level (relative floors: "
        "Tango's score bound on the paired difference with dense), not the point estimate",
        default=None, min=0, max=1, max_open=True)
    per_task: bool = rule("every task in a bucket must hold the floor on its own samples (else the bucket's "
                          "aggregate must, and no task may miss it beyond noise)", default=False, omit_default=True)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, kw_only=True)
class Provenance:
    """How the profile was made, so a run can be reproduced or resumed."""

    sparsetune: str = rule("sparsetune version that wrote the profile", nonempty=True)
    created: str = rule("creation time, ISO 8601 with a timezone", datetime_iso=True)
    study: str = rule("Optuna study name prefix (one study per bucket: <study>:<max_len>)", nonempty=True)
    trials_per_bucket: int = rule("Optuna trials run per bucket", min=0)
    seed: int = rule("sampler seed", min=0)
    storage: str | None = rule("Optuna storage URL, without credentials", default=None)

    def __post_init__(self) -> None:
        check_fields(self)

    @classmethod
    def create(cls, *, study: str, trials_per_bucket: int, seed: int, storage: str | None = None) -> Provenance:
        """Provenance stamped with this sparsetune's version and the current UTC time. A password in `storage`
        (``postgresql://user:secret@host/db``) becomes ``***``: profiles get shipped, credentials must not be."""
        from .._version import __version__

        created = datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        return cls(sparsetune=__version__, created=created, study=study, trials_per_bucket=trials_per_bucket,
                   seed=seed, storage=None if storage is None else redact_url(storage))


@dataclass(frozen=True, kw_only=True)
class TaskAccuracy:
    """Accuracy on one task within a bucket (multi-hop and aggregation tasks break first)."""

    sparse: float = rule("accuracy with the bucket's budget", min=0, max=1)
    dense: float = rule("accuracy with dense attention", min=0, max=1)
    n: int = rule("samples of this task in the bucket", min=1)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, kw_only=True)
class Accuracy:
    """Measured accuracy of a bucket; always with its sample count, since small buckets are noisy."""

    sparse: float = rule("accuracy with the bucket's budget (dense buckets: same as dense)", min=0, max=1)
    dense: float = rule("accuracy with dense attention on the same samples", min=0, max=1)
    lower_bound: float | None = rule(
        "lower confidence bound on the sparse accuracy at floor.confidence (relative floors: dense plus the "
        "paired difference's score bound); absent when the floor has no confidence level", default=None, min=0, max=1)
    n: int = rule("samples in the bucket", min=1)
    per_task: dict[str, TaskAccuracy] | None = rule("the same, per task", default=None)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, kw_only=True)
class Bucket:
    """One range of request lengths (KV length at the last query) and what it may keep."""

    max_len: int = rule("inclusive upper edge in tokens; the range starts after the previous edge", min=1)
    dense: bool = rule("true when the bucket runs dense attention", default=False, omit_default=True)
    reason: str | None = rule("why this choice was made; required when dense", default=None)
    budget: Budget | None = rule("the sparse budget; required unless dense", default=None)
    accuracy: Accuracy | None = rule("measured accuracy of the choice on the samples the search explored",
                                     default=None)
    confirmation: Accuracy | None = rule(
        "accuracy of the choice on the confirmation samples, which the search never selected on", default=None)
    bound_by: str | None = rule("the task closest to (or furthest below) the floor: the one that bound the choice",
                                default=None)
    sparsity: float | None = rule("achieved sparsity: skipped visible blocks / visible blocks",
                                  default=None, min=0, max=1)
    cost: float | None = rule("attention cost relative to dense at this length (timed or cost model)",
                              default=None, min=0)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.dense and self.budget is not None:
            raise ProfileError(f"budget: must be absent when dense is true, got {show(self.budget.to_dict())}")
        if self.dense and not self.reason:
            raise ProfileError("reason: required when dense is true (say why the bucket stays dense)")
        if not self.dense and self.budget is None:
            raise ProfileError("budget: required unless dense is true")


@dataclass(frozen=True, kw_only=True)
class KernelConfig:
    """A Triton launch config for one bucket on one device; changes speed, never results.

    The UPPER_CASE names are the kernel's constexprs, spelled as in Triton.
    """

    BLOCK_M: int = rule("query rows per program; must divide the bucket's block_size", choices=_TILES)
    BLOCK_N: int = rule("key columns per inner step; must divide the bucket's block_size", choices=_TILES)
    num_warps: int = rule("warps per program", choices=_WARPS)
    num_stages: int = rule("software pipelining stages", min=1)
    ms: float | None = rule("median time of the sparse kernel in ms (measured timing only)",
                            default=None, min=0, min_open=True)
    dense_ms: float | None = rule("median time of dense attention at the same shape, in ms",
                                  default=None, min=0, min_open=True)
    selection_ms: float | None = rule("median time of block selection in ms", default=None, min=0, min_open=True)
    timed_at: int | None = rule("KV length the timings were taken at; absent means the bucket's max_len",
                                default=None, min=1)

    def __post_init__(self) -> None:
        check_fields(self)


@dataclass(frozen=True, kw_only=True)
class DeviceSection:
    """Kernel configs for one device, keyed by bucket `max_len`; re-timed per GPU type."""

    timing: Literal["measured", "cost-model"] = rule(
        "measured: GPU timings in ms; cost-model: configs chosen without timing (CPU)")
    kernels: dict[int, KernelConfig] = rule("launch config per bucket max_len (sparse buckets only)",
                                            default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self)
        if self.timing == "cost-model":
            for length, config in self.kernels.items():
                for name in ("ms", "dense_ms", "selection_ms"):
                    if getattr(config, name) is not None:
                        raise ProfileError(
                            f"kernels[{length}].{name}: must be absent when timing is 'cost-model' "
                            f"(only measured timings are in ms), got {getattr(config, name)!r}")


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A sparsetune budget profile: per-length sparse attention budgets and kernel configs."""

    schema: int = rule("profile format version", default=PROFILE_SCHEMA_VERSION, choices=(PROFILE_SCHEMA_VERSION,))
    model: ModelInfo = rule("the model the budgets were tuned for")
    workload: WorkloadInfo = rule("the samples accuracy was measured on")
    floor: Floor = rule("the accuracy floor every sparse bucket met")
    method: Literal["topk", "coverage"] = rule("block selection method of every budget")
    provenance: Provenance = rule("how and when the profile was made")
    min_len: int = rule("shortest length the first bucket covers; shorter requests run dense", default=1, min=1)
    buckets: tuple[Bucket, ...] = rule("contiguous length buckets sorted by max_len", nonempty=True)
    devices: dict[str, DeviceSection] = rule("kernel configs per device name (torch.cuda.get_device_name())",
                                             default_factory=dict)

    def __post_init__(self) -> None:
        check_fields(self)
        edges = tuple(b.max_len for b in self.buckets)
        for i in range(1, len(edges)):
            if edges[i] <= edges[i - 1]:
                raise ProfileError(
                    f"buckets[{i}].max_len: must be greater than buckets[{i - 1}].max_len ({edges[i - 1]}); "
                    f"buckets are sorted and do not overlap, got {edges[i]}")
        if self.min_len > edges[0]:
            raise ProfileError(f"min_len: must be <= buckets[0].max_len ({edges[0]}), got {self.min_len}")
        limit = self.model.max_positions
        for i, bucket in enumerate(self.buckets):
            if limit is not None and bucket.max_len > limit:
                raise ProfileError(
                    f"buckets[{i}].max_len: must be <= model.max_positions ({limit}), got {bucket.max_len}")
            if bucket.budget is not None and bucket.budget.method != self.method:
                raise ProfileError(
                    f"buckets[{i}].budget.method: must be the profile's method {self.method!r}, "
                    f"got {bucket.budget.method!r}")
        self._check_devices(edges)
        # Precomputed for lookup(), the per-request hot path.
        object.__setattr__(self, "_edges", edges)
        object.__setattr__(self, "_budgets", tuple(None if b.dense else b.budget for b in self.buckets))

    def _check_devices(self, edges: tuple[int, ...]) -> None:
        by_edge = {b.max_len: (i, b) for i, b in enumerate(self.buckets)}
        for name, section in self.devices.items():
            where = f"devices[{json.dumps(name, ensure_ascii=False)}]"
            if not name.strip():
                raise ProfileError(f"{where}: device name must not be empty")
            for length, config in section.kernels.items():
                at = f"{where}.kernels[{length}]"
                if length not in by_edge:
                    raise ProfileError(
                        f"{at}: must be keyed by a bucket max_len ({', '.join(map(str, edges))}), got {length}")
                i, bucket = by_edge[length]
                if bucket.budget is None:
                    raise ProfileError(f"{at}: buckets[{i}] is dense, it has no sparse kernel config")
                # The kernel launcher's own rule (kernels/configs.py), so a valid profile always launches.
                launch = {k: getattr(config, k) for k in LAUNCH_KEYS}
                problem = config_problem(launch, bucket.budget.block_size, block_name=f"buckets[{i}].budget.block_size")
                if problem is not None:
                    raise ProfileError(f"{at}.{problem[0]}: {problem[1]}")

    # ------------------------------------------------------------ runtime

    @property
    def edges(self) -> tuple[int, ...]:
        """The buckets' max_len, ascending."""
        return self._edges  # type: ignore[attr-defined,no-any-return]

    def bucket_index(self, seq_len: int) -> int | None:
        """Index of the bucket whose budget applies to `seq_len`, or None below `min_len`."""
        return bucket_index(self._edges, seq_len, self.min_len)  # type: ignore[attr-defined]

    def lookup(self, seq_len: int) -> Budget | None:
        """The budget for a request whose KV length is `seq_len`; None means dense attention. O(log buckets).
        Dense below `min_len` and in dense buckets; beyond the last edge, the last bucket's budget."""
        i = self.bucket_index(seq_len)
        return None if i is None else self._budgets[i]  # type: ignore[attr-defined,no-any-return]

    def kernel_config(self, seq_len: int, device: str) -> KernelConfig | None:
        """The launch config tuned for `seq_len`'s bucket on `device`; None when the length runs dense or the
        device has no entry for it: the caller then uses the kernel's default config (and may warn)."""
        i = self.bucket_index(seq_len)
        section = self.devices.get(device)
        if i is None or section is None or self.buckets[i].dense:
            return None
        return section.kernels.get(self._edges[i])  # type: ignore[attr-defined,no-any-return]

    def bucket_range(self, index: int) -> tuple[int, int]:
        """Inclusive (first, last) length of bucket `index` (`span`)."""
        return self.spans[index].first, self.spans[index].last

    def span(self, index: int | None) -> Span:
        """Bucket `index`'s `Span`; None: the dense lengths below min_len (a ValueError when there are none)."""
        found = below(self.min_len) if index is None else self.spans[index]
        if found is None:
            raise ValueError("no lengths below min_len: the first bucket starts at 1")
        return found

    @property
    def spans(self) -> list[Span]:
        return _spans(self._edges, self.min_len)  # type: ignore[attr-defined]

    def with_device(self, name: str, section: DeviceSection) -> Profile:
        """A copy with `name`'s kernel section added or replaced (re-timing on another GPU)."""
        return replace(self, devices={**self.devices, name: section})

    # ------------------------------------------------------------ serialisation

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the file's key order; None fields are left out, kernel keys are ints."""
        return to_plain(self)  # type: ignore[no-any-return]

    @classmethod
    def from_dict(cls, data: Any) -> Profile:
        """Validate raw YAML/JSON data and build the profile (older schema versions are upgraded); a
        `ProfileError` message starts with the field path."""
        if not isinstance(data, Mapping):
            what = "an empty document" if data is None else show(data)
            raise ProfileError(f"(top level): must be a mapping of profile fields, got {what}")
        data = inherit_method(upgrade(data))
        return convert(cls, data, "")  # type: ignore[no-any-return]

    def to_yaml(self) -> str:
        """The profile as YAML text, in a stable key order, with a short header comment."""
        header = (f"# sparsetune budget profile, schema {self.schema}. Format: profiles/profile.schema.json\n"
                  f"# Written by sparsetune; load with sparsetune.load_profile(path).\n")
        return _yaml.dump(self.to_dict(), header=header)

    @classmethod
    def from_yaml(cls, text: str, source: str = "<string>") -> Profile:
        """Parse and validate YAML text; error messages start with `source`."""
        try:
            raw = _yaml.load(text)
        except _yaml.YamlSyntaxError as exc:
            where = source if exc.line is None else f"{source}:{exc.line}:{exc.column}"
            raise ProfileError(f"{where}: invalid YAML: {exc.message}") from None
        try:
            return cls.from_dict(raw)
        except ProfileError as exc:
            raise ProfileError(f"{source}: {exc}") from None

    def to_json(self) -> str:
        """The profile as JSON text (kernel keys become strings, as JSON requires)."""
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the profile as YAML atomically: a crash leaves the old file or the new one, never half."""
        atomic_write(path, self.to_yaml(), ProfileError)


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and validate a profile YAML file (JSON is YAML too). Errors start with the path."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ProfileError(f"{path}: is a directory, expected a profile YAML file") from None
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{path}: not UTF-8 text (bad byte at offset {exc.start})") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return Profile.from_yaml(text, source=str(path))
