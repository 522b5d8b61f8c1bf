"""Block-sparse causal attention, forward only, in the style of Triton's fused-attention tutorial.

Reads top-down: one online-softmax step (helper), the kernel, the launcher.

Mask layout (FlexAttention's BCSR form, one row per *absolute* sparse query block):
``kv_num_blocks[B, Hkv, QB]`` and ``kv_indices[B, Hkv, QB, KB]``. The queries are the last
``seq_q`` positions of ``seq_k``; row ``r`` covers absolute positions
``[(first + r) * S, (first + r + 1) * S)`` with ``first = (seq_k - seq_q) // S`` and ``S`` the
sparse block size. In each row the first ``kv_num_blocks`` entries are the selected key
blocks, sorted ascending, unique, and causally visible (``<= first + r``); the rest is padding
that is never read. Only the last selected block can be the diagonal one, so every other block
runs without a causal mask (the tutorial's two-stage split).

Grid: one program per (query tile of BLOCK_M absolute positions, batch x query head). Query
head ``h`` reads K/V head ``h // (Hq // Hkv)`` through strides, so GQA never copies K/V.
Scores are scaled by ``sm_scale * log2(e)`` and exponentiated with ``exp2``; accumulation is
fp32 whatever the input dtype.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

# The config space lives in configs.py (importable without running @triton.jit); re-exported here.
from .configs import CONFIGS, config_problem, configs_for, default_config, keep_config

__all__ = ["CONFIGS", "INTERPRETED", "block_sparse_attn_fwd", "configs_for", "default_config", "keep_config"]

# Triton picks compiled or interpreted when `@triton.jit` runs, i.e. when this module is
# imported; the launcher checks the choice against the tensors' device.
INTERPRETED: bool = os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")

LOG2E = 1.4426950408889634


@triton.jit
def _attn_step(acc, l_i, m_i, q, k, v, qk_scale, offs_m, start_n, offs_n,
               CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """One key tile of online softmax: returns updated (acc, l_i, m_i)."""
    qk = tl.dot(q, k, input_precision=DOT_PRECISION)
    if CAUSAL:
        # Only the diagonal block gets here. Every row sees that block's first key (it is <= the
        # row's position), so no row of its first tile is all -inf and exp2 never sees -inf - -inf.
        visible = offs_m[:, None] >= (start_n + offs_n)[None, :]
        qk = tl.where(visible, qk * qk_scale, float("-inf"))
        m_ij = tl.maximum(m_i, tl.max(qk, 1))
        qk = qk - m_ij[:, None]
    else:
        m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        qk = qk * qk_scale - m_ij[:, None]
    p = tl.math.exp2(qk)
    alpha = tl.math.exp2(m_i - m_ij)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=DOT_PRECISION)
    return acc, l_i, m_ij


@triton.jit
def _block_sparse_attn_fwd(
    Q, K, V, Out, KV_NUM, KV_IDX, qk_scale,
    stride_qz, stride_qh, stride_qm, stride_qd,
    stride_kz, stride_kh, stride_kn, stride_kd,
    stride_vz, stride_vh, stride_vn, stride_vd,
    stride_oz, stride_oh, stride_om, stride_od,
    stride_nz, stride_nh, stride_nr,
    stride_iz, stride_ih, stride_ir, stride_ik,
    H, GROUP, SEQ_K, Q_OFFSET, FIRST_TILE, NUM_TILES,
    HEAD_DIM: tl.constexpr, SPARSE_BLOCK: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # Late tiles see the most keys: launch them first so the short ones fill the tail.
    tile = FIRST_TILE + NUM_TILES - 1 - tl.program_id(0)
    off_hz = tl.program_id(1)
    off_z = off_hz // H
    off_h = off_hz % H
    off_hkv = off_h // GROUP
    # int64 bases: B * H * S * D overflows int32 at long lengths.
    q_base = Q + off_z.to(tl.int64) * stride_qz + off_h.to(tl.int64) * stride_qh
    k_base = K + off_z.to(tl.int64) * stride_kz + off_hkv.to(tl.int64) * stride_kh
    v_base = V + off_z.to(tl.int64) * stride_vz + off_hkv.to(tl.int64) * stride_vh
    o_base = Out + off_z.to(tl.int64) * stride_oz + off_h.to(tl.int64) * stride_oh

    start_m = tile * BLOCK_M  # absolute position of the tile's first row
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    # Rows before the query range (the tile starts mid-block) or past seq_k are computed on
    # zeros, never stored.
    row_ok = (offs_m >= Q_OFFSET) & (offs_m < SEQ_K)
    q = tl.load(q_base + (offs_m - Q_OFFSET)[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=row_ok[:, None], other=0.0)

    # The one mask row this tile reads (BLOCK_M divides SPARSE_BLOCK).
    q_blk = start_m // SPARSE_BLOCK
    row = q_blk - Q_OFFSET // SPARSE_BLOCK
    idx_ptr = KV_IDX + off_z.to(tl.int64) * stride_iz + off_hkv * stride_ih + row * stride_ir
    n_blocks = tl.load(KV_NUM + off_z.to(tl.int64) * stride_nz + off_hkv * stride_nh + row * stride_nr)
    last = tl.load(idx_ptr + (tl.maximum(n_blocks, 1) - 1) * stride_ik)
    has_diag = (n_blocks > 0) & (last >= q_blk)
    n_full = n_blocks - has_diag.to(tl.int32)

    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) - float("inf")
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32) + 1.0  # becomes sum(p) at the first step (alpha = 0)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # Stage 1: blocks strictly before the diagonal, wholly visible and wholly inside seq_k, so
    # neither causal nor bounds masks. One flat loop over (block, key tile) pipelines better
    # than two nested ones.
    TILES_PER_BLOCK: tl.constexpr = SPARSE_BLOCK // BLOCK_N
    for j in range(0, n_full * TILES_PER_BLOCK):
        kb = tl.load(idx_ptr + (j // TILES_PER_BLOCK) * stride_ik)
        start_n = kb * SPARSE_BLOCK + (j % TILES_PER_BLOCK) * BLOCK_N
        k = tl.load(k_base + (start_n + offs_n)[None, :] * stride_kn + offs_d[:, None] * stride_kd)
        v = tl.load(v_base + (start_n + offs_n)[:, None] * stride_vn + offs_d[None, :] * stride_vd)
        acc, l_i, m_i = _attn_step(acc, l_i, m_i, q, k, v, qk_scale, offs_m, start_n, offs_n,
                                   CAUSAL=False, DOT_PRECISION=DOT_PRECISION)

    # Stage 2: the diagonal block, causal mask plus seq_k bound; key tiles past the tile's last
    # row are wholly masked, so skip them.
    if has_diag:
        lo = last * SPARSE_BLOCK
        hi = tl.minimum(lo + SPARSE_BLOCK, start_m + BLOCK_M)
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n
            in_k = cols < SEQ_K
            k = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None] * stride_kd,
                        mask=in_k[None, :], other=0.0)
            v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :] * stride_vd,
                        mask=in_k[:, None], other=0.0)
            acc, l_i, m_i = _attn_step(acc, l_i, m_i, q, k, v, qk_scale, offs_m, start_n, offs_n,
                                       CAUSAL=True, DOT_PRECISION=DOT_PRECISION)

    # A row with no selected block (only possible with a malformed mask) ends with acc = 0 and
    # l_i = 1: zeros, not NaN.
    acc = acc / l_i[:, None]
    tl.store(o_base + (offs_m - Q_OFFSET)[:, None] * stride_om + offs_d[None, :] * stride_od,
             acc.to(Out.type.element_ty), mask=row_ok[:, None])


def block_sparse_attn_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_num_blocks: torch.Tensor,
    kv_indices: torch.Tensor,
    block_size: int,
    sm_scale: float | None = None,
    config: dict[str, int] | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Launch the kernel. q ``(B, Hq, Sq, D)``, k/v ``(B, Hkv, Sk, D)``, mask as in the module doc.

    `config` holds BLOCK_M, BLOCK_N, num_warps, num_stages (None: `default_config`). `out`, if
    given, is written in place (tests pass a NaN-filled tensor to prove every element is
    written). Returns the output ``(B, Hq, Sq, D)`` in q's dtype.
    """
    if q.dim() != 4 or k.shape != v.shape or k.dim() != 4:
        raise ValueError(f"q must be (B, Hq, Sq, D) and k, v equal (B, Hkv, Sk, D); got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    batch, heads, seq_q, head_dim = q.shape
    kv_heads, seq_k = k.shape[1], k.shape[2]
    if k.shape[0] != batch or k.shape[3] != head_dim or heads % kv_heads:
        raise ValueError(f"k/v {tuple(k.shape)} do not match q {tuple(q.shape)} (Hq must be a multiple of Hkv)")
    if head_dim < 16 or head_dim & (head_dim - 1):
        raise ValueError(f"head_dim must be a power of two >= 16, got {head_dim}")
    if not q.dtype == k.dtype == v.dtype or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"q, k, v must share one dtype of float16, bfloat16, float32; got {q.dtype}, {k.dtype}, {v.dtype}")
    if seq_q > seq_k:
        raise ValueError(f"seq_q must be <= seq_k (queries are the last seq_q keys), got {seq_q} > {seq_k}")
    if not (q.is_cuda or INTERPRETED):
        raise RuntimeError("the Triton kernel got CPU tensors but was compiled for a GPU: set "
                           "TRITON_INTERPRET=1 before importing sparsetune.kernels.block_sparse_attn")
    conf = dict(config) if config is not None else default_config(block_size, head_dim)
    problem = config_problem(conf, block_size)
    if problem is not None:
        raise ValueError(f"launch config {conf} is invalid for block_size {block_size}: {problem[0]} {problem[1]}")
    q_offset = seq_k - seq_q
    first_block = q_offset // block_size
    num_rows = -(-seq_k // block_size) - first_block
    if tuple(kv_num_blocks.shape) != (batch, kv_heads, num_rows) or kv_indices.shape[:3] != kv_num_blocks.shape:
        raise ValueError(f"mask shape kv_num_blocks {tuple(kv_num_blocks.shape)} / kv_indices "
                         f"{tuple(kv_indices.shape)} does not match (B, Hkv, QB) = {(batch, kv_heads, num_rows)}")
    if kv_num_blocks.dtype != torch.int32 or kv_indices.dtype != torch.int32:
        raise ValueError(f"mask tensors must be int32, got {kv_num_blocks.dtype}, {kv_indices.dtype}")

    if out is None:
        out = torch.empty_like(q)
    elif out.shape != q.shape or out.dtype != q.dtype:
        raise ValueError(f"out must match q: {tuple(out.shape)} {out.dtype} vs {tuple(q.shape)} {q.dtype}")
    if seq_q == 0 or batch == 0:
        return out
    if sm_scale is None:
        sm_scale = head_dim ** -0.5

    block_m, block_n = conf["BLOCK_M"], conf["BLOCK_N"]
    first_tile = q_offset // block_m
    num_tiles = -(-seq_k // block_m) - first_tile
    grid = (num_tiles, batch * heads)
    _block_sparse_attn_fwd[grid](
        q, k, v, out, kv_num_blocks, kv_indices, sm_scale * LOG2E,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        *kv_num_blocks.stride(), *kv_indices.stride(),
        heads, heads // kv_heads, seq_k, q_offset, first_tile, num_tiles,
        HEAD_DIM=head_dim, SPARSE_BLOCK=block_size, BLOCK_M=block_m, BLOCK_N=block_n,
        # fp32 inputs would otherwise get tf32 dots on the GPU (1e-3 error); 16-bit ignore it.
        DOT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        num_warps=conf["num_warps"], num_stages=conf["num_stages"],
    )
    return out
