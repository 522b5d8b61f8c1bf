"""The block mask: which key blocks each query block attends to, in FlexAttention's BCSR form."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ..errors import AttentionError

if TYPE_CHECKING:  # torch's flex BlockMask, only for annotations
    from torch.nn.attention.flex_attention import BlockMask as FlexBlockMask

__all__ = ["AttentionError", "BlockMask"]


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def block_grid(seq_q: int, seq_k: int, block_size: int) -> tuple[int, int, int]:
    """The absolute block grid of Sq queries (the last of Sk positions): (first query block, query blocks, key
    blocks), as `BlockMask` lays out its rows. Estimators score on this grid."""
    first = (seq_k - seq_q) // block_size
    cols = _cdiv(seq_k, block_size)
    return first, (cols - first if seq_q else 0), cols


def _causal(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
    return q_idx >= kv_idx


@dataclass(frozen=True)
class BlockMask:
    """Selected key blocks per (batch, KV head, query block), as FlexAttention's BlockMask stores them.

    Query blocks are aligned to *absolute* positions: the queries are the last `seq_q` of
    `seq_k` positions, and row ``r`` covers absolute positions
    ``[(first_q_block + r) * block_size, ... + block_size)`` clipped to the query range, with
    ``first_q_block = (seq_k - seq_q) // block_size``. So a chunk and the prefill agree row by
    row, and decode (``seq_q == 1``) has one row, the prefill's last.

    Layout invariant (what selection produces and the kernel relies on): in each row the first
    ``kv_num_blocks`` entries of ``kv_indices`` are unique key-block indices, sorted ascending,
    each causally visible (``<= first_q_block + r``); the remaining entries are padding (the
    unselected blocks, ascending) and are never read. `validate` checks it.
    """

    kv_num_blocks: torch.Tensor  # int32 [B, H, QB]: selected blocks per row; H = KV heads
    kv_indices: torch.Tensor  # int32 [B, H, QB, KB]: selected block indices first, then padding
    block_size: int  # tokens per sparse block, for queries and keys alike
    seq_q: int  # number of queries: the last seq_q positions of seq_k
    seq_k: int  # number of keys

    def __post_init__(self) -> None:
        # Cheap checks only (no device sync): this runs inside every forward pass.
        if self.block_size < 1 or self.block_size & (self.block_size - 1):
            raise AttentionError(f"block_size: must be a power of two, got {self.block_size}")
        if not 0 <= self.seq_q <= self.seq_k:
            raise AttentionError(f"seq_q: must be in [0, seq_k={self.seq_k}], got {self.seq_q}")
        if self.kv_num_blocks.dtype != torch.int32 or self.kv_indices.dtype != torch.int32:
            raise AttentionError(f"kv_num_blocks, kv_indices: must be int32, got "
                                 f"{self.kv_num_blocks.dtype}, {self.kv_indices.dtype}")
        want = (self.num_q_blocks, self.num_kv_blocks)
        if self.kv_num_blocks.dim() != 3 or self.kv_indices.dim() != 4 \
                or tuple(self.kv_indices.shape[:3]) != tuple(self.kv_num_blocks.shape) \
                or (self.kv_num_blocks.shape[2], self.kv_indices.shape[3]) != want:
            raise AttentionError(
                f"kv_num_blocks {tuple(self.kv_num_blocks.shape)}, kv_indices {tuple(self.kv_indices.shape)}: "
                f"must be [B, H, QB] and [B, H, QB, KB] with (QB, KB) = {want} for seq_q={self.seq_q}, "
                f"seq_k={self.seq_k}, block_size={self.block_size}")

    # ---- geometry -------------------------------------------------------------------------
    @property
    def q_offset(self) -> int:
        """Absolute position of the first query (``seq_k - seq_q``)."""
        return self.seq_k - self.seq_q

    @property
    def first_q_block(self) -> int:
        """Absolute block index of mask row 0."""
        return self.q_offset // self.block_size

    @property
    def num_kv_blocks(self) -> int:
        return _cdiv(self.seq_k, self.block_size)

    @property
    def num_q_blocks(self) -> int:
        """Rows: absolute blocks the query range touches (0 when seq_q == 0)."""
        return self.num_kv_blocks - self.first_q_block if self.seq_q else 0

    @property
    def batch(self) -> int:
        return self.kv_num_blocks.shape[0]

    @property
    def heads(self) -> int:
        """KV heads: query heads of one GQA group share a row."""
        return self.kv_num_blocks.shape[1]

    @property
    def device(self) -> torch.device:
        return self.kv_num_blocks.device

    def visible_blocks(self) -> torch.Tensor:
        """int64 [QB]: causally visible key blocks per row (row r sees blocks 0..first_q_block + r)."""
        return torch.arange(self.num_q_blocks, device=self.device) + self.first_q_block + 1

    # ---- statistics -----------------------------------------------------------------------
    @property
    def sparsity(self) -> float:
        """Skipped visible blocks / visible blocks, over the whole mask (0.0 for dense)."""
        visible = int(self.visible_blocks().sum().item()) * self.batch * self.heads
        if visible == 0:
            return 0.0
        kept = int(self.kv_num_blocks.sum(dtype=torch.int64).item())
        return 1.0 - kept / visible

    @property
    def density(self) -> float:
        """Kept visible blocks / visible blocks (1 - sparsity)."""
        return 1.0 - self.sparsity

    # ---- construction ---------------------------------------------------------------------
    @classmethod
    def from_block_bool(cls, blocks: torch.Tensor, block_size: int, seq_q: int, seq_k: int) -> "BlockMask":
        """Build from a bool [B, H, QB, KB] block matrix (True = selected); blocks must be visible."""
        kv_num_blocks = blocks.sum(dim=-1, dtype=torch.int32)
        # Stable sort of "not selected": selected blocks first, each group ascending.
        kv_indices = torch.sort((~blocks).to(torch.uint8), dim=-1, stable=True).indices.to(torch.int32)
        return cls(kv_num_blocks, kv_indices, block_size, seq_q, seq_k)

    @classmethod
    def full(cls, batch: int, heads: int, block_size: int, seq_q: int, seq_k: int,
             device: torch.device | str | None = None) -> "BlockMask":
        """Every causally visible block (dense causal attention, sparsity 0)."""
        kb = _cdiv(seq_k, block_size)
        first = (seq_k - seq_q) // block_size
        qb = kb - first if seq_q else 0
        num = (torch.arange(qb, device=device, dtype=torch.int32) + first + 1).expand(batch, heads, qb)
        idx = torch.arange(kb, device=device, dtype=torch.int32).expand(batch, heads, qb, kb)
        return cls(num.contiguous(), idx.contiguous(), block_size, seq_q, seq_k)

    def to(self, device: torch.device | str) -> "BlockMask":
        return BlockMask(self.kv_num_blocks.to(device), self.kv_indices.to(device), self.block_size,
                         self.seq_q, self.seq_k)

    # ---- dense views (tests, reference) -----------------------------------------------------
    def to_block_bool(self) -> torch.Tensor:
        """bool [B, H, QB, KB]: True where the block is selected."""
        b, h, qb, kb = self.kv_indices.shape
        valid = torch.arange(kb, device=self.device) < self.kv_num_blocks[..., None]
        out = torch.zeros(b, h, qb, kb + 1, dtype=torch.bool, device=self.device)
        # Padding entries scatter into a spare column that is dropped.
        cols = torch.where(valid, self.kv_indices.long(), kb)
        out.scatter_(-1, cols, True)
        return out[..., :kb]

    def to_dense(self, num_heads: int | None = None) -> torch.Tensor:
        """bool [B, H, seq_q, seq_k] token mask, causal applied; `num_heads` expands KV heads to query heads."""
        blocks = self.to_block_bool()
        if num_heads is not None and num_heads != self.heads:
            if num_heads % self.heads:
                raise AttentionError(f"num_heads: must be a multiple of the mask's {self.heads} heads, got {num_heads}")
            blocks = blocks.repeat_interleave(num_heads // self.heads, dim=1)
        qpos = torch.arange(self.seq_q, device=self.device) + self.q_offset
        kpos = torch.arange(self.seq_k, device=self.device)
        rows = qpos // self.block_size - self.first_q_block
        cols = kpos // self.block_size
        dense = blocks.index_select(2, rows).index_select(3, cols)
        return dense & (kpos[None, :] <= qpos[:, None])

    def to_flex(self, num_heads: int | None = None, mask_mod_selects: bool = True) -> "FlexBlockMask":
        """torch's flex_attention BlockMask of the same selection, for a *full-length* query.

        flex_attention aligns query blocks to the query tensor, not to absolute positions, so
        when ``seq_q < seq_k`` this mask covers ``seq_k`` queries: prepend ``seq_k - seq_q``
        dummy query rows and keep the last ``seq_q`` output rows (`flex_reference_attention`
        does this). Rows before the query range attend causally to everything (never compared).
        `num_heads` expands KV heads to query heads.

        Selected off-diagonal blocks become flex's *full* blocks and the diagonal its *partial*
        block. The mask_mod is causal AND "block selected": flex's eager (CPU) path applies only
        mask_mod and ignores the block lists, while the compiled path skips unlisted blocks and
        applies mask_mod to partial blocks only; both then compute the same attention. Relies
        on the layout invariant (the last selected block of a row is its diagonal).

        ``mask_mod_selects=False`` gives a plain causal mask_mod instead (one shared function, so
        ``torch.compile`` does not recompile per mask): right only on flex's compiled path,
        which is what a fair speed comparison wants.
        """
        from torch.nn.attention.flex_attention import BlockMask as FlexBlockMask

        num, idx = self.kv_num_blocks, self.kv_indices
        if num_heads is not None and num_heads != self.heads:
            if num_heads % self.heads:
                raise AttentionError(f"num_heads: must be a multiple of the mask's {self.heads} heads, got {num_heads}")
            group = num_heads // self.heads
            num, idx = num.repeat_interleave(group, dim=1), idx.repeat_interleave(group, dim=1)
        first = self.first_q_block
        if first:
            head = BlockMask.full(num.shape[0], num.shape[1], self.block_size, first * self.block_size,
                                  first * self.block_size, self.device)
            head_idx = torch.nn.functional.pad(head.kv_indices, (0, self.num_kv_blocks - first))
            num = torch.cat([head.kv_num_blocks, num], dim=2)
            idx = torch.cat([head_idx, idx], dim=2)
        bs = self.block_size
        mask_mod = _causal
        if mask_mod_selects:
            full_mask = BlockMask(num.contiguous(), idx.contiguous(), bs, self.seq_k, self.seq_k)
            selected = full_mask.to_block_bool()  # [B, Hq, KB, KB], read by mask_mod

            def mask_mod(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
                return (q_idx >= kv_idx) & selected[b, h, q_idx // bs, kv_idx // bs]

        rows = num.shape[2]
        diag = torch.arange(rows, device=self.device, dtype=torch.int32).expand(*num.shape)
        partial_idx = torch.nn.functional.pad(diag[..., None], (0, self.num_kv_blocks - 1))
        return FlexBlockMask.from_kv_blocks(
            torch.ones_like(num), partial_idx.contiguous(), (num - 1).contiguous(), idx.contiguous(),
            BLOCK_SIZE=bs, mask_mod=mask_mod, seq_lengths=(self.seq_k, self.seq_k))

    # ---- checks ---------------------------------------------------------------------------
    def validate(self) -> "BlockMask":
        """Check the layout invariant (syncs the device; for tests and user-built masks). Returns self."""
        if self.seq_q == 0:
            return self
        b, h, qb, kb = self.kv_indices.shape
        diag = (torch.arange(qb, device=self.device) + self.first_q_block)[None, None, :]
        num = self.kv_num_blocks.long()
        if bool(((num < 1) | (num > diag + 1)).any()):
            raise AttentionError(f"kv_num_blocks: must be in [1, visible blocks] in every row, got "
                                 f"{self.kv_num_blocks.tolist() if num.numel() <= 64 else 'out of range values'}")
        valid = torch.arange(kb, device=self.device) < num[..., None]
        idx = self.kv_indices.long()
        if bool((valid & ((idx < 0) | (idx > diag[..., None]))).any()):
            raise AttentionError("kv_indices: a selected block is out of range or causally invisible")
        rising = idx[..., 1:] > idx[..., :-1]
        if bool((valid[..., 1:] & ~rising).any()):
            raise AttentionError("kv_indices: selected blocks must be unique and sorted ascending in each row")
        last = idx.gather(-1, (num - 1).clamp(min=0)[..., None])[..., 0]
        if bool((last != diag).any()):
            raise AttentionError("kv_indices: every row must select its diagonal block (no empty query rows)")
        return self
