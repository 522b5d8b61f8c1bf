"""Deploy a profile with its model, export it for serving engines, and gate it on held-out data.

A deploy folder is the model folder plus two things, so that ``import sparsetune`` and
``AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sparsetune")`` run the profile
with no other code:

    sparsetune_profile.yaml     the profile (re-written by this sparsetune: always the current schema)
    config.json                 the model's config plus  "sparsetune": {"profile": "sparsetune_profile.yaml",
                                                                       "version": 1}

Every other file is a link, never a copy (weights are GBs). Symbolic links by default: they work
across filesystems and make the dependency visible (`ls -l`); the folder breaks if the original
moves. ``link="hardlink"`` survives moving or deleting the original, but needs one filesystem.

On the first attention call, `hf_attention` reads the entry through `policy_from_config`. The entry
may instead hold the flat lookup table itself (`lookup_table`): that is what ``--hf-overrides`` puts
into a vLLM or SGLang model's config, and it loads the same way in transformers.

Nothing here imports torch or transformers at module level: `policy_from_config` runs inside the
serving process, and `check_profile` imports the evaluation code when called.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from .budget import Budget
from .errors import ModelError, ProfileError, SparsetuneError
from .profile import PROFILE_SCHEMA_VERSION, KernelConfig, Profile, _atomic_write, load_profile

__all__ = [
    "CONFIG_KEY",
    "DEMO_HELDOUT",
    "ENTRY_VERSION",
    "PROFILE_FILE",
    "BucketCheck",
    "CheckReport",
    "DeployError",
    "Deployed",
    "TablePolicy",
    "check_model",
    "check_profile",
    "config_entry",
    "deploy",
    "device_warning",
    "hf_overrides",
    "lookup_table",
    "model_config_sha256",
    "model_folder",
    "policy_from_config",
    "schema_note",
]

CONFIG_KEY = "sparsetune"  # the config.json entry (and config attribute) the runtime looks for
PROFILE_FILE = "sparsetune_profile.yaml"  # the profile's name inside a deploy folder
ENTRY_VERSION = 1  # version of the config entry's own format; bump if its keys change meaning
TABLE_FORMAT = "sparsetune-lookup"  # `format` of the flat table
TABLE_VERSION = 1
DEMO_HELDOUT = Path(__file__).resolve().parent / "demo" / "heldout.jsonl"  # `--workload demo-heldout`

_LAUNCH_KEYS = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")


class DeployError(SparsetuneError, ValueError):
    """A profile cannot be deployed as asked (wrong model, output folder in the way, bad options)."""


# ---------------------------------------------------------------- model folder and guards


def model_folder(name_or_path: str) -> Path:
    """`demo` or a local Hugging Face model folder, resolved; ModelError if it is not one."""
    from .models import DEMO_MODEL

    path = DEMO_MODEL if name_or_path == "demo" else Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ModelError(f"model: no such folder {str(path)!r} (give a local Hugging Face model folder or 'demo')")
    if not (path / "config.json").is_file():
        raise ModelError(f"model: {str(path)!r} has no config.json, so it is not a Hugging Face model folder")
    return path.resolve()


def _read_config(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model: cannot read {folder / 'config.json'}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"model: {folder / 'config.json'} must hold a JSON object")
    return data


def _canonical_sha256(data: Mapping[str, Any]) -> str:
    # Same canonical form as models.config_sha256, so hashes compare with the ones search records.
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def model_config_sha256(folder: Path) -> str:
    """The model's config hash as a profile records it, ignoring a deploy entry (a deployed folder
    is still the same model)."""
    data = _read_config(folder)
    data.pop(CONFIG_KEY, None)
    return _canonical_sha256(data)


def check_model(profile: Profile, folder: Path, force: bool = False) -> str | None:
    """Refuse a profile tuned for another model (config hash) unless `force`; then return a warning."""
    data = _read_config(folder)
    hashes = {_canonical_sha256(data)}
    data.pop(CONFIG_KEY, None)
    hashes.add(_canonical_sha256(data))
    expected = profile.model.config_sha256
    if expected in hashes:
        return None
    message = (f"the profile was tuned for model {profile.model.name!r} (config_sha256 {expected[:12]}...), "
               f"but {folder / 'config.json'} hashes to {_canonical_sha256(data)[:12]}...")
    if not force:
        raise DeployError(f"model: {message}; a profile's budgets hold only for its model "
                          "(pass --force to apply it anyway)")
    return f"{message}; applied anyway (--force)"


def device_warning(profile: Profile, device: str | None) -> str | None:
    """A warning when `device` (a GPU name; None: no GPU here) has no measured kernel configs but others do."""
    measured = sorted(n for n, s in profile.devices.items() if s.timing == "measured")
    if device is None or not measured or device in profile.devices:
        return None
    return (f"the profile's kernel configs were tuned on {', '.join(map(repr, measured))}, not on {device!r}: "
            "this GPU uses the kernel's default launch configs (re-time the profile on it for tuned ones)")


def schema_note(path: Path) -> str | None:
    """A note when the profile file is older than the current schema and was upgraded on load."""
    from . import _yaml

    try:
        version = _yaml.load(path.read_text(encoding="utf-8")).get("schema")
    except Exception:  # noqa: BLE001 - load_profile has already validated the file; this is only a note
        return None
    if isinstance(version, int) and version < PROFILE_SCHEMA_VERSION:
        return (f"{path}: profile schema {version} was upgraded to {PROFILE_SCHEMA_VERSION} on load; "
                f"the deployed copy is written in schema {PROFILE_SCHEMA_VERSION}")
    return None


# ---------------------------------------------------------------- the deploy folder


@dataclass(frozen=True)
class Deployed:
    folder: Path
    profile_path: Path
    linked: tuple[str, ...]  # names linked from the model folder (top level)
    link: str  # symlink | hardlink | in-place

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "profile": str(self.profile_path), "linked": list(self.linked),
                "link": self.link, "config_entry": config_entry()}


def config_entry() -> dict[str, Any]:
    """The value `deploy` writes under config.json's "sparsetune" key."""
    return {"profile": PROFILE_FILE, "version": ENTRY_VERSION}


def _config_text(folder: Path) -> str:
    data = _read_config(folder)
    data.pop(CONFIG_KEY, None)
    data[CONFIG_KEY] = config_entry()  # last, the rest in the original order
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def _is_deploy_folder(path: Path) -> bool:
    try:
        return CONFIG_KEY in _read_config(path)
    except ModelError:
        return False


def _hardlink_tree(src: Path, dst: Path) -> None:
    if src.is_dir():
        dst.mkdir()
        for child in sorted(src.iterdir()):
            _hardlink_tree(child, dst / child.name)
    else:
        os.link(src.resolve(), dst)


def deploy(profile: Profile, model: Path, out: Path | None = None, *, in_place: bool = False,
           link: Literal["symlink", "hardlink"] = "symlink") -> Deployed:
    """Write the deploy folder `out` for `model` (or, with `in_place`, turn `model` itself into one).

    `out` is built beside itself under a temporary name and renamed into place, so a failure leaves
    no half folder; an existing `out` is replaced only if an earlier `deploy` made it.
    """
    from .models import DEMO_MODEL

    if in_place:
        if out is not None:
            raise DeployError("out: give either --out or --in-place, not both")
        if model == DEMO_MODEL.resolve():
            raise DeployError(f"model: --in-place would modify the packaged demo model at {model}; use --out")
        # Profile first: the config never names a file that is not there yet.
        profile.save(model / PROFILE_FILE)
        _atomic_write(model / "config.json", _config_text(model))
        return Deployed(model, model / PROFILE_FILE, (), "in-place")
    if out is None:
        raise DeployError("out: give the deploy folder to create with --out (or --in-place)")
    if link not in ("symlink", "hardlink"):
        raise DeployError(f"link: must be symlink or hardlink, got {link!r}")
    out = out.expanduser().absolute()
    if out.resolve() == model or model in out.resolve().parents:
        raise DeployError(f"out: {out} is inside the model folder {model}; choose a folder elsewhere "
                          "(or --in-place to change the model folder itself)")
    if out.is_symlink() or out.exists() and not (out.is_dir() and (not any(out.iterdir()) or _is_deploy_folder(out))):
        raise DeployError(f"out: {out} exists and is not a folder made by `sparsetune apply`; "
                          "choose a new folder (apply only replaces its own)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    tmp.mkdir()
    linked = []
    try:
        for entry in sorted(model.iterdir()):
            if entry.name in ("config.json", PROFILE_FILE):
                continue
            try:
                if link == "symlink":  # to the real file: no chain through another deploy folder or cache link
                    os.symlink(entry.resolve(), tmp / entry.name, target_is_directory=entry.is_dir())
                else:
                    _hardlink_tree(entry, tmp / entry.name)
            except OSError as exc:
                hint = " (hard links need one filesystem; use --link symlink)" if link == "hardlink" else ""
                raise DeployError(f"out: cannot {link} {entry} into {out}: {exc.strerror or exc}{hint}") from None
            linked.append(entry.name)
        (tmp / "config.json").write_text(_config_text(model), encoding="utf-8")
        profile.save(tmp / PROFILE_FILE)
        if out.exists():
            old = out.with_name(f".{out.name}.{secrets.token_hex(4)}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)  # holds links and apply's own files; rmtree does not follow links
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Deployed(out, out / PROFILE_FILE, tuple(linked), link)


# ---------------------------------------------------------------- exports for serving engines


def lookup_table(profile: Profile) -> dict[str, Any]:
    """The profile as a flat lookup table for serving code in any language (fields: README)."""
    rows = []
    last = len(profile.buckets) - 1
    for i, bucket in enumerate(profile.buckets):
        first, upto = profile.bucket_range(i)
        row: dict[str, Any] = {"min_len": first, "max_len": None if i == last else upto, "dense": bucket.dense}
        if bucket.budget is not None and not bucket.dense:
            row.update(bucket.budget.to_dict())
            row["kernels"] = {name: {k: getattr(section.kernels[bucket.max_len], k) for k in _LAUNCH_KEYS}
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


def hf_overrides(profile: Profile) -> dict[str, Any]:
    """For vLLM ``--hf-overrides`` / SGLang ``--json-model-override-args``: the table as config.sparsetune."""
    return {CONFIG_KEY: lookup_table(profile)}


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
                budget = None if row.get("dense") else Budget(
                    method=row["method"], block_size=row["block_size"], keep=row.get("keep"), tau=row.get("tau"),
                    sink=row["sink"], local=row["local"])
                kernels = {name: KernelConfig(**{k: cfg[k] for k in _LAUNCH_KEYS})
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


# ---------------------------------------------------------------- the held-out gate


@dataclass(frozen=True)
class BucketCheck:
    """One profile bucket on held-out samples: dense vs the profile, against the profile's floor."""

    first: int  # shortest length of the bucket's range
    last: int | None  # longest (None: the last bucket, open-ended)
    n: int
    dense_bucket: bool  # the profile runs this range dense: nothing to check
    dense: float | None = None
    sparse: float | None = None
    lower_bound: float | None = None  # of the sparse accuracy, paired with dense, at CheckReport.confidence
    floor: float | None = None  # the accuracy this bucket had to reach (absolute)
    measured: float | None = None  # what was compared with `floor`: lower_bound or sparse
    sparsity: float | None = None
    verdict: Literal["pass", "fail", "dense", "untested"] = "untested"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CheckReport:
    buckets: list[BucketCheck]
    floor: dict[str, Any]  # the profile's floor
    confidence: float  # level of the lower bounds shown
    judged_on: str  # "lower_bound" or "sparse"
    workload: str
    samples: int
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(b.verdict != "fail" for b in self.buckets)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "floor": self.floor, "confidence": self.confidence, "judged_on": self.judged_on,
                "workload": self.workload, "samples": self.samples, "warnings": self.warnings,
                "buckets": [b.to_dict() for b in self.buckets]}


def check_profile(profile: Profile, loaded: Any, samples: Sequence[Any], workload: str = "",
                  batch_size: int | None = None) -> CheckReport:
    """Per profile bucket: dense and profile accuracy on `samples` (with answers), judged against the floor.

    The profile itself is the policy, so every attention call looks its budget up by KV length exactly
    as in serving. The floor is judged on the paired lower bound when the profile's floor has a
    confidence level, else on the point estimate. Dense buckets are not run (nothing changes there);
    a sparse bucket without samples is "untested", which does not fail the gate.
    """
    from .evaluate import DEFAULT_BATCH_SIZE, evaluate, paired_lower_bound

    floor = profile.floor
    confidence = floor.confidence if floor.confidence is not None else 0.9
    groups: dict[int | None, list[Any]] = {}
    for s in samples:
        groups.setdefault(profile.bucket_index(s.length), []).append(s)
    rows = []
    if None in groups:  # shorter than min_len: dense by the profile's rule
        rows.append(BucketCheck(first=1, last=profile.min_len - 1, n=len(groups[None]), dense_bucket=True,
                                verdict="dense"))
    last = len(profile.buckets) - 1
    for i, bucket in enumerate(profile.buckets):
        first, upto = profile.bucket_range(i)
        part = groups.get(i, [])
        head = dict(first=first, last=None if i == last else upto, n=len(part), dense_bucket=bucket.dense)
        if bucket.dense:
            rows.append(BucketCheck(**head, verdict="dense"))
            continue
        if not part:
            rows.append(BucketCheck(**head, verdict="untested"))
            continue
        size = batch_size or DEFAULT_BATCH_SIZE
        dense = evaluate(loaded, part, None, batch_size=size)
        sparse = evaluate(loaded, part, profile, batch_size=size)
        pd = paired_lower_bound(dense.correct, sparse.correct, confidence)
        lower = max(0.0, pd.sparse_lower_bound)
        target = floor.value * pd.dense_accuracy if floor.kind == "relative" else floor.value
        measured = lower if floor.confidence is not None else pd.sparse_accuracy
        rows.append(BucketCheck(**head, dense=pd.dense_accuracy, sparse=pd.sparse_accuracy, lower_bound=lower,
                                floor=target, measured=measured, sparsity=sparse.sparsity,
                                verdict="pass" if measured >= target - 1e-12 else "fail"))
    return CheckReport(buckets=rows, floor=asdict(floor), confidence=confidence,
                       judged_on="lower_bound" if floor.confidence is not None else "sparse",
                       workload=workload, samples=len(samples))

