"""Loading local model folders: facts recorded, clear ModelErrors."""

from __future__ import annotations

import hashlib
import json

import pytest

import sparsetune.workload.models as models
from fixtures.tiny_models import save_folder
from sparsetune.errors import ModelError
from sparsetune.workload.models import config_sha256, load_model


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_folder(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


def test_loads_folder_with_facts(llama_dir):
    m = load_model(str(llama_dir))
    assert (m.name, m.path) == ("tiny-llama", llama_dir.resolve())
    assert (m.layers, m.heads, m.kv_heads, m.head_dim, m.max_positions) == (2, 4, 2, 16, 1024)
    assert not m.model.training
    assert m.tokenizer("the K001 v02")["input_ids"][0] == 2  # <bos> prepended
    canonical = json.dumps(json.loads((llama_dir / "config.json").read_text()), sort_keys=True,
                           separators=(",", ":"))
    assert m.config_sha256 == hashlib.sha256(canonical.encode()).hexdigest()
    assert len(m.weights_id) == 64 and m.vocab_size == m.model.config.vocab_size


def test_config_hash_ignores_formatting(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text('{"x": 1, "y": [1, 2]}')
    b.write_text('{\n  "y": [1,2],\n  "x": 1\n}\n')
    assert config_sha256(a) == config_sha256(b)


def test_no_tokenizer_is_none(tmp_path):
    m = load_model(str(save_folder(tmp_path / "bare", "qwen2", tokenizer=False)))
    assert m.tokenizer is None and m.kv_heads == 2


def test_no_such_folder_names_it(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelError, match=f"no such folder '{missing}'"):
        load_model(str(missing))


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        load_model(str(tmp_path))


def test_not_a_causal_lm_names_architectures(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "vit", "architectures": ["ViTForImageClassification"]}))
    with pytest.raises(ModelError, match=r"not a causal LM: model_type 'vit' \(architectures: ViTForImageClassification\)"):
        load_model(str(tmp_path))


def test_missing_weights(tmp_path, llama_dir):
    (tmp_path / "config.json").write_text((llama_dir / "config.json").read_text())
    with pytest.raises(ModelError, match="cannot load the weights"):
        load_model(str(tmp_path))


def test_demo_resolves_to_the_packaged_folder(tmp_path, monkeypatch, llama_dir):
    monkeypatch.setattr(models, "DEMO_MODEL", tmp_path / "absent")
    with pytest.raises(ModelError, match="demo model is missing"):
        load_model("demo")
    monkeypatch.setattr(models, "DEMO_MODEL", llama_dir)
    assert load_model("demo").name == "demo"
