"""Launch-config space of the block-sparse attention kernel, as data plus one named filter.

Kept apart from the kernel module on purpose: importing the config space must not run
``@triton.jit``, because Triton decides at decoration time whether a kernel is compiled or
interpreted (``TRITON_INTERPRET=1``). Code that only lists or validates configs (profiles,
search) can import this freely without fixing that choice for the tests that come later.
"""

from __future__ import annotations

import itertools
from typing import Any

__all__ = ["CONFIGS", "LAUNCH_KEYS", "QUICK_CONFIGS", "SMEM_LIMIT_BYTES", "config_problem", "configs_for", "default_config",
           "keep_config"]

# The launch-config keys, as the kernel's constexprs and launch options spell them (and profiles do).
LAUNCH_KEYS = ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages")

# Every combination the kernel accepts before the per-block-size filter. BLOCK_M is the query
# tile, BLOCK_N the key tile; both are UPPER_CASE because they are tl.constexpr in the kernel
# and spelled the same in profiles.
CONFIGS: list[dict[str, int]] = [
    {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": w, "num_stages": s}
    for bm, bn, w, s in itertools.product((16, 32, 64, 128), (16, 32, 64, 128), (4, 8), (1, 2, 3))
]

# A small hand-picked subset that covers the usual winners (the fused-attention tutorial's
# choices on H100/A100, plus the 64-row tiles a 64-token sparse block allows) for timing under a
# short budget; still filtered by `keep_config`.
QUICK_CONFIGS: list[dict[str, int]] = [
    {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 8, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 128, "BLOCK_N": 128, "num_warps": 8, "num_stages": 2},
    {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2},
    {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 3},
    {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2},
    {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2},
    {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 4, "num_stages": 2},
]

# Shared memory per SM on H100/H200 (227 KiB usable per block). A config whose K/V pipeline
# buffers exceed it fails to compile, so filtering it here saves a compile per timing run.
SMEM_LIMIT_BYTES = 227 * 1024


def config_problem(conf: dict[str, Any], block_size: int, head_dim: int | None = None,
                   block_name: str = "the sparse block size") -> tuple[str, str] | None:
    """The first rule `conf` breaks as a launch config for sparse blocks of `block_size` tokens, as
    (field, "must ..., got ...") with the block size called `block_name`, or None when it is valid. The launcher and profile validation both
    ask this one predicate (through `keep_config`), so a profile that validates also launches.

    Rules, each for a reason:
    - BLOCK_N divides block_size: a key tile never straddles two sparse blocks, so the kernel
      gathers whole tiles through ``kv_indices`` (the rule FlexAttention enforces too).
    - BLOCK_M divides block_size: a query tile lies inside one sparse query block, so it reads
      exactly one row of the mask.
    - 8 warps only for BLOCK_M >= 64: fewer rows than 8 warps can split leave warps idle.
    - With `head_dim` given, the estimated shared memory (Q tile plus num_stages K and V tiles,
      2-byte elements) fits the SM. Checked against sm_90 compiles: exact for BLOCK_M >= 64,
      an upper bound below (see tests/test_kernel.py).
    """
    bm, bn = int(conf["BLOCK_M"]), int(conf["BLOCK_N"])
    warps, stages = int(conf["num_warps"]), int(conf["num_stages"])
    if block_size % bn:
        return "BLOCK_N", f"must divide {block_name} ({block_size}), got {bn}"
    if block_size % bm:
        return "BLOCK_M", f"must divide {block_name} ({block_size}), got {bm}"
    if warps == 8 and bm < 64:
        return "num_warps", f"must be at most 4 when BLOCK_M < 64 (BLOCK_M is {bm}), got {warps}"
    if head_dim is not None:
        smem = 2 * head_dim * (bm + 2 * bn * max(stages, 1))
        if smem > SMEM_LIMIT_BYTES:
            return "num_stages", (f"must keep shared memory ({smem} bytes at head_dim {head_dim}) within "
                                  f"{SMEM_LIMIT_BYTES}, got {stages}")
    return None


def keep_config(conf: dict[str, Any], block_size: int, head_dim: int | None = None) -> bool:
    """True when `conf` is a valid launch config for sparse blocks of `block_size` (`config_problem`)."""
    return config_problem(conf, block_size, head_dim) is None


def configs_for(block_size: int, head_dim: int | None = None, quick: bool = False) -> list[dict[str, int]]:
    """The configs `keep_config` accepts for `block_size` (a fresh list of fresh dicts).

    `quick` starts from `QUICK_CONFIGS` instead of the full space; when none of those fits
    (tiny block sizes), the default config is returned so the list is never empty.
    """
    space = QUICK_CONFIGS if quick else CONFIGS
    kept = [dict(c) for c in space if keep_config(c, block_size, head_dim)]
    return kept or [default_config(block_size, head_dim)]


def default_config(block_size: int, head_dim: int | None = None) -> dict[str, int]:
    """A sensible config without timing: the largest tiles that fit the block size.

    64x64 with 4 warps and 2 stages is the FlashAttention-2 tutorial's robust choice across
    head dims; smaller sparse blocks force smaller tiles.
    """
    tile = min(64, block_size)
    return {"BLOCK_M": tile, "BLOCK_N": tile, "num_warps": 4, "num_stages": 2}
