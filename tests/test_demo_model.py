"""The shipped demo model: small, offline, and it really retrieves (the model card's thresholds)."""

from __future__ import annotations

import pytest

from sparsetune.workload.models import DEMO_MODEL, load_model

CHANCE = {"niah": 1 / 64, "vt": 1 / 64 / 64, "multikey": 1 / 64, "cwe": 1 / 16}
THRESHOLD = {"niah": 0.90, "vt": 0.70, "multikey": 0.90, "cwe": 3 * CHANCE["cwe"]}  # cwe: the card's fallback


def test_model_folder_is_an_ordinary_small_hf_folder():
    files = {p.name: p.stat().st_size for p in DEMO_MODEL.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)
    assert sum(files.values()) <= 10 * 2**20, f"demo model folder is {sum(files.values()) / 2**20:.1f} MB (limit 10)"


@pytest.mark.slow
def test_dense_accuracy_meets_the_card_at_every_length():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from demo_card import LENGTHS, dense_table, samples

    loaded = load_model("demo")
    table = dense_table(loaded, samples(loaded, per_length=12))
    for task, by_length in table.items():
        assert sorted(by_length) == LENGTHS
        for length, acc in by_length.items():
            assert acc >= THRESHOLD[task], f"{task} at {length} tokens: {acc:.2f} < {THRESHOLD[task]:.2f}"
