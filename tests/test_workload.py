"""Workload files: tokenization, `file:line` errors, buckets, synthetic rows."""

from __future__ import annotations

import hashlib
import json

import pytest

import sparsetune.workload.files as workload
from fixtures.tiny_models import word_tokenizer
from sparsetune.errors import WorkloadError
from sparsetune.workload import (
    TokenSample,
    auto_edges,
    bucketize,
    load_workload,
    synth_workload,
    write_jsonl,
)


@pytest.fixture(scope="module")
def tok():
    return word_tokenizer()


def _write(tmp_path, text: str | bytes, name: str = "w.jsonl"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_text_and_token_lines(tmp_path, tok):
    path = _write(tmp_path, "\n".join([
        json.dumps({"prompt": "the [ K001 v02 ] of ? K001", "answer": "v02", "task": "niah", "id": 7}),
        "",  # blank lines are skipped
        json.dumps({"prompt": "the of and"}),
        json.dumps({"input_ids": [2, 8, 9], "answer_ids": [10, 11], "task": "raw"}),
    ]) + "\n")
    w = load_workload(path, tok, max_positions=64)
    assert w.name == "w.jsonl" and w.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    a, b, c = w.samples
    assert a.input_ids[0] == 2 and len(a.input_ids) == 9 and a.answer_ids == tok("v02", add_special_tokens=False)["input_ids"]
    assert (a.task, a.line, a.length) == ("niah", 1, 10)
    assert (b.answer_ids, b.task, b.line) == (None, "default", 3)
    assert c == TokenSample([2, 8, 9], [10, 11], "raw", 4) and c.length == 5


class CharTokenizer:
    """BPE-like stand-in: one token per character, so a leading space is a token of its own."""

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([1] if add_special_tokens else []) + [ord(ch) for ch in text]}


def test_answer_tokens_are_what_continues_the_prompt(tmp_path):
    path = _write(tmp_path, json.dumps({"prompt": "ab", "answer": "cd"}) + "\n"
                  + json.dumps({"prompt": "ab ", "answer": "cd"}) + "\n")
    first, second = load_workload(path, CharTokenizer(), max_positions=64).samples
    assert first.answer_ids == [ord(" "), ord("c"), ord("d")]  # joined with one space, as tasks writes them
    assert second.answer_ids == [ord("c"), ord("d")]  # the prompt already ends in whitespace


BAD = [
    ("not-json", '{"prompt": "the"}\n{"prompt": \n', "w.jsonl:2: not JSON"),
    ("not-object", '["the", "of"]\n', "w.jsonl:1: expected a JSON object, got array"),
    ("missing-prompt", '{"answer": "of"}\n', "w.jsonl:1: missing field 'prompt' (or 'input_ids')"),
    ("prompt-type", '{"prompt": 5}\n', "w.jsonl:1: field 'prompt' must be a string, got integer"),
    ("answer-type", '{"prompt": "the", "answer": ["of"]}\n', "w.jsonl:1: field 'answer' must be a string, got array"),
    ("empty-answer", '{"prompt": "the", "answer": " "}\n', "w.jsonl:1: field 'answer' is empty"),
    ("task-type", '{"prompt": "the", "task": 3}\n', "w.jsonl:1: field 'task' must be a non-empty string, got 3"),
    ("ids-type", '{"input_ids": "2 8"}\n', "w.jsonl:1: field 'input_ids' must be an array of token ids, got string"),
    ("ids-element", '{"input_ids": [2, "x"]}\n', "w.jsonl:1: input_ids[1] must be a non-negative integer, got 'x'"),
    ("ids-bool", '{"input_ids": [2, true]}\n', "w.jsonl:1: input_ids[1] must be a non-negative integer, got True"),
    ("ids-vocab", '{"input_ids": [2, 99999]}\n', "w.jsonl:1: input_ids[1] = 99999 is outside the model's vocabulary"),
    ("both", '{"prompt": "the", "input_ids": [2]}\n', "w.jsonl:1: give either 'prompt' (text) or 'input_ids'"),
    ("mixed", '{"input_ids": [2], "answer": "of"}\n', "w.jsonl:1: 'answer' is text; with 'input_ids' give 'answer_ids'"),
    ("empty", "", "w.jsonl:1: empty workload: no samples"),
    ("blank", "\n  \n", "w.jsonl:1: empty workload: no samples"),
    ("utf8", b'{"prompt": "the"}\n\xff\xfe\n', "w.jsonl:2: not UTF-8"),
]


@pytest.mark.parametrize("content, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_lines_name_file_line_and_problem(tmp_path, tok, content, message):
    path = _write(tmp_path, content)
    with pytest.raises(WorkloadError) as err:
        load_workload(path, tok, max_positions=64, vocab_size=500)
    assert str(err.value).startswith(str(tmp_path / message.split(":", 1)[0]))
    assert message.split("w.jsonl", 1)[1] in str(err.value)


def test_too_long_counts_samples_and_limit(tmp_path, tok):
    long = " ".join(["the"] * 30)
    lines = [{"prompt": "the of"}, {"prompt": long, "answer": "of"}, {"prompt": "of"}, {"prompt": long},
             {"input_ids": [2] * 40}]
    path = _write(tmp_path, "\n".join(map(json.dumps, lines)))
    with pytest.raises(WorkloadError) as err:
        load_workload(path, tok, max_positions=32, answer_tokens=4)
    # Line 2: 31 prompt tokens + 1 answer token fit; line 4: 31 + 4 fidelity tokens do not; line 5 neither.
    assert str(err.value) == f"{path}:4: 35 tokens (prompt plus answer) exceed the model's 32 positions (2 samples too long)"


def test_text_without_tokenizer(tmp_path):
    path = _write(tmp_path, '{"input_ids": [2, 3]}\n{"prompt": "the"}\n')
    with pytest.raises(WorkloadError, match=r"w\.jsonl:2: the workload is text but the model has no tokenizer"):
        load_workload(path, None, max_positions=64)


def test_missing_file_and_demo(tmp_path, tok, monkeypatch):
    with pytest.raises(WorkloadError, match="no such file"):
        load_workload(tmp_path / "nope.jsonl", tok, 64)
    monkeypatch.setattr(workload, "DEMO_WORKLOAD", tmp_path / "absent.jsonl")
    with pytest.raises(WorkloadError, match="demo workload is missing"):
        load_workload("demo", tok, 64)
    demo = _write(tmp_path, '{"prompt": "the", "answer": "of"}\n', "demo.jsonl")
    monkeypatch.setattr(workload, "DEMO_WORKLOAD", demo)
    w = load_workload("demo", tok, 64)
    assert w.name == "demo" and w.sha256 == hashlib.sha256(demo.read_bytes()).hexdigest()


def _samples(lengths):
    return [TokenSample([2] * n, None, "t", i + 1) for i, n in enumerate(lengths)]


def test_bucketize_right_closed_edges():
    samples = _samples([1, 100, 101, 256, 257, 512])
    buckets = bucketize(samples, [100, 256, 512])
    assert [[s.length for s in b] for b in buckets] == [[1, 100], [101, 256], [257, 512]]
    with pytest.raises(WorkloadError, match="line 3 has 300 tokens, above the last edge 256"):
        bucketize(_samples([10, 20, 300]), [100, 256])
    with pytest.raises(WorkloadError, match="strictly increasing"):
        bucketize(samples, [256, 100])


def test_auto_edges_quantiles():
    lengths = [256] * 8 + [512] * 8 + [1024] * 8 + [2048] * 8
    assert auto_edges(lengths, n_buckets=4) == [256, 512, 1024, 2048]
    assert auto_edges(lengths, n_buckets=2) == [512, 2048]
    assert auto_edges(lengths, min_per_bucket=16) == [512, 2048]
    assert auto_edges(lengths, min_per_bucket=100) == [2048]
    # Ties: 20 samples at 256 and 4 above cannot make 3 buckets of 8; the short tail merges back.
    edges = auto_edges([256] * 20 + [300, 310, 320, 330], min_per_bucket=8)
    assert edges == [330]
    spread = list(range(1, 50))
    edges = auto_edges(spread, min_per_bucket=7)
    sizes = [len(b) for b in bucketize(_samples(spread), edges)]
    assert len(edges) == 7 and all(n >= 7 for n in sizes) and sum(sizes) == 49
    with pytest.raises(WorkloadError, match="exactly one"):
        auto_edges(lengths)


def test_synth_rows_round_trip(tmp_path, tok):
    rows = synth_workload(tok, ["niah", "vt"], [64, 128], per_length=2, seed=0)
    assert len(rows) == 8 and {r["task"] for r in rows} == {"niah", "vt"}
    assert rows == synth_workload(tok, ["niah", "vt"], [64, 128], per_length=2, seed=0)
    path = write_jsonl(tmp_path / "out" / "s.jsonl", rows)
    assert not [p for p in path.parent.iterdir() if p.name != "s.jsonl"]  # no temp file left behind
    w = load_workload(path, tok, max_positions=256)
    assert [s.length for s in w.samples] == [64] * 4 + [128] * 4  # sized in tokens of the tokenizer
    with pytest.raises(WorkloadError, match="tasks: must be among niah, multikey, vt, cwe, got nope"):
        synth_workload(tok, ["nope"], [64], 1, 0)
