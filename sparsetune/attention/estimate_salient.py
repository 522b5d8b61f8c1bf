"""The salient estimator: `peak`, plus every query of the blocks where a retrieval answer reads.

A 1-in-16 query sampler skips most of a needle's own tokens, and on SmolLM2 at 4k tokens those are the
queries that decide the answer. Scoring every query of the needle's block, and of the last blocks
where the question sits, kept both samples that peak/16 lost. The same number of queries elsewhere
did not (RESULTS.md, "The queries a stride skips"). The needle's place is not known to the estimator,
but the question's queries read it. So it is found in two passes:

1. The last query block's queries are scored exactly against every key. Of the key blocks they read,
   the `SALIENT_SHARE` with the most mass are salient: the largest over those queries and over every
   head, with the sink blocks and the last `TAIL_BLOCKS` aside.
2. The scored queries are then peak's every stride-th one, every query of the last `TAIL_BLOCKS`
   blocks, and every query of the salient blocks. They are ranked as peak ranks them: each key
   block's largest mass over those queries and the group's heads.

The positions are chosen per sequence of the batch. A decode step, one query, is scored exactly, as
peak scores it.
"""

from __future__ import annotations

import math

import torch

from .estimate_sampled import sampled_logits, sampled_positions

__all__ = ["SALIENT_SHARE", "TAIL_BLOCKS", "salient_blocks", "salient_logits", "salient_positions"]

TAIL_BLOCKS = 3  # last query blocks scored in full: where a prompt's question sits
SALIENT_SHARE = 1 / 8  # of the key blocks: those the last queries read most, whose queries are scored in full


def salient_blocks(q: torch.Tensor, k: torch.Tensor, block_size: int, scale: float, sink: int = 0,
                   count: int | None = None, tail: int = TAIL_BLOCKS) -> list[int]:
    """The key blocks the last query block of one sequence reads most (step 1 of the module docstring): the
    largest exact mass over its queries and every head, the sink blocks and the last `tail` blocks aside;
    `count` of them instead of `SALIENT_SHARE` (`benchmarks/estimator_probe.py` varies both). Empty when no
    block remains before the tail (short inputs, decode)."""
    seq_q, seq_k = q.shape[2], k.shape[2]
    last = (seq_k - 1) // block_size
    first = (seq_k - seq_q) // block_size  # the first key block that has queries here
    if last - tail + 1 <= max(first, sink):
        return []
    pos = torch.arange(seq_k - seq_q, seq_k, device=q.device)
    probe = (pos // block_size == last).nonzero().squeeze(1)
    read = sampled_logits(q, k, block_size, scale, 1, "max", probe)[0, :, -1].amax(0)  # [key blocks]; the
    # stride is unused: the probe positions are given
    read[:max(first, sink)] = -math.inf
    read[last - tail + 1:] = -math.inf
    wanted = math.ceil((last + 1) * SALIENT_SHARE) if count is None else count
    return read.topk(min(wanted, int(torch.isfinite(read).sum()))).indices.tolist()


def salient_positions(q: torch.Tensor, k: torch.Tensor, block_size: int, scale: float, stride: int,
                      sink: int = 0, count: int | None = None, tail: int = TAIL_BLOCKS) -> torch.Tensor:
    """Ascending indices into the queries of one sequence (q ``(1, Hq, Sq, D)``, k ``(1, Hkv, Sk, D)``) that
    `salient_logits` scores exactly (see the module docstring); `count` and `tail` as `salient_blocks`."""
    seq_q, seq_k = q.shape[2], k.shape[2]
    pos = torch.arange(seq_k - seq_q, seq_k, device=q.device)
    chosen = torch.zeros(seq_q, dtype=torch.bool, device=q.device)
    chosen[sampled_positions(seq_q, seq_k, stride, q.device)] = True
    chosen |= pos // block_size > (seq_k - 1) // block_size - tail
    for block in salient_blocks(q, k, block_size, scale, sink, count, tail):
        chosen |= pos // block_size == block
    return chosen.nonzero().squeeze(1)


def salient_logits(q: torch.Tensor, k: torch.Tensor, block_size: int, scale: float, stride: int,
                   sink: int = 0) -> torch.Tensor:
    """fp32 [B, Hkv, QB, KB] block logits: the log of each key block's largest exact mass over the queries
    `salient_positions` chooses (per sequence) and the group's heads; -inf where none was seen."""
    return torch.cat([sampled_logits(q[b:b + 1], k[b:b + 1], block_size, scale, stride, "max",
                                     salient_positions(q[b:b + 1], k[b:b + 1], block_size, scale, stride, sink))
                      for b in range(q.shape[0])])
