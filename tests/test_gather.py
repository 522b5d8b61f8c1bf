"""The gathered CPU path equals the masked-SDPA reference on odd shapes, GQA, chunks and decode."""

from __future__ import annotations

import pytest
import torch

from sparsetune import Budget
from sparsetune.attention import (block_sparse_attention, gathered_attention, gathered_decode, reference_attention,
                                  select_blocks)

CASES = [  # B, Hq, Hkv, Sq, Sk, D, block, keep / tau
    (2, 4, 2, 300, 300, 32, 64, 0.3),
    (1, 4, 1, 1, 777, 64, 32, 0.2),  # decode, GQA 4:1
    (2, 8, 2, 100, 513, 16, 16, 0.5),  # chunked prefill, Sk not a multiple of the block
    (1, 2, 2, 65, 65, 32, 64, 1.0),
    (1, 6, 3, 200, 200, 32, 32, 0.05),  # sink + local only
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
@pytest.mark.parametrize("method", ["topk", "coverage"])
def test_gathered_matches_reference(case, method):
    b, hq, hkv, sq, sk, d, bs, ratio = case
    gen = torch.Generator().manual_seed(sum(case[:6]))
    q, k, v = (torch.randn(b, h, n, d, generator=gen) for h, n in ((hq, sq), (hkv, sk), (hkv, sk)))
    budget = Budget(method=method, block_size=bs, sink=1, local=1,
                    **({"keep": ratio} if method == "topk" else {"tau": min(0.5 + ratio, 1.0)}))
    mask = select_blocks(q, k, budget)
    ref = reference_attention(q, k, v, mask)
    out = gathered_attention(q, k, v, mask)
    err = ((out - ref).abs().max() / ref.abs().max()).item()
    assert err <= 1e-5, f"gathered vs reference: relative max error {err:.2e} (fp32 allows 1e-5)"
    assert not out.isnan().any()
    # Dispatch picks one of the two torch paths on CPU; either way the result is the same.
    assert torch.allclose(block_sparse_attention(q, k, v, mask), ref, atol=1e-5, rtol=1e-5)


def _qkv(b, hq, hkv, sq, sk, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(b, h, n, d, generator=gen) for h, n in ((hq, sq), (hkv, sk), (hkv, sk)))


def test_topk_rows_take_the_unmasked_split_and_uneven_rows_the_masked_call(monkeypatch):
    """Even rows with the diagonal last run unmasked + one causal diagonal call, merged by log-sum-exp;
    a row without its diagonal block (a hand-made mask) or with uneven widths takes the masked call."""
    import sparsetune.attention.gather as gather

    calls = []
    real = gather._FLASH_LSE
    monkeypatch.setattr(gather, "_FLASH_LSE", lambda *a, **kw: calls.append(a[4]) or real(*a, **kw))
    q, k, v = _qkv(2, 6, 3, 300, 300, 32)
    mask = select_blocks(q, k, Budget(keep=0.4, block_size=32))
    torch.testing.assert_close(gathered_attention(q, k, v, mask), reference_attention(q, k, v, mask),
                               atol=1e-5, rtol=1e-5)
    assert calls.count(True) == 1 and calls.count(False) > 0  # one causal diagonal call, unmasked rows

    # Drop the diagonal of row 5 in one head: that row goes masked, the others stay split.
    blocks = mask.to_block_bool().clone()
    blocks[0, 1, 5, 5] = False
    odd = type(mask).from_block_bool(blocks, mask.block_size, mask.seq_q, mask.seq_k)
    calls.clear()
    torch.testing.assert_close(gathered_attention(q, k, v, odd), reference_attention(q, k, v, odd),
                               atol=1e-5, rtol=1e-5)
    assert calls.count(False) == sum(1 for w in odd.kv_num_blocks.amax(dim=(0, 1)).tolist() if w > 1) - 1


def test_a_mask_keeping_every_visible_block_runs_causal_sdpa(monkeypatch):
    import sparsetune.attention.dispatch as dispatch

    monkeypatch.setattr(dispatch, "gathered_attention", lambda *a, **kw: pytest.fail("gathered for a full mask"))
    q, k, v = _qkv(1, 4, 2, 100, 260, 32)
    mask = select_blocks(q, k, Budget(keep=0.999, block_size=32))
    out = block_sparse_attention(q, k, v, mask)
    torch.testing.assert_close(out, reference_attention(q, k, v, mask), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sk,bs,keep", [(777, 32, 0.2), (64, 64, 0.5), (1000, 64, 0.9), (129, 16, 0.05)])
def test_decode_gathers_the_kept_keys_and_equals_the_reference(sk, bs, keep):
    q, k, v = _qkv(2, 6, 2, 1, sk, 32, seed=sk)
    q = q.transpose(1, 2).contiguous().transpose(1, 2)  # a strided q, as transformers passes it
    mask = select_blocks(q, k, Budget(keep=keep, block_size=bs))
    out = gathered_decode(q, k, v, mask, scale=0.3)
    assert out is not None
    torch.testing.assert_close(out, reference_attention(q, k, v, mask, scale=0.3), atol=1e-5, rtol=1e-5)


def test_decode_with_uneven_rows_is_left_to_the_reference():
    q, k, v = _qkv(1, 4, 2, 1, 300, 32)
    mask = select_blocks(q, k, Budget(method="coverage", tau=0.5, block_size=32))
    blocks = mask.to_block_bool().clone()
    blocks[0, 0, 0, 0] = not bool(blocks[0, 1, 0, 0])  # the heads now keep different counts
    odd = type(mask).from_block_bool(blocks, 32, 1, 300)
    assert gathered_decode(q, k, v, odd) is None
    torch.testing.assert_close(block_sparse_attention(q, k, v, odd), reference_attention(q, k, v, odd))
