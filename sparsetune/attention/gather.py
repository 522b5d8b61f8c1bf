"""Block-sparse attention in plain torch that computes only the kept blocks: the fast CPU path.

The reference (`reference_attention`) masks a dense SDPA, so it costs as much as dense attention
whatever the budget. Here each query block gathers its selected key blocks and runs torch's fused
CPU attention on them alone, so the work scales with the kept blocks, as it does in the kernel.
Results equal the reference's within float rounding (tested).

Rows are processed one query block at a time: a block's gather width is the most blocks any
(batch, KV head) keeps in that row, so early rows of a causal mask stay cheap instead of being
padded to the widest row of the whole mask.

A mask makes SDPA on CPU turn it into a float bias and read it for every score (about a third of
the time at high keep), yet only the diagonal block needs one. So a row whose (batch, head) pairs
all keep the same number of blocks, the diagonal last (every `topk` row under a budget), is split:
its off-diagonal blocks go through the fused kernel unmasked, the diagonal blocks of all rows go
through one causal call, and the two halves are merged by their log-sum-exp, as flash attention
merges its tiles. Other rows (uneven `coverage` rows) take the masked call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .mask import BlockMask

__all__ = ["gathered_attention", "gathered_decode"]

# The CPU fused kernel that returns its log-sum-exp (what SDPA calls on CPU); absent in other builds,
# where every row takes the masked call.
_FLASH_LSE = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def _diagonal(qr: torch.Tensor, kp: torch.Tensor, vp: torch.Tensor, first: int,
              scale: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every query block against its own key block, causal, in one call: (out, lse) in qr's row-major layout."""
    qb, b, hkv, g, bs, d = qr.shape

    def own(x: torch.Tensor) -> torch.Tensor:  # (QB, B, Hq, bs, D): each row's diagonal block, per query head
        return x[:, :, first:first + qb].permute(2, 0, 1, 3, 4).repeat_interleave(g, dim=2).reshape(
            qb * b, hkv * g, bs, d)

    out, lse = _FLASH_LSE(qr.view(qb * b, hkv * g, bs, d), own(kp), own(vp), 0.0, True, scale=scale)
    return out.view(qb, b, hkv, g, bs, d), lse.view(qb, b, hkv, g, bs)


def gathered_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask,
                       scale: float | None = None) -> torch.Tensor:
    """``(B, Hq, Sq, D)`` attention over the selected blocks, computed per query block in q's dtype
    (fp32 for 16-bit inputs)."""
    b, hq, sq, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    g = hq // hkv
    bs = block_mask.block_size
    qb, kb = block_mask.num_q_blocks, block_mask.num_kv_blocks
    first = block_mask.first_q_block
    dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    dev = q.device

    # Queries on the absolute block grid (the front of the first block and the end of the last padded), row-major:
    # row r's queries, every (batch, KV head) with its group's heads, are one contiguous (B, Hkv, G*bs, D) slab.
    front = (sk - sq) - first * bs
    back = (first + qb) * bs - sk
    qr = F.pad(q.to(dtype), (0, 0, front, back)).view(b, hkv, g, qb, bs, d).permute(3, 0, 1, 2, 4, 5).contiguous()
    kp = F.pad(k.to(dtype), (0, 0, 0, kb * bs - sk)).view(b, hkv, kb, bs, d)
    vp = F.pad(v.to(dtype), (0, 0, 0, kb * bs - sk)).view(b, hkv, kb, bs, d)
    # Key blocks of every (batch, KV head) in one flat list: a row's blocks come out of one index_select,
    # already contiguous in the layout SDPA reads.
    kflat, vflat = kp.reshape(b * hkv * kb, bs, d), vp.reshape(b * hkv * kb, bs, d)
    offset = (torch.arange(b * hkv, device=dev) * kb).view(b, hkv, 1)

    counts = block_mask.kv_num_blocks  # (B, Hkv, QB)
    widths = counts.amax(dim=(0, 1))
    # Split rows: even widths across (batch, head) and the diagonal as the last kept block.
    rows = torch.arange(qb, device=dev)
    last = block_mask.kv_indices.gather(-1, (counts.long() - 1).clamp(min=0)[..., None])[..., 0]
    split = (counts.amin(dim=(0, 1)) == widths) & (widths > 0) & (last == rows + first).all(dim=0).all(dim=0)
    if _FLASH_LSE is None or dtype != torch.float32:
        split[:] = False
    any_split = bool(split.any())
    out = torch.zeros_like(qr)  # rows that keep nothing stay zero
    if any_split:
        diag_out, diag_lse = _diagonal(qr, kp, vp, first, scale)
        off_lse = torch.full_like(diag_lse, -torch.inf)
        off_out = torch.zeros_like(diag_out)

    within = torch.arange(bs, device=dev)
    for r, (width, even) in enumerate(zip(widths.tolist(), split.tolist())):
        if width == 0 or (even and width == 1):
            continue
        queries = qr[r].view(b, hkv, g * bs, d)  # the group's heads share the KV head: one call
        if even:
            idx = (block_mask.kv_indices[:, :, r, :width - 1].long() + offset).flatten()
            kg = kflat.index_select(0, idx).view(b, hkv, (width - 1) * bs, d)
            vg = vflat.index_select(0, idx).view(b, hkv, (width - 1) * bs, d)
            o, lse = _FLASH_LSE(queries, kg, vg, 0.0, False, scale=scale)
            off_out[r] = o.view(b, hkv, g, bs, d)
            off_lse[r] = lse.view(b, hkv, g, bs)
            continue
        valid = torch.arange(width, device=dev) < counts[:, :, r, None]  # (B, Hkv, W)
        idx = torch.where(valid, block_mask.kv_indices[:, :, r, :width].long(), 0)
        flat = (idx + offset).flatten()
        kg = kflat.index_select(0, flat).view(b, hkv, width * bs, d)
        vg = vflat.index_select(0, flat).view(b, hkv, width * bs, d)
        kpos = (idx[..., None] * bs + within).flatten(-2)  # (B, Hkv, W*bs)
        qpos = (first + r) * bs + within  # (bs,)
        keep = (valid[..., None].expand(-1, -1, -1, bs).flatten(-2) & (kpos < sk))[:, :, None, :]
        allowed = keep & (kpos[:, :, None, :] <= qpos[:, None])  # (B, Hkv, bs, W*bs)
        o = F.scaled_dot_product_attention(queries, kg, vg, attn_mask=allowed.repeat(1, 1, g, 1), scale=scale)
        out[r] = o.view(b, hkv, g, bs, d).nan_to_num(nan=0.0)  # a padding query that sees no key: zeros

    if any_split:
        # Merge by log-sum-exp: the diagonal's share of a query's softmax mass is sigmoid(lse_diag - lse_off)
        # (1 where there is no off-diagonal part, lse_off = -inf), so out = lerp(off, diag, share).
        merged = torch.lerp(off_out, diag_out, torch.sigmoid(diag_lse - off_lse)[..., None])
        out = merged if bool(split.all()) else torch.where(split.view(qb, 1, 1, 1, 1, 1), merged, out)
    return out.permute(1, 2, 3, 0, 4, 5).reshape(b, hq, qb * bs, d)[:, :, front:front + sq].to(q.dtype)


def gathered_decode(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: BlockMask,
                    scale: float | None = None) -> torch.Tensor | None:
    """One query (decode) over its selected blocks: their keys gathered, one unmasked SDPA call.

    The last query sees every key, so no mask is needed once the gathered keys stop at Sk; that holds
    when every (batch, head) keeps the same number of blocks, the last one the diagonal (every `topk`
    decode). Returns None otherwise (the caller takes the masked reference).
    """
    b, hq, _, d = q.shape
    hkv, sk = k.shape[1], k.shape[2]
    bs, kb = block_mask.block_size, block_mask.num_kv_blocks
    counts = block_mask.kv_num_blocks[:, :, 0]
    width = int(counts.amax())
    idx = block_mask.kv_indices[:, :, 0, :width].long()  # (B, Hkv, W), ascending
    if int(counts.amin()) != width or bool((idx[:, :, -1] != kb - 1).any()):
        return None
    dtype = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    # Whole blocks are copied as blocks (the diagonal, last and maybe partial, is appended as it is).
    bi = torch.arange(b, device=q.device)[:, None, None]
    hi = torch.arange(hkv, device=q.device)[None, :, None]
    whole = (kb - 1) * bs

    def kept(x: torch.Tensor) -> torch.Tensor:
        blocks = x[:, :, :whole].reshape(b, hkv, kb - 1, bs, d)[bi, hi, idx[..., :-1]].reshape(b, hkv, -1, d)
        return torch.cat([blocks, x[:, :, whole:]], dim=2).to(dtype)

    kg, vg = kept(k), kept(v)
    out = F.scaled_dot_product_attention(q.to(dtype).reshape(b, hkv, hq // hkv, d), kg, vg, scale=scale)
    return out.view(b, hq, 1, d).to(q.dtype)
