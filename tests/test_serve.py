"""`sparsetune serve`: the real server in a subprocess on a free loopback port, real HTTP requests, no mocks.

One server (the demo deploy folder) is shared by the module; the refusals run the real command too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, sparsetune_command
from sparsetune.deploy import deploy
from sparsetune.profile import load_profile
from sparsetune.runtime.policy import PROFILE_FILE
from sparsetune.serving import ServingStats
from sparsetune.workload.models import DEMO_MODEL

pytest.importorskip("fastapi", reason="the serve extra (scripts/setup.sh installs it)")

DEMO_PROFILE = REPO / "profiles" / "demo.yaml"
# (prompt tokens with <bos>, tokens to generate): each request stays inside one bucket of the demo profile:
# dense below 254, then 254-256, 257-512, 513-1024, 1025+, and beyond the last edge.
CASES = ((60, 8), (254, 3), (380, 8), (700, 8), (1500, 8), (2600, 8))


def prompt_of(length: int) -> str:
    """The last `length - 1` words of two long demo prompts (+ <bos>: `length` tokens of the word-level
    tokenizer). The tail keeps each prompt's question; on these two the profile changes most answers."""
    rows = [json.loads(line) for line in (REPO / "sparsetune" / "demo" / "workload.jsonl").read_text().splitlines()]
    long = [row["prompt"].split() for row in rows if len(row["prompt"].split()) > 2000]
    return " ".join((long[5] + long[4])[-(length - 1):])


def request(url: str, body: bytes | dict | None = None, headers: dict | None = None) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def start_server(folder: Path, log: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """`sparsetune serve FOLDER --port 0` in a subprocess; returns it and its URL once the model is loaded."""
    proc = subprocess.Popen([*sparsetune_command(), "serve", str(folder), "--port", "0", *extra], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=log.open("w"),
                            env={**os.environ, "OMP_NUM_THREADS": "1", "SPARSETUNE_DEBUG": ""})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("sparsetune serve: http://"):
                return proc, line.split()[2]
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"the server did not start:\n{log.read_text()}")


def stop_server(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


@pytest.fixture(scope="module")
def deploy_dir(tmp_path_factory) -> Path:
    return deploy(load_profile(DEMO_PROFILE), DEMO_MODEL.resolve(), tmp_path_factory.mktemp("serve") / "deployed").folder


@pytest.fixture(scope="module")
def server(deploy_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    proc, url = start_server(deploy_dir, log)
    yield url, proc, log
    assert stop_server(proc) == 0, log.read_text()  # Ctrl-C is a clean stop


# ---------------------------------------------------------------- equivalence and visibility


def test_greedy_completions_equal_in_process_generate_in_every_bucket(server, deploy_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import sparsetune  # noqa: F401 - registers attn_implementation="sparsetune"

    url, proc, log = server
    profile = load_profile(deploy_dir / PROFILE_FILE)
    tok = AutoTokenizer.from_pretrained(deploy_dir)
    sparse = AutoModelForCausalLM.from_pretrained(deploy_dir, attn_implementation="sparsetune")
    dense = AutoModelForCausalLM.from_pretrained(deploy_dir)
    buckets, differs_from_dense = set(), 0
    for length, new in CASES:
        prompt = prompt_of(length)
        ids = tok(prompt, return_tensors="pt")
        n = ids["input_ids"].shape[1]
        assert n == length
        assert profile.bucket_index(n) == profile.bucket_index(n + new - 1)  # no edge crossed
        buckets.add(profile.bucket_index(n))
        status, body = request(f"{url}/v1/completions", {"prompt": prompt, "max_tokens": new,
                                                         "temperature": 0}, {"X-Request-ID": f"eq-{length}"})
        assert status == 200, body
        with torch.no_grad():
            want = sparse.generate(**ids, max_new_tokens=new, do_sample=False)[0, n:]
            plain = dense.generate(**ids, max_new_tokens=new, do_sample=False)[0, n:]
        differs_from_dense += not torch.equal(want, plain)
        got = body["choices"][0]["text"]
        assert body["usage"] == {"prompt_tokens": n, "completion_tokens": len(want), "total_tokens": n + len(want)}
        assert got == tok.decode(want, skip_special_tokens=True), f"{length} tokens"
        words = [t for t in want.tolist() if t not in tok.all_special_ids]  # the text drops special tokens
        assert tok(got, add_special_tokens=False)["input_ids"] == words, f"{length} tokens: token for token"
    assert buckets == {None, *range(len(profile.buckets))}  # dense, every bucket, and beyond the last edge
    assert differs_from_dense >= 2  # the profile changes answers: equality above is not dense == dense

    # Visibility: each request's record names its bucket and budget; the totals count them.
    status, stats = request(f"{url}/sparsetune/stats?recent=100")
    assert status == 200
    records = {r["request_id"]: r for r in stats["recent"]}
    labels = ServingStats(profile)
    for length, new in CASES:
        r = records[f"eq-{length}"]
        budget = profile.lookup(r["kv_len"])
        calls = 2 * new  # two layers, one forward per generated token
        assert r["prompt_tokens"] == length and r["kv_len"] == length + new - 1
        assert r["bucket"] == r["first_bucket"] == labels.label(length)
        if budget is None:
            assert r["budget"] is None and r["sparse_calls"] == 0 and r["dense_calls"] == calls
        else:
            assert r["budget"] == budget.to_dict() and r["dense_calls"] == 0 and r["sparse_calls"] == calls
            assert 0 < r["sparsity"] < 1
    by_bucket = {row["bucket"]: row for row in stats["buckets"]}
    assert sum(row["requests"] for row in stats["buckets"]) == stats["requests"] >= len(CASES)
    assert by_bucket["1-253"]["requests"] >= 1 and by_bucket["1-253"]["sparse_calls"] == 0
    assert by_bucket["1025-2048+"]["requests"] >= 2 and 0 < by_bucket["1025-2048+"]["sparsity"] < 1
    lines = [line for line in log.read_text().splitlines() if "sparsetune: request eq-" in line]
    assert len(lines) == len(CASES)
    assert "request eq-700 prompt=700 kv=707 bucket=513-1024 budget=topk keep=0.488 block=32 sink=0 local=2" in lines[3]
    assert "bucket=1-253 budget=dense sparsity=0.000" in lines[0]


def test_stats_labels_follow_the_profile_edges():
    stats = ServingStats(load_profile(DEMO_PROFILE))
    assert [stats.label(n) for n in (1, 253, 254, 256, 257, 1024, 1025, 10**6)] == [
        "1-253", "1-253", "254-256", "254-256", "257-512", "513-1024", "1025-2048+", "1025-2048+"]
    # one label everywhere: the profile's span, as `show`, the gate and the plot give it
    profile = load_profile(DEMO_PROFILE)
    assert {stats.label(n) for n in (254, 257, 1024, 1025)} == {s.label for s in profile.spans}


# ---------------------------------------------------------------- safety


@pytest.mark.parametrize("path, body, code", [
    ("/v1/completions", b"{not json", 422),
    ("/v1/completions", {"prompt": 5}, 400),
    ("/v1/completions", {"prompt": "the", "max_tokens": "many"}, 400),
    ("/v1/completions", {"prompt": "the", "max_tokens": -3}, 400),
    ("/v1/completions", {"prompt": "the", "bogus": 1}, 422),
    ("/v1/completions", {"prompt": "the", "model": "another-model"}, 400),
    ("/v1/chat/completions", {"messages": 5}, 400),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}, 400),  # no chat template
    ("/sparsetune/stats?recent=lots", None, 422),
])
def test_a_malformed_request_gets_a_4xx_and_the_server_keeps_serving(server, path, body, code):
    url, proc, _ = server
    status, answer = request(url + path, body)
    assert status == code, answer
    assert answer.get("detail")
    assert proc.poll() is None
    status, answer = request(f"{url}/v1/completions", {"prompt": "the water", "max_tokens": 2})
    assert status == 200 and answer["usage"]["completion_tokens"] == 2


def test_a_prompt_longer_than_the_model_positions_is_a_clear_400(server):
    url, proc, _ = server
    words = " ".join(["the"] * 4200)
    for stream in (False, True):
        status, answer = request(f"{url}/v1/completions", {"prompt": words, "max_tokens": 2, "stream": stream})
        assert status == 400
        assert answer["detail"].startswith("prompt: 4201 tokens, but the model has 4096 positions")
    # Room for fewer tokens than asked: generation stops at the model's last position.
    status, answer = request(f"{url}/v1/completions", {"prompt": " ".join(["the"] * 4090), "max_tokens": 20})
    assert status == 200 and answer["usage"]["total_tokens"] == 4096
    assert proc.poll() is None


# ---------------------------------------------------------------- refused at start: exit 2, one line


def _other_model(tmp_path: Path) -> Path:
    """The demo model with one config field changed: another model to the profile's config hash."""
    folder = tmp_path / "other"
    folder.mkdir()
    for entry in DEMO_MODEL.iterdir():
        if entry.name != "config.json":
            (folder / entry.name).symlink_to(entry.resolve())
    config = json.loads((DEMO_MODEL / "config.json").read_text())
    config["rms_norm_eps"] = 1e-5
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("case, message", [
    ("model-folder", "config.json: no 'sparsetune' entry, so"),
    ("other-model", "model: the profile was tuned for model 'demo'"),
    ("profile-deleted", "sparsetune_profile.yaml is missing"),
    ("no-such-folder", "model: no such folder"),
])
def test_starting_on_a_wrong_folder_exits_2_with_one_line(tmp_path, deploy_dir, case, message):
    if case == "model-folder":
        args = [DEMO_MODEL]
    elif case == "other-model":
        args = [_other_model(tmp_path), "--profile", DEMO_PROFILE]
    elif case == "profile-deleted":
        broken = deploy(load_profile(DEMO_PROFILE), DEMO_MODEL.resolve(), tmp_path / "deployed").folder
        (broken / PROFILE_FILE).unlink()
        args = [broken]
    else:
        args = [tmp_path / "missing"]
    proc = subprocess.run([*sparsetune_command(), "serve", *map(str, args), "--port", "0"], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env={**os.environ, "SPARSETUNE_DEBUG": ""})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_a_taken_port_exits_2_before_the_model_loads(deploy_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = subprocess.run([*sparsetune_command(), "serve", str(deploy_dir), "--port", str(port)],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"error: port: cannot listen on 127.0.0.1:{port}: Address already in use"


def _stream(url: str, body: dict) -> list[dict | str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [line[len("data: "):] for line in r.read().decode().splitlines() if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


def test_a_streamed_completion_is_the_same_text_in_pieces_then_usage_and_done(server):
    url, proc, _ = server
    body = {"prompt": prompt_of(700), "max_tokens": 8, "temperature": 0}
    status, whole = request(f"{url}/v1/completions", body)
    assert status == 200
    events = _stream(f"{url}/v1/completions", {**body, "stream": True, "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    chunks, usage = events[:-2], events[-2]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["choices"][0]["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    assert proc.poll() is None


def test_a_chat_request_renders_the_model_template_and_answers_as_the_rendered_prompt(tmp_path, deploy_dir):
    folder = tmp_path / "chat"
    shutil.copytree(deploy_dir, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    proc, url = start_server(folder, tmp_path / "server.log")
    try:
        question = prompt_of(380)
        status, chat = request(f"{url}/v1/chat/completions", {"messages": [{"role": "user", "content": question}],
                                                               "max_tokens": 6, "temperature": 0})
        assert status == 200, chat
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        import sparsetune  # noqa: F401 - registers attn_implementation="sparsetune"

        tok = AutoTokenizer.from_pretrained(folder)
        ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                      return_dict=True, return_tensors="pt")
        n = ids["input_ids"].shape[1]
        sparse = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sparsetune")
        with torch.no_grad():
            want = sparse.generate(**ids, max_new_tokens=6, do_sample=False)[0, n:]
        assert chat["object"] == "chat.completion" and chat["choices"][0]["message"]["role"] == "assistant"
        assert chat["choices"][0]["message"]["content"] == tok.decode(want, skip_special_tokens=True)
        assert chat["usage"] == {"prompt_tokens": n, "completion_tokens": len(want), "total_tokens": n + len(want)}
    finally:
        assert stop_server(proc) == 0
