"""transformers integration: the `sparsetune` attention implementation, driven by a per-length policy.

`enable(model, policy)` switches a model to it. Each attention call looks up the budget by the
request's KV length (prompt plus cache), so one model serves every length with the right budget:

    policy.lookup(kv_len) -> Budget | None       None or a dense budget: causal SDPA
                                                 otherwise: sparsetune.attention.sparse_attention
    policy.kernel_config(kv_len, gpu name)       (if the policy has it, on CUDA) the launch config

How the policy reaches the function: `enable` files a state under the id of each config object the
model's modules hold (attention modules keep `self.config`), with a weak reference to check that the
id still names the same config. The function reads `module.config`, so a copy of the model, or a
model that was never enabled, fails loudly instead of silently running dense.

Padding: the mask function registered with the implementation is transformers' `sdpa_mask`, so a
padded batch arrives as a boolean (B, 1, Sq, Sk) mask. When it is exactly "causal AND key padding"
(left padding in `generate`, right padding in a prefill), each sample runs alone on its unpadded keys
and looks up its budget by its own KV length, so a padded batch equals its samples run one by one.
Rows of padding queries come back as zeros (nothing reads them).

Sliding-window layers (Mistral, Qwen2's `sliding_window=`) run sparse only while the request is no
longer than the window (by `position_ids`: a windowed cache drops old keys, so Sk cannot tell).
Beyond it, and for any other mask (packed sequences, a static cache), the layer runs transformers'
own SDPA with the model's mask, logs why once, and counts as a fallback call in the stats: the
window is kept, dense, rather than lost.

Deployed folders (`sparsetune apply`): a model loaded with ``attn_implementation="sparsetune"``
whose config carries a ``sparsetune`` entry was never `enable`d; on its first attention call (or
`record_sparsity`) the policy that entry names is loaded once and attached as `enable` would
(`_autoload_state`, the only place this module reads that entry; the format lives in `sparsetune.runtime.policy`).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Iterator, Protocol, runtime_checkable

import torch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from ..attention import dense_causal_attention, sparse_attention
from ..errors import BudgetError, ModelError
from ..kernels.configs import LAUNCH_KEYS
from ..profile.budget import Budget

__all__ = [
    "IMPLEMENTATION",
    "AttentionStats",
    "Policy",
    "disable",
    "enable",
    "enabled",
    "is_enabled",
    "record_sparsity",
    "sparsetune_attention",
]

IMPLEMENTATION = "sparsetune"
log = logging.getLogger("sparsetune")


@runtime_checkable
class Policy(Protocol):
    """Anything that maps a request's KV length to a budget (None = dense), e.g. a `Profile`."""

    def lookup(self, seq_len: int) -> Budget | None: ...


@dataclass
class AttentionStats:
    """Counters over attention calls (one call = one layer on one group of samples sharing a budget).

    `sparsity` is skipped / visible key blocks over the sparse calls, i.e. the average of each call's
    sparsity weighted by its visible blocks. Dense and fallback calls are counted, not averaged in.
    """

    sparse_calls: int = 0
    dense_calls: int = 0
    fallback_calls: int = 0  # transformers' SDPA with the model's mask (sliding window, unusual mask)
    visible_blocks: float = 0.0
    skipped_blocks: float = 0.0

    @property
    def calls(self) -> int:
        return self.sparse_calls + self.dense_calls + self.fallback_calls

    @property
    def sparsity(self) -> float:
        return self.skipped_blocks / self.visible_blocks if self.visible_blocks else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"sparsity": self.sparsity, "sparse_calls": self.sparse_calls,
                "dense_calls": self.dense_calls, "fallback_calls": self.fallback_calls}


@dataclass
class _State:
    policy: Budget | Policy | None
    previous: str  # the implementation `disable` restores
    configs: list[weakref.ref] = field(default_factory=list)
    recorders: list[AttentionStats] = field(default_factory=list)
    warned: set[str] = field(default_factory=set)
    # Every layer of a forward gets the same mask and position tensors: analyse them once, not per layer
    # (each analysis syncs the GPU). Keyed by identity, held weakly.
    memo: dict[str, tuple[weakref.ref, Any]] = field(default_factory=dict)

    def once(self, name: str, tensor: torch.Tensor, compute: Any) -> Any:
        hit = self.memo.get(name)
        if hit is not None and hit[0]() is tensor:
            return hit[1]
        value = compute()
        self.memo[name] = (weakref.ref(tensor), value)
        return value


_STATES: dict[int, _State] = {}  # id(config) -> state; checked against the weak reference on use


def _configs(model: Any) -> list[Any]:
    """Every distinct config object the model's modules hold (sub-models may carry their own)."""
    seen: dict[int, Any] = {id(model.config): model.config}
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and hasattr(cfg, "to_dict"):
            seen.setdefault(id(cfg), cfg)
    return list(seen.values())


def _lookup_state(config: Any) -> _State | None:
    state = _STATES.get(id(config))
    if state is None or not any(ref() is config for ref in state.configs):
        return None
    return state


def _check_policy(policy: Any) -> None:
    if policy is None or isinstance(policy, Budget):
        return
    if not callable(getattr(policy, "lookup", None)):
        raise BudgetError(
            "policy: must be a Budget, a Profile (anything with .lookup(seq_len) -> Budget | None) or None, "
            f"got {type(policy).__name__}")


def enable(model: Any, policy: Budget | Policy | None) -> Any:
    """Make `model` attend through sparsetune with `policy`; returns the model. Re-enabling swaps the policy."""
    _check_policy(policy)
    state = _lookup_state(model.config)
    if state is not None:
        state.policy = policy
        return model
    # transformers has no public getter for the current implementation; `disable` needs it to restore.
    previous = getattr(model.config, "_attn_implementation", None) or "sdpa"
    state = _State(policy=policy, previous=previous if previous != IMPLEMENTATION else "sdpa")
    for cfg in _configs(model):
        state.configs.append(weakref.ref(cfg, lambda _ref, key=id(cfg): _STATES.pop(key, None)))
        _STATES[id(cfg)] = state
    model.set_attn_implementation(IMPLEMENTATION)
    return model


def disable(model: Any) -> Any:
    """Restore the implementation the model had before `enable`; returns the model. No-op if not enabled."""
    state = _lookup_state(model.config)
    if state is None:
        return model
    for ref in state.configs:
        cfg = ref()
        if cfg is not None:
            _STATES.pop(id(cfg), None)
    model.set_attn_implementation(state.previous)
    return model


def is_enabled(model: Any) -> bool:
    return _lookup_state(model.config) is not None


@contextlib.contextmanager
def enabled(model: Any, policy: Budget | Policy | None) -> Iterator[Any]:
    """`enable` for a block; afterwards the model is as before (disabled, or enabled with its old policy)."""
    state = _lookup_state(model.config)
    old = state.policy if state is not None else None
    enable(model, policy)
    try:
        yield model
    finally:
        if state is not None:
            enable(model, old)
        else:
            disable(model)


@contextlib.contextmanager
def record_sparsity(model: Any) -> Iterator[AttentionStats]:
    """Count the attention calls made inside the block: ``with record_sparsity(model) as stats: ...``."""
    state = _lookup_state(model.config)
    if state is None and getattr(model.config, "_attn_implementation", None) == IMPLEMENTATION:
        state = _autoload_state(model.config)  # a deployed folder loaded with attn_implementation="sparsetune"
    if state is None:
        raise ModelError("record_sparsity: the model is not enabled; call sparsetune.enable(model, policy) first")
    stats = AttentionStats()
    state.recorders.append(stats)
    try:
        yield stats
    finally:
        state.recorders.remove(stats)


# --------------------------------------------------------------------------------------------------
# The attention function


def _budget(policy: Budget | Policy | None, kv_len: int) -> Budget | None:
    """The sparse budget for a request of `kv_len` keys, or None for dense."""
    budget = policy if isinstance(policy, Budget) or policy is None else policy.lookup(kv_len)
    return None if budget is None or budget.is_dense else budget


def _run(state: _State, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None,
         layer: int | None = None) -> torch.Tensor:
    """Attention for one group of samples with no padding: look up the budget by KV length and dispatch.

    `layer` (the module's ``layer_idx``) decides a budget's `dense_layers`: the first ones attend densely."""
    budget = _budget(state.policy, k.shape[2])
    if budget is not None and budget.dense_layers and (layer is None or layer < budget.dense_layers):
        budget = None  # a layer of unknown index is treated as early: dense is the safe side
    if budget is None:
        for s in state.recorders:
            s.dense_calls += 1
        return dense_causal_attention(q, k, v, scale=scale)
    device = torch.cuda.get_device_name(q.device) if q.is_cuda else None
    config = _launch_config(state.policy, k.shape[2], device)
    if config is None and device is not None:
        _warn_untuned(state, device)
    out, block_mask = sparse_attention(q, k, v, budget, scale=scale, config=config)
    if state.recorders:  # counting syncs the GPU: only while someone records
        visible, skipped = _block_counts(block_mask)
        for s in state.recorders:
            s.sparse_calls += 1
            s.visible_blocks += visible
            s.skipped_blocks += skipped
    return out


def _launch_config(policy: Any, kv_len: int, device: str | None) -> dict[str, int] | None:
    """The profile's tuned kernel launch config for this length on this GPU, if it has one (speed only)."""
    lookup = getattr(policy, "kernel_config", None)
    if device is None or not callable(lookup):
        return None
    found = lookup(kv_len, device)
    return None if found is None else {name: int(getattr(found, name)) for name in LAUNCH_KEYS}


def _warn_untuned(state: _State, device: str) -> None:
    """Once per state: the profile has kernel configs, but none for this GPU (defaults are used)."""
    from .policy import untuned_warning

    key = f"untuned:{device}"
    message = None if key in state.warned else untuned_warning(state.policy, device)
    if message is None:
        return
    state.warned.add(key)
    log.warning("sparsetune: %s", message)


def _block_counts(block_mask: Any) -> tuple[float, float]:
    """(visible, skipped) key blocks of a BlockMask, summed over batch, heads and query blocks."""
    visible = int(block_mask.visible_blocks().sum()) * block_mask.batch * block_mask.heads
    kept = int(block_mask.kv_num_blocks.sum(dtype=torch.int64))
    return float(visible), float(visible - kept)


def _key_padding(mask: torch.Tensor, batch: int, sq: int, sk: int) -> tuple[torch.Tensor | None, bool]:
    """(valid keys (B, Sk), no key is padding) when `mask` is exactly causal AND key padding for
    queries at the last Sq positions; (None, False) for any other pattern (sliding window, packed
    sequences, static cache, float bias). Rows of padding queries are not checked: nothing reads them.
    """
    if mask.dtype != torch.bool or mask.dim() != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (sq, sk):
        return None, False
    m = mask[:, 0].expand(batch, sq, sk)
    key_valid = m.any(dim=1)  # a key no query sees is padding
    positions = torch.arange(sk, device=mask.device)
    causal = positions[None, :] <= positions[sk - sq:, None]  # (Sq, Sk)
    expected = causal[None] & key_valid[:, None, :]
    query_valid = key_valid[:, sk - sq:]
    ok = (m == expected) | ~query_valid[:, :, None]
    return (key_valid, bool(key_valid.all())) if bool(ok.all()) else (None, False)


def _fallback(state: _State, reason: str, module: Any, query, key, value, attention_mask, dropout, scaling, kwargs):
    if reason not in state.warned:
        state.warned.add(reason)
        log.warning("sparsetune attention: %s; that layer runs transformers' SDPA with the model's mask", reason)
    for s in state.recorders:
        s.fallback_calls += 1
    return AttentionInterface()["sdpa"](
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)


def sparsetune_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """The function transformers calls per layer: q (B,Hq,Sq,D), k/v (B,Hkv,Sk,D) -> ((B,Sq,Hq,D), None)."""
    config = getattr(module, "config", None)
    state = _lookup_state(config) or _autoload_state(config)
    if state is None:
        raise ModelError(
            f"attn_implementation {IMPLEMENTATION!r} is set but this model was not enabled and its config has "
            "no 'sparsetune' entry (call sparsetune.enable(model, policy), or load a folder made by "
            "`sparsetune apply`; a copied model must be enabled again)")
    batch, _, sq, _ = query.shape
    sk = key.shape[2]
    layer = getattr(module, "layer_idx", None)
    window = kwargs.get("sliding_window")
    if window is not None:
        # A windowed cache drops old keys, so Sk alone cannot tell whether the window binds: positions can.
        positions = kwargs.get("position_ids")
        if not isinstance(positions, torch.Tensor):
            return _fallback(state, f"sliding-window layer ({window} tokens) called without position_ids",
                             module, query, key, value, attention_mask, dropout, scaling, kwargs)
        longest = state.once("positions", positions, lambda: int(positions.max()) + 1)
        if longest > window:
            return _fallback(state, f"sliding window of {window} tokens binds at {longest} positions",
                             module, query, key, value, attention_mask, dropout, scaling, kwargs)
    if attention_mask is None:
        if 1 < sq < sk:  # only an empty static cache's prefill: as in SDPA, its keys are the first Sq slots
            key, value, sk = key[:, :, :sq], value[:, :, :sq], sq
        if sq > sk:
            return _fallback(state, f"{sq} queries for {sk} keys", module, query, key, value,
                             attention_mask, dropout, scaling, kwargs)
        return _run(state, query, key, value, scaling, layer).transpose(1, 2).contiguous(), None

    key_valid, no_padding = state.once("mask", attention_mask, lambda: _key_padding(attention_mask, batch, sq, sk))
    if key_valid is None:
        return _fallback(state, "the attention mask is not causal plus key padding (packed sequences, "
                         "static cache or a custom mask)", module, query, key, value, attention_mask, dropout,
                         scaling, kwargs)
    if no_padding:
        return _run(state, query, key, value, scaling, layer).transpose(1, 2).contiguous(), None

    # Padded batch: each sample alone on its valid keys; its queries are the last of them.
    out = query.new_zeros(query.shape)
    for b in range(batch):
        kv = key_valid[b]
        q_idx = kv[sk - sq:].nonzero().squeeze(1)
        if q_idx.numel() == 0:
            continue
        qb = query[b:b + 1].index_select(2, q_idx)
        o = _run(state, qb, key[b:b + 1][:, :, kv], value[b:b + 1][:, :, kv], scaling, layer)
        out[b].index_copy_(1, q_idx, o[0])
    return out.transpose(1, 2).contiguous(), None


# --------------------------------------------------------------------------------------------------
# Deployed folders: the hook `sparsetune apply` relies on


def _autoload_state(config: Any) -> _State | None:
    """The state of a model loaded from a deployed folder, created on first use; None without the entry.

    Filed under the config exactly as `enable` files it, so `enable`, `disable` and `record_sparsity`
    treat the model like an enabled one. A bad entry or a missing profile raises (never silently dense).
    """
    if config is None or getattr(config, "sparsetune", None) is None:
        return None
    from .policy import policy_from_config

    state = _State(policy=policy_from_config(config), previous="sdpa")
    state.configs.append(weakref.ref(config, lambda _ref, key=id(config): _STATES.pop(key, None)))
    _STATES[id(config)] = state
    return state


AttentionInterface.register(IMPLEMENTATION, sparsetune_attention)
# Without a registered mask function transformers passes no mask at all, and padding silently disappears.
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)
