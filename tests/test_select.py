"""Block selection: budget -> BlockMask. Invariants first, then the ranking rules."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sparsetune import Budget
from sparsetune.attention import AttentionError, BlockMask, block_scores, select_blocks


def _qk(b: int, hq: int, hkv: int, sq: int, sk: int, d: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(b, hkv, sk, d, generator=g)
    q = torch.randn(b, hq, sk, d, generator=g)[:, :, sk - sq:]
    return q, k


def _visible(mask: BlockMask) -> torch.Tensor:
    """bool [QB, KB]: causally visible blocks of each row."""
    diag = mask.visible_blocks() - 1
    return torch.arange(mask.num_kv_blocks)[None, :] <= diag[:, None]


def _always(mask: BlockMask, sink: int, local: int) -> torch.Tensor:
    diag = (mask.visible_blocks() - 1)[:, None]
    cols = torch.arange(mask.num_kv_blocks)[None, :]
    return _visible(mask) & ((cols < sink) | (cols > diag - local))


shapes = st.tuples(
    st.integers(1, 2),  # batch
    st.sampled_from([(1, 1), (2, 1), (4, 2), (4, 1)]),  # (Hq, Hkv)
    st.integers(1, 150),  # seq_k
    st.integers(1, 150),  # seq_q (clipped to seq_k)
    st.sampled_from([16, 32]),  # block size
    st.integers(0, 10_000),  # seed
)


def _case(shape: tuple) -> tuple[torch.Tensor, torch.Tensor, int]:
    b, (hq, hkv), sk, sq, bs, seed = shape
    q, k = _qk(b, hq, hkv, min(sq, sk), sk, seed=seed)
    return q, k, bs


# ---- every budget ------------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(shapes, st.sampled_from(["topk", "coverage"]), st.floats(0.01, 1.0), st.integers(0, 3), st.integers(1, 3))
def test_layout_invariant_and_always_kept(shape, method, ratio, sink, local):
    q, k, bs = _case(shape)
    budget = Budget(method=method, block_size=bs, sink=sink, local=local,
                    **({"keep": ratio} if method == "topk" else {"tau": ratio}))
    mask = select_blocks(q, k, budget).validate()  # sorted, unique, visible, diagonal present
    kept = mask.to_block_bool()
    always = _always(mask, sink, local)
    assert bool((kept | ~always).all()), "an always-kept (sink/local) block is missing"
    assert bool((kept <= _visible(mask)).all()), "a causally invisible block was selected"
    assert 0.0 <= mask.sparsity < 1.0


@pytest.mark.parametrize("method", ["topk", "coverage"])
@pytest.mark.parametrize("sq,sk", [(100, 100), (37, 101), (1, 77), (16, 64)])
def test_dense_budget_selects_every_visible_block(method, sq, sk):
    q, k = _qk(1, 4, 2, sq, sk)
    budget = Budget(method=method, block_size=16, **({"keep": 1.0} if method == "topk" else {"tau": 1.0}))
    mask = select_blocks(q, k, budget)
    assert torch.equal(mask.to_block_bool(), _visible(mask).expand_as(mask.to_block_bool()))
    assert mask.sparsity == 0.0 and mask.density == 1.0


def test_generic_topk_path_with_keep_near_one_selects_everything():
    # keep=0.999 goes through scoring and ranking; ceil(0.999 * visible) = visible below 1000 blocks.
    q, k = _qk(2, 4, 2, 130, 130)
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.999, sink=0, local=1))
    assert mask.sparsity == 0.0


# ---- topk --------------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(shapes, st.floats(0.01, 1.0), st.integers(0, 3), st.integers(1, 3))
def test_topk_keeps_ceil_keep_times_visible(shape, keep, sink, local):
    q, k, bs = _case(shape)
    mask = select_blocks(q, k, Budget(block_size=bs, keep=keep, sink=sink, local=local))
    visible = mask.visible_blocks().double()
    n_always = _always(mask, sink, local).sum(-1)
    want = torch.maximum(torch.ceil(visible * keep - 1e-9).clamp(min=1).long(), n_always)
    assert torch.equal(mask.kv_num_blocks.long(), want.expand_as(mask.kv_num_blocks)), \
        f"kv_num_blocks {mask.kv_num_blocks.tolist()} != max(ceil(keep * visible), always) {want.tolist()}"


def test_topk_ceil_is_robust_to_float_products():
    # 0.7 * 10 == 7.000000000000001 in floating point: the row must keep 7 blocks, not 8.
    q, k = _qk(1, 1, 1, 16, 160)
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.7, sink=0, local=1))
    assert int(mask.kv_num_blocks[0, 0, -1]) == 7


def test_topk_ranks_by_pooled_score():
    # Key block 2 points along the mean query: on the last row (6 visible, keep 0.34 -> 3 kept:
    # the diagonal plus the two best) it must be one of the two best.
    q, k = _qk(1, 2, 1, 96, 96)
    k[:, :, 32:48] = 10 * q.mean(dim=(0, 1, 2))
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.34, sink=0, local=1))
    last = mask.to_block_bool()[0, 0, -1]
    assert last.sum() == 3 and bool(last[2]), f"the high-scoring block 2 was not kept: {last.tolist()}"


@settings(max_examples=25, deadline=None)
@given(shapes, st.floats(0.01, 1.0), st.floats(0.01, 1.0), st.integers(0, 2), st.integers(1, 2))
def test_topk_sets_are_nested_so_sparsity_is_monotone_in_keep(shape, a, b, sink, local):
    q, k, bs = _case(shape)
    lo, hi = sorted((a, b))
    small = select_blocks(q, k, Budget(block_size=bs, keep=lo, sink=sink, local=local))
    big = select_blocks(q, k, Budget(block_size=bs, keep=hi, sink=sink, local=local))
    assert bool((small.to_block_bool() <= big.to_block_bool()).all()), "keep grew but a kept block was dropped"
    assert small.sparsity >= big.sparsity


# ---- coverage ----------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(shapes, st.floats(0.01, 1.0), st.floats(0.01, 1.0), st.integers(0, 2), st.integers(1, 2))
def test_coverage_sets_are_nested_so_sparsity_is_monotone_in_tau(shape, a, b, sink, local):
    q, k, bs = _case(shape)
    lo, hi = sorted((a, b))
    small = select_blocks(q, k, Budget(method="coverage", block_size=bs, tau=lo, sink=sink, local=local))
    big = select_blocks(q, k, Budget(method="coverage", block_size=bs, tau=hi, sink=sink, local=local))
    assert bool((small.to_block_bool() <= big.to_block_bool()).all()), "tau grew but a kept block was dropped"
    assert small.sparsity >= big.sparsity


@settings(max_examples=25, deadline=None)
@given(shapes, st.floats(0.05, 0.99), st.integers(0, 2), st.integers(1, 2))
def test_coverage_reaches_tau_with_a_minimal_set(shape, tau, sink, local):
    q, k, bs = _case(shape)
    mask = select_blocks(q, k, Budget(method="coverage", block_size=bs, tau=tau, sink=sink, local=local))
    vis = _visible(mask)
    logits = (block_scores(q, k, bs) / math.sqrt(q.shape[-1])).masked_fill(~vis, -math.inf)
    prob = logits.softmax(-1)
    kept = mask.to_block_bool()
    mass = (prob * kept).sum(-1)
    assert bool((mass >= tau - 1e-5).all()), f"kept mass {mass.min().item():.4f} below tau {tau}"
    # Minimal: dropping the least probable optional block falls below tau (unless all optional
    # blocks were needed to begin with, i.e. the row is made of always-kept blocks only).
    optional = kept & ~_always(mask, sink, local)
    least = torch.where(optional, prob, math.inf).min(-1).values
    has_optional = optional.any(-1)
    assert bool(((mass - least < tau + 1e-5) | ~has_optional).all()), "coverage kept a block it did not need"


# ---- geometry: decode, chunks, GQA -------------------------------------------------------

@pytest.mark.parametrize("method", ["topk", "coverage"])
@pytest.mark.parametrize("sk", [81, 97, 17, 1])
def test_decode_row_equals_last_prefill_row(method, sk):
    # Sk % 16 == 1: the prefill's last block holds only the last query, the one decode sees.
    q, k = _qk(2, 4, 2, sk, sk)
    budget = Budget(method=method, block_size=16, sink=1, local=1,
                    **({"keep": 0.3} if method == "topk" else {"tau": 0.6}))
    prefill = select_blocks(q, k, budget)
    decode = select_blocks(q[:, :, -1:], k, budget)
    assert decode.num_q_blocks == 1 and decode.first_q_block == prefill.num_q_blocks - 1
    assert torch.equal(decode.to_block_bool()[:, :, 0], prefill.to_block_bool()[:, :, -1])
    assert torch.equal(decode.kv_num_blocks[:, :, 0], prefill.kv_num_blocks[:, :, -1])


@pytest.mark.parametrize("sink,local", [(0, 1), (2, 1), (1, 3), (0, 9)])
def test_decode_ties_and_edges_match_the_prefill_row(sink, local):
    # Decode has its own few-op topk path; ties (identical key blocks) go to the lower index as in the
    # general path's stable sort, and sink/local may cover every block.
    q, k = _qk(1, 4, 2, 145, 145)
    k[:, :, 16:128] = k[:, :, :16].repeat(1, 1, 7, 1)  # blocks 1-7 equal block 0: tied scores
    for keep in (0.05, 0.3, 0.61, 0.99):
        budget = Budget(block_size=16, keep=keep, sink=sink, local=local)
        prefill = select_blocks(q, k, budget)
        decode = select_blocks(q[:, :, -1:], k, budget)
        assert torch.equal(decode.kv_indices[:, :, 0], prefill.kv_indices[:, :, -1]), (keep, sink, local)
        assert torch.equal(decode.kv_num_blocks[:, :, 0], prefill.kv_num_blocks[:, :, -1])


@pytest.mark.parametrize("sk", [100, 128, 77])
def test_decode_keeps_as_many_blocks_as_the_last_prefill_row(sk):
    # Whatever queries the last block pools, topk keeps the same number of blocks.
    q, k = _qk(1, 2, 1, sk, sk)
    budget = Budget(block_size=16, keep=0.4, sink=1, local=2)
    prefill = select_blocks(q, k, budget)
    decode = select_blocks(q[:, :, -1:], k, budget)
    assert torch.equal(decode.kv_num_blocks[..., 0], prefill.kv_num_blocks[..., -1])


@pytest.mark.parametrize("method", ["topk", "coverage"])
def test_chunk_rows_equal_prefill_rows(method):
    # A chunk starting on a block boundary pools the same queries per block as the prefill.
    q, k = _qk(1, 4, 2, 120, 120)
    budget = Budget(method=method, block_size=16, **({"keep": 0.4} if method == "topk" else {"tau": 0.7}))
    prefill = select_blocks(q, k, budget)
    chunk = select_blocks(q[:, :, 48:], k, budget)
    assert chunk.first_q_block == 3
    assert torch.equal(chunk.to_block_bool(), prefill.to_block_bool()[:, :, 3:])


def test_gqa_heads_share_a_mask_and_order_within_group_does_not_matter():
    q, k = _qk(1, 4, 2, 90, 90)
    budget = Budget(block_size=16, keep=0.3)
    mask = select_blocks(q, k, budget)
    assert mask.heads == 2
    swapped = q[:, [1, 0, 3, 2]]  # permute query heads inside each group of 2
    assert torch.equal(select_blocks(swapped, k, budget).to_block_bool(), mask.to_block_bool())


def test_block_scores_pool_partial_blocks_by_their_own_tokens():
    q, k = _qk(1, 4, 2, 45, 101, d=8)  # query offset 56: first query block partial, last key block partial
    bs = 16
    got = block_scores(q, k, bs)
    want = torch.empty_like(got)
    first = (101 - 45) // bs
    for h in range(2):
        for r in range(got.shape[2]):
            a = (first + r) * bs
            qs = q[0, 2 * h:2 * h + 2, max(a, 56) - 56:min(a + bs, 101) - 56]
            qp = qs.mean(dim=1).mean(dim=0)
            for c in range(got.shape[3]):
                kp = k[0, h, c * bs:min(c * bs + bs, 101)].mean(dim=0)
                want[0, h, r, c] = qp @ kp
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_sparsity_counts_skipped_visible_blocks():
    # 4 rows see 1, 2, 3, 4 blocks (10 visible); keep only the diagonal: 4 kept, sparsity 0.6.
    q, k = _qk(1, 1, 1, 64, 64)
    mask = select_blocks(q, k, Budget(block_size=16, keep=0.01, sink=0, local=1))
    assert mask.kv_num_blocks.tolist() == [[[1, 1, 1, 1]]]
    assert mask.sparsity == pytest.approx(0.6) and mask.density == pytest.approx(0.4)


def test_invalid_inputs_raise_attention_error():
    q, k = _qk(1, 4, 2, 32, 32)
    with pytest.raises(AttentionError, match="seq_q"):
        select_blocks(torch.randn(1, 4, 40, 16), k, Budget(keep=0.5))
    with pytest.raises(AttentionError, match="multiple of KV heads"):
        select_blocks(torch.randn(1, 3, 32, 16), k, Budget(keep=0.5))
    with pytest.raises(AttentionError, match="Budget"):
        select_blocks(q, k, {"keep": 0.5})  # type: ignore[arg-type]


def test_selection_at_2k_tokens_gives_a_valid_mask():
    # Speed is a benchmark's job (benchmarks/gpu.sh times selection); here only the result counts.
    q, k = _qk(1, 8, 2, 2048, 2048, d=64)
    for budget in (Budget(block_size=64, keep=0.3), Budget(method="coverage", block_size=32, tau=0.9)):
        mask = select_blocks(q, k, budget).validate()
        assert 0.0 < mask.sparsity < 1.0
