"""Many `sparsetune search` workers on one PostgreSQL-backed study, and a worker killed mid-trial.

The PostgreSQL tests need a server: set SPARSETUNE_TEST_POSTGRES to a URL such as
``postgresql://postgres@127.0.0.1:5432/sparsetune`` (`.ci/run` starts a throwaway one through
`.ci/postgres.sh` and always sets it). Each test gets a database of its own on that server.
Without the variable they skip; with it they never do.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import uuid
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from sparsetune import load_profile
from sparsetune.profile import Floor, ModelInfo, WorkloadInfo
from sparsetune.search import BucketMeta, open_storage, profile_from_storage
from sparsetune.search.study import (TrialCounts, counts_as_trial, is_dense_trial, is_evaluating, is_skipped,
                                     pruned_reason, reused_from, seed_of, worker_of)

from conftest import REPO, demo_slice as _slice, sparsetune_command

PG_ENV = "SPARSETUNE_TEST_POSTGRES"
# Short heartbeat for the tests: a killed worker's trial is failed 3 s after its last beat.
WORKER_ENV = {"SPARSETUNE_HEARTBEAT_S": "1", "SPARSETUNE_GRACE_S": "3", "SPARSETUNE_DEBUG": "1",
              "OMP_NUM_THREADS": "1"}  # two workers share two cores




@pytest.fixture
def pg_url(request):
    """A fresh, empty database on the test server, dropped afterwards."""
    base = os.environ.get(PG_ENV, "").strip()
    if not base:
        pytest.skip(f"{PG_ENV} is not set (.ci/run starts a server and sets it)")
    import psycopg2

    server, _, _ = base.rpartition("/")
    name = f"st_{request.node.name[:30].lower()}_{uuid.uuid4().hex[:8]}".replace("-", "_").replace("[", "_")
    admin = psycopg2.connect(f"{server}/postgres")
    admin.autocommit = True
    try:
        admin.cursor().execute(f'CREATE DATABASE "{name}"')
        yield f"{server}/{name}"
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


def _storage(url: str) -> optuna.storages.BaseStorage:
    return open_storage(url, "unused")


def _start(url: str, study: str, workload: Path, out: Path, trials: int, edges: str) -> subprocess.Popen:
    out.parent.mkdir(parents=True, exist_ok=True)
    args = ["search", "--model", "demo", "--workload", workload, "--buckets", edges, "--trials", trials,
            "--storage", url, "--study", study, "-o", out, "--json"]
    log = open(out.with_suffix(".log"), "w")
    return subprocess.Popen([*sparsetune_command(), *map(str, args)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=log, text=True, env={**os.environ, **WORKER_ENV})


def _finish(proc: subprocess.Popen, out: Path, timeout: float = 300) -> dict:
    stdout, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out.with_suffix(".log").read_text()[-3000:]
    return json.loads(stdout)


def _worker(proc: subprocess.Popen) -> str:
    return f"{socket.gethostname()}:{proc.pid}"


def _overlap(a, b) -> bool:
    return a.datetime_start < b.datetime_complete and b.datetime_start < a.datetime_complete


def _check_bucket(study: optuna.Study, trials: int) -> list:
    """The invariants of a finished bucket; returns its complete trials."""
    all_trials = study.get_trials()
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    counts = TrialCounts.of(all_trials)
    # Exactly `trials` evaluated, unless the study ran out of attempts first (pruned and reused ones do not count).
    assert counts.evaluated == trials or (counts.evaluated < trials and counts.finished(trials)), \
        [(t.number, t.state.name, is_skipped(t), reused_from(t)) for t in all_trials]
    assert sum(is_dense_trial(t) for t in complete) == 1  # one dense baseline, computed once
    assert not [t for t in all_trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    sparse = [t for t in complete if not is_dense_trial(t) and counts_as_trial(t)]
    budgets = [tuple(sorted(t.params.items())) for t in sparse]
    assert len(set(budgets)) == len(budgets), "two trials evaluated the same budget"
    for a in sparse:  # trials that ran at the same time were drawn with different seeds
        for b in sparse:
            if a.number < b.number and _overlap(a, b) and "failed_trial" not in b.system_attrs | a.system_attrs:
                assert seed_of(a) != seed_of(b), (a.number, b.number)
    return complete


# ---------------------------------------------------------------------------------------- PostgreSQL


@pytest.mark.slow
def test_two_workers_split_one_study_and_write_the_same_profile(tmp_path, pg_url, run_cli):
    # 48 samples at 256 and 48 at 512 tokens, 10 trials each: enough work that the worker that
    # starts second (model load on a loaded machine) still finds trials left to take, now that a
    # missing trial stops after its first forward batch.
    workload = _slice(tmp_path, per_task=12)
    outs = [tmp_path / f"w{i}" / "p.yaml" for i in range(2)]
    procs = [_start(pg_url, "duo", workload, out, 10, "256,512") for out in outs]
    reports = [_finish(p, out) for p, out in zip(procs, outs)]

    storage = _storage(pg_url)
    workers: dict[str, int] = {}
    evaluated = []
    for edge in (256, 512):
        study = optuna.load_study(study_name=f"duo:{edge}", storage=storage)
        for t in _check_bucket(study, 10):
            if counts_as_trial(t):
                workers[worker_of(t)] = workers.get(worker_of(t), 0) + 1
        evaluated.append(TrialCounts.of(study.get_trials()).evaluated)
    assert set(workers) == {_worker(p) for p in procs}, workers  # both workers ran trials
    assert sum(workers.values()) == sum(evaluated)

    # Each worker waited for the other's last trial, so both wrote the profile of the whole storage.
    rebuilt = profile_from_storage(storage, "duo")
    for out, report in zip(outs, reports):
        assert load_profile(out) == rebuilt
        assert report["profile"] == json.loads(rebuilt.to_json())

    # `collect` writes the same profile from the storage, running nothing.
    r = subprocess.run([*sparsetune_command(), "collect", "--storage", pg_url, "--study", "duo",
                        "-o", str(tmp_path / "c.yaml"), "--json"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert load_profile(tmp_path / "c.yaml") == rebuilt
    assert (tmp_path / "c.png").stat().st_size > 10_000
    assert [(b["max_len"], b["complete"], b["target"], b["running"], b["finished"]) for b in report["buckets"]] == \
        [(256, evaluated[0], 10, 0, True), (512, evaluated[1], 10, 0, True)]
    assert sum(len(optuna.load_study(study_name=f"duo:{e}", storage=storage).trials) for e in (256, 512)) == \
        sum(b["complete"] + b["reused"] + b["pruned"] + b["failed"] for b in report["buckets"])  # collect added no trial
    # Each bucket's "best" is what the profile holds (a confirmed choice), not a candidate that failed confirmation.
    assert [b["best_cost"] for b in report["buckets"]] == pytest.approx([b.cost for b in rebuilt.buckets], abs=1e-6)
    status = run_cli("collect", "--storage", pg_url, "--study", "duo", "--status", "--json", "-o", tmp_path / "s.yaml")
    assert status.code == 0 and json.loads(status.out)["buckets"] == report["buckets"]
    assert not (tmp_path / "s.yaml").exists()


@pytest.mark.slow
def test_a_killed_workers_trial_is_retried_and_nothing_finished_is_lost(tmp_path, pg_url):
    # One bucket, both workers on the same study; trials long enough (32 samples) and numerous
    # enough that the victim is caught mid-trial even on a loaded machine.
    workload = _slice(tmp_path, lengths=(512,), per_task=8)
    outs = [tmp_path / "victim" / "p.yaml", tmp_path / "survivor" / "p.yaml"]
    victim, survivor = procs = [_start(pg_url, "kill", workload, out, 12, "512") for out in outs]
    storage = _storage(pg_url)
    killed = None
    deadline = time.monotonic() + 240
    try:
        while killed is None and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.05)
            try:
                study = optuna.load_study(study_name="kill:512", storage=storage)
            except KeyError:
                continue
            trials = study.get_trials(deepcopy=False)
            # Mid-trial: the victim measures a sparse budget (not skipped, pruned or reused), after
            # finishing a trial of its own.
            mine = [t for t in trials if worker_of(t) == _worker(victim)]
            running = [t for t in mine if t.state == TrialState.RUNNING and is_evaluating(t)]
            if running and any(t.state == TrialState.COMPLETE for t in mine):
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                killed = running[0].number
    finally:
        if killed is None:
            for p in procs:
                p.kill()
    assert killed is not None, "never saw the victim mid-trial"
    study = optuna.load_study(study_name="kill:512", storage=storage)
    assert study.trials[killed].state == TrialState.RUNNING, "the trial finished before the kill landed"
    before = {t.number: (t.value, t.datetime_complete, worker_of(t))
              for t in study.get_trials(states=(TrialState.COMPLETE,))}

    report = _finish(survivor, outs[1])
    trials = study.get_trials()
    complete = _check_bucket(study, 12)
    assert trials[killed].state == TrialState.FAIL  # failed by the heartbeat after the grace period
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retries = [t for t in trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed]
        assert len(retries) == 1
        retry = retries[0]
        assert RetryHeartbeatStaleTrialCallback.retry_history(retry) == [killed]
    assert retry.params == trials[killed].params  # the same budget
    # Settled as any trial with that budget would be by now: measured, or pruned for a stated reason (a
    # cheaper budget was confirmed, or one keeping as many blocks missed) while the victim was dead.
    assert retry.state == TrialState.COMPLETE or (retry.state == TrialState.PRUNED and pruned_reason(retry))
    assert worker_of(retry) == _worker(survivor)
    now = {t.number: (t.value, t.datetime_complete, worker_of(t)) for t in complete}
    assert {n: now.get(n) for n in before} == before  # every finished trial kept as it was
    assert any(w == _worker(victim) for _, _, w in before.values())
    rebuilt = profile_from_storage(storage, "kill")
    assert load_profile(outs[1]) == rebuilt and report["profile"] == json.loads(rebuilt.to_json())
    assert not outs[0].exists()


# ---------------------------------------------------------------------------------------- one machine


@pytest.mark.slow
def test_local_workers_share_one_journal_and_one_profile_is_written(tmp_path, run_cli):
    # `--workers 2` is the same two workers on a local journal: both run trials, the invariants of a shared
    # study hold, and the profile (written by the calling process alone) is the storage's. 48 samples per
    # bucket: with fewer, the first worker settled every trial before the helper had loaded the model.
    workload = _slice(tmp_path, per_task=12)
    out = tmp_path / "p.yaml"
    r = run_cli("search", "--model", "demo", "--workload", workload, "--buckets", "256,512", "--trials", 10,
                "--study", "local", "-o", out, "--workers", 2, "--json")
    assert r.code == 0, r.err
    storage = open_storage(None, out.with_suffix(".optuna.journal"))
    workers = set()
    for edge in (256, 512):
        study = optuna.load_study(study_name=f"local:{edge}", storage=storage)
        workers |= {worker_of(t) for t in _check_bucket(study, 10) if counts_as_trial(t)}
    assert len(workers) == 2, workers  # the helper ran trials too
    assert load_profile(out) == profile_from_storage(storage, "local")
    assert json.loads(r.out)["profile"] == json.loads(profile_from_storage(storage, "local").to_json())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.optuna.journal", "p.png", "p.yaml", "w.jsonl"]


def test_workers_must_be_positive(tmp_path, run_cli):
    r = run_cli("search", "--model", "demo", "--workload", "demo", "--workers", 0, "-o", tmp_path / "p.yaml")
    assert r.code == 2 and "workers" in r.err and not list(tmp_path.iterdir()), r.err


# ---------------------------------------------------------------------------------------- CLI, no server


def test_an_unreachable_server_is_one_line(tmp_path, run_cli):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_cli("collect", "--storage", f"postgresql://me:secret@127.0.0.1:{port}/x", "--study", "s",
                     "-o", tmp_path / "p.yaml")
    assert result.code == 2
    assert result.err.startswith("error: storage: cannot open postgresql") and "secret" not in result.err
    assert len(result.err.strip().splitlines()) == 1


def _bucket_study(tmp_path, n: int, edges: list[int], **meta) -> optuna.Study:
    """The first bucket's study `s:256` in a journal at tmp_path/s.journal, with its meta (`n` search samples of
    task "t"; `meta` overrides fields) and no trials."""
    storage = open_storage(str(tmp_path / "s.journal"), "unused")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s:256", storage=storage)
    fields = dict(
        identity={}, model=ModelInfo(name="m", config_sha256="0" * 64, layers=1, heads=1, kv_heads=1, head_dim=16),
        workload=WorkloadInfo(name="w", sha256="0" * 64, samples=2 * n), floor=Floor(value=0.9), method="topk",
        timing="cost-model", device="cpu", index=0, first_len=1, max_len=256, n=n, rep_len=200, tasks=["t"] * n,
        edges=edges, min_len=100, trials=3, seed=0, study="s", storage=None)
    study.set_user_attr("meta", BucketMeta(**{**fields, **meta}).to_attr())
    return study


def test_status_lists_buckets_no_worker_has_reached(tmp_path, run_cli):
    study = _bucket_study(tmp_path, 2, [256, 512])
    study.add_trial(optuna.create_trial(value=1.0, user_attrs={"dense": True, "worker": "h:1"}))
    result = run_cli("collect", "--storage", tmp_path / "s.journal", "--study", "s", "--status", "--json")
    assert result.code == 0, result.err
    rows = [(b["max_len"], b["complete"], b["target"], b["baseline"], b["workers"])
            for b in json.loads(result.out)["buckets"]]
    assert rows == [(256, 1, 3, True, ["h:1"]), (512, 0, 3, False, [])]


def test_status_best_is_the_confirmed_choice_not_a_candidate_that_failed_confirmation(tmp_path, run_cli):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    study = _bucket_study(tmp_path, 20, [256], floor=Floor(value=0.95), confirm_n=10, confirm_tasks=["t"] * 10,
                          block_sizes=(64,))
    right = {"correct": "1" * 20, "accuracy": 1.0, "complete": True}
    study.add_trial(optuna.create_trial(value=1.0, user_attrs={"dense": True, **right, "confirm_correct": "1" * 10}))
    dists = {"block_size": CategoricalDistribution((64,)), "sink": IntDistribution(0, 2),
             "local": IntDistribution(1, 2), "keep": FloatDistribution(0.01, 1.0)}
    for keep in (0.3, 0.5):  # both meet the floor on the search part; the cheaper loses 5 of 10 fresh samples
        study.add_trial(optuna.create_trial(
            value=keep, params={"block_size": 64, "sink": 1, "local": 1, "keep": keep}, distributions=dists,
            user_attrs={**right, "sparsity": 1 - keep}, constraints={"floor": -0.05}))
    study.set_user_attr("confirm:1", "0000011111")
    study.set_user_attr("confirm:2", "1" * 10)
    result = run_cli("collect", "--storage", tmp_path / "s.journal", "--study", "s", "--status", "--json")
    assert result.code == 0, result.err
    assert [b["best_cost"] for b in json.loads(result.out)["buckets"]] == [0.5]


def test_collect_needs_an_existing_storage(tmp_path, run_cli):
    result = run_cli("collect", "-o", tmp_path / "p.yaml")
    assert result.code == 2 and "p.optuna.journal" in result.err and "--storage" in result.err
    empty = tmp_path / "e.journal"
    result = run_cli("collect", "--storage", empty, "--study", "s", "-o", tmp_path / "p.yaml")
    assert result.code == 2 and "no such file" in result.err and not empty.exists()  # a read creates nothing
    empty.touch()
    result = run_cli("collect", "--storage", empty, "--study", "s", "-o", tmp_path / "p.yaml")
    assert result.code == 2 and "no bucket studies" in result.err
    assert not (tmp_path / "p.yaml").exists()


def test_a_failed_helper_is_one_error_naming_its_last_line():
    from sparsetune.errors import SearchError
    from sparsetune.search.workers import helpers, threads_per_worker

    with pytest.raises(SearchError, match=r"helper 1 exited with 2: .*--bogus"):
        with helpers(["--bogus"], 1):
            pass
    assert threads_per_worker(1, None) is None and threads_per_worker(3, 5) == 5
    assert threads_per_worker(2, None) == max(1, len(os.sched_getaffinity(0)) // 2)
