"""The Quest-style bound: per key block, the per-channel min and max of its keys bound q.k from above.

For a query q and a key block with channel-wise extremes (lo, hi), ``sum_d max(q_d * lo_d, q_d * hi_d)`` is
at least q.k for every key of the block, so a block that holds one strong key (a needle) scores as high as
that key, and a block of keys that all point away scores low. It reads 2 x D numbers per key block instead of
the block's keys, which makes it the cheap exact-enough ranking for decode, where one query ranks the blocks.
In a prefill each query block is represented by its last query (the one a decode step from there would use).
Bounds become logits at the attention's scale, averaged over the GQA group's heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .mask import block_grid

__all__ = ["block_extremes", "quest_logits"]


def block_extremes(k: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per key block, per channel: min and max of its keys, fp32 [B, Hkv, KB, D] each (a partial last block
    counts only its keys)."""
    batch, kv_heads, seq_k, dim = k.shape
    cols = -(-seq_k // block_size)
    pad = cols * block_size - seq_k
    kf = k.float()
    lo = F.pad(kf, (0, 0, 0, pad), value=float("inf")).view(batch, kv_heads, cols, block_size, dim).amin(3)
    hi = F.pad(kf, (0, 0, 0, pad), value=float("-inf")).view(batch, kv_heads, cols, block_size, dim).amax(3)
    return lo, hi


def quest_logits(q: torch.Tensor, k: torch.Tensor, block_size: int, scale: float) -> torch.Tensor:
    """fp32 [B, Hkv, QB, KB]: scale x the upper bound of q.k per key block, for each query block's last query."""
    batch, heads, seq_q, dim = q.shape
    kv_heads, seq_k = k.shape[1], k.shape[2]
    group = heads // kv_heads
    first, rows, _ = block_grid(seq_q, seq_k, block_size)
    # The last query of each query block: absolute position min(end of block, Sk) - 1, as an index into q.
    ends = torch.clamp((torch.arange(rows, device=q.device) + first + 1) * block_size, max=seq_k) - 1
    reps = q[:, :, ends - (seq_k - seq_q)].float().reshape(batch, kv_heads, group, rows, 1, dim)
    lo, hi = block_extremes(k, block_size)  # [B, Hkv, KB, D]
    lo, hi = lo[:, :, None, None], hi[:, :, None, None]  # [B, Hkv, 1, 1, KB, D]
    bound = torch.maximum(reps * lo, reps * hi).sum(-1)  # [B, Hkv, G, QB, KB]
    return bound.mean(dim=2) * scale
