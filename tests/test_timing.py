"""Cost model arithmetic, the measured-timing result type, and the refusal to time without CUDA."""

from __future__ import annotations

import math

import pytest
import torch

from sparsetune import Budget, SparsetuneError
from sparsetune.timing import ConfigTiming, TimingResult, attention_flops, cost_model, time_launch_configs


def test_dense_flops_are_half_the_square_at_4d_per_pair():
    est = cost_model(1024, 64, 1.0, 128, heads=8, kv_heads=2)
    assert est.dense_flops == 4 * 128 * 1024 * 1024 / 2 * 8
    assert est.dense_flops == attention_flops(1024, 128, heads=8)
    assert est.label == "cost-model"


def test_dense_density_costs_exactly_dense():
    # A dense budget skips selection, so relative is exactly 1.
    est = cost_model(4096, 64, 1.0, 64, heads=4)
    assert est.selection_flops == 0.0 and est.relative == 1.0


def test_selection_terms():
    L, bs, D, H, Hkv = 2048, 64, 64, 8, 2
    est = cost_model(L, bs, 0.25, D, heads=H, kv_heads=Hkv)
    nb = L // bs
    want = (H + Hkv) * L * D + 2 * nb * nb * D * Hkv + nb * nb * math.log2(nb) * Hkv
    assert est.selection_flops == pytest.approx(want)
    assert est.sparse_flops == pytest.approx(0.25 * est.dense_flops)
    assert est.relative == pytest.approx(0.25 + want / est.dense_flops)
    assert est.to_dict()["relative"] == est.relative


def test_relative_cost_is_monotone_in_density_and_selection_shrinks_with_length():
    costs = [cost_model(8192, 64, d, 128, heads=32, kv_heads=8).relative for d in (0.05, 0.1, 0.2, 0.5, 0.99)]
    assert costs == sorted(costs)
    short = cost_model(1024, 64, 0.1, 128, heads=32, kv_heads=8)
    long = cost_model(65536, 64, 0.1, 128, heads=32, kv_heads=8)
    assert long.selection_flops / long.dense_flops < short.selection_flops / short.dense_flops


@pytest.mark.parametrize("kwargs,match", [
    ({"seq_len": 0}, "seq_len"),
    ({"density": 1.5}, "density"),
    ({"heads": 6, "kv_heads": 4}, "multiple of kv_heads"),
])
def test_cost_model_rejects_bad_arguments(kwargs, match):
    args = {"seq_len": 1024, "block_size": 64, "density": 0.5, "head_dim": 64} | kwargs
    with pytest.raises(SparsetuneError, match=match):
        cost_model(**args)


def test_timing_result_totals():
    res = TimingResult(device="X", seq_len=4096, budget=Budget(keep=0.2).to_dict(), heads=8, kv_heads=2,
                       head_dim=64, dtype="bfloat16", batch=1, sparsity=0.8,
                       configs=[ConfigTiming({"BLOCK_M": 64}, 0.5), ConfigTiming({"BLOCK_M": 128}, None, "boom")],
                       best_config={"BLOCK_M": 64}, best_ms=0.5, selection_ms=0.1, dense_ms=1.8)
    assert res.label == "measured"
    assert res.total_ms == pytest.approx(0.6) and res.speedup == pytest.approx(3.0)
    d = res.to_dict()
    assert d["speedup"] == pytest.approx(3.0) and d["configs"][1]["error"] == "boom"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_time_launch_configs_refuses_without_cuda():
    with pytest.raises(SparsetuneError, match="needs a CUDA GPU"):
        time_launch_configs(1024, Budget(keep=0.5), heads=4, kv_heads=2, head_dim=64)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_time_launch_configs_on_gpu():
    from sparsetune.kernels.configs import configs_for

    res = time_launch_configs(2048, Budget(keep=0.3), heads=8, kv_heads=2, head_dim=64,
                              configs=configs_for(64, 64, quick=True)[:2], warmup=5, rep=20)
    assert res.best_ms is not None and res.best_ms > 0 and res.dense_ms and res.selection_ms > 0
    assert 0 < res.sparsity < 1
