"""Budget -> block mask: which key blocks each query block keeps, from pooled q.k scores.

Vectorized torch only (no Python loop over blocks): this runs in every forward pass, on CPU at
a few thousand tokens and on GPU up to 64k.
"""

from __future__ import annotations

import math

import torch

from ..profile.budget import Budget
from .mask import AttentionError, BlockMask

__all__ = ["block_scores", "select_blocks"]

# ceil(keep * visible) with keep * visible computed in floating point: 0.7 * 10 is
# 7.000000000000001, whose ceil would keep an extra block. Values within EPS of an integer
# count as that integer.
_CEIL_EPS = 1e-9


def _block_sums(x: torch.Tensor, start: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum x (..., S, D) over absolute blocks, positions being start .. start + S - 1.

    Returns fp32 sums (..., NB, D) and the token count per block (NB,), NB = blocks touched.
    Full blocks are summed through a view (no copy of x); only the partial first/last blocks
    are summed separately.
    """
    seq = x.shape[-2]
    lead = start % block_size
    head = min(seq, (block_size - lead) % block_size)  # tokens of a partial first block
    full = (seq - head) // block_size
    tail = seq - head - full * block_size
    parts, counts = [], []
    if head:
        parts.append(x[..., :head, :].sum(dim=-2, keepdim=True, dtype=torch.float32))
        counts.append(head)
    if full:
        body = x[..., head:head + full * block_size, :]
        body = body.reshape(*x.shape[:-2], full, block_size, x.shape[-1])
        parts.append(body.sum(dim=-2, dtype=torch.float32))
        counts += [block_size] * full
    if tail:
        parts.append(x[..., seq - tail:, :].sum(dim=-2, keepdim=True, dtype=torch.float32))
        counts.append(tail)
    sums = torch.cat(parts, dim=-2) if len(parts) > 1 else parts[0]
    return sums, torch.tensor(counts, dtype=torch.float32, device=x.device)


def block_scores(q: torch.Tensor, k: torch.Tensor, block_size: int) -> torch.Tensor:
    """fp32 [B, Hkv, QB, KB]: mean-pooled query block (over the GQA group's heads) . mean-pooled key block.

    Query blocks are absolute (see `BlockMask`); a partial block pools the tokens it has. At
    decode (Sq == 1) the pooled query is the current query alone.
    """
    batch, heads, seq_q, dim = q.shape
    kv_heads, seq_k = k.shape[1], k.shape[2]
    # Group heads stay a separate dim here; the mean over them comes after block pooling.
    qg = q.reshape(batch, kv_heads, heads // kv_heads, seq_q, dim)
    q_sum, q_cnt = _block_sums(qg, seq_k - seq_q, block_size)
    q_pool = q_sum.mean(dim=2) / q_cnt[:, None]
    k_sum, k_cnt = _block_sums(k, 0, block_size)
    k_pool = k_sum / k_cnt[:, None]
    return q_pool @ k_pool.transpose(-1, -2)


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


def select_blocks(q: torch.Tensor, k: torch.Tensor, budget: Budget) -> BlockMask:
    """Select key blocks per (batch, KV head, query block) under `budget`.

    q ``(B, Hq, Sq, D)``, k ``(B, Hkv, Sk, D)``; the queries are the last Sq positions of Sk.
    Visible blocks of row r are ``0 .. first_q_block + r``. Always kept: the `sink` first and
    the `local` most recent visible blocks (the diagonal is one), so no row is ever empty.

    - ``topk``: keep ``max(ceil(keep * visible), always-kept)`` blocks: the always-kept ones,
      then the highest pooled scores. Kept sets are nested as keep grows.
    - ``coverage``: softmax of the pooled scores scaled by 1/sqrt(D), over visible blocks;
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
    if budget.is_dense or seq_q == 0:
        return BlockMask.full(batch, kv_heads, bs, seq_q, seq_k, q.device)

    scores = block_scores(q, k, bs)  # [B, Hkv, QB, KB]
    if seq_q == 1 and budget.method == "topk":
        return _decode_topk(scores, budget, seq_k)
    num_rows, num_cols = scores.shape[-2:]
    first = (seq_k - seq_q) // bs
    diag = torch.arange(num_rows, device=q.device) + first  # absolute block of each row
    cols = torch.arange(num_cols, device=q.device)
    visible = cols[None, :] <= diag[:, None]  # [QB, KB]
    always = visible & ((cols[None, :] < budget.sink) | (cols[None, :] > diag[:, None] - budget.local))

    # Always-kept first (+inf), invisible last (-inf); stable sort breaks ties by block index.
    prio = scores.masked_fill(always, math.inf).masked_fill(~visible, -math.inf)
    order = torch.sort(prio, dim=-1, descending=True, stable=True).indices
    if budget.method == "topk":
        n_keep = torch.ceil((diag + 1).double() * budget.keep - _CEIL_EPS).clamp(min=1)
        keep_sorted = cols.expand_as(order) < n_keep[:, None].to(order.dtype)
    else:
        logits = (scores * dim ** -0.5).masked_fill(~visible, -math.inf)
        prob = torch.softmax(logits, dim=-1).gather(-1, order)
        # Exclusive prefix sum: the mass kept before each block (monotone along the order).
        mass_before = torch.nn.functional.pad(torch.cumsum(prob, dim=-1)[..., :-1], (1, 0))
        keep_sorted = mass_before < budget.tau
    kept = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
    kept = (kept | always) & visible
    return BlockMask.from_block_bool(kept, bs, seq_q, seq_k)
