"""`sparsetune eval` and `sparsetune workload synth` through the CLI, including bad workload files."""

from __future__ import annotations

import json
import re

import pytest

from conftest import REPO

DEMO_WORKLOAD = REPO / "sparsetune" / "demo" / "workload.jsonl"


def _few(tmp_path, n: int = 4):
    rows = [json.loads(line) for line in DEMO_WORKLOAD.read_text().splitlines()
            if len(json.loads(line)["prompt"].split()) < 300][:n]
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_json_reports_dense_sparse_and_sparsity(tmp_path, run_cli):
    result = run_cli("eval", "--model", "demo", "--workload", _few(tmp_path, 8), "--budget",
                     "keep=0.3,block=32,sink=1,local=1", "--json")
    assert result.code == 0, result.err
    rows = json.loads(result.out)
    whole = [r for r in rows if r["task"] == "all"] or rows
    assert whole[0]["n"] == 8 and 0 < whole[0]["sparsity"] < 1
    assert 0 <= whole[0]["lower_bound"] <= whole[0]["sparse"] <= 1


def _per_length(tmp_path, lengths=(256, 1024), tasks=("niah", "vt"), longest: int = 600):
    """One demo sample per task at each length (prompt + answer + BOS tokens), prompts cut to their last
    `longest` words (the query stays at the end) to keep the test quick."""
    rows, seen = [], set()
    for line in DEMO_WORKLOAD.read_text().splitlines():
        row = json.loads(line)
        key = (len(row["prompt"].split()) + len(row["answer"].split()) + 1, row["task"])
        if key[0] in lengths and key[1] in tasks and key not in seen:
            seen.add(key)
            rows.append({**row, "prompt": " ".join(row["prompt"].split()[-longest:])})
    path = tmp_path / "per_length.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_table_with_the_example_profile(tmp_path, run_cli, example_path):
    """The profile is the policy: its buckets are the table's, its dense bucket runs dense, its sparse one sparse."""
    result = run_cli("eval", "--model", "demo", "--workload", _per_length(tmp_path), "--profile", example_path)
    assert result.code == 0, result.err
    assert str(example_path) in result.out  # the title names the profile
    # Rows start with their length range; cells are separated by spaces (no cell holds one).
    cells = [line.split() for line in result.out.splitlines() if re.match(r"\d+-\d+ ", line)]
    rows = {(c[0], c[1]): dict(n=int(c[2]), dense=float(c[3]), sparse=float(c[4]), lower=float(c[5]),
                                sparsity=float(c[6].rstrip("%")) / 100) for c in cells}
    # The example's edges 512 and 1024 bucket the 256- and ~600-token samples; every task has a row.
    assert {span for span, _ in rows} == {"256-512", "513-1024"}
    assert {task for _, task in rows} == {"all", "niah", "vt"}
    short, long = rows[("256-512", "all")], rows[("513-1024", "all")]
    assert short["n"] == long["n"] == 2 and rows[("513-1024", "vt")]["n"] == 1
    # <= 512 tokens is a dense bucket in the example: nothing skipped, sparse is dense; 2 samples bound little.
    assert short["sparsity"] == 0 and short["sparse"] == short["dense"] and short["lower"] < short["sparse"]
    # 513..1024 keeps 45% of the visible blocks (plus sink and local): about half is skipped.
    assert 0.3 < long["sparsity"] < 0.7
    assert long["lower"] <= long["sparse"] <= 1


@pytest.mark.parametrize("content, message", [
    ('{"prompt": "the"\n', "few.jsonl:1: not JSON"),
    ('[1, 2]\n', "few.jsonl:1: "),
    ('{"answer": "v01"}\n', "few.jsonl:1: "),
    ('{"prompt": 3, "answer": "v01"}\n', "few.jsonl:1: "),
    ('{"prompt": "the of", "answer": "v01"}\n{"prompt": "a", "answer": 7}\n', "few.jsonl:2: "),
    ("", "empty workload"),
    ('{"prompt": "' + "the " * 5000 + '", "answer": "v01"}\n', "exceed the model's 4096 positions"),
])
def test_bad_workloads_exit_2_with_file_and_line(tmp_path, run_cli, content, message):
    path = tmp_path / "few.jsonl"
    path.write_text(content)
    result = run_cli("eval", "--model", "demo", "--workload", path, "--budget", "keep=0.5")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.err, result.err


def test_eval_needs_exactly_one_policy(tmp_path, run_cli):
    result = run_cli("eval", "--model", "demo", "--workload", _few(tmp_path))
    assert result.code == 2 and "exactly one of --profile and --budget" in result.err


def test_bad_budget_and_missing_model_exit_2(tmp_path, run_cli):
    bad = run_cli("eval", "--model", "demo", "--workload", _few(tmp_path), "--budget", "keep=1.5")
    assert bad.code == 2 and "keep: must be in (0, 1], got 1.5" in bad.err
    missing = run_cli("eval", "--model", tmp_path / "nope", "--workload", _few(tmp_path), "--budget", "keep=1")
    assert missing.code == 2 and "no such folder" in missing.err


def test_workload_synth_sizes_samples_in_model_tokens(tmp_path, run_cli):
    out = tmp_path / "synth.jsonl"
    result = run_cli("workload", "synth", "--model", "demo", "--tasks", "niah,vt,cwe", "--lengths", "128,300",
                     "--per-length", "2", "--seed", "3", "-o", out)
    assert result.code == 0, result.err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 12 and {r["task"] for r in rows} == {"niah", "vt", "cwe"}
    from sparsetune.workload.models import load_tokenizer

    tok = load_tokenizer("demo")
    lengths = sorted({len(tok(r["prompt"] + " " + r["answer"])["input_ids"]) for r in rows})
    assert lengths == [128, 300]
    again = tmp_path / "again.jsonl"
    run_cli("workload", "synth", "--model", "demo", "--tasks", "niah,vt,cwe", "--lengths", "128,300",
            "--per-length", "2", "--seed", "3", "-o", again)
    assert again.read_text() == out.read_text()  # reproducible from the seed


def test_workload_synth_rejects_unknown_tasks(tmp_path, run_cli):
    result = run_cli("workload", "synth", "--model", "demo", "--tasks", "niah,poetry", "-o", tmp_path / "x.jsonl")
    assert result.code == 2 and "tasks: must be among" in result.err
