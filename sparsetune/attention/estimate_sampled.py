"""The sampled-exact estimator: the true attention of a few queries per query block, summed per key block.

Every query block gets its own exact view of the keys: the queries at absolute positions ``p`` with
``p % stride == stride - 1`` (the block's last query among them, since the stride divides the block size),
plus the very last query (a partial last block, and decode, where it is the only one). Each is scored
exactly against every key it sees (causal softmax at the attention's own scale); its probability mass is
summed per key block, then averaged over the block's sampled queries and the GQA group's heads. That is
1/stride of the q.k work of dense attention. With ``stride == 1`` every query is sampled: the true mass,
the `oracle` (a diagnostic: it costs a dense pass).

Measured on SmolLM2-135M, 2k tokens, keep 0.2 (77% block sparsity), 16 samples: stride 8 and 16 both kept
15 of 16 answers, as the true mass did; mean pooling kept 5.

`peak` (``reduce="max"``) keeps, per key block, the largest mass any sampled query of any head of the group gives
it instead of the mean: a block one retrieval head reads from one query is not outvoted by the others (Quest's
"any query may need it" view, from exact scores).
"""

from __future__ import annotations

import math

import torch

from .mask import block_grid

__all__ = ["sampled_logits", "sampled_positions"]

# A chunk of sampled queries holds at most this many (query x head x key) scores (fp32: 4 MB): it stays in
# cache, and the oracle at long lengths never builds an [H, S, S] tensor. Larger chunks measured 2-3x slower
# at 2k-4k tokens on CPU (their fresh buffers are page-faulted in on every call).
_CHUNK_ELEMENTS = 1 << 20


def sampled_positions(seq_q: int, seq_k: int, stride: int, device: torch.device | None = None) -> torch.Tensor:
    """Indices into the queries (the last `seq_q` of `seq_k` positions) that the estimator scores exactly."""
    pos = torch.arange(seq_k - seq_q, seq_k, device=device)
    return ((pos % stride == stride - 1) | (pos == seq_k - 1)).nonzero().squeeze(1)


def sampled_logits(q: torch.Tensor, k: torch.Tensor, block_size: int, scale: float, stride: int,
                   reduce: str = "mean", positions: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 [B, Hkv, QB, KB] block logits: log of the estimated attention mass (-inf where none was seen).

    `reduce` combines the sampled queries of a query block and the group's heads: "mean" (the mass) or "max"
    (the peak). With "mean" the softmax of a row over its visible blocks is the estimated mass (the logs of
    masses that sum to 1); with "max" the logits rank blocks and their softmax is a normalised peak.
    `positions`: ascending indices into the queries to score instead of every stride-th (`estimate_salient`).
    """
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce: must be 'mean' or 'max', got {reduce!r}")
    batch, heads, seq_q, dim = q.shape
    kv_heads, seq_k = k.shape[1], k.shape[2]
    group = heads // kv_heads
    first, rows, cols = block_grid(seq_q, seq_k, block_size)
    idx = sampled_positions(seq_q, seq_k, stride, q.device) if positions is None else positions
    pos = idx + (seq_k - seq_q)  # absolute positions of the sampled queries, ascending
    # Keys padded to whole blocks (the padding lies in every query's future, so it is masked out).
    keys = torch.nn.functional.pad(k.float(), (0, 0, 0, cols * block_size - seq_k)).transpose(-1, -2)
    key_pos = torch.arange(cols * block_size, device=q.device)
    mass = torch.zeros(batch, kv_heads, rows, cols, dtype=torch.float32, device=q.device)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, batch * heads * cols * block_size))
    positions = pos.tolist()
    for start in range(0, idx.numel(), chunk):
        at, p = idx[start:start + chunk], pos[start:start + chunk]
        n = at.numel()
        seen = (positions[start + n - 1] // block_size + 1) * block_size  # causal: no chunk reads past its last query
        # The group's heads become extra rows of their KV head's matmul, so the keys are never copied per head.
        qs = (q[:, :, at].float() * scale).reshape(batch, kv_heads, group * n, dim)
        logits = torch.matmul(qs, keys[..., :seen]).view(batch, kv_heads, group, n, seen)
        lo = positions[start] // block_size * block_size  # keys before the chunk's first query block: all visible
        logits[..., lo:].masked_fill_(key_pos[lo:seen] > p[:, None], -math.inf)
        probs = torch.softmax(logits, dim=-1)
        per_block = probs.view(batch, kv_heads, group, n, seen // block_size, block_size).sum(-1)
        if reduce == "max":
            row = (p // block_size - first)[None, None, :, None].expand(batch, kv_heads, n, seen // block_size)
            mass[..., :seen // block_size].scatter_reduce_(2, row, per_block.amax(dim=2), "amax")
        else:
            mass[..., :seen // block_size].index_add_(2, p // block_size - first, per_block.mean(dim=2))
    if reduce == "max":
        return mass.log()
    counts = torch.bincount(pos // block_size - first, minlength=rows).to(mass.dtype)
    return (mass / counts[:, None]).log()
