"""The antidiagonal estimator (XAttention style): strided antidiagonal sums stand in for each tile's mass.

Positions are grouped S at a time (S = `stride`, dividing the block size). For query group a and key group b
the estimate of their affinity is the sum along the tile's antidiagonal, ``sum_i q[aS + S-1-i] . k[bS + i]``:
every query and every key of the tile appears once, so a single strong key (a needle) is not averaged away as
it is by mean pooling, and the whole product is one matmul of ``[L/S, S*D]`` matrices (1/S of the q.k work).
Each query group's sums are scaled by ``scale / S`` (a mean logit), softmaxed over the groups it sees (group
causality: b <= a), summed per key block and averaged over the query block's groups and the GQA group's heads.
With S = 1 every group is one query: the true mass (the `oracle`), which the tests check. A single strong key
still enters its group's sum once among S products, so the dilution pooling suffers by the block size is here
suffered by S: larger strides are cheaper and blunter.

Decode has one query and no antidiagonal: it is scored exactly (`sampled` with its one query).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .estimate_sampled import sampled_logits
from .mask import block_grid

__all__ = ["antidiagonal_logits"]

_CHUNK_ELEMENTS = 1 << 20  # scores held at once (fp32: 4 MB, cache-sized), as in the sampled estimator


def antidiagonal_logits(q: torch.Tensor, k: torch.Tensor, block_size: int, scale: float, stride: int) -> torch.Tensor:
    """fp32 [B, Hkv, QB, KB] block logits (log of the estimated mass; -inf where a row sees nothing)."""
    batch, heads, seq_q, dim = q.shape
    kv_heads, seq_k = k.shape[1], k.shape[2]
    if seq_q == 1:
        return sampled_logits(q, k, block_size, scale, 1)
    group = heads // kv_heads
    first, rows, cols = block_grid(seq_q, seq_k, block_size)
    per_block = block_size // stride
    # Queries on the absolute grid of their blocks, keys padded to whole blocks (zeros add nothing to a sum).
    front = (seq_k - seq_q) - first * block_size
    qp = F.pad(q.float(), (0, 0, front, rows * block_size - seq_q - front))
    kp = F.pad(k.float(), (0, 0, 0, cols * block_size - seq_k))
    # Query group rows reversed within the group, keys in order: row a . column b is the antidiagonal sum.
    qg = qp.view(batch, kv_heads, group, -1, stride, dim).flip(-2).reshape(batch, kv_heads, group, -1, stride * dim)
    kg = kp.view(batch, kv_heads, -1, stride * dim)
    q_groups, k_groups = qg.shape[-2], kg.shape[-2]
    qi = torch.arange(q_groups, device=q.device) + first * per_block  # absolute group of each query group
    kj = torch.arange(k_groups, device=q.device)
    last_key_group = (seq_k - 1) // stride
    keys = kg.transpose(-1, -2)  # [B, Hkv, S*D, KG]
    mass = torch.zeros(batch, kv_heads, q_groups, cols, dtype=torch.float32, device=q.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, batch * heads * k_groups))  # long inputs: bounded memory
    for start in range(0, q_groups, chunk):
        rows_at = slice(start, start + chunk)
        n = min(chunk, q_groups - start)
        # Causal: the chunk reads keys up to its last query's block; the group's heads are extra matmul rows.
        seen = min(cols, (int(qi[start + n - 1]) * stride) // block_size + 1) * per_block
        qs = qg[:, :, :, rows_at].reshape(batch, kv_heads, group * n, stride * dim)
        logits = (qs @ keys[..., :seen]).view(batch, kv_heads, group, n, seen) * (scale / stride)
        hidden = (kj[None, :seen] > qi[rows_at, None]) | (kj[None, :seen] > last_key_group)
        probs = torch.softmax(logits.masked_fill_(hidden, -math.inf), dim=-1).mean(dim=2)
        mass[:, :, rows_at, :seen // per_block] = probs.view(*probs.shape[:-1], seen // per_block, per_block).sum(-1)
    # Query groups made only of padding (before the first query, after the last) stand for no query: dropped.
    real = (((qi + 1) * stride > seq_k - seq_q) & (qi * stride < seq_k)).float()
    mass = (mass * real[:, None]).view(batch, kv_heads, rows, per_block, cols).sum(3)
    counts = real.view(rows, per_block).sum(-1)
    return (mass / counts[:, None]).log()
