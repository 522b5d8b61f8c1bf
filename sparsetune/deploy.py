"""Deploy a profile with its model: the deploy folder, and the guards around it.

A deploy folder is the model folder plus two things, so that ``import sparsetune`` and
``AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sparsetune")`` run the profile
with no other code:

    sparsetune_profile.yaml     the profile (re-written by this sparsetune: always the current schema)
    config.json                 the model's config plus  "sparsetune": {"profile": "sparsetune_profile.yaml",
                                                                       "version": 1}

Every other file is a link, never a copy (weights are GBs). Symbolic links by default: they work
across filesystems and make the dependency visible (`ls -l`); the folder breaks if the original
moves. ``link="hardlink"`` survives moving or deleting the original, but needs one filesystem.

On the first attention call, `runtime.hf_attention` reads the entry through
`runtime.policy.policy_from_config`. The entry may instead hold the flat lookup table itself
(`runtime.table.lookup_table`): that is what ``--hf-overrides`` puts into a vLLM or SGLang model's
config, and it loads the same way in transformers. The held-out gate is `evaluate.gate`.

Nothing here imports torch or transformers at module level.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._io import atomic_write, canonical_sha256
from .errors import MODEL_FORMS, DeployError, ModelError
from .profile.profile import PROFILE_SCHEMA_VERSION, Profile
from .runtime.policy import CONFIG_KEY, PROFILE_FILE, config_entry

__all__ = [
    "FORMATS",
    "DeployError",
    "Deployed",
    "check_apply_options",
    "check_model",
    "check_overwrite",
    "is_profile_file",
    "deploy",
    "device_warning",
    "export_table",
    "model_config_sha256",
    "model_folder",
    "schema_note",
]

FORMATS = ("folder", "json", "hf-overrides")  # what `apply` writes: a deploy folder, or a table file


def check_apply_options(fmt: str, model: str | None, out: Path | None, in_place: bool, check: bool,
                        workload: str | None) -> None:
    """Which `apply` options go together; DeployError naming the option otherwise."""
    if fmt not in FORMATS:
        raise DeployError(f"format: must be folder, json or hf-overrides, got {fmt!r}")
    if check and workload is None:
        raise DeployError("workload: --check needs held-out samples (--workload FILE or demo-heldout)")
    if workload is not None and not check:
        raise DeployError("workload: only used with --check")
    if fmt == "folder" and model is None:
        raise DeployError("model: a deploy folder (and --check) needs --model")
    if fmt == "folder" and not check and out is None and not in_place:
        raise DeployError("out: give the deploy folder with --out, or --in-place, or --check")
    if fmt != "folder" and (in_place or (check and out is None)):
        raise DeployError(f"format: --format {fmt} writes a file; give --out FILE "
                          + ("(--in-place is for deploy folders)" if in_place else "with --check"))


def export_table(profile: Profile, fmt: str, out: Path | None = None) -> str:
    """The profile as a `json` lookup table or `hf-overrides` entry; written atomically to `out` if given."""
    from .runtime.policy import hf_overrides
    from .runtime.table import lookup_table

    table = (lookup_table if fmt == "json" else hf_overrides)(profile)
    text = json.dumps(table, indent=2, ensure_ascii=False) + "\n"
    if out is not None:
        atomic_write(out, text, DeployError, make_parents=True)
    return text


# ---------------------------------------------------------------- model folder and guards


def model_folder(name_or_path: str) -> Path:
    """`demo` or a local Hugging Face model folder, resolved; ModelError if it is not one.
    A GGUF model (`workload.gguf`: a file, a folder holding one, `smollm2`) gives its .gguf file."""
    from .workload.gguf import gguf_file
    from .workload.models import DEMO_MODEL

    gguf_path = gguf_file(name_or_path) if name_or_path != "demo" else None
    if gguf_path is not None:
        return gguf_path
    path = DEMO_MODEL if name_or_path == "demo" else Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ModelError(f"model: no such folder {str(path)!r} (give {MODEL_FORMS})")
    if not (path / "config.json").is_file():
        raise ModelError(f"model: {str(path)!r} has no config.json, so it is not a Hugging Face model folder")
    return path.resolve()


def _read_config(folder: Path) -> dict[str, Any]:
    if folder.is_file():  # a GGUF file: the config transformers derives from it, as its converted folder holds
        from .workload.gguf import gguf_config

        return gguf_config(folder)[1]
    try:
        data = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model: cannot read {folder / 'config.json'}: {exc}") from None
    if not isinstance(data, dict):
        raise ModelError(f"model: {folder / 'config.json'} must hold a JSON object")
    return data


def model_config_sha256(folder: Path) -> str:
    """The model's config hash as a profile records it, ignoring a deploy entry (a deployed folder
    is still the same model)."""
    data = _read_config(folder)
    data.pop(CONFIG_KEY, None)
    return canonical_sha256(data)


def check_model(profile: Profile, folder: Path, force: bool = False) -> str | None:
    """Refuse a profile tuned for another model (config hash) unless `force`; then return a warning."""
    data = _read_config(folder)
    hashes = {canonical_sha256(data)}
    data.pop(CONFIG_KEY, None)
    hashes.add(canonical_sha256(data))
    expected = profile.model.config_sha256
    if expected in hashes:
        return None
    message = (f"the profile was tuned for model {profile.model.name!r} (config_sha256 {expected[:12]}...), "
               f"but {folder / 'config.json'} hashes to {canonical_sha256(data)[:12]}...")
    if not force:
        raise DeployError(f"model: {message}; a profile's budgets hold only for its model "
                          "(pass --force to apply it anyway)")
    return f"{message}; applied anyway (--force)"


def check_overwrite(out: Path, model: str, workload: str, force: bool = False) -> None:
    """Before a search writes the profile `out`: refuse (SearchError) to replace an existing file that is not a
    profile of this model (config hash) and workload (file hash) unless `force`. A profile of the same model and
    workload is the same search's output and is replaced, as `apply` replaces only its own folders.

    A model or workload that cannot be read is left to the search, which names the problem.
    """
    import hashlib

    from .errors import SearchError, SparsetuneError
    from .profile import load_profile
    from .workload.files import workload_file

    out = Path(out).expanduser()
    if force or not out.exists():
        return
    hint = "choose another --out, or pass --force to overwrite it"
    try:
        existing = load_profile(out)
    except SparsetuneError:
        raise SearchError(f"out: {out} exists and is not a sparsetune profile; {hint}") from None
    try:
        folder = model_folder(model)
        data = _read_config(folder)
        hashes = {canonical_sha256(data)}
        data.pop(CONFIG_KEY, None)
        hashes.add(canonical_sha256(data))
        work_sha = hashlib.sha256(workload_file(workload).read_bytes()).hexdigest()
    except (SparsetuneError, OSError):
        return
    other = []
    if existing.model.config_sha256 not in hashes:
        other.append(f"model (it names {existing.model.name!r}, config {existing.model.config_sha256[:12]}...)")
    if existing.workload.sha256 != work_sha:
        other.append(f"workload (it names {existing.workload.name!r}, sha256 {existing.workload.sha256[:12]}...)")
    if other:
        raise SearchError(f"out: {out} is a profile for a different {' and a different '.join(other)}; {hint}")


def is_profile_file(path: Path) -> bool:
    """Whether `path` holds a valid profile (what `collect -o` may replace without --force)."""
    from .errors import SparsetuneError
    from .profile import load_profile

    try:
        load_profile(path)
    except (SparsetuneError, OSError):
        return False
    return True


def device_warning(profile: Profile, device: str | None) -> str | None:
    """A warning when `device` (a GPU name; None: no GPU here) has no measured kernel configs but others do."""
    from .runtime.policy import untuned_warning

    return untuned_warning(profile, device)


def schema_note(path: Path) -> str | None:
    """A note when the profile file is older than the current schema and was upgraded on load."""
    from .profile import _yaml

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
    from .workload.models import DEMO_MODEL

    if model.is_file():
        return _deploy_gguf(profile, model, out, in_place=in_place)
    if in_place:
        if out is not None:
            raise DeployError("out: give either --out or --in-place, not both")
        if model == DEMO_MODEL.resolve():
            raise DeployError(f"model: --in-place would modify the packaged demo model at {model}; use --out")
        # Profile first: the config never names a file that is not there yet.
        profile.save(model / PROFILE_FILE)
        atomic_write(model / "config.json", _config_text(model), DeployError)
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
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
    except OSError as exc:
        raise DeployError(f"out: cannot create {out}: {exc.strerror or exc}") from None
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
        atomic_write(tmp / "config.json", _config_text(model), DeployError)
        profile.save(tmp / PROFILE_FILE)
        if out.exists():
            old = out.with_name(f".{out.name}.{secrets.token_hex(4)}.old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old)  # holds links and apply's own files; rmtree does not follow links
        else:
            os.replace(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):
            raise DeployError(f"out: cannot create {out}: {exc.strerror or exc}") from None
        raise
    return Deployed(out, out / PROFILE_FILE, tuple(linked), link)


def _deploy_gguf(profile: Profile, gguf_path: Path, out: Path | None, *, in_place: bool) -> Deployed:
    """A GGUF source deploys as a converted Hugging Face folder: safetensors weights (dequantised, fp32, as
    tuned), tokenizer files, config.json with the entry, and the profile. transformers cannot take the
    entry through ``gguf_file=`` loading, and a plain folder is what serving engines read.

    The folder is converted beside `out`, then `deploy` hard-links it into place with all its guards
    (same filesystem by construction) and the staging folder goes: `out` holds the only copy.
    """
    import torch

    from .workload.gguf import gguf_config, load_gguf_model, load_gguf_tokenizer, write_hf_folder

    if in_place or out is None:
        raise DeployError(f"out: a GGUF model ({gguf_path.name}) deploys as a converted folder; give it with "
                          "--out (--in-place needs a Hugging Face model folder)")
    out = out.expanduser().absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{secrets.token_hex(4)}.gguf")
    staging.mkdir()
    try:
        write_hf_folder(load_gguf_model(gguf_path, torch.float32), load_gguf_tokenizer(gguf_path),
                        gguf_config(gguf_path)[1], staging)
        done = deploy(profile, staging, out, link="hardlink")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Deployed(done.folder, done.profile_path, done.linked, "converted")

