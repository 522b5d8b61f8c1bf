"""Accuracy of a policy on samples: teacher-forced exact match, and fidelity answers.

Teacher forcing here is "prefill the prompt, then feed the reference answer one token per step",
checking that each step's argmax is the next reference token. That is exactly what greedy `generate()`
computes while it is right, so a sample is right here iff greedy generation reproduces its answer,
for dense and sparse attention alike. A single forward over prompt+answer (design §4) is not: block
selection pools queries per block and looks the budget up by KV length, so the answer positions would
see a different sparsity pattern than they get while decoding. The answer steps are Sq=1 forwards,
cheap next to the prefill.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from ..errors import WorkloadError
from ..profile.budget import Budget
from ..runtime.hf_attention import AttentionStats, Policy, enabled, record_sparsity
from ..workload.files import DEFAULT_ANSWER_TOKENS, TokenSample
from ..workload.models import LoadedModel

__all__ = ["DEFAULT_BATCH_SIZE", "EvalResult", "Score", "evaluate", "fill_answers"]

DEFAULT_BATCH_SIZE = 8
# A batch also stops at this many prompt tokens (padded): on CPU, 8 prompts of 2k tokens ran 1.4x slower per
# sample than 2 of them (activations spill the caches), while short prompts gain from full batches.
MAX_BATCH_TOKENS = 4096


@dataclass(frozen=True)
class Score:
    correct: int
    n: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "correct": self.correct, "n": self.n}


@dataclass
class EvalResult:
    correct: list[bool | None]  # aligned with the samples passed in; None: not evaluated (stopped early)
    per_task: dict[str, Score]
    stats: AttentionStats = field(default_factory=AttentionStats)
    seconds: float = 0.0  # wall time of the forwards (and of a caller's stop checks between them)

    @property
    def n(self) -> int:
        """Samples evaluated."""
        return sum(c is not None for c in self.correct)

    @property
    def accuracy(self) -> float:
        return sum(bool(c) for c in self.correct) / self.n if self.n else 0.0

    @property
    def sparsity(self) -> float:
        """Achieved sparsity: skipped / visible key blocks over the sparse attention calls."""
        return self.stats.sparsity

    def to_dict(self) -> dict[str, Any]:
        return {"accuracy": self.accuracy, "n": self.n, "sparsity": self.sparsity, "seconds": self.seconds,
                "per_task": {t: s.to_dict() for t, s in sorted(self.per_task.items())},
                "calls": self.stats.to_dict()}


# --------------------------------------------------------------------------------------------------
# The decoding loop shared by evaluation and fidelity answers


def _cache_kwarg(model: Any) -> str:
    # transformers 5.x renames `past_key_values` to `cache` (the old name is deprecated until 5.40).
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _eos_ids(model: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None) if hasattr(model, "generation_config") else None
    return set() if eos is None else {eos} if isinstance(eos, int) else set(eos)


def _pad_id(loaded: LoadedModel) -> int:
    tok = loaded.tokenizer
    pad = getattr(tok, "pad_token_id", None) if tok is not None else None
    return int(pad) if pad is not None else 0  # padded keys are masked, so the id only has to exist


@torch.inference_mode()
def _greedy(loaded: LoadedModel, prompts: list[list[int]], steps: int,
            feeds: list[list[int]] | None = None) -> list[list[int]]:
    """Argmax at `steps` positions after each prompt: prefill, then one token per step.

    Step j feeds `feeds[b][j]` (teacher forcing) or, without feeds, the previous argmax (greedy).
    Prompts are left-padded as in `generate`, with positions counted from each prompt's first token.
    """
    from transformers import DynamicCache

    model = loaded.model
    device = model.device
    width = max(map(len, prompts))
    padded = any(len(p) < width for p in prompts)
    pad = _pad_id(loaded)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[b, width - len(p):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    kw = {_cache_kwarg(model): cache, "use_cache": True, "logits_to_keep": 1}
    # No mask when nothing is padded: the attention then runs the batch in one call.
    out = model(input_ids=ids, attention_mask=mask if padded else None, position_ids=positions, **kw)
    pred = out.logits[:, -1].argmax(-1)
    preds = [pred]
    position = positions[:, -1:]
    for j in range(steps - 1):
        if feeds is None:
            token = pred
        else:
            token = torch.tensor([f[j] if j < len(f) else pad for f in feeds], dtype=torch.long, device=device)
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], dim=1)
        position = position + 1
        out = model(input_ids=token[:, None], attention_mask=mask if padded else None, position_ids=position, **kw)
        pred = out.logits[:, -1].argmax(-1)
        preds.append(pred)
    return torch.stack(preds, dim=1).tolist()


def _batches(samples: Sequence[TokenSample], batch_size: int) -> list[list[int]]:
    """Indices in batches of similar prompt length (sorted), so left padding stays small: at most
    `batch_size` samples and `MAX_BATCH_TOKENS` padded prompt tokens (a longer prompt goes alone)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i].input_ids), i))
    batches: list[list[int]] = []
    for i in order:
        width = len(samples[i].input_ids)  # the longest so far: the order is by length
        if batches and len(batches[-1]) < batch_size and (len(batches[-1]) + 1) * width <= MAX_BATCH_TOKENS:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


# --------------------------------------------------------------------------------------------------
# Evaluation


def fill_answers(
    loaded: LoadedModel, samples: Sequence[TokenSample], answer_tokens: int = DEFAULT_ANSWER_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE, on_batch: Callable[[int], None] | None = None,
) -> list[TokenSample]:
    """Fidelity mode: give each sample without an answer the dense model's greedy continuation.

    `answer_tokens` tokens, cut after the first EOS; samples with answers are returned unchanged.
    `on_batch(n)` is called after each batch with its number of samples (for progress displays).
    """
    if isinstance(answer_tokens, bool) or not isinstance(answer_tokens, int) or answer_tokens < 1:
        raise WorkloadError(f"answer_tokens: must be an integer >= 1, got {answer_tokens!r}")
    out = list(samples)
    todo = [i for i, s in enumerate(samples) if s.answer_ids is None]
    if not todo:
        return out
    eos = _eos_ids(loaded.model)
    pending = [samples[i] for i in todo]
    with enabled(loaded.model, None):
        for batch in _batches(pending, batch_size):
            preds = _greedy(loaded, [pending[i].input_ids for i in batch], answer_tokens)
            for i, pred in zip(batch, preds):
                cut = next((j + 1 for j, t in enumerate(pred) if t in eos), len(pred))
                out[todo[i]] = dataclasses.replace(pending[i], answer_ids=pred[:cut])
            if on_batch is not None:
                on_batch(len(batch))
    return out


def _per_task(samples: Sequence[TokenSample], correct: Sequence[bool | None]) -> dict[str, Score]:
    right: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for s, ok in zip(samples, correct):
        if ok is None:  # not evaluated (stopped early)
            continue
        count[s.task] += 1
        right[s.task] += bool(ok)
    return {t: Score(right[t], count[t]) for t in sorted(count)}


def evaluate(
    loaded: LoadedModel,
    samples: Sequence[TokenSample],
    policy: Budget | Policy | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[int], None] | None = None,
    stop: Callable[[list[bool | None]], bool] | None = None,
) -> EvalResult:
    """Teacher-forced exact match of `policy` (None = dense) on samples that all have answers.

    `on_batch(n)` is called after each batch with its number of samples (for progress displays).
    `stop(results)` is asked after each batch but the last, with the live results list (aligned with `samples`,
    None where not evaluated yet: copy it to keep it); once it says True the rest stay None in `correct`. Batches
    group samples of similar length but run in the order of their first sample in `samples`, so a caller that puts
    the samples most likely to settle the verdict first has them evaluated first."""
    for s in samples:
        if not s.answer_ids:
            raise WorkloadError(f"line {s.line}: the sample has no answer; call fill_answers first (fidelity mode)")
    correct: list[bool | None] = [None] * len(samples)
    batches = sorted(_batches(samples, batch_size), key=min)
    start = time.perf_counter()
    with enabled(loaded.model, policy), record_sparsity(loaded.model) as stats:
        for j, batch in enumerate(batches):
            answers = [samples[i].answer_ids or [] for i in batch]
            preds = _greedy(loaded, [samples[i].input_ids for i in batch], max(map(len, answers)), feeds=answers)
            for i, ans, pred in zip(batch, answers, preds):
                correct[i] = pred[: len(ans)] == ans
            if on_batch is not None:
                on_batch(len(batch))
            if stop is not None and j + 1 < len(batches) and stop(correct):
                break
    seconds = time.perf_counter() - start
    return EvalResult(correct=correct, per_task=_per_task(samples, correct), stats=stats, seconds=seconds)
