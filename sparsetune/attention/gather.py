"""Block-sparse attention in plain torch that computes only the kept blocks: the fast CPU path.

The reference (`reference_attention`) masks a dense SDPA, so it costs as much as dense attention
whatever the budget. Here each query block gathers its selected key blocks and attends to them
alone, so the work scales with the kept blocks, as it does in the kernel. Results equal the
reference's within float rounding (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .mask import BlockMask

__all__ = ["gathered_attention"]


def gathered_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask,
                       scale: float | None = None) -> torch.Tensor:
    """``(B, Hq, Sq, D)`` attention over the selected blocks, computed blockwise in q's dtype (fp32 for 16-bit)."""
    b, hq, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    g = hq // hkv
    bs = block_mask.block_size
    qb, kb = block_mask.num_q_blocks, block_mask.num_kv_blocks
    first = block_mask.first_q_block
    dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    scale = d ** -0.5 if scale is None else scale

    # Queries on the absolute block grid: pad the front of the first block and the end of the last.
    front = (sk - sq) - first * bs
    back = (first + qb) * bs - sk
    qp = F.pad(q.to(dtype), (0, 0, front, back)).view(b, hkv, g, qb, bs, d)
    kp = F.pad(k.to(dtype), (0, 0, 0, kb * bs - sk)).view(b, hkv, kb, bs, d)
    vp = F.pad(v.to(dtype), (0, 0, 0, kb * bs - sk)).view(b, hkv, kb, bs, d)

    width = int(block_mask.kv_num_blocks.max().item())  # the widest row decides the gather width
    idx = block_mask.kv_indices[..., :width].long()  # (B, Hkv, QB, W)
    valid = torch.arange(width, device=q.device) < block_mask.kv_num_blocks[..., None]
    idx = torch.where(valid, idx, torch.zeros_like(idx))
    bi = torch.arange(b, device=q.device)[:, None, None, None]
    hi = torch.arange(hkv, device=q.device)[None, :, None, None]
    kg = kp[bi, hi, idx]  # (B, Hkv, QB, W, bs, D)
    vg = vp[bi, hi, idx]

    # One batched matmul per (batch, KV head, query block): rows are the group's query heads.
    qr = qp.permute(0, 1, 3, 2, 4, 5).reshape(b, hkv, qb, g * bs, d)
    scores = qr @ kg.reshape(b, hkv, qb, width * bs, d).transpose(-1, -2) * scale  # (B, Hkv, QB, G*bs, W*bs)
    qpos = (first + torch.arange(qb, device=q.device))[:, None] * bs + torch.arange(bs, device=q.device)  # (QB, bs)
    kpos = (idx[..., None] * bs + torch.arange(bs, device=q.device)).flatten(-2)  # (B, Hkv, QB, W*bs)
    keep = (valid[..., None].expand(*valid.shape, bs).flatten(-2) & (kpos < sk))[:, :, :, None, :]
    causal = kpos[:, :, :, None, :] <= qpos[None, None, :, :, None]  # (B, Hkv, QB, bs, W*bs)
    allowed = (keep & causal).repeat(1, 1, 1, g, 1)  # rows ordered (head in group, position)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)  # padding queries: no key, zeros
    out = probs @ vg.reshape(b, hkv, qb, width * bs, d)  # (B, Hkv, QB, G*bs, D)
    out = out.view(b, hkv, qb, g, bs, d).permute(0, 1, 3, 2, 4, 5).reshape(b, hq, qb * bs, d)
    return out[:, :, front:front + sq].to(q.dtype)
