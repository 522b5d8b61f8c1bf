"""Budget -> block mask: which key blocks each query block keeps, ranked by the budget's estimator.

Vectorized torch only (no Python loop over blocks): this runs in every forward pass, on CPU at
a few thousand tokens and on GPU up to 64k.
"""

from __future__ import annotations

import math

import torch

from ..profile.budget import Budget
from .estimate import block_logits
from .estimate_pooled import block_scores
from .mask import AttentionError, BlockMask

__all__ = ["block_scores", "select_blocks"]

# ceil(keep * visible) with keep * visible computed in floating point: 0.7 * 10 is
# 7.000000000000001, whose ceil would keep an extra block. Values within EPS of an integer
# count as that integer.
_CEIL_EPS = 1e-9


def _check(q: torch.Tensor, k: torch.Tensor, budget: Budget) -> None:
    if not isinstance(budget, Budget):
        raise AttentionError(f"budget: must be a sparsetune.Budget, got {type(budget).__name__}")
    if q.dim() != 4 or k.dim() != 4:
        raise AttentionError(f"q, k: must be (B, H, S, D), got {tuple(q.shape)}, {tuple(k.shape)}")
    if q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3] or q.shape[1] % k.shape[1]:
        raise AttentionError(f"q {tuple(q.shape)} and k {tuple(k.shape)}: batch and head_dim must match and "
                             "query heads must be a multiple of KV heads")
    if q.shape[2] > k.shape[2]:
        raise AttentionError(f"seq_q: must be <= seq_k (queries are the last keys), got {q.shape[2]} > {k.shape[2]}")


def _decode_topk(scores: torch.Tensor, budget: Budget, seq_k: int) -> BlockMask:
    """`select_blocks` for one query under topk, in a few ops (decode runs it per layer per token).

    The same blocks as the general path: the sink and local blocks, then the best of the blocks
    between them by a stable descending sort (ties to the lower index), up to ceil(keep * visible).
    """
    num_cols = scores.shape[-1]  # every block is visible to the last query
    n_keep = max(math.ceil(num_cols * budget.keep - _CEIL_EPS), 1)
    lo = min(budget.sink, num_cols)
    hi = max(num_cols - budget.local, lo)  # blocks [lo, hi) are ranked, the rest always kept
    kept = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    kept[..., :lo] = True
    kept[..., hi:] = True
    extra = n_keep - (lo + num_cols - hi)
    if extra > 0 and hi > lo:
        best = torch.sort(scores[..., lo:hi], dim=-1, descending=True, stable=True).indices[..., :extra]
        kept.scatter_(-1, best + lo, True)
    return BlockMask.from_block_bool(kept, budget.block_size, 1, seq_k)


def select_blocks(q: torch.Tensor, k: torch.Tensor, budget: Budget, scale: float | None = None) -> BlockMask:
    """Select key blocks per (batch, KV head, query block) under `budget`.

    q ``(B, Hq, Sq, D)``, k ``(B, Hkv, Sk, D)``; the queries are the last Sq positions of Sk.
    Visible blocks of row r are ``0 .. first_q_block + r``. Always kept: the `sink` first and
    the `local` most recent visible blocks (the diagonal is one), so no row is ever empty.

    The budget's estimator (`attention.estimate`) gives each visible block a logit whose softmax is the
    estimated attention mass (`scale`: the attention's, default 1/sqrt(D)); pooled ranks by its raw scores.

    - ``topk``: keep ``max(ceil(keep * visible), always-kept)`` blocks: the always-kept ones,
      then the highest estimates. Kept sets are nested as keep grows.
    - ``coverage``: the estimated mass over visible blocks;
      always-kept blocks come first and count toward the mass, then blocks by descending
      probability until the kept mass reaches ``tau`` (the block that crosses it is kept).
      Nested as tau grows.

    A dense budget (keep or tau == 1) keeps every visible block without scoring.
    Decode matches the prefill's last row whenever that row pools the same queries (its block
    holds only the last query, ``Sk % block_size == 1``); otherwise decode ranks by the current
    query alone, the only one it has.
    """
    _check(q, k, budget)
    batch, _, seq_q, dim = q.shape
    kv_heads, seq_k = k.shape[1], k.shape[2]
    bs = budget.block_size
    if budget.is_dense or seq_q == 0 or (seq_q == 1 and budget.dense_tail):  # decode: the last block, dense
        return BlockMask.full(batch, kv_heads, bs, seq_q, seq_k, q.device)

    scale = dim ** -0.5 if scale is None else scale
    if budget.estimator == "pooled":  # rank by the raw scores (the order of their logits, without rounding)
        scores = block_scores(q, k, bs)  # [B, Hkv, QB, KB]
        logits = scores * scale
    else:
        scores = logits = block_logits(q, k, budget, scale)
    if seq_q == 1 and budget.method == "topk":
        return _decode_topk(scores, budget, seq_k)
    num_rows, num_cols = scores.shape[-2:]
    first = (seq_k - seq_q) // bs
    diag = torch.arange(num_rows, device=q.device) + first  # absolute block of each row
    cols = torch.arange(num_cols, device=q.device)
    visible = cols[None, :] <= diag[:, None]  # [QB, KB]
    always = visible & ((cols[None, :] < budget.sink) | (cols[None, :] > diag[:, None] - budget.local))
    if budget.dense_tail:  # the last query blocks keep every visible block
        last = (seq_k - 1) // bs
        always = always | (visible & (diag[:, None] > last - budget.dense_tail))

    # Always-kept first (+inf), invisible last (-inf); stable sort breaks ties by block index.
    prio = scores.masked_fill(always, math.inf).masked_fill(~visible, -math.inf)
    order = torch.sort(prio, dim=-1, descending=True, stable=True).indices
    if budget.method == "topk":
        n_keep = torch.ceil((diag + 1).double() * budget.keep - _CEIL_EPS).clamp(min=1)
        keep_sorted = cols.expand_as(order) < n_keep[:, None].to(order.dtype)
    else:
        prob = torch.softmax(logits.masked_fill(~visible, -math.inf), dim=-1).gather(-1, order)
        # Exclusive prefix sum: the mass kept before each block (monotone along the order).
        mass_before = torch.nn.functional.pad(torch.cumsum(prob, dim=-1)[..., :-1], (1, 0))
        keep_sorted = mass_before < budget.tau
    kept = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    kept = (kept | always) & visible
    return BlockMask.from_block_bool(kept, bs, seq_q, seq_k)
