"""Plain-torch block-sparse attention: the CPU path and the oracle the kernel is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .mask import AttentionError, BlockMask

__all__ = ["check_inputs", "flex_reference_attention", "reference_attention"]


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask) -> None:
    """Raise `AttentionError` unless q (B,Hq,Sq,D), k/v (B,Hkv,Sk,D) and the mask agree."""
    if q.dim() != 4 or k.dim() != 4 or k.shape != v.shape:
        raise AttentionError(f"q must be (B, Hq, Sq, D) and k, v equal (B, Hkv, Sk, D); got "
                             f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    b, hq, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    if k.shape[0] != b or k.shape[3] != d or hq % hkv:
        raise AttentionError(f"k/v {tuple(k.shape)} do not fit q {tuple(q.shape)}: batch and head_dim must "
                             "match and query heads must be a multiple of KV heads")
    if not isinstance(block_mask, BlockMask):
        raise AttentionError(f"block_mask: must be a sparsetune BlockMask, got {type(block_mask).__name__}")
    if (block_mask.seq_q, block_mask.seq_k) != (sq, sk) or (block_mask.batch, block_mask.heads) != (b, hkv):
        raise AttentionError(
            f"block_mask: built for (B, Hkv, Sq, Sk) = {(block_mask.batch, block_mask.heads, block_mask.seq_q, block_mask.seq_k)}, "
            f"inputs are {(b, hkv, sq, sk)}")
    if block_mask.device != q.device:
        raise AttentionError(f"block_mask: on {block_mask.device}, inputs on {q.device}")


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask,
                        scale: float | None = None) -> torch.Tensor:
    """Block-sparse causal attention by masking dense SDPA: ``(B, Hq, Sq, D)`` in q's dtype.

    Builds the token mask ``[B, Hq, Sq, Sk]`` from the block mask (causal applied) and calls
    SDPA in fp32, so 16-bit inputs get an fp32 oracle. Memory is O(Hq * Sq * Sk) bools, fine
    for a 2k-token forward on CPU, not meant for 64k. A row with no visible key (only with a
    malformed mask) comes out as zeros, like the kernel's.
    """
    check_inputs(q, k, v, block_mask)
    mask = block_mask.to_dense(num_heads=q.shape[1])
    out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, scale=scale,
                                         enable_gqa=q.shape[1] != k.shape[1])
    return torch.nan_to_num_(out, nan=0.0).to(q.dtype)


def flex_reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask,
                             scale: float | None = None, flex_fn=None) -> torch.Tensor:
    """The same attention through torch's ``flex_attention`` with ``BlockMask.from_kv_blocks``.

    An independent oracle (runs unfused on CPU). flex aligns query blocks to the query
    tensor, so queries are padded at the front to ``seq_k`` and the last ``seq_q`` rows kept
    (see `BlockMask.to_flex`). `flex_fn` replaces ``flex_attention`` (e.g. a compiled one).
    """
    check_inputs(q, k, v, block_mask)
    if flex_fn is None:
        from torch.nn.attention.flex_attention import flex_attention as flex_fn
    sq, sk = q.shape[2], k.shape[2]
    q_full = F.pad(q, (0, 0, sk - sq, 0)) if sq < sk else q
    out = flex_fn(q_full, k, v, block_mask=block_mask.to_flex(num_heads=q.shape[1]), scale=scale,
                  enable_gqa=q.shape[1] != k.shape[1])
    return out[:, :, sk - sq:]
