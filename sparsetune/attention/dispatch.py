"""One entry point for block-sparse attention: the Triton kernel on CUDA, the torch reference on CPU."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import torch
import torch.nn.functional as F

from ..profile.budget import Budget
from .gather import gathered_attention, gathered_decode
from .mask import AttentionError, BlockMask
from .reference import check_inputs, reference_attention
from .select import select_blocks

__all__ = ["INTERPRET_ENV", "block_sparse_attention", "dense_causal_attention", "sparse_attention", "uses_triton"]

# Set to 1 to run the Triton kernel on CPU tensors under Triton's interpreter (tests only:
# slow). It also sets TRITON_INTERPRET=1 before the kernel module is first imported.
INTERPRET_ENV = "SPARSETUNE_TRITON_INTERPRET"


def _interpret_requested() -> bool:
    return os.environ.get(INTERPRET_ENV, "0").strip().lower() in ("1", "true", "yes", "on")


def uses_triton(q: torch.Tensor) -> bool:
    """True when `block_sparse_attention` would run the Triton kernel for tensors like `q`."""
    return q.is_cuda or _interpret_requested()


def _kernel_module() -> ModuleType:
    # Imported lazily: importing runs @triton.jit, which reads TRITON_INTERPRET right then.
    if _interpret_requested():
        os.environ.setdefault("TRITON_INTERPRET", "1")
    return importlib.import_module("sparsetune.kernels.block_sparse_attn")


_KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_kernel_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """The kernel's own limits, as user-facing errors (no silent fallback to the slow reference)."""
    d = q.shape[-1]
    if d < 16 or d & (d - 1):
        raise AttentionError(f"head_dim: the Triton kernel needs a power of two >= 16, got {d}")
    if not q.dtype == k.dtype == v.dtype or q.dtype not in _KERNEL_DTYPES:
        raise AttentionError(f"dtype: q, k, v must share one of float16, bfloat16, float32 for the kernel, got "
                             f"{q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise AttentionError(f"device: q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask,
                           scale: float | None = None, config: dict[str, int] | None = None) -> torch.Tensor:
    """Causal attention over the key blocks `block_mask` selects; ``(B, Hq, Sq, D)`` in q's dtype, like SDPA.

    q ``(B, Hq, Sq, D)``, k/v ``(B, Hkv, Sk, D)`` with Hq a multiple of Hkv (GQA: query head h
    reads KV head ``h // (Hq // Hkv)``); the queries are the last Sq of the Sk positions.
    `scale` defaults to 1/sqrt(D). `config` (BLOCK_M, BLOCK_N, num_warps, num_stages) tunes the
    kernel's speed, never its result; None picks a default for the block size. On CPU a torch
    path runs unless ``SPARSETUNE_TRITON_INTERPRET=1``, the cheapest that gives this result:
    causal SDPA when every visible block is kept, `gathered_attention` (work scales with the kept
    blocks) for prefill and chunks, `gathered_decode` (the kept keys, one unmasked call) for a single
    query, the masked-SDPA reference for any other single query block.
    """
    check_inputs(q, k, v, block_mask)
    if not uses_triton(q):
        # The cheapest correct CPU path: a mask that keeps every visible block is plain causal attention.
        if bool((block_mask.kv_num_blocks == block_mask.visible_blocks()).all()):
            return dense_causal_attention(q, k, v, scale=scale)
        if block_mask.num_q_blocks > 1:
            return gathered_attention(q, k, v, block_mask, scale=scale)
        out = gathered_decode(q, k, v, block_mask, scale=scale) if q.shape[2] == 1 else None
        return reference_attention(q, k, v, block_mask, scale=scale) if out is None else out
    _check_kernel_inputs(q, k, v)
    return _kernel_module().block_sparse_attn_fwd(
        q, k, v, block_mask.kv_num_blocks, block_mask.kv_indices, block_mask.block_size,
        sm_scale=scale, config=config)


def dense_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           scale: float | None = None) -> torch.Tensor:
    """SDPA with bottom-right causal alignment (query i sits at position Sk - Sq + i); GQA via enable_gqa."""
    sq, sk = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if sq == sk:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale, enable_gqa=gqa)
    if sq == 1:  # the last query sees every key
        return F.scaled_dot_product_attention(q, k, v, scale=scale, enable_gqa=gqa)
    # SDPA's is_causal aligns top-left when Sq < Sk; build the bottom-right mask instead.
    qpos = torch.arange(sk - sq, sk, device=q.device)
    mask = torch.arange(sk, device=q.device)[None, :] <= qpos[:, None]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, budget: Budget,
                     scale: float | None = None,
                     config: dict[str, int] | None = None) -> tuple[torch.Tensor, BlockMask]:
    """Select blocks under `budget`, then attend: ``(out, block_mask)``.

    A dense budget skips selection and the sparse kernel and runs causal SDPA; its mask is the
    full causal one, so it reports sparsity 0.
    """
    if budget.is_dense:
        mask = BlockMask.full(q.shape[0], k.shape[1], budget.block_size, q.shape[2], k.shape[2], q.device)
        check_inputs(q, k, v, mask)
        return dense_causal_attention(q, k, v, scale=scale), mask
    mask = select_blocks(q, k, budget, scale=scale)
    return block_sparse_attention(q, k, v, mask, scale=scale, config=config), mask
