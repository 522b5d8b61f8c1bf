"""Search pieces without a model or a server: trial slots, seeds, storage settings, typed records,
which errors fail a trial, and how a bucket the search gives up on is reported."""

from __future__ import annotations

import warnings

import optuna
import pytest
from optuna.trial import TrialState

from sparsetune._io import redact_url
from sparsetune.errors import FailingBucketWarning, SearchError, WorkloadError
from sparsetune.profile import Floor, ModelInfo, WorkloadInfo
from sparsetune.search import BucketMeta, BucketStatus, SearchSettings, SearchSpace, TrialRecord, heartbeat_settings
from sparsetune.search.objective import Objective
from sparsetune.search.run import _BucketRun, _work
from sparsetune.search.sampler import LaneSeededTPE
from sparsetune.search.storage import _with_driver
from sparsetune.search.study import is_dense_trial, mark_reused


def _objective(study: optuna.Study, target: int) -> _Objective:
    return Objective(None, [], None, SearchSpace(), study, None, 8, target)


def _bucket_study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize")
    study.enqueue_trial(SearchSpace().dense_params(), user_attrs={"dense": True})
    return study


def test_a_trial_beyond_the_target_or_a_second_dense_trial_is_skipped():
    study = _bucket_study()
    dense = study.ask()  # trial 0: the enqueued dense trial, now running
    assert is_dense_trial(dense)
    a, b = study.ask(), study.ask()  # two sparse starts racing for the last two slots of 3
    obj = _objective(study, 3)
    assert obj._skip(a.number, False) is None
    assert obj._skip(b.number, False) is None
    c = study.ask()
    assert "already has its 3 trials" in obj._skip(c.number, False)  # 0, 1, 2 are running
    study.tell(a, state=TrialState.FAIL)  # a failed: its slot is free again, for the earliest start
    assert obj._skip(c.number, False) is None
    # A second dense trial (two workers re-queued it) steps aside for the earlier one.
    study.enqueue_trial(SearchSpace().dense_params(), user_attrs={"dense": True})
    dup = study.ask()
    assert obj._skip(dup.number, True) == "dense trial 0 is this bucket's baseline"
    assert obj._skip(dense.number, True) is None


def test_sparse_trials_leave_a_slot_for_the_dense_trial_until_it_runs():
    study = _bucket_study()  # the dense trial waits (its worker died before starting it, say)
    for x in (0.2, 0.4):  # while two sparse trials completed, on a baseline computed by themselves
        study.add_trial(optuna.create_trial(value=x, params={"x": x},
                                            distributions={"x": optuna.distributions.FloatDistribution(0, 1)}))
    assert "already has its 3 trials" in _objective(study, 3)._skip(99, False)
    assert _objective(study, 4)._skip(99, False) is None
    assert _objective(study, 3)._skip(0, True) is None  # the dense trial itself is never surplus


def test_seeds_follow_complete_trials_alone_and_differ_between_concurrent_trials():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = LaneSeededTPE(7)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    seeds = []
    for _ in range(3):  # one worker: seed * 100003 + complete trials, which a resumed run recomputes
        t = study.ask()
        seeds.append(sampler.last_seed)
        study.tell(t, t.suggest_float("x", 0, 1))
    assert seeds == [700_021, 700_022, 700_023]
    # Three trials started before any finishes (three workers): lanes 0, 1, 2, different budgets.
    started, seeds = [], []
    for _ in range(3):
        started.append(study.ask())
        seeds.append(sampler.last_seed)
    assert seeds == [700_024, 700_024 + 1_000_003, 700_024 + 2_000_006]
    assert len({t.suggest_float("x", 0, 1) for t in started}) == 3


def test_heartbeat_settings_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("SPARSETUNE_HEARTBEAT_S", raising=False)
    monkeypatch.delenv("SPARSETUNE_GRACE_S", raising=False)
    assert heartbeat_settings() == (15, 60)
    monkeypatch.setenv("SPARSETUNE_HEARTBEAT_S", "2")
    assert heartbeat_settings() == (2, 8)  # four beats of grace unless told
    monkeypatch.setenv("SPARSETUNE_GRACE_S", "5")
    assert heartbeat_settings() == (2, 5)
    for name, value, message in [("SPARSETUNE_GRACE_S", "2", "must be longer than the heartbeat (2 s), got 2"),
                                 ("SPARSETUNE_GRACE_S", "1.5", "positive whole number of seconds, got '1.5'"),
                                 ("SPARSETUNE_HEARTBEAT_S", "0", "positive whole number of seconds, got '0'")]:
        monkeypatch.setenv(name, value)
        with pytest.raises(SearchError, match=message.replace("(", r"\(").replace(")", r"\)")):
            heartbeat_settings()
        monkeypatch.setenv(name, {"SPARSETUNE_GRACE_S": "5", "SPARSETUNE_HEARTBEAT_S": "2"}[name])


def test_postgres_urls_get_the_installed_driver_and_errors_hide_the_password():
    pytest.importorskip("psycopg2")
    url = _with_driver("postgresql://u@h/db")
    assert url in ("postgresql://u@h/db", "postgresql+psycopg2://u@h/db")  # psycopg 3 is used when installed
    assert _with_driver("postgresql+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert redact_url("postgresql://me:secret@db.example:5432/x") == "postgresql://me:***@db.example:5432/x"
    assert redact_url("postgresql://me@db/x") == "postgresql://me@db/x"


def _meta(**change) -> BucketMeta:
    fields = dict(
        identity={}, model=ModelInfo(name="m", config_sha256="0" * 64, layers=1, heads=1, kv_heads=1, head_dim=16),
        workload=WorkloadInfo(name="w", sha256="0" * 64, samples=4), floor=Floor(value=0.9, confidence=0.8),
        method="topk", timing="cost-model", device="cpu", index=0, first_len=1, max_len=256, n=2, rep_len=200,
        tasks=["t", "t"], edges=[256, 512], min_len=100, trials=3, seed=0, study="s", storage=None)
    return BucketMeta(**{**fields, **change})


def test_bucket_meta_round_trips_through_the_stored_layout():
    meta = _meta()
    stored = meta.to_attr()
    assert stored["bucket"] == {"index": 0, "min_len": 1, "max_len": 256, "n": 2}  # the layout old storages hold
    assert stored["floor"] == {"kind": "relative", "value": 0.9, "confidence": 0.8, "per_task": False}
    assert BucketMeta.from_attr(stored) == meta


def test_trial_record_round_trips_through_user_attrs():
    study = optuna.create_study(direction="minimize")
    trial = study.ask()
    record = TrialRecord(correct=[True, False, True], accuracy=2 / 3, complete=True, sparsity=0.4,
                         cost={"relative": 0.5, "label": "cost-model"}, seconds=1.5, lower_bound=0.2)
    record.store(trial)
    study.tell(trial, 0.5)
    [frozen] = study.get_trials()
    assert TrialRecord.of(frozen) == record and not is_dense_trial(frozen)


def test_a_stopped_trial_records_which_samples_it_never_evaluated():
    study = optuna.create_study(direction="minimize")
    trial = study.ask()
    record = TrialRecord(correct=[None, False, None, True], accuracy=0.5, complete=False, sparsity=0.7)
    record.store(trial)
    study.tell(trial, 0.3)
    assert TrialRecord.of(study.get_trials()[0]) == record


def test_samples_lost_most_often_so_far_are_evaluated_first_and_dense_misses_last():
    study = _bucket_study()
    dense = [True, True, False, True, True]

    def add(correct, dense=False, reused=None):
        trial = study.ask()
        if reused is not None:
            mark_reused(trial, reused)
        TrialRecord(correct=correct, accuracy=0.0, complete=None not in correct, sparsity=0.5,
                    dense=dense).store(trial)
        study.tell(trial, 0.5)

    add(dense, dense=True)
    add([True, None, True, False, None])  # stopped early: lost sample 3, gained 2
    add([True, False, False, False, True])  # lost samples 1 and 3, missed 2 as dense did
    add([True, True, False, True, False], reused=1)  # a copy: not a measurement of its own
    # lost so far: 3 twice, 1 once; 2 dense missed, so no budget can lose it (`floor.kept`): last
    assert _objective(study, 4)._fail_first(dense) == [3, 1, 0, 4, 2]


def test_a_confirmation_stopped_early_does_not_hold():
    from sparsetune.search.results import confirmation_verdicts
    from sparsetune.search.study import store_confirmation

    study = _bucket_study()
    study.set_user_attr("meta", _meta(floor=Floor(value=0.9), confirm_n=2, confirm_tasks=["t", "t"]).to_attr())
    for correct, dense in (([True, True], True), ([True, True], False), ([True, True], False)):
        trial = study.ask()
        TrialRecord(correct=correct, accuracy=1.0, complete=True, sparsity=0.5, dense=dense,
                    confirm_correct=[True, True] if dense else None).store(trial)
        study.tell(trial, 1.0 if dense else 0.5)
    store_confirmation(study, 1, [True, True])
    store_confirmation(study, 2, [True, None])  # stopped before its second sample
    assert confirmation_verdicts(study) == {1: True, 2: False}


class _Raising:
    """An objective that raises `error` in every trial."""

    space = SearchSpace()

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __call__(self, trial: optuna.Trial) -> float:
        trial.suggest_float("keep", 0.01, 1.0)
        raise self.error


def _bucket_run(objective) -> tuple[_BucketRun, optuna.storages.BaseStorage]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.InMemoryStorage()
    run = _BucketRun(0, 256, [], _meta())
    run.study = optuna.create_study(storage=storage, direction="minimize")
    run.objective = objective
    return run, storage


def test_a_bug_in_a_trial_surfaces_instead_of_failing_the_trial():
    run, storage = _bucket_run(_Raising(TypeError("a bug")))
    with pytest.raises(TypeError, match="a bug"):
        _work(run, storage, SearchSettings(trials=3), None)


def test_a_bucket_whose_trials_keep_failing_is_reported_failing():
    run, storage = _bucket_run(_Raising(WorkloadError("bad sample")))  # an expected error: the trial fails
    status, ran = _work(run, storage, SearchSettings(trials=2), None)
    assert status is BucketStatus.FAILING and ran and run.failures == 3
    assert {t.state for t in run.study.get_trials()} <= {TrialState.FAIL, TrialState.WAITING}  # dense re-queued


def test_a_failing_bucket_is_a_search_warning(monkeypatch):
    import sparsetune.search.run as run_mod

    def fake_run_buckets(runs, *args):
        for r in runs:
            r.status = BucketStatus.FAILING

    monkeypatch.setattr(run_mod, "_run_buckets", fake_run_buckets)
    monkeypatch.setattr(run_mod, "profile_from_storage", lambda *a, **k: None)
    monkeypatch.setattr(run_mod, "bucket_outcomes", lambda *a, **k: [])
    from sparsetune.workload import TokenSample, Workload

    samples = [TokenSample([2] * 10, [5], "t", i + 1) for i in range(4)]

    class Loaded:
        name, config_sha256, layers, heads, kv_heads, head_dim, max_positions = "m", "0" * 64, 1, 1, 1, 16, 64

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_mod.search(Loaded(), Workload("w", "0" * 64, samples), SearchSettings(edges=(64,), trials=2), None)
    assert [str(w.message) for w in caught if w.category is FailingBucketWarning] == [run_mod.failing_message(64)]


# ---------------------------------------------------------------- the space per bucket


def test_the_space_offers_no_block_size_that_is_dense_by_construction():
    space = SearchSpace()
    assert space.at_length(256).block_sizes == (32, 64)  # 128 would make 2 blocks: sink and local cover them
    assert space.at_length(2048).block_sizes == (32, 64, 128)
    assert space.at_length(40).block_sizes == (32,)  # never empty: the smallest block size
    at_256 = space.at_length(256)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    blocks = {at_256.suggest(study.ask()).block_size for _ in range(40)}
    assert blocks == {32, 64}
    assert at_256.dense_params()["block_size"] in at_256.block_sizes  # the enqueued dense trial fits the space


def test_a_bucket_keeps_the_block_sizes_its_study_was_created_with():
    from sparsetune.search.study import create_or_load

    storage = optuna.storages.InMemoryStorage()
    space = SearchSpace()
    first = _meta(block_sizes=space.at_length(200).block_sizes)
    _, stored = create_or_load(storage, "s:256", first, space.at_length(200).dense_params())
    # A resumed run or another worker whose space would differ reads the creator's choice back.
    _, again = create_or_load(storage, "s:256", _meta(block_sizes=(32, 64, 128)), space.dense_params())
    assert again.block_sizes == stored.block_sizes == (32, 64)
    assert space.restricted_to(again.block_sizes).block_sizes == (32, 64)
    # Studies written before block sizes were stored searched every one of them.
    old = {k: v for k, v in first.to_attr().items() if k != "block_sizes"}
    assert BucketMeta.from_attr(old).block_sizes is None and space.restricted_to(None) == space
    assert BucketMeta.from_attr(first.to_attr()) == first


def test_a_resumed_run_with_more_trials_raises_the_stored_target_and_never_lowers_it():
    from sparsetune.search import profile_from_storage
    from sparsetune.search.study import create_or_load

    storage = optuna.storages.InMemoryStorage()
    create_or_load(storage, "s:256", _meta(trials=3), SearchSpace().dense_params())
    _, more = create_or_load(storage, "s:256", _meta(trials=6), SearchSpace().dense_params())
    _, fewer = create_or_load(storage, "s:256", _meta(trials=2), SearchSpace().dense_params())
    assert more.trials == fewer.trials == 6
    assert profile_from_storage(storage, "s", allow_incomplete=True).provenance.trials_per_bucket == 6


def test_a_search_stopped_before_a_baseline_writes_a_profile_that_says_so():
    from sparsetune.search import bucket_outcomes, profile_from_storage
    from sparsetune.search.study import create_or_load

    storage = optuna.storages.InMemoryStorage()
    create_or_load(storage, "s:256", _meta(), SearchSpace().dense_params())  # its dense trial only queued
    # Strict (collect, a search without --timeout): not a profile yet.
    with pytest.raises(SearchError, match="dense baseline trial has not completed"):
        profile_from_storage(storage, "s")
    profile = profile_from_storage(storage, "s", allow_incomplete=True)
    assert [b.max_len for b in profile.buckets] == [256, 512] and all(b.dense for b in profile.buckets)
    assert [b.reason.split(",")[0] for b in profile.buckets] == ["incomplete: 0 of 3 trials"] * 2
    assert profile.provenance.trials_per_bucket == 3  # the target, not what some bucket reached
    outcomes = bucket_outcomes(storage, "s", allow_incomplete=True)
    assert [(o.first_len, o.bucket.max_len, o.incomplete) for o in outcomes] == [(100, 256, True), (257, 512, True)]
    assert [profile.bucket_range(i) for i in range(2)] == [(100, 256), (257, 512)]


def test_anchors_are_the_simple_policies_in_bisection_order():
    from sparsetune.search.space import SearchSpace

    assert SearchSpace(anchors=False).anchor_params(2048) == []
    space = SearchSpace(estimators=("pooled", "sampled"), block_sizes=(32, 64, 128))  # anchors are the default
    budgets = [space.budget_of(p) for p in space.anchor_params(2048)]
    # fixed keeps and fixed token budgets (128 ... 1024 tokens of 2048) per estimator, cheapest first
    keeps = [0.0625, 0.1, 0.125, 0.2, 0.25, 0.3, 0.375, 0.5]
    assert sorted((b.keep, b.estimator) for b in budgets) == [(k, e) for k in keeps for e in ("pooled", "sampled")]
    # a binary search's order: the middle first, so a hit prunes the costlier half and a miss the cheaper one
    assert [(b.keep, b.estimator) for b in budgets][:3] == [(0.25, "pooled"), (0.125, "pooled"), (0.375, "pooled")]
    assert {b.stride for b in budgets if b.estimator == "sampled"} == {16}
    assert {(b.block_size, b.sink, b.local) for b in budgets} == {(64, 1, 1)}
    # a token budget at least as long as the bucket is no anchor; keeps stay inside the searched range
    short = [space.budget_of(p).keep for p in SearchSpace(keep=(0.2, 1.0)).anchor_params(200)]
    assert sorted(short) == [0.2, 0.3, 0.5, 0.64] and all(k < 1 for k in short)
    coverage = SearchSpace(method="coverage", block_sizes=(32,))
    assert [(b.block_size, b.tau) for b in map(coverage.budget_of, coverage.anchor_params(512))] == [
        (32, 0.9), (32, 0.8), (32, 0.95)]


def test_bisection_visits_the_middle_then_the_halves():
    from sparsetune.search.space import _bisection

    assert _bisection(list(range(7))) == [3, 1, 5, 0, 2, 4, 6]
    assert _bisection([]) == [] and _bisection([9]) == [9]


def test_a_budget_confirmed_at_a_shorter_bucket_is_carried_as_keep_and_as_tokens():
    from sparsetune.search.space import SearchSpace

    space = SearchSpace(block_sizes=(64, 128))
    params = {"block_size": 128, "sink": 0, "local": 2, "keep": 0.4}
    carried = space.carried(params, 1000, 2000)
    assert carried == [params, {**params, "keep": 0.2}]  # the same keep, and the same 400 tokens
    anchors = space.anchor_params(2000, carried)
    assert params in anchors and {**params, "keep": 0.2} in anchors
    assert SearchSpace(block_sizes=(64,)).anchor_params(2000, carried) == SearchSpace(block_sizes=(64,)).anchor_params(2000)
    assert space.carried({**params, "keep": 1.0}, 1000, 2000) == []  # dense is the dense trial's


def test_a_new_study_enqueues_dense_then_the_anchors_and_suggest_reads_them_back():
    import optuna

    from sparsetune.search.space import SearchSpace
    from sparsetune.search.study import create_or_load

    space = SearchSpace(anchors=True, estimators=("pooled", "sampled"), block_sizes=(32, 64))
    storage = optuna.storages.InMemoryStorage()
    study, _ = create_or_load(storage, "s:512", _meta(), space.dense_params(), anchors=space.anchor_params(512))
    got = []
    for _ in range(1 + len(space.anchor_params(512))):
        trial = study.ask()
        got.append(space.suggest(trial))
        study.tell(trial, 1.0)
    assert got[0].is_dense
    assert got[1:] == [space.budget_of(p) for p in space.anchor_params(512)]


def _one_candidate(confirmed: list[bool], limit: int = 6, length: int = 200):
    """A bucket with its dense trial and one feasible candidate, trial 1 (keep 0.5, block 32, sink 1, local 1),
    whose confirmation gave `confirmed`; returns (objective, settle), where settle(budget) is the reason
    `_unneeded` prunes the budget for, or None when it would be evaluated."""
    from sparsetune.profile.budget import Budget
    from sparsetune.search.study import pruned_reason, store_confirmation
    from sparsetune.workload.files import TokenSample

    study = _bucket_study()
    meta = _meta(floor=Floor(value=0.9), confirm_n=2, confirm_tasks=["t", "t"], confirm_limit=limit)
    study.set_user_attr("meta", meta.to_attr())
    space = SearchSpace()
    samples = [TokenSample(input_ids=[1] * length, answer_ids=[2], task="t", line=i) for i in (1, 2)]
    objective = Objective(None, samples[:1], meta, space, study, None, 8, 10, confirm_samples=samples[1:])

    def add(params: dict | None, value: float) -> None:
        if params is not None:
            study.enqueue_trial(params)
        trial = study.ask()
        budget = space.suggest(trial)
        TrialRecord(correct=[True, True], accuracy=1.0, complete=True, sparsity=1 - value, dense=budget.is_dense,
                    confirm_correct=[True, True] if budget.is_dense else None).store(trial)
        trial.set_constraint("floor", -0.1)
        study.tell(trial, value)

    add(None, 1.0)  # the enqueued dense trial
    add({"block_size": 32, "sink": 1, "local": 1, "keep": 0.5},
        objective.planned_cost(Budget(keep=0.5, block_size=32, sink=1, local=1)))
    store_confirmation(study, 1, confirmed)

    def settle(budget: Budget) -> str | None:
        study.enqueue_trial({"block_size": budget.block_size, "sink": budget.sink, "local": budget.local,
                             "keep": budget.keep})
        trial = study.ask()
        space.suggest(trial)
        try:
            objective._unneeded(trial, budget)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
            return pruned_reason(study.get_trials()[-1])
        study.tell(trial, state=TrialState.FAIL)
        return None

    return objective, settle


def test_a_trial_that_cannot_cost_less_than_the_confirmed_budget_is_pruned_unrun():
    from sparsetune.profile.budget import Budget

    objective, settle = _one_candidate([True, True])
    chosen = Budget(keep=0.5, block_size=32, sink=1, local=1)
    # Another family keeping as many blocks per row costs the same: it cannot make the profile cheaper.
    same = Budget(keep=0.5, block_size=32, sink=0, local=2)
    assert objective.planned_cost(same) == pytest.approx(objective.planned_cost(chosen))
    assert settle(same) == "trial 1, already confirmed, plans to cost within 5% of it"
    assert "trial 1, already confirmed" in settle(Budget(keep=0.7, block_size=32, sink=1, local=2))
    assert settle(Budget(keep=0.3, block_size=32, sink=0, local=2)) is None  # cheaper: it runs


def test_a_trial_that_would_save_less_than_the_cost_tolerance_is_pruned_unrun():
    from sparsetune.profile.budget import Budget

    objective, settle = _one_candidate([True, True], length=2000)  # 63 blocks of 32: keep moves cost finely
    confirmed = objective.planned_cost(Budget(keep=0.5, block_size=32, sink=1, local=1))
    near, far = (Budget(keep=k, block_size=32, sink=1, local=1) for k in (0.48, 0.45))
    # The confirmed budget costs within 5% (COST_TOLERANCE) more: not worth the trial's samples.
    assert objective.planned_cost(near) < confirmed <= 1.05 * objective.planned_cost(near)
    assert settle(near) == "trial 1, already confirmed, plans to cost within 5% of it"
    assert confirmed > 1.05 * objective.planned_cost(far) and settle(far) is None  # more than 5% more: it runs


def test_a_trial_below_a_confirmation_failure_of_its_family_is_pruned_unrun():
    from sparsetune.profile.budget import Budget

    _, settle = _one_candidate([False, False])  # trial 1 met the floor on the search part, then failed confirmation
    # The confirmation walk skips every budget of the family that keeps no more: it could never be chosen.
    assert settle(Budget(keep=0.3, block_size=32, sink=1, local=1)) == (
        "keeps no more than trial 1, which failed its confirmation")
    assert settle(Budget(keep=0.3, block_size=32, sink=0, local=2)) is None  # another family may still hold
    assert settle(Budget(keep=0.7, block_size=32, sink=1, local=1)) is None  # keeping more may hold


_MIDPOINT = {"block_size": 32, "sink": 1, "local": 1, "keep": 0.3}


def _running_midpoint():
    """`_one_candidate`'s bucket with a bisection midpoint (keep 0.3, block 32, sink 1, local 1) running, as when
    two workers enqueue it in the same instant and the first copy starts: (objective, settle, running trial)."""
    objective, settle = _one_candidate([True, True])
    objective.study.enqueue_trial(_MIDPOINT)
    running = objective.study.ask()
    objective.space.suggest(running)
    return objective, settle, running


def test_a_second_start_of_a_running_budget_is_pruned_unrun():
    from sparsetune.profile.budget import Budget

    objective, settle, running = _running_midpoint()
    # The first copy is running, so the second leaves the blocks to it; the first, which sees no earlier copy, runs.
    assert settle(Budget(keep=0.3, block_size=32, sink=1, local=1)) == (
        f"keeps the blocks of trial {running.number}, which is measuring them now")
    assert objective._unneeded(running, Budget(keep=0.3, block_size=32, sink=1, local=1)) is None
    assert settle(Budget(keep=0.3, block_size=32, sink=0, local=2)) is None  # other blocks: it runs


def test_a_point_left_to_a_running_trial_that_then_fails_is_open_to_bisection_again(monkeypatch):
    import sparsetune.search.objective as module
    from sparsetune.profile.budget import Budget
    from sparsetune.search.refine import midpoint

    objective, settle, running = _running_midpoint()
    assert settle(Budget(keep=0.3, block_size=32, sink=1, local=1)) is not None  # the copy is pruned, deferring
    key = tuple(sorted(_MIDPOINT.items()))
    seen = []

    def spy(outcomes, cost, ceiling, tried, dense):  # what `refinement` hands bisection as already tried
        seen.append(key in tried)
        return midpoint(outcomes, cost, ceiling, tried, dense)

    monkeypatch.setattr(module, "midpoint", spy)
    objective.refinement()  # the first copy is still measuring: the point counts as tried
    objective.study.tell(running, state=TrialState.FAIL)
    objective.refinement()  # it failed, so the pruned copy measured nothing: open again
    assert seen == [True, False]


def test_a_running_trial_that_names_no_worker_is_failed_once_unclaimed_for_a_while():
    from sparsetune.search.storage import fail_orphans, worker_id
    from sparsetune.search.study import mark_started

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s:256")
    study.ask()  # a process killed after Optuna started the trial, before the objective named its worker
    live = study.ask()
    mark_started(live, worker_id(), None)  # this process: alive
    fail_orphans(study, storage)  # just started: its worker may be about to name itself
    assert [t.state for t in study.get_trials()] == [TrialState.RUNNING, TrialState.RUNNING]
    fail_orphans(study, storage, unclaimed_after_s=0)
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.RUNNING]


def _outcome(keep: float, held: bool, sink: int = 1) -> "Outcome":
    from sparsetune.search.refine import Outcome

    params = {"block_size": 64, "sink": sink, "local": 1, "keep": keep}
    return Outcome(int(keep * 1000) + 10_000 * sink, params, SearchSpace().budget_of(params), held)


def test_refinement_bisects_a_family_between_its_largest_miss_and_its_smallest_hold_above_it():
    from sparsetune.search.refine import midpoint

    cost = lambda b: b.ratio  # noqa: E731
    # Geometric midpoint (keep is searched on a log scale); a hold below the largest miss is noise, not the top.
    got = midpoint([_outcome(0.2, True), _outcome(0.5, False), _outcome(0.8, True), _outcome(0.6, True)],
                   cost, None, set())
    assert got.params == {"block_size": 64, "sink": 1, "local": 1, "keep": round((0.5 * 0.6) ** 0.5, 4)}
    assert (got.low, got.high) == (10_500, 10_600)  # the trials whose bracket it halves
    # No bracket without a miss; without a hold above it, the dense trial (keep 1) is the family's hold.
    assert midpoint([_outcome(0.3, True)], cost, None, set(), dense=0) is None
    assert midpoint([_outcome(0.2, False), _outcome(0.5, False)], cost, None, set()) is None
    got = midpoint([_outcome(0.2, False), _outcome(0.5, False)], cost, None, set(), dense=0)
    assert got.params["keep"] == round(0.5 ** 0.5, 4) and (got.low, got.high) == (10_500, 0)
    # Closed: ends within 5% of cost; the midpoint tried already; or the miss could not beat the confirmed cost.
    assert midpoint([_outcome(0.5, False), _outcome(0.52, True)], cost, None, set()) is None
    assert midpoint([_outcome(0.5, False), _outcome(0.6, True)], cost, None,
                    {tuple(sorted({"block_size": 64, "sink": 1, "local": 1, "keep": 0.5477}.items()))}) is None
    assert midpoint([_outcome(0.5, False), _outcome(0.6, True)], cost, 0.52, set()) is None  # 0.5 is within 5%
    # A midpoint the confirmed budget is within 5% of moves down to the largest keep it is not within 5% of:
    # 0.5477 plans 0.5477, and 0.57 / 1.05 = 0.5428; 0.583 is not within 5% of the midpoint, which stays.
    assert midpoint([_outcome(0.5, False), _outcome(0.6, True)], cost, 0.57, set()).params["keep"] == 0.5428
    assert midpoint([_outcome(0.5, False), _outcome(0.6, True)], cost, 0.583, set()).params["keep"] == 0.5477
    # Closed at the mask's resolution: a midpoint that plans to cost what an end does keeps that end's blocks.
    steps = lambda b: round(b.ratio * 4) / 4  # noqa: E731  (four blocks per row)
    assert midpoint([_outcome(0.5, False), _outcome(0.7, True)], steps, None, set()) is None
    # A midpoint that ties an end stands in for it, and the other half is bisected: 0.5916 keeps 0.5's blocks.
    three = lambda b: 0.5 if b.ratio < 0.6 else 0.6 if b.ratio < 0.65 else 0.75  # noqa: E731
    got = midpoint([_outcome(0.5, False), _outcome(0.7, True)], three, None, set())
    assert got.params["keep"] == round((round((0.5 * 0.7) ** 0.5, 4) * 0.7) ** 0.5, 4)
    # The family whose hold is cheapest goes first.
    two = [_outcome(0.5, False), _outcome(0.9, True), _outcome(0.1, False, sink=0), _outcome(0.4, True, sink=0)]
    assert midpoint(two, cost, None, set()).params == {"block_size": 64, "sink": 0, "local": 1, "keep": 0.2}


def test_a_candidate_that_failed_confirmation_is_no_bracket_top_even_where_the_walk_stopped_before_it():
    from sparsetune.profile.budget import Budget
    from sparsetune.search.study import store_confirmation

    objective, _ = _one_candidate([False, False])  # trial 1: keep 0.5, block 32, sink 1, local 1; failed confirmation
    study, space = objective.study, objective.space

    def add(params: dict, feasible: bool) -> int:
        study.enqueue_trial(params)
        trial = study.ask()
        budget = space.suggest(trial)
        TrialRecord(correct=[feasible] * 2, accuracy=float(feasible), complete=True, sparsity=0.5,
                    dense=False).store(trial)
        trial.set_constraint("floor", -0.1 if feasible else 0.1)
        study.tell(trial, objective.planned_cost(budget))
        return trial.number

    add({"block_size": 32, "sink": 1, "local": 1, "keep": 0.2}, False)  # a miss below trial 1, in its family
    other = {"block_size": 32, "sink": 0, "local": 2, "keep": 0.4}
    held = add(other, True)
    store_confirmation(study, held, [True, True])  # another family's candidate held: the walk stops there
    mid = Budget(keep=round(0.1 ** 0.5, 4), block_size=32, sink=1, local=1)
    # Set up as described: the walk chooses `held` before it reaches trial 1, and the midpoint of (0.2, 0.5)
    # plans to cost less than `held`, so only trial 1's stored failure keeps it from being proposed.
    assert objective.planned_cost(mid) < objective.planned_cost(space.budget_of(other)) < objective.planned_cost(
        Budget(keep=0.5, block_size=32, sink=1, local=1))
    assert objective.refinement() is None
    store_confirmation(study, 1, [True, True])  # had trial 1 held, (0.2, 0.5) would be bisected
    assert objective.refinement().params == {"block_size": 32, "sink": 1, "local": 1, "keep": mid.keep}


def test_once_the_walk_meets_its_failure_limit_every_trial_is_pruned_and_nothing_is_bisected():
    from sparsetune.profile.budget import Budget

    objective, settle = _one_candidate([False, False], limit=1)  # trial 1 failed confirmation: the limit is met
    reason = "the confirmation walk met its limit of 1 failures: nothing cheaper is confirmed"
    assert settle(Budget(keep=0.3, block_size=32, sink=0, local=2)) == reason  # another family, cheaper
    assert objective.refinement() is None
    _, settle = _one_candidate([False, False], limit=2)  # below the limit another family may still be confirmed
    assert settle(Budget(keep=0.3, block_size=32, sink=0, local=2)) is None


def test_a_trial_stops_after_the_batch_that_settles_it_not_at_the_end_of_its_chunk(tmp_path):
    """`Objective._run` asks its stop after every forward batch: a chunk of two batches ends after the first when
    that one settles the verdict (at 4k tokens a batch is one sample, a chunk 16: minutes of a 135M model)."""
    import random

    from fixtures.tiny_models import save_folder
    from sparsetune.profile.budget import Budget
    from sparsetune.workload.files import TokenSample
    from sparsetune.workload.models import load_model

    lm = load_model(str(save_folder(tmp_path / "tiny", "llama", seed=4)))
    rng = random.Random(0)
    samples = [TokenSample([2] + [rng.randrange(8, 300) for _ in range(40 + 3 * i)], [9], "t", i + 1)
               for i in range(8)]
    study = _bucket_study()
    objective = Objective(lm, samples, _meta(n=8, tasks=["t"] * 8), SearchSpace(), study, None, 2, 3)
    order = [5, 1, 6, 2, 0, 3, 4, 7]
    asked: list[int] = []

    def stop(part: list[bool | None]) -> bool:
        asked.append(sum(c is not None for c in part))
        return True

    r = objective._run(Budget.parse("keep=0.25,block=16"), stop=stop, order=order)
    assert asked == [2]  # after the first batch of the first chunk (4 samples in batches of 2)
    # Batches group the chunk [5, 1, 6, 2] by length ({1, 2}, {5, 6}) and run the one holding its first sample first.
    assert [i for i, c in enumerate(r.correct) if c is not None] == [5, 6]
    full = objective._run(Budget.parse("keep=0.25,block=16"), order=order)
    assert None not in full.correct and [full.correct[i] for i in (5, 6)] == [r.correct[i] for i in (5, 6)]


def test_a_buckets_share_of_the_attention_cost_weighs_each_prefill_by_its_length_squared():
    from sparsetune.search.plan import dense_shares

    # Causal attention is quadratic: one 400-token prefill outweighs three of 100 (160000 against 30000).
    assert dense_shares([[100, 100, 100], [400]]) == pytest.approx([3 / 19, 16 / 19])
    assert dense_shares([[256]]) == [1.0]


def test_the_cli_leaves_buckets_dense_below_the_library_default_share():
    import inspect

    from sparsetune.cli.search import search
    from sparsetune.search.space import MIN_SHARE, SearchSettings

    assert inspect.signature(search).parameters["min_share"].default == MIN_SHARE == SearchSettings().min_share


def test_a_family_that_holds_nowhere_above_its_miss_is_bisected_toward_dense_under_the_confirmed_cost():
    from sparsetune.search.refine import midpoint

    cost = lambda b: b.ratio  # noqa: E731
    confirmed = _outcome(0.8, True)  # sink 1: the budget the bucket holds now, trial 10_800
    near = _outcome(0.5, False, sink=0)  # sink 0 missed at 0.5 (on the search part, or at its confirmation)
    # Its bracket is (0.5, dense); the geometric midpoint 0.7071 is under 0.8 / 1.05 = 0.7619 and runs.
    got = midpoint([confirmed, near], cost, None, set(), dense=3)
    assert got.params == {"block_size": 64, "sink": 0, "local": 1, "keep": 0.7071} and (got.low, got.high) == (500, 3)
    # Against a confirmed 0.7, the largest keep of its family that 0.7 is not within 5% of (0.6666) runs instead.
    assert midpoint([confirmed, near], cost, 0.7, set(), dense=3).params["keep"] == 0.6666
    # Not twice, and not where the confirmed budget is within 5% of the miss itself.
    tried = {tuple(sorted({**near.params, "keep": 0.6666}.items()))}
    assert midpoint([confirmed, near], cost, 0.7, tried, dense=3) is None
    assert midpoint([confirmed, _outcome(0.77, False, sink=0)], cost, 0.8, set(), dense=3) is None
    # Once a keep of the family holds, it is the bracket's top.
    held = _outcome(0.6666, True, sink=0)
    nxt = midpoint([confirmed, near, held], cost, 0.6666, set(), dense=3)
    assert nxt.high == held.number and nxt.params["keep"] == round((0.5 * 0.6666) ** 0.5, 4)


