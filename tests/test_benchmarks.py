"""Smoke tests of the benchmark scripts' shared pieces (benchmarks/_bench.py): policies, report splicing, the cache."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _bench as B  # noqa: E402


def test_token_budget_is_dense_up_to_its_tokens_then_keeps_tokens_over_length():
    p = B.Tokens(256, 64, 1, 1)
    assert p.lookup(256) is None and p.lookup(200) is None
    assert p.lookup(1024).keep == pytest.approx(0.25)
    assert p.lookup(2048).block_size == 64


def test_gated_and_per_bucket_policies():
    inner = B.Fixed(64, 0.25, 1, 1)
    g = B.Gated(512, inner)
    assert g.lookup(512) is None and g.lookup(513).keep == 0.25
    pb = B.PerBucket((256, 1024), (B.Fixed(64, 1.0, 0, 1), inner))
    assert pb.lookup(100) is None and pb.lookup(300).keep == 0.25 and pb.lookup(5000).keep == 0.25


def test_grid_has_one_dense_point_and_every_sparse_combination():
    pts = B.grid_points()
    assert sum(p.keep >= 1 for p in pts) == 1
    assert len(pts) == 1 + len(B.BLOCKS) * (len(B.KEEPS) - 1) * len(B.SINKS) * len(B.LOCALS)
    assert len(set(pts)) == len(pts)


def test_splice_replaces_only_its_own_block(tmp_path):
    f = tmp_path / "RESULTS.md"
    f.write_text("# Results\n\n## Distributed search\nkeep me\n", encoding="utf-8")
    B.splice(f, "x", "## Mine\nv1")
    B.splice(f, "x", "## Mine\nv2")
    text = f.read_text(encoding="utf-8")
    assert "keep me" in text and "v2" in text and "v1" not in text and text.count("## Mine") == 1
    r = tmp_path / "README.md"
    r.write_text("# P\n\n## Usage\nu\n\n## Development\nd\n", encoding="utf-8")
    B.splice(r, "y", "## Why\nw", header="", before="## Development")
    text = r.read_text(encoding="utf-8")
    assert text.index("## Why") < text.index("## Development") and text.index("## Usage") < text.index("## Why")


def test_relative_cost_of_dense_sparse_and_token_budgets():
    h, kv, d = 4, 2, 64
    assert B.relative_cost(None, 2048, h, kv, d) == 1.0
    sparse = B.relative_cost(B.Fixed(64, 0.1, 1, 1), 2048, h, kv, d)
    assert 0 < sparse < 0.3
    assert B.relative_cost(B.Tokens(2048, 64, 1, 1), 1024, h, kv, d) == 1.0


@pytest.mark.slow
def test_bench_caches_chunks_and_shares_equivalent_policies(tmp_path):
    bench = B.Bench("demo", "search", cache_dir=tmp_path)
    # a dense-below-threshold gate and the dense policy behave the same on the 256 bucket: one key
    assert bench.key(0, B.Gated(512, B.Fixed(64, 0.1, 1, 1))) == bench.key(0, None) == "dense"
    r = bench.result(0, B.Fixed(64, 0.03, 0, 1), "floor")  # hopeless at 256 tokens: stops early
    assert not r.feasible and not r.complete
    used = bench.evaluations
    again = B.Bench("demo", "search", cache_dir=tmp_path)
    r2 = again.result(0, B.Fixed(64, 0.03, 0, 1), "floor")
    assert again.evaluations == 0 and r2.correct == r.correct
    assert used >= 2  # the dense baseline and at least one sparse chunk
