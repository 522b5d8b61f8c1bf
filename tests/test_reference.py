"""The torch reference and the flex_attention oracle agree with a naive per-row softmax and with SDPA."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sparsetune import Budget
from sparsetune.attention import (
    AttentionError,
    BlockMask,
    block_sparse_attention,
    dense_causal_attention,
    flex_reference_attention,
    reference_attention,
    select_blocks,
    sparse_attention,
)

# flex_attention warns on every unfused (CPU) call; the warning is expected here.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _qkv(b, hq, hkv, sq, sk, d, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, hq, sk, d, generator=g)[:, :, sk - sq:]
    k = torch.randn(b, hkv, sk, d, generator=g)
    v = torch.randn(b, hkv, sk, d, generator=g)
    return q.to(dtype), k.to(dtype), v.to(dtype)


def _naive(q, k, v, mask: BlockMask, scale=None):
    """Row by row: softmax over the keys of the selected blocks that are causally visible."""
    b, hq, sq, d = q.shape
    group = hq // k.shape[1]
    scale = d ** -0.5 if scale is None else scale
    out = torch.zeros(b, hq, sq, d, dtype=torch.float64)
    for z in range(b):
        for h in range(hq):
            hk = h // group
            for i in range(sq):
                pos = mask.q_offset + i
                row = pos // mask.block_size - mask.first_q_block
                n = int(mask.kv_num_blocks[z, hk, row])
                keys = [j for blk in mask.kv_indices[z, hk, row, :n].tolist()
                        for j in range(blk * mask.block_size, min((blk + 1) * mask.block_size, mask.seq_k)) if j <= pos]
                s = (q[z, h, i].double() @ k[z, hk, keys].double().T) * scale
                out[z, h, i] = s.softmax(-1) @ v[z, hk, keys].double()
    return out


def _rel_err(out, ref):
    return ((out.double() - ref.double()).abs().max() / ref.double().abs().max()).item()


CASES = [  # (B, Hq, Hkv, Sq, Sk, D, block, budget)
    (1, 4, 1, 50, 50, 16, 16, Budget(block_size=16, keep=0.4)),  # GQA 4:1, Sk % 16 != 0
    (2, 4, 2, 23, 71, 16, 16, Budget(method="coverage", block_size=16, tau=0.7)),  # GQA 2:1, chunk
    (1, 2, 2, 1, 45, 16, 16, Budget(block_size=16, keep=0.3, sink=0)),  # decode
    (1, 2, 1, 64, 64, 32, 32, Budget(block_size=32, keep=0.5, sink=0, local=1)),
]


@pytest.mark.parametrize("b,hq,hkv,sq,sk,d,bs,budget", CASES)
def test_reference_and_flex_match_naive_softmax(b, hq, hkv, sq, sk, d, bs, budget):
    q, k, v = _qkv(b, hq, hkv, sq, sk, d)
    mask = select_blocks(q, k, budget).validate()
    want = _naive(q, k, v, mask)
    ref = reference_attention(q, k, v, mask)
    flex = flex_reference_attention(q, k, v, mask)
    assert not torch.isnan(ref).any() and not torch.isnan(flex).any(), "NaN in reference or flex output"
    assert _rel_err(ref, want) <= 1e-5, f"reference vs naive: relative error {_rel_err(ref, want):.2e}"
    assert _rel_err(flex, want) <= 1e-5, f"flex vs naive: relative error {_rel_err(flex, want):.2e}"


@pytest.mark.parametrize("sq,sk", [(70, 70), (30, 70), (1, 70)])
def test_full_mask_matches_causal_sdpa_bottom_right(sq, sk):
    q, k, v = _qkv(1, 4, 2, sq, sk, 32)
    mask = select_blocks(q, k, Budget.dense(16))
    ref = reference_attention(q, k, v, mask)
    dense = dense_causal_attention(q, k, v)
    qf, kf, vf = _qkv(1, 4, 2, sk, sk, 32)  # the full prefill: its last sq rows are the same queries
    full = F.scaled_dot_product_attention(qf, kf, vf, is_causal=True, enable_gqa=True)[:, :, sk - sq:]
    assert _rel_err(ref, full) <= 1e-5, f"reference vs causal SDPA: {_rel_err(ref, full):.2e}"
    assert _rel_err(dense, full) <= 1e-5, f"dense_causal_attention vs causal SDPA: {_rel_err(dense, full):.2e}"


def test_to_dense_agrees_with_flex_block_view():
    q, k, v = _qkv(2, 4, 2, 100, 100, 16)
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.3))
    flex = mask.to_flex(num_heads=4)
    # flex's own dense view of full + partial blocks, from its kv_indices, not from our helper.
    flex_blocks = flex.to_dense().bool()
    ours = mask.to_block_bool().repeat_interleave(2, dim=1)
    assert torch.equal(flex_blocks, ours)


def test_16_bit_inputs_use_an_fp32_oracle_and_return_the_input_dtype():
    q, k, v = _qkv(1, 2, 1, 40, 40, 16)
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.5))
    want = reference_attention(q, k, v, mask)
    for dtype, tol in ((torch.float16, 1e-3), (torch.bfloat16, 8e-3)):
        out = reference_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask)
        assert out.dtype == dtype
        assert _rel_err(out, want) <= tol, f"{dtype} reference: relative error {_rel_err(out, want):.2e}"


def test_malformed_mask_gives_zeros_not_nan():
    q, k, v = _qkv(1, 1, 1, 32, 32, 16)
    mask = BlockMask(torch.zeros(1, 1, 2, dtype=torch.int32), torch.zeros(1, 1, 2, 2, dtype=torch.int32), 16, 32, 32)
    with pytest.raises(AttentionError, match="kv_num_blocks"):
        mask.validate()
    out = reference_attention(q, k, v, mask)
    assert not torch.isnan(out).any() and out.abs().max() == 0


def test_block_sparse_attention_on_cpu_matches_the_reference(monkeypatch):
    # On CPU dispatch runs a torch path (gathered blocks when sparse): the reference's result in fp32.
    monkeypatch.delenv("SPARSETUNE_TRITON_INTERPRET", raising=False)
    q, k, v = _qkv(1, 4, 2, 60, 60, 16)
    for keep in (0.3, 0.5, 0.9):
        mask = select_blocks(q, k, Budget(block_size=16, keep=keep))
        err = _rel_err(block_sparse_attention(q, k, v, mask, scale=0.3), reference_attention(q, k, v, mask, scale=0.3))
        assert err <= 1e-5, f"dispatch vs reference at keep {keep}: relative error {err:.2e}"


def test_sparse_attention_dense_budget_short_circuits_and_reports_zero_sparsity():
    q, k, v = _qkv(1, 4, 2, 25, 70, 16)
    out, mask = sparse_attention(q, k, v, Budget.dense(16))
    assert mask.sparsity == 0.0
    assert _rel_err(out, reference_attention(q, k, v, mask)) <= 1e-5
    out, mask = sparse_attention(q, k, v, Budget(block_size=16, keep=0.3))
    assert mask.sparsity > 0.0
    assert _rel_err(out, reference_attention(q, k, v, mask)) <= 1e-5


def test_inputs_are_checked_against_the_mask():
    q, k, v = _qkv(1, 4, 2, 40, 40, 16)
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.5))
    with pytest.raises(AttentionError, match="built for"):
        reference_attention(q[:, :, 1:], k, v, mask)
    with pytest.raises(AttentionError, match="multiple of KV heads"):
        reference_attention(q[:, :3], k, v, mask)
    with pytest.raises(AttentionError, match="kv_num_blocks"):
        BlockMask(mask.kv_num_blocks[:, :, 1:], mask.kv_indices, 16, 40, 40)


def test_reference_handles_a_2k_forward_on_cpu():
    q, k, v = _qkv(1, 4, 2, 2048, 2048, 32)
    mask = select_blocks(q, k, Budget(block_size=64, keep=0.3))
    out = reference_attention(q, k, v, mask)
    assert not torch.isnan(out).any()
    assert math.isclose(mask.density + mask.sparsity, 1.0)
