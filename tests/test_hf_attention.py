"""The transformers integration: keep == 1 equals sdpa, sparse budgets bite, padding, generate, windows."""

from __future__ import annotations

import logging

import pytest
import torch

from fixtures.tiny_models import tiny_model
from sparsetune.profile.budget import Budget
from sparsetune.errors import BudgetError, ModelError
from sparsetune.runtime.hf_attention import (
    IMPLEMENTATION,
    disable,
    enable,
    enabled,
    is_enabled,
    record_sparsity,
)

DENSE = Budget.parse("keep=1,block=16")
# Goes through selection and the block-sparse path but keeps every block: ceil(0.999 * v) == v for v < 1000.
ALL_BLOCKS = Budget.parse("keep=0.999,block=16")
SPARSE = Budget.parse("keep=0.25,block=16")


def _ids(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(8, 300, (batch, length), generator=g)


def _left_mask(batch: int, length: int, pads: list[int]) -> torch.Tensor:
    mask = torch.ones(batch, length, dtype=torch.long)
    for b, p in enumerate(pads):
        mask[b, :p] = 0
    return mask


class RecordingPolicy:
    """A profile stand-in: remembers the KV lengths it is asked about."""

    def __init__(self, budget: Budget | None) -> None:
        self.budget = budget
        self.asked: list[int] = []

    def lookup(self, seq_len: int) -> Budget | None:
        self.asked.append(seq_len)
        return self.budget


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.fixture(scope="module")
def qwen2():
    return tiny_model("qwen2", seed=1)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("budget", [DENSE, ALL_BLOCKS], ids=["keep1", "all-blocks"])
@pytest.mark.parametrize("padding", ["none", "left", "right"])
def test_keep_all_matches_sdpa_logits(request, family, budget, padding):
    model = request.getfixturevalue(family)
    ids = _ids(3, 70)
    if padding == "none":
        mask = None
    elif padding == "left":
        mask = _left_mask(3, 70, [0, 9, 40])
    else:
        mask = torch.ones(3, 70, dtype=torch.long)
        mask[1, 50:] = 0
        mask[2, 21:] = 0
    with torch.no_grad():
        ref = model(ids, attention_mask=mask).logits
        with enabled(model, budget), record_sparsity(model) as stats:
            out = model(ids, attention_mask=mask).logits
    valid = torch.ones(3, 70, dtype=torch.bool) if mask is None else mask.bool()
    err = (out - ref)[valid].abs().max().item()
    assert err < 1e-4, f"{family}/{padding}: max |logits - sdpa logits| = {err:.3g}"
    assert stats.sparsity == 0.0 and stats.fallback_calls == 0
    if budget is DENSE:
        assert stats.dense_calls > 0 and stats.sparse_calls == 0
    else:
        assert stats.sparse_calls > 0 and stats.visible_blocks > 0


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_keep_all_generate_equals_sdpa(request, family):
    model = request.getfixturevalue(family)
    ids = _ids(3, 40, seed=2)
    mask = _left_mask(3, 40, [0, 5, 17])  # left padding: what generate() batches use
    kw = dict(attention_mask=mask, max_new_tokens=6, do_sample=False)
    with torch.no_grad():
        ref = model.generate(ids, **kw)
        for budget in (DENSE, ALL_BLOCKS):
            with enabled(model, budget):
                out = model.generate(ids, **kw)
            assert torch.equal(out, ref), f"{family} {budget}: generate differs from sdpa"


def test_sparse_budget_changes_logits_and_reports_sparsity(llama):
    ids = _ids(1, 200)
    with torch.no_grad():
        ref = llama(ids).logits
        with enabled(llama, SPARSE), record_sparsity(llama) as stats:
            out = llama(ids).logits
    assert (out - ref).abs().max().item() > 1e-2
    assert stats.sparse_calls == llama.config.num_hidden_layers
    assert 0 < stats.sparsity < 1
    assert stats.skipped_blocks > 0 and stats.visible_blocks > stats.skipped_blocks


def test_padded_sparse_batch_equals_samples_run_alone(llama):
    ids = _ids(3, 180, seed=3)
    pads = [0, 33, 90]
    mask = _left_mask(3, 180, pads)
    policy = RecordingPolicy(SPARSE)
    with torch.no_grad(), enabled(llama, policy):
        batched = llama(ids, attention_mask=mask).logits
        assert sorted(set(policy.asked)) == [90, 147, 180]  # each sample looks up its own length
        for b, p in enumerate(pads):
            alone = llama(ids[b:b + 1, p:]).logits[0]
            err = (batched[b, p:] - alone).abs().max().item()
            assert err < 1e-3, f"sample {b}: padded batch vs alone differ by {err:.3g}"


def test_sparse_generate_padded_equals_alone(llama):
    ids = _ids(2, 150, seed=4)
    mask = _left_mask(2, 150, [0, 47])
    with torch.no_grad(), enabled(llama, SPARSE):
        batched = llama.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)[:, -5:]
        for b, p in enumerate([0, 47]):
            alone = llama.generate(ids[b:b + 1, p:], max_new_tokens=5, do_sample=False)[0, -5:]
            assert torch.equal(batched[b], alone), f"sample {b}: {batched[b].tolist()} != {alone.tolist()}"


def test_budget_is_looked_up_by_kv_length_in_generate(llama):
    policy = RecordingPolicy(None)
    ids = _ids(1, 30)
    with torch.no_grad(), enabled(llama, policy), record_sparsity(llama) as stats:
        llama.generate(ids, max_new_tokens=4, do_sample=False)
    layers = llama.config.num_hidden_layers
    # Prefill at 30 keys, then one decode step per new token (the last token is never fed back).
    assert policy.asked == [n for n in (30, 31, 32, 33) for _ in range(layers)]
    assert stats.dense_calls == 4 * layers


def test_profile_policy_mixes_dense_and_sparse(llama):
    class TwoBuckets:
        def lookup(self, seq_len: int) -> Budget | None:
            return None if seq_len <= 100 else SPARSE

    with torch.no_grad(), enabled(llama, TwoBuckets()), record_sparsity(llama) as stats:
        llama(_ids(1, 90))
        llama(_ids(1, 160))
    layers = llama.config.num_hidden_layers
    assert (stats.dense_calls, stats.sparse_calls) == (layers, layers)
    assert stats.sparsity > 0


def test_mistral_sliding_window_is_kept(caplog):
    windowed = tiny_model("mistral", seed=2, sliding_window=48)
    unwindowed = tiny_model("mistral", seed=2, sliding_window=None)
    ids = _ids(2, 120, seed=5)
    mask = _left_mask(2, 120, [0, 13])
    with torch.no_grad():
        ref = windowed(ids, attention_mask=mask).logits
        assert (ref - unwindowed(ids, attention_mask=mask).logits)[mask.bool()].abs().max() > 1e-2  # window matters
        with caplog.at_level(logging.WARNING, logger="sparsetune"):
            with enabled(windowed, SPARSE), record_sparsity(windowed) as stats:
                out = windowed(ids, attention_mask=mask).logits
                gen = windowed.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
        ref_gen = windowed.generate(ids, attention_mask=mask, max_new_tokens=3, do_sample=False)
    assert (out - ref)[mask.bool()].abs().max().item() < 1e-4
    assert torch.equal(gen, ref_gen)
    assert stats.fallback_calls > 0 and stats.sparse_calls == 0
    assert "sliding window of 48 tokens binds at 120 positions" in caplog.text
    # Below the window it binds nowhere: the sparse path runs.
    with torch.no_grad(), enabled(windowed, SPARSE), record_sparsity(windowed) as short:
        windowed(_ids(1, 40))
    assert short.fallback_calls == 0 and short.sparse_calls > 0


def test_enable_disable_and_errors(llama):
    assert not is_enabled(llama)
    enable(llama, SPARSE)
    try:
        assert is_enabled(llama)
        enable(llama, None)  # re-enabling swaps the policy
        with torch.no_grad(), record_sparsity(llama) as stats:
            llama(_ids(1, 20))
        assert stats.dense_calls > 0 and stats.sparse_calls == 0
        with enabled(llama, SPARSE):
            pass
        assert is_enabled(llama)  # the block restored the outer enable
    finally:
        disable(llama)
    assert not is_enabled(llama)
    with torch.no_grad():
        llama(_ids(1, 10))  # back on sdpa: the sparsetune function would raise "not enabled"
    with pytest.raises(ModelError, match="not enabled"):
        with record_sparsity(llama):
            pass
    with pytest.raises(BudgetError, match="policy: must be a Budget"):
        enable(llama, 0.5)
    assert not is_enabled(llama)


def test_implementation_without_enable_fails_loudly():
    model = tiny_model("llama", seed=3)
    model.set_attn_implementation(IMPLEMENTATION)
    with pytest.raises(ModelError, match=r"call sparsetune\.enable"):
        with torch.no_grad():
            model(_ids(1, 10))


def test_launch_config_comes_from_the_profile_on_gpu_only():
    from types import SimpleNamespace

    from sparsetune.runtime.hf_attention import _launch_config

    class Tuned(RecordingPolicy):
        def kernel_config(self, seq_len, device):
            return SimpleNamespace(BLOCK_M=64, BLOCK_N=32, num_warps=4, num_stages=2, ms=0.1) \
                if device == "NVIDIA H100" and seq_len > 100 else None

    policy = Tuned(SPARSE)
    assert _launch_config(policy, 500, "NVIDIA H100") == {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
    assert _launch_config(policy, 50, "NVIDIA H100") is None
    assert _launch_config(policy, 500, None) is None  # CPU: the reference ignores launch configs
    assert _launch_config(SPARSE, 500, "NVIDIA H100") is None  # a fixed Budget has none


@pytest.mark.parametrize("estimator", ["sampled", "peak", "salient", "antidiagonal", "vslash", "quest", "oracle"])
def test_every_estimator_serves_prefill_and_decode_padded_as_alone(llama, estimator):
    """Each registered estimator through the model: prefill and decode steps select blocks (sparsity > 0),
    the output differs from dense, and a left-padded batch generates what each sample generates alone."""
    budget = Budget(keep=0.25, block_size=16, sink=1, local=1, estimator=estimator)
    ids = _ids(2, 150, seed=5)
    mask = _left_mask(2, 150, [0, 47])
    with torch.no_grad(), enabled(llama, budget), record_sparsity(llama) as stats:
        batched = llama.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False)[:, -4:]
        for b, p in enumerate([0, 47]):
            alone = llama.generate(ids[b:b + 1, p:], max_new_tokens=4, do_sample=False)[0, -4:]
            assert torch.equal(batched[b], alone), f"{estimator} sample {b}: {batched[b].tolist()} != {alone.tolist()}"
    assert stats.sparse_calls > 0 and 0 < stats.sparsity < 1 and stats.fallback_calls == 0
