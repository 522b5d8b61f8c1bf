"""The gate and the CLI do not pass silently: meaningless checks are refused or named, nothing is written on a
refusal, one overwrite rule, one label (issue: "Trust the gate"). Each test failed on the main before it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import REPO, demo_slice

DEMO_PROFILE = REPO / "profiles" / "demo.yaml"
SMOLLM2_PROFILE = REPO / "profiles" / "smollm2.yaml"


# 1. eval refuses a profile tuned for another model, as apply does
def test_eval_refuses_a_profile_of_another_model(run_cli):
    r = run_cli("eval", "--model", "demo", "--workload", "demo-heldout", "--profile", SMOLLM2_PROFILE)
    assert r.code == 2 and "config_sha256" in r.err and "--force" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1


# 2. a workload in a language the tokenizer does not know
def test_answers_of_unknown_tokens_are_refused_and_unreadable_prompts_warned(tmp_path, run_cli):
    english = "The quick brown fox jumps over the lazy dog and then it goes home to sleep for a while"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": english, "answer": "Yes indeed"}) + "\n")
    r = run_cli("eval", "--model", "demo", "--workload", bad)
    assert r.code == 2 and "unknown token" in r.err and "100%" in r.err, r.err
    odd = tmp_path / "odd.jsonl"
    odd.write_text(json.dumps({"prompt": english, "answer": "the"}) + "\n")
    r = run_cli("eval", "--model", "demo", "--workload", odd, "--json")
    assert r.code == 0 and "warning:" in r.err and "unknown token" in r.err, r.err


# 3. a gate that leaves sparse buckets untested names them; --require-all fails it
def test_untested_sparse_buckets_are_named_and_require_all_fails(tmp_path, run_cli):
    held = demo_slice(tmp_path, lengths=(256,), per_task=2)
    r = run_cli("apply", DEMO_PROFILE, "--model", "demo", "--check", "--workload", held, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    named = [w for w in report["warnings"] if w.startswith("untested")]
    assert named and all(label in named[0] for label in ("257-512", "513-1024", "1025-2048+")), report["warnings"]
    r = run_cli("apply", DEMO_PROFILE, "--model", "demo", "--check", "--workload", held, "--require-all",
                "--json")
    assert r.code == 1, r.err


# 4. a budget without keep or tau is not silently dense
def test_a_budget_without_keep_or_tau_exits_2(run_cli):
    r = run_cli("eval", "--model", "demo", "--workload", "demo", "--budget", "block=64")
    assert r.code == 2 and "keep=" in r.err and "tau=" in r.err, r.err


# 5. one overwrite rule: a file that is not ours of the same kind is refused without --force
@pytest.mark.parametrize("command", [
    ["workload", "synth", "--model", "demo", "--lengths", "64", "--per-length", "1"],
    ["collect", "--storage", "journal:///nonexistent.journal"],
])
def test_outputs_refuse_to_replace_a_file_that_is_not_theirs(tmp_path, run_cli, command):
    target = tmp_path / "README.md"
    target.write_text("# not a profile, not a workload\n")
    r = run_cli(*command, "-o", target)
    assert r.code == 2 and "--force" in r.err, r.err
    assert target.read_text() == "# not a profile, not a workload\n"


def test_synth_replaces_its_own_workload_and_anything_with_force(tmp_path, run_cli):
    out = tmp_path / "w.jsonl"
    assert run_cli("workload", "synth", "--model", "demo", "--lengths", "64", "--per-length", "1", "-o", out).code == 0
    assert run_cli("workload", "synth", "--model", "demo", "--lengths", "64", "--per-length", "1", "-o", out).code == 0
    out.write_text("not a workload\n")
    assert run_cli("workload", "synth", "--model", "demo", "--lengths", "64", "--per-length", "1", "-o", out,
                   "--force").code == 0
    assert json.loads(out.read_text().splitlines()[0])["prompt"]


# 6. a refusal leaves the storage as it was
@pytest.mark.slow
def test_refused_searches_create_and_append_nothing(tmp_path, run_cli):
    work = demo_slice(tmp_path, lengths=(256,), per_task=1)
    out = tmp_path / "p.yaml"
    journal = tmp_path / "p.optuna.journal"
    r = run_cli("search", "--model", "demo", "--workload", work, "--buckets", "64", "-o", out)
    assert r.code == 2 and not journal.exists(), r.err
    r = run_cli("search", "--model", "demo", "--workload", work, "--buckets", "256", "--trials", "1",
                "--confidence", "0", "-o", out)
    assert r.code == 0, r.err
    before = journal.read_bytes()
    r = run_cli("search", "--model", "demo", "--workload", work, "--buckets", "256", "--trials", "1",
                "--confidence", "0", "--floor", "0.9", "-o", out)
    assert r.code == 2 and "another" in r.err, r.err
    assert journal.read_bytes() == before


# 8. one label and counts of samples
def test_the_gate_labels_buckets_as_the_profile_does(tmp_path, run_cli):
    from sparsetune import load_profile

    held = demo_slice(tmp_path, lengths=(256,), per_task=1)
    r = run_cli("apply", DEMO_PROFILE, "--model", "demo", "--check", "--workload", held, "--json")
    labels = [b["label"] for b in json.loads(r.out)["check"]["buckets"]]
    assert labels == [s.label for s in load_profile(DEMO_PROFILE).spans]


def test_progress_counts_samples_not_passes():
    from sparsetune.evaluate.progress import per_batch

    seen = []
    on_batch = per_batch(lambda stage, done, total: seen.append((done, total)), "evaluate", 640, passes=2)
    for _ in range(160):
        on_batch(8)  # 640 dense + 640 sparse runs
    assert seen[-1] == (640, 640) and max(d for d, _ in seen) == 640


# 9. 80 columns, piped: header fields stay whole, the floor is a sentence
def test_show_wraps_at_field_boundaries_in_80_columns(run_cli_process):
    import os

    r = run_cli_process("show", DEMO_PROFILE, env={**os.environ, "COLUMNS": "80"})
    lines = r.out.splitlines()
    assert r.code == 0 and max(map(len, lines)) <= 80
    assert any("created 2026-12-07T19:36:15Z" in line for line in lines), r.out  # not broken inside the value
    floor = " ".join(line[10:].strip() for line in lines[next(i for i, x in enumerate(lines) if x.startswith("floor")):][:2])
    assert "in every bucket, judged on its 90% lower confidence bound; no task may fall below it" in floor, floor


# 11. help and errors name every accepted model form; eval and apply take --threads
def test_model_forms_are_named_in_help_and_error(run_cli):
    for command in ("search", "eval", "apply"):
        r = run_cli(command, "--help")
        assert "smollm2" in r.out and ".gguf" in r.out, (command, r.out)
    r = run_cli("eval", "--model", "/no/such/model", "--workload", "demo")
    assert r.code == 2 and "smollm2" in r.err and ".gguf" in r.err, r.err


def test_confidence_help_says_what_0_means(run_cli):
    text = " ".join(run_cli("search", "--help").out.replace("│", " ").split())
    assert "0 judges the point estimate" in text, text


def test_threads_are_checked_before_anything_loads(run_cli):
    for command in ("eval", "apply"):
        assert "--threads" in run_cli(command, "--help").out
    assert run_cli("eval", "--model", "demo", "--workload", "demo", "--threads", "0").code == 2
    r = run_cli("apply", DEMO_PROFILE, "--model", "demo", "--check", "--workload", "demo-heldout", "--threads", "0")
    assert r.code == 2 and "threads" in r.err, r.err


def test_collect_without_study_names_the_studies_it_found(tmp_path, run_cli):
    import optuna

    journal = tmp_path / "j.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    optuna.create_study(study_name="mine:512", storage=storage)
    r = run_cli("collect", "--status", "--storage", str(journal), "-o", tmp_path / "other.yaml")
    assert r.code == 2 and "'mine'" in r.err and "--study" in r.err, r.err


# 12. arguments are checked before a model loads; an all-dense profile's gate loads nothing
def test_eval_refuses_a_bad_confidence_before_loading(run_cli):
    r = run_cli("eval", "--model", "demo", "--workload", "/no/such/workload.jsonl", "--confidence", "1.5")
    assert r.code == 2 and "confidence" in r.err, r.err


def test_an_all_dense_profile_gate_loads_nothing_and_says_so(tmp_path, run_cli, example_dict):
    example_dict["buckets"] = [{"max_len": b["max_len"], "dense": True, "reason": "nothing held"}
                               for b in example_dict["buckets"]]
    example_dict.pop("devices", None)
    path = tmp_path / "dense.yaml"
    path.write_text(yaml.safe_dump(example_dict))
    from sparsetune import load_profile

    profile = load_profile(path)
    assert all(b.dense for b in profile.buckets)
    # the workload does not exist: the gate must not even read it
    r = run_cli("apply", path, "--model", "demo", "--check", "--workload", "/no/such.jsonl", "--force", "--json")
    assert r.code == 0, r.err
    assert any("nothing to check" in w for w in json.loads(r.out)["warnings"])



# A refusal comes before torch and transformers are imported (seconds), not only before the weights load.
_REFUSED_EARLY = [
    (["search", "--model", "demo", "--workload", "demo", "--floor", "1.5"], "floor"),
    (["search", "--model", "/no/such/model", "--workload", "demo"], "model"),
    (["search", "--model", "demo", "--workload", "demo", "--confirm", "/no/such.jsonl"], "no such file"),
    (["eval", "--model", "demo", "--workload", "demo", "--confidence", "1.5"], "confidence"),
    (["eval", "--model", "demo", "--workload", "demo", "--budget", "block=64"], "keep="),
    (["eval", "--model", "demo", "--workload", "/no/such.jsonl"], "no such file"),
    (["apply", str(DEMO_PROFILE), "--model", "demo", "--check", "--workload", "/no/such.jsonl"], "no such file"),
]


@pytest.mark.parametrize("args,said", _REFUSED_EARLY, ids=[" ".join(a[:1] + a[-2:]) for a, _ in _REFUSED_EARLY])
def test_bad_arguments_are_refused_before_torch_is_imported(args, said):
    import subprocess
    import sys

    script = ("import sys\nfrom sparsetune.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit as e:\n"
              "    print('exit', e.code, 'torch' in sys.modules, 'transformers' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert said in proc.stderr, proc.stderr
    assert proc.stdout.split() == ["exit", "2", "False", "False"], (proc.stdout, proc.stderr)
