"""Issue 15: every bad input exits 2 with one line and writes nothing; writes are atomic; Ctrl-C and
--timeout say what happened in one line and keep what was done."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import EXAMPLE, REPO, demo_slice, sparsetune_command

DEMO_MODEL = REPO / "sparsetune" / "demo" / "model"


def _one_line_exit_2(result, *words: str) -> None:
    assert result.code == 2, (result.code, result.err)
    lines = [line for line in result.err.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    assert "Traceback" not in result.err
    for word in words:
        assert word in lines[0], lines[0]


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- data safety


def test_apply_json_failed_write_keeps_the_old_table(tmp_path, run_cli, monkeypatch):
    out = tmp_path / "table.json"
    out.write_text('{"old": true}\n')
    import sparsetune._io as io

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", broken_replace)
    result = run_cli("apply", EXAMPLE, "--format", "json", "-o", out)
    _one_line_exit_2(result, str(out), "No space left")
    assert out.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["table.json"]  # no temp file left behind


@pytest.mark.parametrize("command", [
    ("apply", EXAMPLE, "--format", "json", "-o"),
    ("workload", "synth", "-m", "demo", "--lengths", "64", "--per-length", "1", "-o"),
    ("search", "-m", "demo", "-w", "demo", "--trials", "1", "-o"),
])
def test_unwritable_output_exits_2_and_writes_nothing(tmp_path, run_cli, command):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder\n")
    before = _files(tmp_path)
    result = run_cli(*command, blocker / "out.yaml")
    _one_line_exit_2(result, "not a folder")
    assert _files(tmp_path) == before


def test_output_that_is_a_directory_exits_2(tmp_path, run_cli):
    result = run_cli("apply", EXAMPLE, "--format", "json", "-o", tmp_path)
    _one_line_exit_2(result, "is a directory")


def test_synth_uses_the_umask_and_refuses_lengths_beyond_the_model(tmp_path, run_cli):
    old = os.umask(0o002)
    try:
        result = run_cli("workload", "synth", "-m", "demo", "--lengths", "64", "--per-length", "1",
                         "-o", tmp_path / "w.jsonl")
    finally:
        os.umask(old)
    assert result.code == 0, result.err
    assert (tmp_path / "w.jsonl").stat().st_mode & 0o777 == 0o664
    result = run_cli("workload", "synth", "-m", "demo", "--lengths", "100000", "-o", tmp_path / "long.jsonl")
    _one_line_exit_2(result, "100000", "positions")
    assert not (tmp_path / "long.jsonl").exists()


@pytest.mark.parametrize("extra, words", [
    (("--seed", "-1"), ("seed", "-1")),
    (("--timeout", "nan"), ("timeout",)),
    (("--threads", "0"), ("threads", "0")),
])
def test_bad_search_arguments_touch_no_storage(tmp_path, run_cli, extra, words):
    workload = demo_slice(tmp_path)
    before = _files(tmp_path)
    result = run_cli("search", "-m", "demo", "-w", workload, "-o", tmp_path / "p.yaml", *extra)
    _one_line_exit_2(result, *words)
    assert _files(tmp_path) == before  # no journal remembers a bad argument


def test_search_threads_are_set_before_the_model_loads(tmp_path, run_cli, monkeypatch):
    import torch

    import sparsetune.evaluate.inputs as inputs
    from sparsetune.errors import ModelError

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(("threads", n)))
    monkeypatch.setattr(torch, "set_num_interop_threads", lambda n: calls.append(("interop", n)))

    def no_model(name):  # the order is the test; stop before any real work
        calls.append(("load", name))
        raise ModelError("stop here")

    monkeypatch.setattr(inputs, "load_model", no_model)
    result = run_cli("search", "-m", "demo", "-w", demo_slice(tmp_path), "-o", tmp_path / "p.yaml", "--threads", "3")
    _one_line_exit_2(result, "stop here")
    assert calls == [("threads", 3), ("interop", 3), ("load", "demo")]
    calls.clear()
    run_cli("search", "-m", "demo", "-w", demo_slice(tmp_path), "-o", tmp_path / "p.yaml")
    assert calls == [("load", "demo")]  # without --threads, torch's default stands


def _profile_for(tmp_path: Path, example_dict, workload: Path) -> Path:
    """The example profile, naming the demo model's real config hash and `workload`'s hash."""
    import hashlib

    from sparsetune.workload.models import config_sha256

    example_dict["model"]["config_sha256"] = config_sha256(DEMO_MODEL / "config.json")
    example_dict["workload"]["sha256"] = hashlib.sha256(workload.read_bytes()).hexdigest()
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(example_dict))
    return path


def test_search_refuses_to_overwrite_an_unrelated_profile(tmp_path, run_cli, example_dict):
    workload = demo_slice(tmp_path)
    other = _profile_for(tmp_path, example_dict, REPO / "sparsetune" / "demo" / "heldout.jsonl")
    notes = tmp_path / "notes.yaml"
    notes.write_text("my notes: keep\n")
    before = _files(tmp_path)
    result = run_cli("search", "-m", "demo", "-w", workload, "--trials", "1", "-o", other)
    _one_line_exit_2(result, "different workload", "--force")
    assert "different model" not in result.err
    result = run_cli("search", "-m", "demo", "-w", workload, "--trials", "1", "-o", notes)
    _one_line_exit_2(result, "not a sparsetune profile", "--force")
    assert _files(tmp_path) == before


def test_overwrite_guard_lets_the_same_search_and_force_through(tmp_path, example_dict):
    from sparsetune.deploy import check_overwrite
    from sparsetune.errors import SearchError

    workload = demo_slice(tmp_path)
    same = _profile_for(tmp_path, example_dict, workload)
    check_overwrite(same, "demo", str(workload))  # the same model and workload: the same search's output
    for builtin in ("demo", "demo-heldout"):  # built-in names are read as the files they stand for
        with pytest.raises(SearchError, match="different workload"):
            check_overwrite(same, "demo", builtin)
    check_overwrite(same, "demo", "demo", force=True)


def test_status_read_creates_no_storage(tmp_path, run_cli):
    typo = tmp_path / "typo.txt"
    result = run_cli("collect", "--status", "--storage", typo)
    _one_line_exit_2(result, "no such file")
    assert not typo.exists()
    result = run_cli("collect", "--status", "--storage", f"sqlite:///{tmp_path / 'typo.db'}")
    _one_line_exit_2(result, "no such file")
    assert list(tmp_path.iterdir()) == []


def test_sqlite_in_a_missing_folder_exits_2(tmp_path, run_cli):
    workload = demo_slice(tmp_path)
    url = f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}"
    result = run_cli("search", "-m", "demo", "-w", workload, "--trials", "1", "-o", tmp_path / "p.yaml",
                     "--storage", url)
    _one_line_exit_2(result, "does not exist")
    assert not (tmp_path / "missing").exists()


# ---------------------------------------------------------------- bad input files


def test_deeply_nested_yaml_exits_2(tmp_path, run_cli):
    for name, text in (("flow.yaml", "[" * 5000 + "]" * 5000),
                       ("block.yaml", "".join(" " * i + "a:\n" for i in range(5000)))):
        path = tmp_path / name
        path.write_text(text)
        _one_line_exit_2(run_cli("show", path), "nested more than")


def test_huge_block_size_is_refused_not_exported(tmp_path, run_cli, example_dict):
    for bucket in example_dict["buckets"]:
        if bucket.get("budget"):
            bucket["budget"]["block_size"] = 2**70
    path = tmp_path / "big.yaml"
    path.write_text(yaml.safe_dump(example_dict))
    _one_line_exit_2(run_cli("show", path), "block_size")
    result = run_cli("apply", path, "--format", "json", "-o", tmp_path / "t.json")
    _one_line_exit_2(result, "block_size")
    assert not (tmp_path / "t.json").exists()


def test_lone_surrogate_and_directory_workloads_exit_2(tmp_path, run_cli):
    bad = tmp_path / "s.jsonl"
    bad.write_text('{"prompt": "hello \\ud800 there", "answer": "x"}\n')
    _one_line_exit_2(run_cli("eval", "-m", "demo", "-w", bad, "--budget", "keep=0.5"), "s.jsonl:1", "surrogate")
    folder = tmp_path / "folder"
    folder.mkdir()
    _one_line_exit_2(run_cli("eval", "-m", "demo", "-w", folder, "--budget", "keep=0.5"), "is a directory")


def test_truncated_weights_exit_2(tmp_path, run_cli):
    model = tmp_path / "model"
    shutil.copytree(DEMO_MODEL, model)
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)
    result = run_cli("eval", "-m", model, "-w", demo_slice(tmp_path), "--budget", "keep=0.5")
    _one_line_exit_2(result, "cannot load the weights", "truncated")


def test_masked_lm_folder_is_refused(tmp_path, run_cli):
    model = tmp_path / "bert"
    model.mkdir()
    (model / "config.json").write_text(
        '{"model_type": "bert", "architectures": ["BertForMaskedLM"], "hidden_size": 32, "num_attention_heads": 2,'
        ' "num_hidden_layers": 1, "intermediate_size": 64, "vocab_size": 100, "max_position_embeddings": 128}')
    result = run_cli("eval", "-m", model, "-w", demo_slice(tmp_path), "--budget", "keep=0.5")
    _one_line_exit_2(result, "not a causal LM", "masked LM")


# ---------------------------------------------------------------- interruption and time limits


def _search_process(tmp_path: Path, *extra: str) -> subprocess.Popen:
    workload = demo_slice(tmp_path, per_task=4)
    return subprocess.Popen(
        [*sparsetune_command(), "search", "-m", "demo", "-w", str(workload), "--buckets", "256,512",
         "--trials", "60", "--confidence", "0", "-o", str(tmp_path / "p.yaml"), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, "SPARSETUNE_DEBUG": ""})


def test_ctrl_c_is_one_line_within_a_second_and_keeps_trials(tmp_path):
    proc = _search_process(tmp_path, "--json")  # progress goes to stderr with --json too
    lines = []
    deadline = time.monotonic() + 180
    assert proc.stderr is not None
    while time.monotonic() < deadline:  # piped progress: plain lines as trials finish
        line = proc.stderr.readline()
        lines.append(line)
        if line.startswith("search: ") and " 3/60 " in line:
            break
    else:
        pytest.fail("no progress line:\n" + "".join(lines))
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert took < 3, took
    other = [line for line in err.splitlines() if line.strip() and not line.startswith(("search: ", "warning: "))]
    assert len(other) == 1 and other[0].startswith("interrupted: "), err
    from sparsetune.search import study_progress
    from sparsetune.search.storage import storage_for

    st, _ = storage_for(tmp_path / "p.yaml", existing=True)
    assert study_progress(st, "p")[0].complete >= 3  # nothing lost: the finished trials are in the journal


def test_timeout_exits_3_and_says_so(tmp_path):
    proc = _search_process(tmp_path, "--timeout", "2")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, err
    assert "Traceback" not in err
    assert "warning: --timeout 2 s" in err and "incomplete buckets" in err
    # However early the timeout, a profile is written, and its buckets say what they rest on.
    from sparsetune import load_profile

    profile = load_profile(tmp_path / "p.yaml")
    assert profile.provenance.trials_per_bucket == 60
    reasons = [b.reason or "" for b in profile.buckets]
    assert all(r.startswith("incomplete: ") and " of 60 trials" in r for r in reasons), reasons


# ---------------------------------------------------------------- readable by a person


@pytest.mark.parametrize("command", [(), ("search",), ("eval",), ("apply",), ("workload", "synth")])
def test_flags_show_no_value_in_help(run_cli, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "120")
    result = run_cli(*command, "--help")
    assert result.code == 0, result.err
    assert "--help" in result.out and "<bool>" not in result.out, result.out
    if command:
        assert "<int>" in result.out or "<str>" in result.out  # options that take a value still say which
