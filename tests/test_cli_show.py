"""The CLI shell: `sparsetune show` as tables and JSON, help, placeholders and error mapping."""

from __future__ import annotations

import json

import pytest

import sparsetune
from sparsetune import DeviceSection, KernelConfig, Profile, load_profile


def test_show_renders_buckets_tasks_and_devices(run_cli, example_path):
    result = run_cli("show", example_path)
    assert result.code == 0, result.err
    assert result.err == ""
    out = result.out
    for text in ("1-512", "513-1024", "1025-2048+", "dense", "keep 0.45", "keep 0.25", "0.970", "0.950", "192",
                 "52%", "0.55x", "no sparse budget met the floor", "accuracy per task", "vt",
                 "cpu (cost-model)", "BLOCK_N", "exact_match >= 0.95 x dense", "90% lower confidence bound",
                 "demo: 4 layers, 4 heads (2 kv), head_dim 32"):
        assert text in out, text


def test_show_measured_device_with_speedup(run_cli, example_path, tmp_path):
    profile = load_profile(example_path).with_device("NVIDIA H100 80GB HBM3", DeviceSection(
        timing="measured", kernels={2048: KernelConfig(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=3,
                                                       ms=0.2, dense_ms=0.5, selection_ms=0.05)}))
    path = tmp_path / "timed.yaml"
    profile.save(path)
    result = run_cli("show", path)
    assert result.code == 0, result.err
    assert "NVIDIA H100 80GB HBM3 (measured)" in result.out
    assert "0.200" in result.out and "0.500" in result.out and "2.00x" in result.out


def test_show_json_is_the_profile(run_cli, example_path):
    result = run_cli("show", "--json", example_path)
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["buckets"][1]["budget"] == {"method": "topk", "block_size": 64, "keep": 0.45, "sink": 1, "local": 1,
                                            "estimator": "pooled", "dense_layers": 0, "dense_tail": 0}  # schema 2
    assert list(data["devices"]["cpu"]["kernels"]) == ["1024", "2048"]
    assert Profile.from_dict(data) == load_profile(example_path)


def test_help_lists_every_command(run_cli):
    result = run_cli("--help")
    assert result.code == 0
    for command in ("search", "apply", "show", "workload", "eval"):
        assert command in result.out
    assert run_cli("--version").out.startswith("sparsetune ")


def test_usage_errors_exit_2(run_cli):
    assert run_cli("show").code == 2  # missing PROFILE
    assert run_cli("show", "--bogus", "x.yaml").code == 2
    assert run_cli("frobnicate").code == 2


def test_real_command_shows_example(run_cli_process, example_path):
    table = run_cli_process("show", example_path)
    assert table.code == 0 and "keep 0.45" in table.out, table.err
    as_json = run_cli_process("show", "--json", example_path)
    assert as_json.code == 0 and json.loads(as_json.out)["schema"] == sparsetune.PROFILE_SCHEMA_VERSION
    missing = run_cli_process("show", "missing.yaml")
    assert missing.code == 2 and missing.err == "error: missing.yaml: no such file\n"
