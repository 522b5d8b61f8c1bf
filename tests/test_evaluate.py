"""The evaluator: teacher forcing equals greedy generate, fidelity answers, dense cache, paired bounds."""

from __future__ import annotations

import dataclasses
import json
import random

import pytest
import torch

import sparsetune.evaluate as ev
from fixtures.tiny_models import save_folder
from sparsetune.budget import Budget
from sparsetune.errors import WorkloadError
from sparsetune.evaluate import (
    DenseCache,
    clopper_pearson_lower,
    dense_baseline,
    evaluate,
    fill_answers,
    paired_lower_bound,
    relative_lower_bound,
)
from sparsetune.hf_attention import enabled
from sparsetune.models import load_model
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


def test_dense_baseline_is_cached(lm, tmp_path, monkeypatch):
    samples = _mixed_samples(lm, None, _prompts(4, 30, 60, seed=6))
    calls = []
    real = ev.evaluate
    monkeypatch.setattr(ev, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    cache = DenseCache(tmp_path / "dense")
    first = dense_baseline(lm, samples, workload_sha256="abc", indices=[0, 1, 2, 3], cache=cache)
    again = dense_baseline(lm, samples, workload_sha256="abc", indices=[0, 1, 2, 3], cache=cache)
    from_disk = dense_baseline(lm, samples, workload_sha256="abc", indices=[0, 1, 2, 3],
                               cache=DenseCache(tmp_path / "dense"))
    assert len(calls) == 1 and first.correct == again.correct == from_disk.correct
    assert from_disk.per_task == first.per_task
    dense_baseline(lm, samples, workload_sha256="abd", indices=[0, 1, 2, 3], cache=cache)
    dense_baseline(lm, samples, workload_sha256="abc", indices=[4, 5, 6, 7], cache=cache)
    assert len(calls) == 3  # another workload or other samples: another key


def test_clopper_pearson_known_values():
    assert clopper_pearson_lower(10, 10, 0.9) == pytest.approx(0.1 ** 0.1, abs=1e-9)  # alpha ** (1/n)
    assert clopper_pearson_lower(5, 10, 0.95) == pytest.approx(0.2224, abs=1e-4)  # Beta(5, 6) 5% quantile
    assert clopper_pearson_lower(0, 10, 0.9) == 0.0


def test_paired_lower_bound_sanity():
    rng = random.Random(0)
    same = [rng.random() < 0.7 for _ in range(50)]
    pd = paired_lower_bound(same, same)
    assert pd.difference == 0 and -0.05 <= pd.lower_bound <= 0 and pd.n == 50
    assert relative_lower_bound(same, same) == pytest.approx(1.0)

    dense = [True] * 40 + [False] * 10
    sparse = [False] * 20 + [True] * 20 + [False] * 10  # 20 lost, none gained
    worse = paired_lower_bound(dense, sparse, 0.9)
    assert (worse.dense_only, worse.sparse_only) == (20, 0)
    # Conditional on the 20 discordant pairs, all of them losses: the bound is -n_d / n itself.
    assert worse.difference == pytest.approx(-0.4) and worse.lower_bound == pytest.approx(-0.4)
    assert worse.sparse_lower_bound == pytest.approx(0.8 + worse.lower_bound)
    assert relative_lower_bound(dense, sparse) == pytest.approx(worse.sparse_lower_bound / 0.8)

    mixed_sparse = list(dense)
    for i in range(6):
        mixed_sparse[i] = False  # 6 lost
    for i in range(40, 43):
        mixed_sparse[i] = True  # 3 gained
    bounds = [paired_lower_bound(dense, mixed_sparse, c).lower_bound for c in (0.5, 0.8, 0.9, 0.95, 0.99)]
    assert bounds == sorted(bounds, reverse=True) and bounds[-1] < bounds[0]  # more confidence, lower bound
    assert all(b <= -3 / 50 + 1e-9 for b in bounds[1:])  # below the point estimate
    with pytest.raises(ValueError, match="dense has 2 results, sparse 1"):
        paired_lower_bound([True, False], [True])
    assert relative_lower_bound([False] * 3, [False] * 3) == 1.0
