"""The vertical-slash estimator (MInference / FlexPrefill style), block-native: one pattern from the last queries.

The last `LAST_QUERIES` queries are scored exactly against every key they see. Their attention mass per key
column (the *vertical* lines: sinks, a needle every later query reads) and per query-key distance (the
*slash* lines: the local window and periodic structure) are pooled to blocks: vertical mass per key block,
slash mass per block distance. A query block r then scores key block c by the vertical mass of c plus the
slash mass at distance r - c (the mean of the two block distances its tiles span), so every row shares one
pattern shifted along the diagonal. That costs ``LAST_QUERIES x L`` of q.k whatever the length: the cheapest
exact-attention estimator, and the one that misses what only a middle query block needs.

Decode has one query: exact (`sampled` with its one query).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .estimate_sampled import sampled_logits
from .mask import block_grid

__all__ = ["LAST_QUERIES", "vslash_logits"]

LAST_QUERIES = 64  # MInference's last_q


def vslash_logits(q: torch.Tensor, k: torch.Tensor, block_size: int, scale: float) -> torch.Tensor:
    """fp32 [B, Hkv, QB, KB] block logits: log of the row-normalised vertical + slash mass."""
    batch, heads, seq_q, dim = q.shape
    kv_heads, seq_k = k.shape[1], k.shape[2]
    if seq_q == 1:
        return sampled_logits(q, k, block_size, scale, 1)
    group = heads // kv_heads
    first, rows, cols = block_grid(seq_q, seq_k, block_size)
    n = min(LAST_QUERIES, seq_q)
    qpos = torch.arange(seq_k - n, seq_k, device=q.device)
    kpos = torch.arange(seq_k, device=q.device)
    qs = q[:, :, -n:].float().reshape(batch, kv_heads, group, n, dim)
    logits = (qs @ k.float()[:, :, None].transpose(-1, -2)) * scale  # [B, Hkv, G, n, Sk]
    probs = torch.softmax(logits.masked_fill(kpos[None, :] > qpos[:, None], -math.inf), dim=-1).mean(dim=2)
    pad = cols * block_size - seq_k
    vertical = F.pad(probs.sum(2), (0, pad)).view(batch, kv_heads, cols, block_size).sum(-1)  # [B, Hkv, KB]
    # Slash: the mass at each distance d = qpos - kpos, summed over the last queries, then per block distance.
    dist = (qpos[:, None] - kpos[None, :]).clamp(min=0)  # future keys carry zero mass
    slash = torch.zeros(batch, kv_heads, cols * block_size, device=q.device)
    slash.index_add_(2, dist.flatten(), probs.reshape(batch, kv_heads, -1))
    slash = slash.view(batch, kv_heads, cols, block_size).sum(-1)  # [B, Hkv, block distance]
    # Tiles of blocks (r, c) hold distances from (r-c-1)*bs+1 to (r-c+1)*bs-1: the two block distances' mean.
    delta = (torch.arange(rows, device=q.device)[:, None] + first) - torch.arange(cols, device=q.device)[None, :]
    visible = delta >= 0
    near = slash.gather(-1, delta.clamp(min=0).flatten()[None, None].expand(batch, kv_heads, -1)).view(
        batch, kv_heads, rows, cols)
    below = slash.gather(-1, (delta - 1).clamp(min=0).flatten()[None, None].expand(batch, kv_heads, -1)).view(
        batch, kv_heads, rows, cols) * (delta >= 1)
    score = vertical[:, :, None, :] + (near + below) / 2
    score = score.masked_fill(~visible, 0.0)
    return (score / score.sum(-1, keepdim=True)).log()
