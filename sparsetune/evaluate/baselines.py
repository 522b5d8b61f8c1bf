"""Baseline policies to compare a profile with, and the cost-model price of any policy.

A policy maps a KV length to a budget (None: dense), like `Profile.lookup`. The baselines are what
serving engines and papers use instead of per-length budgets: one budget everywhere (`Fixed`), a
fixed number of kept tokens (`Tokens`, Quest / MInference style), a dense-below-threshold gate
(`Gated`), and one budget per bucket without a floor (`PerBucket`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..profile.budget import Budget
from ..profile.buckets import bucket_index

__all__ = ["Fixed", "Gated", "PerBucket", "Tokens", "grid", "policy_cost", "prefill_density"]


@dataclass(frozen=True)
class Fixed:
    """One budget at every length; keep 1 is dense."""

    block_size: int
    keep: float
    sink: int
    local: int

    def lookup(self, seq_len: int):
        if self.keep >= 1.0:
            return None
        return Budget(method="topk", block_size=self.block_size, keep=self.keep, sink=self.sink, local=self.local)

    @property
    def label(self) -> str:
        if self.keep >= 1.0:
            return "dense"
        return f"keep={self.keep:g},block={self.block_size},sink={self.sink},local={self.local}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fixed-keep", "keep": self.keep, "block_size": self.block_size, "sink": self.sink,
                "local": self.local, "label": self.label}


@dataclass(frozen=True)
class Tokens:
    """A fixed token budget (Quest / MInference style): about `tokens` keys per query at every length.

    keep = tokens / kv_len, so the last query row keeps ceil(tokens / block_size) blocks, sink and local
    included; dense where tokens >= kv_len.
    """

    tokens: int
    block_size: int
    sink: int
    local: int

    def lookup(self, seq_len: int):
        keep = self.tokens / seq_len
        if keep >= 1.0:
            return None
        return Budget(method="topk", block_size=self.block_size, keep=keep, sink=self.sink, local=self.local)

    @property
    def label(self) -> str:
        return f"tokens={self.tokens},block={self.block_size},sink={self.sink},local={self.local}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fixed-tokens", "tokens": self.tokens, "block_size": self.block_size, "sink": self.sink,
                "local": self.local, "label": self.label}


@dataclass(frozen=True)
class Gated:
    """Dense up to `gate` tokens, one fixed budget above (the serving engines' dense-below-threshold gate)."""

    gate: int
    inner: Fixed

    def lookup(self, seq_len: int):
        return None if seq_len <= self.gate else self.inner.lookup(seq_len)

    @property
    def label(self) -> str:
        return f"dense <= {self.gate}, then {self.inner.label}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "gated-fixed-keep", "gate": self.gate, "inner": self.inner.to_dict(), "label": self.label}


@dataclass(frozen=True)
class PerBucket:
    """One budget per bucket of `edges` (inputs beyond the last edge use the last budget); no dense floor."""

    edges: tuple[int, ...]
    budgets: tuple[Fixed, ...]

    def lookup(self, seq_len: int):
        return self.budgets[bucket_index(self.edges, seq_len)].lookup(seq_len)  # type: ignore[index]

    @property
    def label(self) -> str:
        return "; ".join(f"<={e}: {b.label}" for e, b in zip(self.edges, self.budgets))

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "per-bucket", "buckets": [{"max_len": e, **b.to_dict()} for e, b in zip(self.edges, self.budgets)],
                "label": self.label}


def grid(blocks: Iterable[int], keeps: Iterable[float], sinks: Iterable[int], locals_: Iterable[int]) -> list[Fixed]:
    """Every (block, keep, sink, local); keep 1 is dense whatever the rest, so it appears once, first."""
    keeps = list(keeps)
    pts = [Fixed(64, 1.0, 0, 1)]
    pts += [Fixed(b, k, s, lo) for b in blocks for k in keeps if k < 1.0 for s in sinks for lo in locals_]
    return pts


@functools.lru_cache(maxsize=None)
def prefill_density(seq_len: int, budget_json: str, heads: int, kv_heads: int, head_dim: int) -> float:
    """Kept / visible key blocks of the prefill mask at `seq_len`: topk counts do not depend on content."""
    import torch

    from ..attention import select_blocks

    gen = torch.Generator().manual_seed(0)
    q = torch.randn(1, heads, seq_len, head_dim, generator=gen)
    k = torch.randn(1, kv_heads, seq_len, head_dim, generator=gen)
    return select_blocks(q, k, Budget(**json.loads(budget_json))).density


def policy_cost(policy: Any, seq_len: int, heads: int, kv_heads: int, head_dim: int,
                layers: int | None = None) -> float:
    """Attention cost of the prefill at `seq_len` under `policy`, relative to dense (cost model, selection included)."""
    from ..timing import budget_cost

    budget = None if policy is None else policy.lookup(seq_len)
    if budget is None or budget.is_dense:
        return 1.0
    density = prefill_density(seq_len, json.dumps(budget.to_dict(), sort_keys=True), heads, kv_heads, head_dim)
    return budget_cost(budget, seq_len, density, head_dim, heads, kv_heads, layers)
