"""`sparsetune search` end to end on the demo model, on a small slice of the demo workload (CPU)."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sparsetune import load_profile
from sparsetune.search import TrialRecord, profile_from_storage
from sparsetune.errors import SearchError
from sparsetune.evaluate import load_inputs
from sparsetune.evaluate.decode import evaluate
from sparsetune.search.results import (bucket_outcomes, bucket_parts, candidates, confirmation_verdicts,
                                       dense_record, trial_budget)
from sparsetune.search.storage import default_journal, open_storage
from sparsetune.search.study import (bisects, counts_as_trial, is_dense_trial, is_feasible, meta_of,
                                     pruned_reason, reused_from)

from conftest import REPO, demo_slice as _slice, sparsetune_command





def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*sparsetune_command(), *map(str, args)], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "SPARSETUNE_DEBUG": ""}, timeout=timeout)


def _search_args(workload: Path, out: Path, trials: int = 4, *extra: str) -> list[str]:
    return ["search", "--model", "demo", "--workload", workload, "--buckets", "256,512",
            "--trials", str(trials), "-o", out, *extra]


def _journal(out: Path) -> optuna.storages.BaseStorage:
    return open_storage(None, default_journal(out))


@pytest.mark.slow
def test_search_writes_a_valid_profile_from_measured_trials(tmp_path):
    out = tmp_path / "p.yaml"
    # The point-estimate floor (--confidence 0): 8 samples per bucket cannot show one at any confidence.
    r = _run(*_search_args(_slice(tmp_path), out, 5, "--json", "--confidence", "0"))
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    profile = load_profile(out)
    assert report["profile"] == json.loads(profile.to_json())
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert profile.edges == (256, 512) and profile.model.name == "demo"
    storage = _journal(out)
    for bucket in profile.buckets:
        study = optuna.load_study(study_name=f"p:{bucket.max_len}", storage=storage)
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        # --trials counts evaluated trials; a reused one copies the measurement of one that kept the same blocks
        assert sum(counts_as_trial(t) for t in complete) == 5
        for t in complete:
            if reused_from(t) is not None:
                source = next(s for s in complete if s.number == reused_from(t))
                assert TrialRecord.of(t) == TrialRecord.of(source) and t.value == source.value
        for t in study.get_trials(states=(TrialState.PRUNED,)):  # settled unrun, with the reason
            assert pruned_reason(t)
        assert sum(is_dense_trial(t) for t in complete) == 1  # the dense baseline, once
        # Candidates: sparse trials that met the floor on every search sample; each one the walk evaluated
        # is stored with its verdict on the confirmation samples, which the search never explored.
        found = sorted(candidates(study), key=lambda c: (c.cost, c.number))
        verdicts = confirmation_verdicts(study)
        meta = meta_of(study)
        assert meta.n + meta.confirm_n == 8 and meta.confirm_n >= 1
        if bucket.dense:
            assert bucket.reason and not any(verdicts.values())
            continue
        chosen = next(c for c in found if verdicts.get(c.number))
        # The profile's budget is the cheapest candidate that held on confirmation; every cheaper one that
        # was not pruned by monotonicity failed there.
        assert bucket.budget == chosen.budget and bucket.cost == pytest.approx(chosen.cost, rel=1e-5)
        cheaper = [c for c in found if c.cost < chosen.cost]
        assert all(verdicts.get(c.number) is not True for c in cheaper)
        trial = next(t for t in complete if t.number == chosen.number)
        assert bucket.accuracy.sparse == pytest.approx(TrialRecord.of(trial).accuracy)
        assert bucket.accuracy.n == meta.n and bucket.confirmation.n == meta.confirm_n
        a, c = bucket.accuracy, bucket.confirmation
        assert c.sparse >= 0.95 * c.dense - 1e-12  # the fresh samples alone meet the (point) floor
        assert a.sparse * a.n + c.sparse * c.n >= 0.95 * (a.dense * a.n + c.dense * c.n) - 1e-9  # and all together
    # Rebuilding from storage alone gives the same profile; the outcomes (the plot's panels) give its spans.
    assert profile_from_storage(storage, "p") == profile
    assert [o.span for o in bucket_outcomes(storage, "p")] == profile.spans
    # The samples behind each bucket's stored results come back from the workload in the stored order: dense
    # on the rebuilt search part reproduces the dense trial's bits; another workload is refused.
    loaded, workload = load_inputs("demo", str(tmp_path / "w.jsonl"))
    for bucket in profile.buckets:
        study = optuna.load_study(study_name=f"p:{bucket.max_len}", storage=storage)
        meta, base = meta_of(study), dense_record(study)
        search_part, confirm_part = bucket_parts(meta, workload)
        assert [x.task for x in search_part] == meta.tasks and [x.task for x in confirm_part] == meta.confirm_tasks
        assert evaluate(loaded, search_part, None).correct == base.correct
        assert evaluate(loaded, confirm_part, None).correct == base.confirm_correct
        for t in study.get_trials(states=(TrialState.COMPLETE,)):  # and each sparse trial's own bits, in order
            record = TrialRecord.of(t)
            if record is not None and record.complete and not record.dense and reused_from(t) is None:
                assert evaluate(loaded, search_part, trial_budget(meta, t.params)).correct == record.correct
    other = dataclasses.replace(workload, sha256="0" * 64)
    with pytest.raises(SearchError, match="is not the workload the study searched"):
        bucket_parts(meta, other)


@pytest.mark.slow
def test_bisection_trials_halve_a_bracket_of_their_family(tmp_path):
    out = tmp_path / "p.yaml"
    r = _run(*_search_args(_slice(tmp_path), out, 8, "--confidence", "0"))
    assert r.returncode == 0, r.stderr
    profile, storage = load_profile(out), _journal(out)
    # Every bisection trial halves a bracket of its family: a miss (or a confirmation failure) below, a hold above
    # (the dense trial, keep 1, where the family holds nowhere above the miss).
    halved = 0
    for bucket in profile.buckets:
        study = optuna.load_study(study_name=f"p:{bucket.max_len}", storage=storage)
        trials = {t.number: t for t in study.get_trials()}
        failed = {n for n, held in confirmation_verdicts(study).items() if not held}
        for t in trials.values():
            if bisects(t) is None:
                continue
            low, high = (trials[n] for n in bisects(t))
            assert low.number < t.number and high.number < t.number
            family = [{k: v for k, v in x.params.items() if k != "keep"} for x in (low, t, high)]
            assert family[0] == family[1] and (is_dense_trial(high) or family[1] == family[2])
            # Inside the bracket (its exact point, a geometric midpoint of the bracket or of a half that planning
            # alone narrowed, is `refine.midpoint`'s unit test).
            assert low.params["keep"] < t.params["keep"] < high.params["keep"]
            assert not is_feasible(low) or low.number in failed or reused_from(low) in failed
            assert is_dense_trial(high) or (is_feasible(high) and high.number not in failed
                                            and reused_from(high) not in failed)
            halved += 1
    assert halved, "a family here has a miss below a hold: bisection should have run"


@pytest.mark.slow
def test_resume_after_kill_redoes_no_finished_trial(tmp_path):
    workload = _slice(tmp_path, lengths=(512,), per_task=4)
    trials = 10
    args = ["search", "--model", "demo", "--workload", workload, "--buckets", "512", "--trials", str(trials)]
    ref = tmp_path / "ref" / "p.yaml"
    assert _run(*args, "-o", ref).returncode == 0

    out = tmp_path / "run" / "p.yaml"
    proc = subprocess.Popen([*sparsetune_command(), *map(str, args), "-o", str(out)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out.with_name("p.optuna.journal")
    deadline = time.monotonic() + 300
    done_before: dict[int, tuple] = {}
    while time.monotonic() < deadline:  # kill once three trials are complete
        time.sleep(0.2)
        if journal.exists():
            try:
                study = optuna.load_study(study_name="p:512", storage=_journal(out))
            except KeyError:
                continue
            complete = study.get_trials(states=(TrialState.COMPLETE,))
            if len(complete) >= 3:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                done_before = {t.number: (t.params, t.datetime_complete) for t in complete}
                break
    assert done_before, "the search never completed three trials"
    killed_at = len(optuna.load_study(study_name="p:512", storage=_journal(out)).get_trials(
        states=(TrialState.COMPLETE,)))
    assert killed_at < trials and not out.exists(), "the search finished before it was killed"

    r = _run(*args, "-o", out)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="p:512", storage=_journal(out))
    complete = {t.number: (t.params, t.datetime_complete) for t in study.get_trials(states=(TrialState.COMPLETE,))}
    assert sum(counts_as_trial(t) for t in study.get_trials(states=(TrialState.COMPLETE,))) == trials
    for number, before in done_before.items():
        assert complete[number] == before  # kept, not redone
    a, b = load_profile(ref), load_profile(out)
    assert a.buckets == b.buckets  # the same choice as an uninterrupted run


@pytest.mark.slow
def test_impossible_floor_gives_dense_buckets_with_reasons(tmp_path):
    workload = _slice(tmp_path, per_task=1)
    rows = [json.loads(line) for line in workload.read_text().splitlines()]
    for length in (256, 512):  # one wrong label per bucket: no budget, dense included, can reach 1.0
        row = next(r for r in rows if r["task"] == "niah" and len(r["prompt"].split()) + 2 == length)
        row["answer"] = "v00" if row["answer"] != "v00" else "v01"
    workload.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "p.yaml"
    r = _run(*_search_args(workload, out, 3, "--floor", "1.0", "--floor-kind", "absolute"))
    assert r.returncode == 0, r.stderr
    profile = load_profile(out)
    assert all(b.dense and "below the absolute floor" in b.reason for b in profile.buckets), \
        [b.reason for b in profile.buckets]
    assert profile.lookup(300) is None and profile.lookup(10_000) is None


@pytest.mark.slow
def test_a_bucket_under_the_min_share_of_attention_cost_is_left_dense_unsearched(tmp_path):
    workload = _slice(tmp_path, per_task=2)
    out = tmp_path / "p.yaml"
    # 8 prompts of about 250 tokens and 8 of about 500 (256 and 512 with the answer): the short bucket holds
    # about 250^2 / (250^2 + 500^2) = 20% of the prefills' attention FLOPs.
    r = _run(*_search_args(workload, out, 3, "--confidence", "0", "--min-share", "0.25"))
    assert r.returncode == 0, r.stderr
    storage = _journal(out)
    short, long = (optuna.load_study(study_name=f"p:{e}", storage=storage) for e in (256, 512))
    assert meta_of(short).dense_share == pytest.approx(0.2, abs=0.002)
    assert meta_of(short).left_dense and not meta_of(long).left_dense
    # Only its dense baseline ran (no anchors were queued); the longer bucket got its trials.
    assert [is_dense_trial(t) for t in short.get_trials()] == [True]
    assert sum(counts_as_trial(t) for t in long.get_trials(states=(TrialState.COMPLETE,))) == 3
    first = load_profile(out).buckets[0]
    assert first.dense and first.reason.startswith("left dense: it holds 19.9% of the workload's dense attention")
    # Another min share is another search: the stored studies refuse it in one line, writing nothing.
    r = _run(*_search_args(workload, out, 3, "--confidence", "0", "--min-share", "0"))
    assert r.returncode == 2 and "exists with another model, workload, floor, method or search space" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_confirm_file_replaces_the_split(tmp_path):
    # --confirm FILE: the whole workload is searched, the file's samples (bucketed alike) confirm.
    search_part = _slice(tmp_path, per_task=2)
    (tmp_path / "c").mkdir()
    rows = [json.loads(line) for line in _slice(tmp_path / "c", per_task=3).read_text().splitlines()]
    seen = {json.loads(line)["prompt"] for line in search_part.read_text().splitlines()}
    confirm = tmp_path / "confirm.jsonl"
    confirm.write_text("".join(json.dumps(r) + "\n" for r in rows if r["prompt"] not in seen))
    out = tmp_path / "p.yaml"
    r = _run(*_search_args(search_part, out, 3, "--confidence", "0", "--confirm", confirm))
    assert r.returncode == 0, r.stderr
    storage = _journal(out)
    for edge in (256, 512):
        meta = meta_of(optuna.load_study(study_name=f"p:{edge}", storage=storage))
        assert (meta.n, meta.confirm_n) == (8, 4)  # 2 per task searched, the third sample per task confirms
    for bucket in load_profile(out).buckets:
        assert bucket.confirmation is not None and bucket.confirmation.n == 4
    _, searched = load_inputs("demo", str(search_part))
    with pytest.raises(SearchError, match="confirmed on a separate file"):
        bucket_parts(meta, searched)


@pytest.mark.slow
def test_answers_that_never_match_exit_2_and_write_nothing(tmp_path):
    # A broken set-up (wrong prompt format, wrong answers): dense is ~never right, so every budget would
    # "meet" a floor relative to it. The search must refuse it, not deploy the most aggressive budget.
    workload = _slice(tmp_path, per_task=2)
    rows = [json.loads(line) for line in workload.read_text().splitlines()]
    workload.write_text("".join(json.dumps({**r, "answer": "water water water"}) + "\n" for r in rows))
    out = tmp_path / "p.yaml"
    r = _run("search", "--model", "demo", "--workload", workload, "--buckets", "300,600", "--trials", "3", "-o", out)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "bucket <= 300 tokens: dense accuracy is 0.000" in last and "fidelity mode" in last, r.stderr
    assert "Traceback" not in r.stderr
    assert not out.exists() and not out.with_suffix(".png").exists()


@pytest.mark.slow
def test_fidelity_mode_scores_against_the_dense_models_own_answers(tmp_path):
    out = tmp_path / "p.yaml"
    workload = _slice(tmp_path, lengths=(256,), per_task=2, answers=False)
    r = _run("search", "--model", "demo", "--workload", workload, "--buckets", "300", "--trials", "3",
             "--answer-tokens", "2", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    profile = load_profile(out)
    assert profile.buckets[0].accuracy.dense == 1.0  # dense matches itself by construction


@pytest.mark.parametrize("extra, message", [
    (["--floor", "1.5"], "floor: must be in (0, 1], got 1.5"),
    (["--floor", "0"], "floor: must be in (0, 1], got 0"),
    (["--method", "magic"], "method: must be one of topk, coverage, got 'magic'"),
    (["--floor-kind", "median"], "floor-kind: must be relative or absolute"),
    (["--buckets", "100,200"], "buckets: the last edge 200 is below the longest sample"),
    (["--buckets", "100,300,600"], "buckets: no sample falls in the bucket(s) ending at 100"),
    (["--buckets", "512,256"], "buckets: edges must be positive and strictly increasing"),
    (["--trials", "0"], "trials: must be >= 1"),
    (["--min-share", "1"], "min-share: must be in [0, 1), got 1.0"),
    (["--estimator", "pooled,magic"], "estimator: a comma-separated list of distinct pooled, sampled, peak, salient, antidiagonal, vslash, quest, oracle, got "
                                      "pooled,magic"),
    (["--estimator", "sampled,oracle"], "estimator: oracle costs a dense pass (a diagnostic ceiling, not deployable); "
                                        "pass --allow-oracle"),
    (["--method", "coverage", "--estimator", "sampled,peak"], "estimator: peak ranks blocks by peak, not attention "
                                                              "mass, so it takes topk keeps, not coverage"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path, run_cli, extra, message):
    workload = _slice(tmp_path, lengths=(256, 512), per_task=1)
    result = run_cli("search", "--model", "demo", "--workload", workload, "-o", tmp_path / "p.yaml", *extra)
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.err
    assert not (tmp_path / "p.yaml").exists()


def test_empty_workload_exits_2(tmp_path, run_cli):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = run_cli("search", "--model", "demo", "--workload", empty, "-o", tmp_path / "p.yaml")
    assert result.code == 2 and "empty workload" in result.err and len(result.err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_search_chooses_the_estimator_per_bucket_and_the_profile_names_it(tmp_path):
    out = tmp_path / "p.yaml"
    r = _run(*_search_args(_slice(tmp_path), out, 6, "--json", "--confidence", "0", "--estimator", "pooled,sampled"))
    assert r.returncode == 0, r.stderr
    profile = load_profile(out)
    storage = _journal(out)
    seen = set()
    for bucket in profile.buckets:
        study = optuna.load_study(study_name=f"p:{bucket.max_len}", storage=storage)
        assert meta_of(study).estimators == ("pooled", "sampled")
        for t in study.get_trials(states=(TrialState.COMPLETE,)):
            seen.add(t.params.get("estimator"))
            if t.params.get("estimator") == "sampled":
                assert t.params["sampled_stride"] in (8, 16, 32)
        if bucket.budget is not None:  # the budget the study chose, estimator and stride included
            chosen = [c for c in candidates(study) if c.budget == bucket.budget]
            assert chosen and chosen[0].budget.estimator in ("pooled", "sampled")
    assert {"pooled", "sampled"} <= seen
    show = _run("show", out)
    assert show.returncode == 0
