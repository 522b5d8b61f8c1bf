"""Block-sparse attention: budget -> block selection, the torch reference, dispatch to the kernel."""

from .dispatch import INTERPRET_ENV, block_sparse_attention, dense_causal_attention, sparse_attention, uses_triton
from .gather import gathered_attention, gathered_decode
from .mask import AttentionError, BlockMask
from .reference import flex_reference_attention, reference_attention
from .select import block_scores, select_blocks

__all__ = [
    "AttentionError",
    "BlockMask",
    "INTERPRET_ENV",
    "block_scores",
    "block_sparse_attention",
    "dense_causal_attention",
    "flex_reference_attention",
    "gathered_attention",
    "gathered_decode",
    "reference_attention",
    "select_blocks",
    "sparse_attention",
    "uses_triton",
]
