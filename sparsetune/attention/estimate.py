"""The estimator registry: a budget's `estimator` name -> the function that scores its key blocks.

Every estimator returns fp32 block logits [B, Hkv, QB, KB] whose softmax over a row's visible blocks is its
estimate of that query block's attention mass per key block (so topk ranks by them and coverage sums their
softmax). Names and parameters are declared once, in `profile.budget.ESTIMATORS`; this maps them to code.
Sink, local and diagonal blocks are applied after, once for all, by `select.select_blocks`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..profile.budget import ESTIMATORS, Budget
from .estimate_antidiagonal import antidiagonal_logits
from .estimate_pooled import pooled_logits
from .estimate_quest import quest_logits
from .estimate_salient import salient_logits
from .estimate_sampled import sampled_logits
from .estimate_vslash import vslash_logits

__all__ = ["ESTIMATE", "block_logits"]

Estimate = Callable[[torch.Tensor, torch.Tensor, Budget, float], torch.Tensor]

ESTIMATE: dict[str, Estimate] = {
    "pooled": lambda q, k, b, scale: pooled_logits(q, k, b.block_size, scale),
    "sampled": lambda q, k, b, scale: sampled_logits(q, k, b.block_size, scale, b.stride),  # type: ignore[arg-type]
    "peak": lambda q, k, b, scale: sampled_logits(q, k, b.block_size, scale, b.stride, "max"),  # type: ignore[arg-type]
    "salient": lambda q, k, b, scale: salient_logits(q, k, b.block_size, scale, b.stride, b.sink),  # type: ignore[arg-type]
    "antidiagonal": lambda q, k, b, scale: antidiagonal_logits(q, k, b.block_size, scale, b.stride),  # type: ignore[arg-type]
    "vslash": lambda q, k, b, scale: vslash_logits(q, k, b.block_size, scale),
    "quest": lambda q, k, b, scale: quest_logits(q, k, b.block_size, scale),
    "oracle": lambda q, k, b, scale: sampled_logits(q, k, b.block_size, scale, 1),
}
assert ESTIMATE.keys() == ESTIMATORS.keys(), "every declared estimator has code, and nothing else"


def block_logits(q: torch.Tensor, k: torch.Tensor, budget: Budget, scale: float) -> torch.Tensor:
    """The budget's estimator on q ``(B, Hq, Sq, D)`` and k ``(B, Hkv, Sk, D)``; see the module docstring."""
    return ESTIMATE[budget.estimator](q, k, budget, scale)
