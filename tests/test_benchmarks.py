"""The library pieces the benchmark scripts drive: baseline policies, their cost, the cached bench, splicing."""

from __future__ import annotations

import pytest

from sparsetune._io import splice_block
from sparsetune.evaluate.baselines import Fixed, Gated, PerBucket, Tokens, grid, policy_cost
from sparsetune.evaluate.bench import Bench
from sparsetune.profile import Floor

BLOCKS, KEEPS, SINKS, LOCALS = (32, 64, 128), (1.0, 0.5, 0.25, 0.1), (0, 1, 2), (1, 2)
EDGES = (256, 512, 1024, 2048)  # the demo workload's lengths


def test_token_budget_is_dense_up_to_its_tokens_then_keeps_tokens_over_length():
    p = Tokens(256, 64, 1, 1)
    assert p.lookup(256) is None and p.lookup(200) is None
    assert p.lookup(1024).keep == pytest.approx(0.25)
    assert p.lookup(2048).block_size == 64


def test_gated_and_per_bucket_policies():
    inner = Fixed(64, 0.25, 1, 1)
    g = Gated(512, inner)
    assert g.lookup(512) is None and g.lookup(513).keep == 0.25
    pb = PerBucket((256, 1024), (Fixed(64, 1.0, 0, 1), inner))
    assert pb.lookup(100) is None and pb.lookup(300).keep == 0.25 and pb.lookup(5000).keep == 0.25


def test_grid_has_one_dense_point_and_every_sparse_combination():
    pts = grid(BLOCKS, KEEPS, SINKS, LOCALS)
    assert sum(p.keep >= 1 for p in pts) == 1
    assert len(pts) == 1 + len(BLOCKS) * (len(KEEPS) - 1) * len(SINKS) * len(LOCALS)
    assert len(set(pts)) == len(pts)


def test_splice_replaces_only_its_own_block(tmp_path):
    f = tmp_path / "RESULTS.md"
    f.write_text("# Results\n\n## Distributed search\nkeep me\n", encoding="utf-8")
    splice_block(f, "bench:x", "## Mine\nv1")
    splice_block(f, "bench:x", "## Mine\nv2")
    text = f.read_text(encoding="utf-8")
    assert "keep me" in text and "v2" in text and "v1" not in text and text.count("## Mine") == 1
    r = tmp_path / "README.md"
    r.write_text("# P\n\n## Usage\nu\n\n## Development\nd\n", encoding="utf-8")
    splice_block(r, "bench:y", "## Why\nw", before="## Development")
    text = r.read_text(encoding="utf-8")
    assert text.index("## Why") < text.index("## Development") and text.index("## Usage") < text.index("## Why")


def test_relative_cost_of_dense_sparse_and_token_budgets():
    h, kv, d = 4, 2, 64
    assert policy_cost(None, 2048, h, kv, d) == 1.0
    sparse = policy_cost(Fixed(64, 0.1, 1, 1), 2048, h, kv, d)
    assert 0 < sparse < 0.3
    assert policy_cost(Tokens(2048, 64, 1, 1), 1024, h, kv, d) == 1.0


@pytest.mark.slow
def test_bench_caches_chunks_and_shares_equivalent_policies(tmp_path):
    bench = Bench("demo", "demo", EDGES, Floor(value=0.95), tmp_path)
    # a dense-below-threshold gate and the dense policy behave the same on the 256 bucket: one key
    assert bench.key(0, Gated(512, Fixed(64, 0.1, 1, 1))) == bench.key(0, None) == "dense"
    r = bench.result(0, Fixed(64, 0.03, 0, 1), "floor")  # hopeless at 256 tokens: stops early
    assert not r.feasible and not r.complete
    used = bench.evaluations
    again = Bench("demo", "demo", EDGES, Floor(value=0.95), tmp_path)
    r2 = again.result(0, Fixed(64, 0.03, 0, 1), "floor")
    assert again.evaluations == 0 and r2.correct == r.correct
    assert used >= 2  # the dense baseline and at least one sparse chunk


def test_bench_judges_a_choice_as_the_search_does():
    """With the search's split, a bench result is feasible only as a search candidate is: met on the search part
    and held under the confirmation rule; without it, as the gate judges the bucket whole."""
    from sparsetune.evaluate.bench import BucketResult
    from sparsetune.profile.profile import Floor

    n = 300
    confirm = [i % 10 == 0 for i in range(n)]  # 30 confirmation samples
    sparse = [not (c and i % 30 == 0) for i, c in enumerate(confirm)]  # loses 10 of the 30 fresh ones only
    r = BucketResult(edge=512, tasks=["t"] * n, correct=sparse, dense=[True] * n, cost=0.5, measured_sparsity=0.5,
                     seconds=0.0, floor=Floor(value=0.95, confidence=None), confirm=None)
    assert r.feasible  # 290 of 300 = 0.967 >= 0.95: the whole bucket holds
    judged = BucketResult(**{**r.__dict__, "confirm": confirm})
    assert not judged.feasible  # 20 of 30 fresh = 0.67: the search would reject it on confirmation
