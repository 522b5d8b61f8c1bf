"""The evaluator: teacher forcing equals greedy generate, fidelity answers."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

from fixtures.tiny_models import save_folder
from sparsetune.profile.budget import Budget
from sparsetune.errors import WorkloadError
from sparsetune.evaluate import evaluate, fill_answers
from sparsetune.runtime.hf_attention import enabled
from sparsetune.workload.models import load_model
from sparsetune.workload import TokenSample

SPARSE = Budget.parse("keep=0.25,block=16")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return load_model(str(save_folder(tmp_path_factory.mktemp("ev") / "tiny", "llama", seed=4)))


def _prompts(n: int, lo: int, hi: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[2] + [rng.randrange(8, 300) for _ in range(rng.randrange(lo, hi))] for _ in range(n)]


def _generate(lm, prompt: list[int], steps: int, policy) -> list[int]:
    with torch.no_grad(), enabled(lm.model, policy):
        out = lm.model.generate(torch.tensor([prompt]), max_new_tokens=steps, do_sample=False)
    return out[0, len(prompt):].tolist()


def _mixed_samples(lm, policy, prompts: list[list[int]]) -> list[TokenSample]:
    """Answers that greedy generation gets right, and ones it misses at the first, second or third token."""
    samples = []
    for i, p in enumerate(prompts):
        steps = 1 + i % 3
        answer = _generate(lm, p, steps, policy)
        wrong_at = i % 4
        if wrong_at < steps:
            answer[wrong_at] = 8 + (answer[wrong_at] - 7) % 290  # another ordinary token
        samples.append(TokenSample(p, answer, task=f"t{i % 2}", line=i + 1))
    return samples


@pytest.mark.parametrize("policy", [None, SPARSE], ids=["dense", "sparse"])
def test_teacher_forced_equals_generate(lm, policy):
    prompts = _prompts(8, 60, 150, seed=1)
    samples = _mixed_samples(lm, policy, prompts)
    result = evaluate(lm, samples, policy, batch_size=3)  # mixed lengths: left-padded batches
    greedy = [_generate(lm, s.input_ids, len(s.answer_ids), policy) == s.answer_ids for s in samples]
    assert result.correct == greedy
    assert 0 < sum(greedy) < len(greedy)  # both outcomes are exercised
    # Answers from the other attention mode: some agree, and again both methods must say the same.
    other = _mixed_samples(lm, SPARSE if policy is None else None, prompts[:4])
    cross = evaluate(lm, other, policy, batch_size=4).correct
    assert cross == [_generate(lm, s.input_ids, len(s.answer_ids), policy) == s.answer_ids for s in other]


def test_result_fields_and_batch_size_independence(lm):
    samples = _mixed_samples(lm, SPARSE, _prompts(6, 50, 130, seed=2))
    one = evaluate(lm, samples, SPARSE, batch_size=1)
    many = evaluate(lm, samples, SPARSE, batch_size=6)
    assert one.correct == many.correct
    assert many.n == 6 and many.accuracy == sum(many.correct) / 6
    assert {t: (s.correct, s.n) for t, s in many.per_task.items()} == {
        t: (sum(c for c, s in zip(many.correct, samples) if s.task == t), sum(s.task == t for s in samples))
        for t in ("t0", "t1")}
    assert many.sparsity > 0 and many.stats.sparse_calls > 0 and many.seconds > 0
    json.dumps(many.to_dict())
    dense = evaluate(lm, samples, None)
    assert dense.sparsity == 0 and dense.stats.dense_calls > 0 and dense.stats.sparse_calls == 0


def test_a_stop_after_a_batch_leaves_the_rest_unevaluated(lm):
    samples = _mixed_samples(lm, SPARSE, _prompts(6, 50, 130, seed=6))
    full = evaluate(lm, samples, SPARSE, batch_size=2)
    seen: list[list[bool | None]] = []

    def stop(part: list[bool | None]) -> bool:
        seen.append(list(part))
        return sum(c is not None for c in part) >= 4  # after the second batch of two

    r = evaluate(lm, samples, SPARSE, batch_size=2, stop=stop)
    assert [sum(c is not None for c in p) for p in seen] == [2, 4]  # asked after each batch but the last
    # Batches run in the order of their first sample: the one holding samples[0] first, whatever its length.
    assert seen[0][0] is not None
    assert r.n == 4 and r.correct.count(None) == 2
    assert [c for c in r.correct if c is not None] == [f for f, c in zip(full.correct, r.correct) if c is not None]
    assert sum(s.n for s in r.per_task.values()) == 4  # unevaluated samples count in no task
    assert r.accuracy == sum(bool(c) for c in r.correct) / 4
    never = evaluate(lm, samples, SPARSE, batch_size=2, stop=lambda part: False)
    assert never.correct == full.correct


def test_fidelity_answers(lm):
    unlabelled = [TokenSample(p, None, "traffic", i + 1) for i, p in enumerate(_prompts(5, 40, 120, seed=3))]
    filled = fill_answers(lm, unlabelled, answer_tokens=4, batch_size=2)
    assert all(len(s.answer_ids) == 4 for s in filled)
    assert [s.answer_ids for s in filled] == [_generate(lm, s.input_ids, 4, None) for s in unlabelled]
    assert evaluate(lm, filled, None).accuracy == 1.0  # dense scores 1.0 by construction
    labelled = dataclasses.replace(unlabelled[0], answer_ids=[9])
    assert fill_answers(lm, [labelled], 4)[0] is labelled
    with pytest.raises(WorkloadError, match="line 2: the sample has no answer; call fill_answers"):
        evaluate(lm, unlabelled[1:2], None)


def test_fidelity_answer_stops_at_eos(lm, monkeypatch):
    sample = TokenSample(_prompts(1, 50, 51, seed=5)[0], None, "t", 1)
    greedy = _generate(lm, sample.input_ids, 4, None)
    monkeypatch.setattr(lm.model.generation_config, "eos_token_id", greedy[1])
    [filled] = fill_answers(lm, [sample], answer_tokens=4)
    assert filled.answer_ids == greedy[: greedy.index(greedy[1]) + 1]


def test_batches_group_similar_lengths_under_a_token_cap():
    from sparsetune.evaluate.decode import MAX_BATCH_TOKENS, _batches
    from sparsetune.workload.files import TokenSample

    lengths = [2000, 30, 40, 2040, 1000, 35, 1020, 990, 5000]
    samples = [TokenSample(input_ids=[1] * n, answer_ids=[2], task="t", line=i + 1) for i, n in enumerate(lengths)]
    batches = _batches(samples, 8)
    assert sorted(i for b in batches for i in b) == list(range(len(samples)))
    for b in batches:
        widths = [lengths[i] for i in b]
        assert widths == sorted(widths) and (len(b) == 1 or len(b) * max(widths) <= MAX_BATCH_TOKENS)
    assert [[lengths[i] for i in b] for b in batches] == [[30, 35, 40, 990], [1000, 1020], [2000, 2040], [5000]]
    assert [len(b) for b in _batches(samples[1:3] * 6, 8)] == [8, 4]  # short prompts: the count caps
