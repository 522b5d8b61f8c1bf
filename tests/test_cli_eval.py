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
    result = run_cli("eval", "--model", "demo", "--workload", _per_length(tmp_path), "--profile", example_path,
                     "--force")  # the example was tuned for another config: refused without --force
    assert result.code == 0, result.err
    assert str(example_path) in result.out  # the title names the profile
    # Rows start with their length range; cells are separated by spaces (no cell holds one).
    cells = [line.split() for line in result.out.splitlines() if re.match(r"\d+-\d+\+? ", line)]
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


def test_eval_takes_at_most_one_policy_and_no_empty_budget(tmp_path, run_cli, example_path):
    result = run_cli("eval", "--model", "demo", "--workload", _few(tmp_path), "--budget", "keep=0.5",
                     "--profile", example_path)
    assert result.code == 2 and "at most one of --profile and --budget" in result.err
    for empty in ("", " "):
        result = run_cli("eval", "--model", "demo", "--workload", _few(tmp_path), "--budget", empty)
        lines = result.err.strip().splitlines()
        assert result.code == 2 and len(lines) == 1 and lines[0].startswith("error: --budget: empty"), result.err
        assert "Traceback" not in result.err


def test_eval_without_a_policy_evaluates_dense_and_says_so(tmp_path, run_cli):
    result = run_cli("eval", "--model", "demo", "--workload", _few(tmp_path), "--json")
    assert result.code == 0, result.err
    assert "evaluating dense attention (the baseline)" in result.err
    [row] = [r for r in json.loads(result.out) if r["task"] == "all"] or json.loads(result.out)
    assert row["n"] == 4 and row["sparse"] == row["dense"] and row["sparsity"] == 0
    table = run_cli("eval", "--model", "demo", "--workload", _few(tmp_path))
    assert table.code == 0 and "dense (the baseline)" in table.out


def test_eval_buckets_auto_means_what_it_means_in_search(tmp_path, run_cli):
    from conftest import demo_slice
    from sparsetune.profile.buckets import MIN_PER_BUCKET, auto_edges

    # 4 per task at 256 and 512 tokens: 32 samples, enough for two automatic buckets (dense alone: quick).
    workload = demo_slice(tmp_path, lengths=(256, 512), per_task=4)
    assert auto_edges([256] * 16 + [512] * 16, min_per_bucket=MIN_PER_BUCKET) == [256, 512]
    auto = run_cli("eval", "-m", "demo", "-w", workload, "--buckets", "auto", "--json")
    plain = run_cli("eval", "-m", "demo", "-w", workload, "--json")
    assert auto.code == plain.code == 0, auto.err + plain.err
    spans = lambda out: sorted({(r["first"], r["last"]) for r in json.loads(out)})  # noqa: E731
    assert spans(auto.out) == [(256, 256), (257, 512)]
    assert spans(plain.out) == [(256, 512)]  # no --buckets and no profile: one bucket


def test_auto_buckets_split_where_search_would(monkeypatch):
    import sys

    from sparsetune.evaluate.compare import AUTO, compare
    from sparsetune.evaluate.decode import EvalResult

    compare_mod = sys.modules["sparsetune.evaluate.compare"]  # the package re-exports `compare`, the function
    parts = []

    def fake_evaluate(loaded, part, policy, batch_size, on_batch=None):
        parts.append(sorted({s.length for s in part}))
        return EvalResult(correct=[True] * len(part), per_task={})

    class S:
        def __init__(self, n):
            self.length, self.task = n, "t"

    monkeypatch.setattr(compare_mod, "evaluate", fake_evaluate)
    rows = compare(None, [S(256)] * 20 + [S(512)] * 20, None, AUTO)
    assert [(r.first, r.last) for r in rows] == [(256, 256), (257, 512)]
    assert parts == [[256], [512]]  # dense alone: one run per bucket


def test_eval_knows_the_builtin_heldout_workload(run_cli, monkeypatch):
    import sparsetune.evaluate as evaluate_pkg

    got = {}

    def fake_compare(loaded, samples, policy, edges, **kwargs):
        got["n"] = len(samples)
        return []

    monkeypatch.setattr(evaluate_pkg, "compare", fake_compare)  # the name resolves; the evaluation is not the test
    result = run_cli("eval", "-m", "demo", "-w", "demo-heldout", "--budget", "keep=0.5", "--json")
    assert result.code == 0, result.err
    assert got["n"] == 640


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


def test_eval_shows_progress_per_batch_as_plain_lines_when_piped(tmp_path, run_cli, monkeypatch):
    from sparsetune.cli.progress import StepProgress

    monkeypatch.setattr(StepProgress.__init__, "__defaults__", (0.0, 0.0))  # say everything at once
    result = run_cli("eval", "-m", "demo", "-w", _few(tmp_path, 12), "--budget", "keep=0.5", "--json")
    assert result.code == 0, result.err
    lines = [line for line in result.err.splitlines() if " evaluate " in line]
    # 12 samples, dense then sparse, in batches of 8: one line per batch, counting samples (both runs done).
    assert [line.split(" evaluate ")[1].split(" samples")[0] for line in lines] == ["4/12", "6/12", "10/12", "12/12"]
    assert result.err.strip().splitlines()[-1].endswith(" s") and "done in" in result.err
    json.loads(result.out)  # stdout keeps the results alone
