"""Accuracy of a policy on samples: teacher-forced exact match, the dense baseline, paired bounds.

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
import hashlib
import inspect
import json
import math
import os
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from .budget import Budget
from .errors import WorkloadError
from .hf_attention import AttentionStats, Policy, enabled, record_sparsity
from .models import LoadedModel
from .workload import DEFAULT_ANSWER_TOKENS, TokenSample

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DenseCache",
    "EvalResult",
    "PairedDifference",
    "Score",
    "BucketComparison",
    "clopper_pearson_lower",
    "compare",
    "dense_baseline",
    "evaluate",
    "fill_answers",
    "paired_lower_bound",
    "relative_lower_bound",
]

DEFAULT_BATCH_SIZE = 8


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
    correct: list[bool]  # aligned with the samples passed in
    per_task: dict[str, Score]
    stats: AttentionStats = field(default_factory=AttentionStats)
    seconds: float = 0.0  # wall time of the forwards

    @property
    def n(self) -> int:
        return len(self.correct)

    @property
    def accuracy(self) -> float:
        return sum(self.correct) / self.n if self.n else 0.0

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
    """Indices in batches of similar prompt length (sorted), so left padding stays small."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: must be an integer >= 1, got {batch_size!r}")
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i].input_ids), i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


# --------------------------------------------------------------------------------------------------
# Evaluation


def fill_answers(
    loaded: LoadedModel, samples: Sequence[TokenSample], answer_tokens: int = DEFAULT_ANSWER_TOKENS,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[TokenSample]:
    """Fidelity mode: give each sample without an answer the dense model's greedy continuation.

    `answer_tokens` tokens, cut after the first EOS; samples with answers are returned unchanged.
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
    return out


def _per_task(samples: Sequence[TokenSample], correct: Sequence[bool]) -> dict[str, Score]:
    right: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    for s, ok in zip(samples, correct):
        count[s.task] += 1
        right[s.task] += bool(ok)
    return {t: Score(right[t], count[t]) for t in sorted(count)}


def evaluate(
    loaded: LoadedModel,
    samples: Sequence[TokenSample],
    policy: Budget | Policy | None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> EvalResult:
    """Teacher-forced exact match of `policy` (None = dense) on samples that all have answers."""
    for s in samples:
        if not s.answer_ids:
            raise WorkloadError(f"line {s.line}: the sample has no answer; call fill_answers first (fidelity mode)")
    correct = [False] * len(samples)
    start = time.perf_counter()
    with enabled(loaded.model, policy), record_sparsity(loaded.model) as stats:
        for batch in _batches(samples, batch_size):
            answers = [samples[i].answer_ids or [] for i in batch]
            preds = _greedy(loaded, [samples[i].input_ids for i in batch], max(map(len, answers)), feeds=answers)
            for i, ans, pred in zip(batch, answers, preds):
                correct[i] = pred[: len(ans)] == ans
    seconds = time.perf_counter() - start
    return EvalResult(correct=correct, per_task=_per_task(samples, correct), stats=stats, seconds=seconds)


# --------------------------------------------------------------------------------------------------
# Dense baseline cache


class DenseCache:
    """Dense results by (model config, weights, dtype, device, workload, sample indices, token content).

    In memory, and in `directory` as one JSON file per key when given (shared across runs and workers).
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._memory: dict[str, dict[str, Any]] = {}

    @staticmethod
    def key(loaded: LoadedModel, workload_sha256: str, indices: Sequence[int],
            samples: Sequence[TokenSample]) -> str:
        tokens = hashlib.sha256()
        for s in samples:  # fidelity answers are part of what dense is scored on
            tokens.update(json.dumps([s.input_ids, s.answer_ids]).encode())
        parts = {"config": loaded.config_sha256, "weights": loaded.weights_id,
                 "dtype": str(loaded.model.dtype), "device": loaded.model.device.type,
                 "workload": workload_sha256, "indices": list(indices), "tokens": tokens.hexdigest()}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def get(self, key: str) -> dict[str, Any] | None:
        if key in self._memory:
            return self._memory[key]
        if self.directory is not None:
            f = self.directory / f"{key}.json"
            if f.is_file():
                try:
                    entry = json.loads(f.read_text(encoding="utf-8"))
                except (OSError, json.JSONDecodeError):
                    return None  # a damaged entry is recomputed and rewritten
                self._memory[key] = entry
                return entry
        return None

    def put(self, key: str, entry: dict[str, Any]) -> None:
        self._memory[key] = entry
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry, fh)
            os.replace(tmp, self.directory / f"{key}.json")


_DEFAULT_CACHE = DenseCache()


def dense_baseline(
    loaded: LoadedModel,
    samples: Sequence[TokenSample],
    *,
    workload_sha256: str,
    indices: Sequence[int],
    cache: DenseCache | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> EvalResult:
    """`evaluate(loaded, samples, None)`, cached (`indices` are the samples' positions in the workload)."""
    if len(indices) != len(samples):
        raise ValueError(f"indices: need one per sample ({len(samples)}), got {len(indices)}")
    cache = _DEFAULT_CACHE if cache is None else cache
    key = cache.key(loaded, workload_sha256, indices, samples)
    entry = cache.get(key)
    if entry is not None and len(entry.get("correct", ())) == len(samples):
        correct = [bool(c) for c in entry["correct"]]
        return EvalResult(correct=correct, per_task=_per_task(samples, correct),
                          stats=AttentionStats(dense_calls=int(entry.get("dense_calls", 0))),
                          seconds=float(entry.get("seconds", 0.0)))
    result = evaluate(loaded, samples, None, batch_size=batch_size)
    cache.put(key, {"correct": result.correct, "seconds": result.seconds, "dense_calls": result.stats.dense_calls})
    return result


# --------------------------------------------------------------------------------------------------
# Paired statistics


def _binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed in log space (n can be thousands)."""
    if k <= 0:
        return 1.0
    if p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    lp, lq = math.log(p), math.log1p(-p)
    terms = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq
             for i in range(k, n + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def clopper_pearson_lower(successes: int, trials: int, confidence: float) -> float:
    """One-sided Clopper–Pearson lower bound for a binomial proportion.

    The p with P(X >= successes | trials, p) = 1 - confidence (the Beta(k, n-k+1) quantile), found by
    bisection on the binomial tail, which is increasing in p; 0 when there are no successes.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")
    if not 0 <= successes <= trials:
        raise ValueError(f"successes: must be in [0, {trials}], got {successes}")
    if successes == 0:
        return 0.0
    alpha = 1.0 - confidence
    lo, hi = 0.0, 1.0
    for _ in range(60):  # 2**-60: far below any accuracy we report
        mid = (lo + hi) / 2
        if _binom_sf(successes, trials, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


@dataclass(frozen=True)
class PairedDifference:
    """Sparse minus dense accuracy on the same samples, with a one-sided lower confidence bound."""

    n: int
    dense_only: int  # b: dense right, sparse wrong
    sparse_only: int  # c: dense wrong, sparse right
    dense_accuracy: float
    sparse_accuracy: float
    difference: float  # point estimate (c - b) / n
    lower_bound: float  # the difference is >= this with probability `confidence`
    confidence: float

    @property
    def sparse_lower_bound(self) -> float:
        """Lower bound of sparse accuracy: dense accuracy plus the difference's lower bound."""
        return self.dense_accuracy + self.lower_bound

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "sparse_lower_bound": self.sparse_lower_bound}


def paired_lower_bound(dense: Sequence[bool], sparse: Sequence[bool], confidence: float = 0.9) -> PairedDifference:
    """Exact lower bound on accuracy(sparse) - accuracy(dense) from the discordant pairs.

    With b = #(dense right, sparse wrong), c = #(dense wrong, sparse right), n_d = b + c and
    p = c / n_d, the difference is (c - b) / n = n_d / n * (2p - 1). Conditional on n_d, c is
    Binomial(n_d, p); the one-sided Clopper–Pearson lower bound p_L at `confidence` gives
    ``lower_bound = n_d / n * (2 p_L - 1)``. With no discordant pairs both are 0.

    The bound is conditional on n_d, so it never falls below -n_d / n: it says how sure we are
    that the discordant pairs lean one way, not how many there would be on more samples.
    """
    if len(dense) != len(sparse):
        raise ValueError(f"paired samples: dense has {len(dense)} results, sparse {len(sparse)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: must be in (0, 1), got {confidence!r}")
    n = len(dense)
    b = sum(1 for d, s in zip(dense, sparse) if d and not s)
    c = sum(1 for d, s in zip(dense, sparse) if s and not d)
    nd = b + c
    if n == 0 or nd == 0:
        diff = lower = 0.0
    else:
        diff = (c - b) / n
        lower = nd / n * (2 * clopper_pearson_lower(c, nd, confidence) - 1)
    return PairedDifference(
        n=n, dense_only=b, sparse_only=c,
        dense_accuracy=sum(map(bool, dense)) / n if n else 0.0,
        sparse_accuracy=sum(map(bool, sparse)) / n if n else 0.0,
        difference=diff, lower_bound=lower, confidence=confidence)


def relative_lower_bound(dense: Sequence[bool], sparse: Sequence[bool], confidence: float = 0.9) -> float:
    """Lower bound of sparse accuracy as a fraction of dense accuracy, to compare with a relative floor
    (feasible when >= floor). 1.0 when dense scores 0: there is nothing to lose."""
    pd = paired_lower_bound(dense, sparse, confidence)
    return pd.sparse_lower_bound / pd.dense_accuracy if pd.dense_accuracy > 0 else 1.0


# --------------------------------------------------------------------------------------------------
# Dense vs sparse per bucket and task (what `sparsetune eval` prints)


@dataclass(frozen=True)
class BucketComparison:
    """Dense and sparse accuracy of one length bucket (or one task within it), from one paired run."""

    first: int  # shortest length in the bucket's range
    last: int  # longest
    task: str  # "all" for the whole bucket
    n: int
    dense: float
    sparse: float
    lower_bound: float  # lower confidence bound of the sparse accuracy (paired with dense)
    sparsity: float  # achieved: skipped / visible key blocks (whole bucket)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compare(
    loaded: LoadedModel,
    samples: Sequence[TokenSample],
    policy: Budget | Policy,
    edges: Sequence[int] | None = None,
    confidence: float = 0.9,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[BucketComparison]:
    """Per bucket, and per task within it: dense and `policy` accuracy, the lower bound and the sparsity.

    `edges` None puts everything in one bucket. Samples beyond the last edge join the last bucket.
    """
    import bisect

    lengths = [s.length for s in samples]
    edges = list(edges) if edges else [max(lengths)]
    groups: list[list[int]] = [[] for _ in edges]
    for i, n in enumerate(lengths):
        groups[min(bisect.bisect_left(edges, n), len(edges) - 1)].append(i)
    rows: list[BucketComparison] = []
    for b, idx in enumerate(groups):
        if not idx:
            continue
        part = [samples[i] for i in idx]
        dense = evaluate(loaded, part, None, batch_size).correct
        result = evaluate(loaded, part, policy, batch_size)
        first = edges[b - 1] + 1 if b else min(lengths)
        last = edges[b] if b < len(edges) - 1 else max(edges[b], max(lengths[i] for i in idx))
        tasks = sorted({s.task for s in part})
        for task in (["all"] + tasks if len(tasks) > 1 else ["all"]):
            sel = [j for j, s in enumerate(part) if task == "all" or s.task == task]
            d = [dense[j] for j in sel]
            s_ = [result.correct[j] for j in sel]
            pd = paired_lower_bound(d, s_, confidence)
            rows.append(BucketComparison(first=first, last=last, task=task if len(tasks) > 1 else tasks[0],
                                         n=len(sel), dense=pd.dense_accuracy, sparse=pd.sparse_accuracy,
                                         lower_bound=max(0.0, pd.sparse_lower_bound), sparsity=result.sparsity))
    return rows
