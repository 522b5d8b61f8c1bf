"""Load a local Hugging Face causal LM (or the packaged demo) with the facts search and profiles record.

Local files only: a tuning run must not depend on the network, and a profile must name exactly the
weights it was tuned on (`config_sha256`, `weights_id`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._io import canonical_sha256
from ..errors import MODEL_FORMS, ModelError
from . import gguf

if TYPE_CHECKING:  # torch loads with the model, so resolving a model name stays cheap (arguments are checked first)
    import torch

__all__ = ["DEMO_MODEL", "LoadedModel", "config_sha256", "load_model", "load_tokenizer", "max_positions",
           "weights_id"]

# The demo model ships inside the package (issue 5); `--model demo` resolves here.
DEMO_MODEL = Path(__file__).resolve().parents[1] / "demo" / "model"

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


@dataclass
class LoadedModel:
    """A causal LM in eval mode plus the facts a profile records about it."""

    model: Any  # a transformers PreTrainedModel (causal LM)
    tokenizer: Any | None  # None when the folder has no tokenizer files: token-id workloads only
    name: str  # "demo" or the folder's name
    path: Path
    config_sha256: str  # sha256 of config.json as canonical JSON (sorted keys, no spaces)
    weights_id: str  # sha256 over the weight files' names, sizes and mtimes: cheap identity for caches
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    max_positions: int  # max_position_embeddings: the longest sample the model may see

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.get_text_config().vocab_size)


def config_sha256(config_json: Path) -> str:
    """sha256 of a config.json as canonical JSON, so whitespace and key order do not matter."""
    return canonical_sha256(json.loads(config_json.read_text(encoding="utf-8")))


def weights_id(folder: Path) -> str:
    """Identity of the weight files without reading them (hashing GBs per run would dominate a small eval)."""
    h = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES and p.is_file()):
        st = f.stat()
        h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _resolve(name_or_path: str) -> tuple[str, Path]:
    if name_or_path == "demo":
        if not (DEMO_MODEL / "config.json").is_file():
            raise ModelError(f"model: the demo model is missing from the package at {DEMO_MODEL}")
        return "demo", DEMO_MODEL
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise ModelError(
            f"model: no such folder {str(path)!r} (give {MODEL_FORMS}; nothing is downloaded)")
    if not (path / "config.json").is_file():
        raise ModelError(f"model: {str(path)!r} has no config.json, so it is not a Hugging Face model folder")
    return path.resolve().name, path.resolve()


_CAUSAL_ARCH_SUFFIXES = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")


def _check_causal_lm(path: Path, config: Any) -> None:
    """Refuse what is not a decoder-only causal LM: no AutoModelForCausalLM class, or an encoder
    (BERT, RoBERTa...) whose folder holds a masked-LM (bidirectional) model."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    archs = list(getattr(config, "architectures", None) or [])
    listed = ", ".join(archs) or "none listed"
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelError(
            f"model: {str(path)!r} is not a causal LM: model_type {config.model_type!r} "
            f"(architectures: {listed}) has no AutoModelForCausalLM class")
    if (config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
            and not any(a.endswith(_CAUSAL_ARCH_SUFFIXES) for a in archs)):
        raise ModelError(
            f"model: {str(path)!r} is not a causal LM: model_type {config.model_type!r} (architectures: {listed}) "
            "is a bidirectional encoder (masked LM); sparsetune tunes causal decoder models")


def _load_errors() -> tuple[type[BaseException], ...]:
    """What a damaged or truncated weight file raises while loading (a bad file, not a bug)."""
    import pickle

    kinds: list[type[BaseException]] = [OSError, ValueError, EOFError, pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError

        kinds.append(SafetensorError)
    except ImportError:  # pragma: no cover - transformers requires safetensors
        pass
    return tuple(kinds)


def max_positions(name_or_path: str) -> int:
    """The longest input (`max_position_embeddings`) of `demo`, a local folder or a GGUF, from its config alone."""
    gguf_path = gguf.gguf_file(name_or_path)
    if gguf_path is not None:
        return _positions(gguf_path, gguf.gguf_config(gguf_path)[0])
    _, path = _resolve(name_or_path)
    return _positions(path, _causal_lm_config(path))


def _causal_lm_config(path: Path) -> Any:
    """The folder's config, read without weights; ModelError if it is unreadable or not a causal LM."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ModelError(f"model: cannot read {str(path / 'config.json')!r}: {e}") from None
    _check_causal_lm(path, config)
    return config


def _positions(path: Path, config: Any) -> int:
    value = getattr(config.get_text_config(), "max_position_embeddings", None)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ModelError(f"model: {str(path)!r} config has no positive max_position_embeddings, got {value!r}")
    return value


def load_tokenizer(name_or_path: str) -> Any:
    """Only the tokenizer of `demo`, a local folder or a GGUF model (no weights are read); ModelError if it has none."""
    from transformers import AutoTokenizer

    gguf_path = gguf.gguf_file(name_or_path)
    if gguf_path is not None:
        return gguf.load_gguf_tokenizer(gguf_path)
    _, path = _resolve(name_or_path)
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelError(f"model: {str(path)!r} has no tokenizer files ({', '.join(_TOKENIZER_FILES)})")
    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise ModelError(f"model: cannot load the tokenizer in {str(path)!r}: {e}") from None


def load_model(name_or_path: str, dtype: torch.dtype | None = None) -> LoadedModel:
    """Load `demo`, a local folder or a GGUF model (`workload.gguf`) through AutoModelForCausalLM /
    AutoTokenizer, in eval mode, in `dtype` (float32 when None)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # sparsetune draws its own progress; no per-load bars on stderr
    dtype = torch.float32 if dtype is None else dtype
    gguf_path = gguf.gguf_file(name_or_path)
    if gguf_path is not None:
        return _load_gguf(gguf_path, dtype)
    name, path = _resolve(name_or_path)
    config = _causal_lm_config(path)
    try:
        # sdpa is the dense reference that `enable` starts from and `disable` returns to.
        model = AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=dtype, attn_implementation="sdpa")
    except _load_errors() as e:
        reason = " ".join(str(e).split()) or type(e).__name__
        raise ModelError(f"model: cannot load the weights in {str(path)!r} (damaged or truncated?): {reason}") from None
    model.eval()

    tokenizer = None
    if any((path / f).is_file() for f in _TOKENIZER_FILES):
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError) as e:
            raise ModelError(f"model: cannot load the tokenizer in {str(path)!r}: {e}") from None

    text = config.get_text_config()
    heads = int(text.num_attention_heads)
    positions = _positions(path, config)
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        path=path,
        config_sha256=config_sha256(path / "config.json"),
        weights_id=weights_id(path),
        layers=int(text.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or text.hidden_size // heads),
        max_positions=positions,
    )


def _load_gguf(path: Path, dtype: torch.dtype) -> LoadedModel:
    """A GGUF file (`workload.gguf`): dequantised weights, its own tokenizer, the config hash of `gguf_config`."""
    config, data = gguf.gguf_config(path)
    _check_causal_lm(path, config)
    model = gguf.load_gguf_model(path, dtype)
    text = model.config.get_text_config()
    heads = int(text.num_attention_heads)
    positions = getattr(text, "max_position_embeddings", None)
    if isinstance(positions, bool) or not isinstance(positions, int) or positions <= 0:
        raise ModelError(f"model: {str(path)!r} config has no positive max_position_embeddings, got {positions!r}")
    return LoadedModel(
        model=model,
        tokenizer=gguf.load_gguf_tokenizer(path),
        name=path.stem,
        path=path,
        config_sha256=gguf.gguf_config_sha256(data),
        weights_id=gguf.gguf_weights_id(path),
        layers=int(text.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or text.hidden_size // heads),
        max_positions=positions,
    )
