"""Attention latency: measured on a GPU (per kernel launch config), or a FLOP cost model on CPU.

Two labels, never mixed: ``measured`` comes only from CUDA events via
``triton.testing.do_bench``; ``cost-model`` is arithmetic. Interpreter (CPU) runs of the Triton
kernel are never timed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch

from .errors import SearchError, SparsetuneError
from .profile.budget import ESTIMATORS, Budget

if TYPE_CHECKING:
    from .profile.profile import Profile

__all__ = ["ConfigTiming", "CostEstimate", "TimingResult", "attention_flops", "budget_cost", "cost_model",
           "with_dense_layers", "retime_profile",
           "time_launch_configs"]


@dataclass(frozen=True)
class CostEstimate:
    """FLOP estimate of one causal attention forward; see `cost_model`."""

    sparse_flops: float  # QK^T and PV over the kept blocks
    selection_flops: float  # pooling, pooled scores, sort
    dense_flops: float  # causal dense attention at the same shape
    label: str = "cost-model"

    @property
    def relative(self) -> float:
        """(sparse + selection) / dense: below 1 means sparse should be faster."""
        return (self.sparse_flops + self.selection_flops) / self.dense_flops if self.dense_flops else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "relative": self.relative}


def attention_flops(seq_len: int, head_dim: int, heads: int = 1, density: float = 1.0, batch: int = 1) -> float:
    """FLOPs of causal attention keeping `density` of the visible pairs: 4*D per pair, L^2/2 pairs per head."""
    return 4.0 * head_dim * (seq_len * seq_len / 2.0) * heads * batch * density


def budget_cost(budget: Budget, seq_len: int, density: float, head_dim: int, heads: int, kv_heads: int,
                layers: int | None = None) -> float:
    """Relative attention cost of one prefill under `budget` (cost model, selection included); `density` is
    the sparse layers' kept share, and the budget's `dense_layers` of the model's `layers` cost dense."""
    rel = cost_model(seq_len, budget.block_size, density, head_dim, heads, kv_heads, budget.estimator,
                     budget.stride).relative
    return with_dense_layers(rel, budget, layers)


def with_dense_layers(relative: float, budget: Budget, layers: int | None) -> float:
    """A sparse layer's relative cost as the whole model's: the budget's `dense_layers` run at dense cost."""
    if not budget.dense_layers or not layers:
        return relative
    share = min(budget.dense_layers, layers) / layers
    return share + (1.0 - share) * relative


def cost_model(seq_len: int, block_size: int, density: float, head_dim: int, heads: int = 1,
               kv_heads: int | None = None, estimator: str = "pooled", stride: int | None = None) -> CostEstimate:
    """Relative cost of block-sparse attention from FLOP counts (label ``cost-model``).

    The model, per forward of ``seq_len`` tokens (prefill), H query heads, Hkv KV heads, D:

    - dense: causal attention touches half the square, L^2/2 query-key pairs per head, each
      costing 4*D FLOPs (2*D for the QK^T multiply-add, 2*D for PV): ``2 * D * L^2 * H``.
    - sparse: the same per pair over the kept blocks only: ``density * dense``, where density
      is kept visible blocks over visible blocks (`BlockMask.density`).
    - selection: what the budget's estimator declares (`EstimatorSpec.selection_flops`): for pooled,
      mean-pooling q and k (``(H + Hkv) * L * D``), the pooled score matrix (``2 * QB * KB * D`` per KV
      head, QB = KB = ceil(L / block_size)) and the per-row sort (``QB * KB * log2(KB)`` per KV head);
      for sampled, exact q.k of every stride-th query (``(L / stride) * L / 2`` pairs per query head).

    It ignores memory traffic, launch overhead and partial diagonal blocks, so it ranks budgets
    rather than predicting milliseconds.
    """
    if seq_len < 1 or block_size < 1 or head_dim < 1 or heads < 1:
        raise SparsetuneError(f"cost_model: seq_len, block_size, head_dim and heads must be >= 1, got "
                              f"{seq_len}, {block_size}, {head_dim}, {heads}")
    if not 0.0 <= density <= 1.0:
        raise SparsetuneError(f"cost_model: density must be in [0, 1], got {density}")
    kv_heads = heads if kv_heads is None else kv_heads
    if kv_heads < 1 or heads % kv_heads:
        raise SparsetuneError(f"cost_model: heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    dense = attention_flops(seq_len, head_dim, heads)
    spec = ESTIMATORS[estimator]
    selection = 0.0 if density >= 1.0 else spec.selection_flops(  # a dense budget skips selection
        seq_len, block_size, head_dim, heads, kv_heads, stride)
    return CostEstimate(sparse_flops=density * dense, selection_flops=selection, dense_flops=dense)


@dataclass(frozen=True)
class ConfigTiming:
    """One launch config's median time, or why it could not run."""

    config: dict[str, int]
    ms: float | None
    error: str | None = None


@dataclass(frozen=True)
class TimingResult:
    """Measured latency of sparse attention at one shape and budget, on one GPU (label ``measured``)."""

    device: str
    seq_len: int
    budget: dict[str, Any]
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    batch: int
    sparsity: float  # achieved by the selection on the random inputs
    configs: list[ConfigTiming]
    best_config: dict[str, int] | None
    best_ms: float | None  # kernel only, best config
    selection_ms: float  # select_blocks (0 for a dense budget, which skips it)
    dense_ms: float | None  # causal SDPA (flash) at the same shape
    label: str = "measured"
    notes: list[str] = field(default_factory=list)

    @property
    def total_ms(self) -> float | None:
        """Selection plus the best kernel: what one sparse attention call costs."""
        return None if self.best_ms is None else self.best_ms + self.selection_ms

    @property
    def speedup(self) -> float | None:
        """dense_ms / total_ms."""
        total = self.total_ms
        return None if total is None or not self.dense_ms else self.dense_ms / total

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_ms": self.total_ms, "speedup": self.speedup}


def _bench(fn: Any, warmup: int, rep: int) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def dense_sdpa_ms(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, warmup: int = 25, rep: int = 100) -> tuple[float, str]:
    """Median ms of causal SDPA on the flash backend, and how it ran.

    Tries flash with native GQA first; if that backend refuses (older torch), K/V are expanded
    to the query heads outside the timed region; if flash refuses altogether, the default
    backend is timed and the note says so.
    """
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gqa = q.shape[1] != k.shape[1]

    def run(kk: torch.Tensor, vv: torch.Tensor, enable_gqa: bool) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=enable_gqa)

    attempts = [("flash", k, v, gqa)]
    if gqa:
        group = q.shape[1] // k.shape[1]
        attempts.append(("flash, K/V expanded", k.repeat_interleave(group, 1), v.repeat_interleave(group, 1), False))
    for how, kk, vv, flag in attempts:
        try:
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                run(kk, vv, flag)
                return _bench(lambda: run(kk, vv, flag), warmup, rep), how
        except RuntimeError:
            continue
    return _bench(lambda: run(k, v, gqa), warmup, rep), "default backend (flash refused)"


def time_launch_configs(seq_len: int, budget: Budget, heads: int, kv_heads: int, head_dim: int,
                        dtype: torch.dtype = torch.bfloat16, configs: list[dict[str, int]] | None = None,
                        batch: int = 1, warmup: int = 25, rep: int = 100) -> TimingResult:
    """Time selection, each kernel launch config, and dense SDPA flash at one prefill shape, on CUDA.

    Inputs are fresh ``torch.randn`` tensors (never zeros: zeros make every score tie and
    hide real memory traffic patterns). Each time is the median of ``do_bench`` after its
    warm-up. A config that fails (compile error, out of resources) is recorded with its error
    and the others go on. `configs` defaults to the pruned set
    ``configs_for(block_size, head_dim, quick=True)`` (a search times many budgets); pass
    ``configs_for(block_size, head_dim)`` for the full sweep. Each config compiles once per
    process, so repeated calls cost only the timing.
    Raises `SparsetuneError` without CUDA: on CPU use `cost_model`.
    """
    if not torch.cuda.is_available():
        raise SparsetuneError("time_launch_configs: needs a CUDA GPU (Triton kernels are never timed "
                              "under the CPU interpreter); on CPU use cost_model(...) instead")
    if heads < 1 or kv_heads < 1 or heads % kv_heads:
        raise SparsetuneError(f"time_launch_configs: heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    from .attention import select_blocks
    from .kernels.configs import configs_for
    from .kernels.block_sparse_attn import block_sparse_attn_fwd

    dev = torch.device("cuda")
    q = torch.randn(batch, heads, seq_len, head_dim, device=dev, dtype=dtype)
    k = torch.randn(batch, kv_heads, seq_len, head_dim, device=dev, dtype=dtype)
    v = torch.randn(batch, kv_heads, seq_len, head_dim, device=dev, dtype=dtype)

    mask = select_blocks(q, k, budget)
    selection_ms = 0.0 if budget.is_dense else _bench(lambda: select_blocks(q, k, budget), warmup, rep)
    out = torch.empty_like(q)
    timings = []
    for conf in configs if configs is not None else configs_for(budget.block_size, head_dim, quick=True):
        def launch(conf: dict[str, int] = conf) -> None:
            block_sparse_attn_fwd(q, k, v, mask.kv_num_blocks, mask.kv_indices, mask.block_size,
                                  config=conf, out=out)
        try:
            launch()
            torch.cuda.synchronize()
            timings.append(ConfigTiming(dict(conf), _bench(launch, warmup, rep)))
        except Exception as exc:  # noqa: BLE001 - one bad config must not end the sweep
            timings.append(ConfigTiming(dict(conf), None, f"{type(exc).__name__}: {str(exc)[:200]}"))
    ok = [t for t in timings if t.ms is not None]
    best = min(ok, key=lambda t: t.ms) if ok else None  # type: ignore[arg-type, return-value]
    notes = []
    try:
        dense_ms, how = dense_sdpa_ms(q, k, v, warmup, rep)
        notes.append(f"dense: {how}")
    except Exception as exc:  # noqa: BLE001
        dense_ms = None
        notes.append(f"dense failed: {type(exc).__name__}: {str(exc)[:200]}")
    return TimingResult(
        device=torch.cuda.get_device_name(dev), seq_len=seq_len, budget=budget.to_dict(), heads=heads,
        kv_heads=kv_heads, head_dim=head_dim, dtype=str(dtype).removeprefix("torch."), batch=batch,
        sparsity=mask.sparsity, configs=timings, best_config=best.config if best else None,
        best_ms=best.ms if best else None, selection_ms=selection_ms, dense_ms=dense_ms, notes=notes)


def retime_profile(profile: Profile, on_bucket: Callable[[int, TimingResult], None] | None = None) -> Profile:
    """Time every sparse bucket's launch configs on this machine's GPU and add its device section.

    Budgets and accuracy are untouched: they do not depend on the GPU. Needs CUDA.
    """
    from .profile.profile import DeviceSection, KernelConfig

    if not torch.cuda.is_available():
        raise SearchError("retime: needs a CUDA GPU; this machine has none (kernels are never timed on CPU)")
    m = profile.model
    kernels = {}
    for i, bucket in enumerate(profile.buckets):
        if bucket.dense or bucket.budget is None:
            continue
        t = time_launch_configs(bucket.max_len, bucket.budget, m.heads, m.kv_heads, m.head_dim)
        if on_bucket is not None:
            on_bucket(i, t)
        if t.best_config is not None:
            kernels[bucket.max_len] = KernelConfig(**t.best_config, ms=t.best_ms, dense_ms=t.dense_ms,
                                                   selection_ms=t.selection_ms or None)
    return profile.with_device(torch.cuda.get_device_name(), DeviceSection(timing="measured", kernels=kernels))
