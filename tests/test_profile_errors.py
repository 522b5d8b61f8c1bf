"""Malformed profiles through the real CLI: exit code 2, one line naming the file and field, no traceback."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from sparsetune import PROFILE_SCHEMA_VERSION

Mutation = Callable[[dict[str, Any]], Any]


def setp(path: str, value: Any) -> Mutation:
    """A mutation that sets a dotted path (``buckets.1.budget.keep``) to `value`."""

    def mutate(d: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = d
        for key in head:
            node = node[int(key)] if isinstance(node, list) else node[_key(key)]
        node[int(last) if isinstance(node, list) else _key(last)] = value

    return mutate


def delp(path: str) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        *head, last = path.split(".")
        node: Any = d
        for key in head:
            node = node[int(key)] if isinstance(node, list) else node[_key(key)]
        del node[int(last) if isinstance(node, list) else _key(last)]

    return mutate


def _key(key: str) -> Any:
    return int(key) if key.isdigit() else key


def swap_buckets(d: dict[str, Any]) -> None:
    d["buckets"][1], d["buckets"][2] = d["buckets"][2], d["buckets"][1]


def both(*mutations: Mutation) -> Mutation:
    def mutate(d: dict[str, Any]) -> None:
        for m in mutations:
            m(d)

    return mutate


# (id, a mutation of the example profile or the raw file text, what the message says after "FILE: ")
CASES: list[tuple[str, Mutation | str, str]] = [
    ("yaml-syntax", "schema: 1\nmodel: {name: demo\nworkload: 3\n", ":3:9: invalid YAML: while parsing a flow mapping"),
    ("yaml-duplicate-key", "schema: 1\nmethod: topk\nmethod: coverage\n", ":3:1: invalid YAML: duplicate key 'method'"),
    ("yaml-tab-indent", "schema: 1\nmodel:\n\tname: demo\n", ":3:1: invalid YAML:"),
    ("empty-file", "", "(top level): must be a mapping of profile fields, got an empty document"),
    ("top-level-list", "- schema: 1\n", "(top level): must be a mapping of profile fields, got [{'schema': 1}]"),
    ("schema-missing", delp("schema"), f"schema: required field missing (this sparsetune reads schema {PROFILE_SCHEMA_VERSION})"),
    ("schema-newer", setp("schema", PROFILE_SCHEMA_VERSION + 1), f"schema: version {PROFILE_SCHEMA_VERSION + 1} is newer than this sparsetune"),
    ("schema-unknown", setp("schema", 0), "schema: unknown version 0; this sparsetune reads 1"),
    ("schema-text", setp("schema", "1"), "schema: must be an integer, got '1'"),
    ("unknown-top-key", setp("bukets", []), "bukets: unknown field (did you mean 'buckets'?); expected one of"),
    ("unknown-budget-key", setp("buckets.1.budget.kep", 0.5), "buckets[1].budget.kep: unknown field (did you mean 'keep'?)"),
    ("missing-model-hash", delp("model.config_sha256"), "model.config_sha256: required field missing"),
    ("missing-max-len", delp("buckets.2.max_len"), "buckets[2].max_len: required field missing"),
    ("model-not-mapping", setp("model", "demo"), "model: must be a mapping of ModelInfo fields, got 'demo'"),
    ("max-len-text", setp("buckets.1.max_len", "1024"), "buckets[1].max_len: must be an integer, got '1024'"),
    ("max-len-float", setp("buckets.1.max_len", 1024.5), "buckets[1].max_len: must be an integer, got 1024.5"),
    ("dense-not-bool", setp("buckets.0.dense", "yes please"), "buckets[0].dense: must be true or false, got 'yes please'"),
    ("buckets-not-list", setp("buckets", {"max_len": 4}), "buckets: must be a list, got {'max_len': 4}"),
    ("buckets-empty", setp("buckets", []), "buckets: must not be empty"),
    ("buckets-unsorted", swap_buckets, "buckets[2].max_len: must be greater than buckets[1].max_len (2048)"),
    ("buckets-overlap", setp("buckets.2.max_len", 1024), "buckets[2].max_len: must be greater than buckets[1].max_len (1024); buckets are sorted and do not overlap, got 1024"),
    ("min-len-above-first", setp("min_len", 600), "min_len: must be <= buckets[0].max_len (512), got 600"),
    ("beyond-max-positions", setp("model.max_positions", 2000), "buckets[2].max_len: must be <= model.max_positions (2000), got 2048"),
    ("keep-above-one", setp("buckets.2.budget.keep", 1.5), "buckets[2].budget.keep: must be in (0, 1], got 1.5"),
    ("keep-zero", setp("buckets.1.budget.keep", 0), "buckets[1].budget.keep: must be in (0, 1], got 0"),
    ("keep-nan", setp("buckets.1.budget.keep", float("nan")), "buckets[1].budget.keep: must be a finite number, got nan"),
    ("tau-with-topk", setp("buckets.1.budget.tau", 0.9), "buckets[1].budget.tau: not used by method 'topk', got 0.9"),
    ("tau-out-of-range", both(setp("method", "coverage"), setp("buckets.1.budget", {"tau": 1.2, "block_size": 64}),
                              setp("buckets.2.budget", {"tau": 0.9}), setp("devices", {})),
     "buckets[1].budget.tau: must be in (0, 1], got 1.2"),
    ("method-mismatch", setp("buckets.1.budget", {"method": "coverage", "tau": 0.9}),
     "buckets[1].budget.method: must be the profile's method 'topk', got 'coverage'"),
    ("method-unknown", setp("method", "random"), "method: must be one of 'topk', 'coverage', got 'random'"),
    ("block-size-not-pow2", setp("buckets.1.budget.block_size", 48), "buckets[1].budget.block_size: must be a power of two in [16, 4096], got 48"),
    ("block-size-too-big", setp("buckets.1.budget.block_size", 8192),
     "buckets[1].budget.block_size: must be a power of two in [16, 4096], got 8192"),
    ("sink-negative", setp("buckets.1.budget.sink", -1), "buckets[1].budget.sink: must be an integer >= 0, got -1"),
    ("dense-without-reason", delp("buckets.0.reason"), "buckets[0].reason: required when dense is true"),
    ("dense-with-budget", setp("buckets.0.budget", {"keep": 0.5}), "buckets[0].budget: must be absent when dense is true"),
    ("sparse-without-budget", delp("buckets.1.budget"), "buckets[1].budget: required unless dense is true"),
    ("floor-zero", setp("floor.value", 0), "floor.value: must be in (0, 1], got 0.0"),
    ("floor-kind", setp("floor.kind", "percent"), "floor.kind: must be one of 'relative', 'absolute', got 'percent'"),
    ("confidence-one", setp("floor.confidence", 1.0), "floor.confidence: must be in [0, 1), got 1.0"),
    ("sha-not-hex", setp("workload.sha256", "xyz"), "workload.sha256: must be 64 lowercase hex digits (a sha256), got 'xyz'"),
    ("created-no-tz", setp("provenance.created", "2026-11-28T10:00:00"), "provenance.created: must be an ISO 8601 time with a timezone"),
    ("kv-heads-not-divisor", setp("model.kv_heads", 3), "model.kv_heads: must divide heads (4), got 3"),
    ("accuracy-n-zero", setp("buckets.1.accuracy.n", 0), "buckets[1].accuracy.n: must be >= 1, got 0"),
    ("per-task-wrong-type", setp("buckets.1.accuracy.per_task.vt.sparse", "high"), 'buckets[1].accuracy.per_task["vt"].sparse: must be a finite number, got \'high\''),
    ("sparsity-above-one", setp("buckets.2.sparsity", 1.5), "buckets[2].sparsity: must be in [0, 1], got 1.5"),
    ("timing-unknown", setp("devices.cpu.timing", "guessed"), 'devices["cpu"].timing: must be one of \'measured\', \'cost-model\', got \'guessed\''),
    ("block-n-not-divisor", setp("devices.cpu.kernels.1024.BLOCK_N", 128), 'devices["cpu"].kernels[1024].BLOCK_N: must divide buckets[1].budget.block_size (64), got 128'),
    ("block-m-not-pow2", setp("devices.cpu.kernels.1024.BLOCK_M", 48), 'devices["cpu"].kernels[1024].BLOCK_M: must be one of 16, 32, 64, 128, 256, got 48'),
    ("kernel-not-an-edge", setp("devices.cpu.kernels.1000", {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}),
     'devices["cpu"].kernels[1000]: must be keyed by a bucket max_len (512, 1024, 2048), got 1000'),
    ("kernel-for-dense-bucket", setp("devices.cpu.kernels.512", {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}),
     'devices["cpu"].kernels[512]: buckets[0] is dense, it has no sparse kernel config'),
    ("cost-model-with-ms", setp("devices.cpu.kernels.1024.ms", 0.2), 'devices["cpu"].kernels[1024].ms: must be absent when timing is \'cost-model\''),
    ("kernel-key-text", setp("devices.cpu.kernels", {"big": {}}), 'devices["cpu"].kernels: keys must be integers, got \'big\''),
]

assert len(CASES) >= 15 and len({c[0] for c in CASES}) == len(CASES)


def write_case(tmp_path: Path, example: dict[str, Any], case: Mutation | str) -> Path:
    path = tmp_path / "bad.yaml"
    if isinstance(case, str):
        path.write_text(case, encoding="utf-8")
    else:
        case(example)
        path.write_text(yaml.safe_dump(example, sort_keys=False), encoding="utf-8")
    return path


def check(result: Any, path: Path, expect: str) -> None:
    assert result.code == 2, (result.code, result.out, result.err)
    assert "Traceback" not in result.err + result.out
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    separator = "" if expect.startswith(":") else ": "
    assert lines[0].startswith(f"error: {path}{separator}{expect}"), lines[0]


@pytest.mark.parametrize(("case", "expect"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_malformed_profile_exits_2_with_one_line(tmp_path, example_dict, run_cli, case, expect):
    path = write_case(tmp_path, example_dict, case)
    check(run_cli("show", path), path, expect)


SUBPROCESS_CASES = ["yaml-syntax", "schema-newer", "keep-above-one", "block-n-not-divisor", "buckets-overlap"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_malformed_profile_through_real_command(tmp_path, example_dict, run_cli_process, name):
    (case, expect), = [c[1:] for c in CASES if c[0] == name]
    path = write_case(tmp_path, example_dict, case)
    check(run_cli_process("show", path), path, expect)


def test_file_problems(tmp_path, run_cli):
    missing = tmp_path / "missing.yaml"
    check(run_cli("show", missing), missing, "no such file")
    check(run_cli("show", tmp_path), tmp_path, "is a directory")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"schema: 1\n\xff\xfe\n")
    check(run_cli("show", binary), binary, "not UTF-8 text")


def test_debug_shows_traceback(tmp_path, example_dict, run_cli_process):
    path = write_case(tmp_path, example_dict, setp("buckets.2.budget.keep", 1.5))
    result = run_cli_process("show", path, env={"SPARSETUNE_DEBUG": "1"})
    assert result.code == 2
    assert "Traceback" in result.err
    assert result.err.rstrip().splitlines()[-1].startswith(f"error: {path}: buckets[2].budget.keep")


def test_json_profile_is_accepted_too(tmp_path, example_path, run_cli):
    """JSON is YAML; `show --json` output loads back (kernel keys arrive as text)."""
    result = run_cli("show", "--json", example_path)
    assert result.code == 0
    path = tmp_path / "p.json"
    path.write_text(result.out, encoding="utf-8")
    assert run_cli("show", path).code == 0
