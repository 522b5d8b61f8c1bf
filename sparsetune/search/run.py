"""Running a search: per-bucket studies worked through by one or many workers, then the profile.

Per bucket the study ``<study>:<max_len>`` searches the accuracy-changing parameters (keep or
tau, block size, sink, local). A dense-equivalent trial is enqueued first by whichever worker
creates the study; it *is* the bucket's dense baseline, so the baseline exists once per bucket
however many workers share the storage. Every trial evaluates teacher-forced exact match with
its budget, reports ``floor - accuracy`` (or the lower confidence bound) as the constraint and
the attention cost at the bucket's representative length as the objective: measured kernel
time on a GPU, the FLOP cost model on CPU, relative to dense either way.

The profile is built from the storage alone (`results.profile_from_storage`), so it does not depend
on which worker, or how many, ran the trials.

Many workers (processes or hosts) may share one storage, PostgreSQL for several hosts:
- every bucket gets exactly `trials` complete trials in all: a worker starts a trial only while
  complete plus running trials are below that, and a trial that finds itself surplus (a race of
  two starts) is skipped at once, before any evaluation;
- a worker whose bucket is full (the rest is running elsewhere) or whose dense baseline is being
  computed elsewhere moves on to the next bucket and comes back, so workers never queue behind
  each other; it returns only once every bucket is complete, so each worker writes the same
  profile;
- each trial's TPE seed comes from the base seed, the complete trials and the trial's lane (how
  many earlier-started trials are still running), so concurrent trials never share a seed while
  a single worker draws exactly the sequence an uninterrupted run would (`seed` user attr);
- on RDB storages a heartbeat marks a killed worker's trial failed after the grace period and
  re-queues it once (`RetryHeartbeatStaleTrialCallback`) for whichever worker comes next.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from ..errors import FailingBucketWarning, SearchError, SearchWarning
from ..profile.buckets import auto_edges, bucketize
from ..profile.floor import best_case, holds_on_confirmation
from ..profile.profile import ModelInfo, Profile, WorkloadInfo
from ..workload.files import DEFAULT_ANSWER_TOKENS, TokenSample, Workload
from ..workload.models import LoadedModel
from .baseline import check_baseline, warn_unresolvable
from .objective import EXPECTED_TRIAL_ERRORS, Objective
from .plan import dense_shares
from .confirm import split_for_confirmation
from .results import (BucketOutcome, BucketStatus, bucket_outcomes, chosen_cost, dense_record, profile_from_storage,
                      stored_walk)
from .sampler import LaneSeededTPE
from .space import SearchSettings
from .storage import fail_orphans, has_heartbeat, reap, storage_for
from .study import (BucketMeta, TrialCounts, TrialRecord, create_or_load, enqueue_bisection, ensure_dense_trial,
                    is_dense_trial, is_feasible, is_skipped, reused_from, store_confirmation, study_name)

__all__ = ["CPU_DEVICE", "SearchRun", "TrialEvent", "failing_message", "run_search", "search"]

CPU_DEVICE = "cpu"  # device key of cost-model configs in a profile
POLL_S = 1.0  # how often a worker with nothing to start looks at the (shared) storage again


@dataclass(frozen=True)
class TrialEvent:
    """Progress of one bucket, sent after every finished trial (for progress displays)."""

    bucket: int
    max_len: int
    done: int  # complete trials in storage
    total: int
    best_cost: float | None  # what the profile would hold now (`results.chosen_cost`), relative to dense
    seconds: float  # wall time this worker spent on the bucket
    last_state: str = "COMPLETE"


def _device() -> tuple[str, str]:
    """(device key, timing label) of this machine."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(), "measured"
    return CPU_DEVICE, "cost-model"


def search(
    loaded: LoadedModel,
    workload: Workload,
    settings: SearchSettings,
    storage: optuna.storages.BaseStorage,
    storage_url: str | None = None,
    on_event: Callable[[TrialEvent], None] | None = None,
    confirm: Workload | None = None,
) -> tuple[Profile, list[BucketOutcome]]:
    """Run (or resume) the per-bucket studies, confirm their cheapest candidates, then build the profile
    from the storage.

    Each bucket's samples are split per task into a search part, which Optuna explores, and a
    confirmation part (`settings.confirm_fraction`, or the samples of `confirm`), on which the cheapest
    candidates are re-measured (`confirm.walk`). The workloads' samples must all have answers (call
    `evaluate.fill_answers` first). A bucket whose dense accuracy is below `settings.min_dense` is a
    SearchError (a broken set-up would make every budget "meet" the floor). A bucket whose confirmation
    samples cannot show the floor at its confidence, or that the search gave up on, is reported with a
    `SearchWarning` (the latter's outcome status is `BucketStatus.FAILING`). Buckets a timeout cut short are
    `BucketOutcome.incomplete`, and their profile reasons say so (`results.profile_from_storage`).
    """
    samples = workload.samples
    edges, groups, parts, confirm_id = split_buckets(workload, settings, confirm)
    device, timing = _device()
    floor = settings.floor_rule
    model = ModelInfo(name=loaded.name, config_sha256=loaded.config_sha256, layers=loaded.layers, heads=loaded.heads,
                      kv_heads=loaded.kv_heads, head_dim=loaded.head_dim, max_positions=loaded.max_positions)
    work = WorkloadInfo(name=workload.name, sha256=workload.sha256, samples=len(samples))
    identity = {"model": loaded.config_sha256, "workload": workload.sha256,
                "floor": {"kind": floor.kind, "value": floor.value, "confidence": floor.confidence,
                          "per_task": floor.per_task},
                "method": settings.space.method, "edges": edges, "confirm": confirm_id,
                **settings.identity()}
    deadline = None if settings.timeout is None else time.monotonic() + settings.timeout
    runs, prev = [], 0
    shares = dense_shares([[len(s.input_ids) for s in group] for group in groups])
    for i, (edge, group, (explore, check), share) in enumerate(zip(edges, groups, parts, shares)):
        rep_len = int(statistics.median(s.length for s in group))
        meta = BucketMeta(
            identity=identity, model=model, workload=work, floor=floor, method=settings.space.method,
            timing=timing, device=device, index=i, first_len=prev + 1 if i else min(s.length for s in samples),
            max_len=edge, n=len(explore), rep_len=rep_len, block_sizes=settings.space.at_length(rep_len).block_sizes,
            estimators=settings.space.estimators, dense_layers=settings.space.dense_layers,
            dense_tails=settings.space.dense_tails, tasks=[s.task for s in explore], edges=edges,
            # The shortest KV length any sample's forward sees: its prompt (answers are decoded after).
            min_len=min(len(s.input_ids) for s in samples),
            trials=settings.trials, seed=settings.seed, study=settings.study, storage=storage_url,
            confirm_n=len(check), confirm_tasks=[s.task for s in check], confirm_limit=settings.confirm_limit,
            dense_share=round(share, 6), min_share=settings.min_share)
        prev = edge
        runs.append(_BucketRun(i, edge, explore, meta, confirm_samples=check))
    warn_unresolvable([run.meta for run in runs], settings)
    _run_buckets(runs, loaded, storage, settings, deadline, on_event)
    for run in runs:
        _confirm(run, on_event)
    status = {run.edge: run.status for run in runs}
    for run in runs:
        if run.status is BucketStatus.FAILING:
            warnings.warn(failing_message(run.edge), FailingBucketWarning, stacklevel=2)
    partial = settings.timeout is not None  # a --timeout may stop before a baseline: the profile says which
    outcomes = bucket_outcomes(storage, settings.study, allow_incomplete=partial)
    profile = profile_from_storage(storage, settings.study, allow_incomplete=partial, outcomes=outcomes)
    return profile, [dataclasses.replace(o, status=status.get(o.bucket.max_len)) for o in outcomes]


def split_buckets(workload: Workload, settings: SearchSettings, confirm: Workload | None = None,
                  ) -> tuple[list[int], list[list[TokenSample]], list[tuple[list[TokenSample], list[TokenSample]]],
                             object]:
    """The buckets' edges, samples and (search, confirmation) parts, and the split's identity; a SearchError
    for a workload the buckets cannot use. Called before any storage is opened, so a refusal writes nothing."""
    samples = workload.samples
    if any(s.answer_ids is None for s in samples) or (confirm and any(s.answer_ids is None for s in confirm.samples)):
        raise SearchError("workload: every sample needs an answer; fill fidelity answers first")
    lengths = [s.length for s in samples]
    edges = list(settings.edges) if settings.edges else auto_edges(lengths, min_per_bucket=settings.min_per_bucket)
    if edges[-1] < max(lengths):
        raise SearchError(f"buckets: the last edge {edges[-1]} is below the longest sample ({max(lengths)} tokens); "
                          f"add an edge >= {max(lengths)}")
    groups = bucketize(samples, edges)
    empty = [e for e, g in zip(edges, groups) if not g]
    if empty:
        raise SearchError(f"buckets: no sample falls in the bucket(s) ending at {', '.join(map(str, empty))}; "
                          f"sample lengths run from {min(lengths)} to {max(lengths)}")
    if confirm is None:
        parts = [split_for_confirmation(g, settings.confirm_fraction) for g in groups]
        confirm_id: object = {"fraction": round(settings.confirm_fraction, 6)}
    else:
        parts = list(zip(groups, bucketize(confirm.samples, edges)))
        confirm_id = {"workload": confirm.sha256}
    for edge, (explore, check) in zip(edges, parts):
        if not check or not explore:
            raise SearchError(f"bucket <= {edge} tokens: {len(explore)} search and {len(check)} confirmation "
                              f"samples; each part needs samples (add samples or give --confirm FILE)")
    return edges, groups, parts, confirm_id


def failing_message(edge: int) -> str:
    """What a search says about a bucket it gave up on (`BucketStatus.FAILING`)."""
    return (f"bucket <= {edge} tokens: the search gave up on it, its trials kept failing (more failed trials than "
            "it has trials); the profile holds only what completed there")


def _confirm(run: _BucketRun, on_event: Callable[[TrialEvent], None] | None) -> None:
    """Re-measure the bucket's cheapest candidates on its confirmation part until one holds (`confirm.walk`).

    Results are stored per trial, so a resumed or concurrent worker continues where this one stopped;
    two workers confirming the same trial store the same results.
    """
    study, objective, meta = run.study, run.objective, run.meta
    if study is None or objective is None:
        return
    record = dense_record(study)
    if record is None or record.confirm_correct is None:
        return  # the dense trial has not run: nothing to confirm against (the profile writer says so)
    while True:
        w = stored_walk(study)
        if w.missing is None:
            return
        searched = TrialRecord.of(next(t for t in study.get_trials(deepcopy=False) if t.number == w.missing.number))
        assert searched is not None  # candidates are complete trials with records

        def stop(partial: list[bool | None], searched: TrialRecord = searched) -> bool:
            return not holds_on_confirmation(meta.floor, (record.correct, searched.correct, meta.tasks),
                                             (record.confirm_correct, best_case(partial, meta.confirm_n),
                                              meta.confirm_tasks))

        correct = objective.evaluate(run.confirm_samples, w.missing.budget, stop)
        store_confirmation(study, w.missing.number, correct)
        _emit(run, on_event, "CONFIRMED")


@dataclass
class _BucketRun:
    """One bucket as this worker sees it."""

    index: int
    edge: int
    samples: list[TokenSample]
    meta: BucketMeta
    confirm_samples: list[TokenSample] = dataclasses.field(default_factory=list)
    checked: bool = False  # the dense baseline was checked (min dense accuracy, resolution)
    study: optuna.Study | None = None
    objective: Objective | None = None
    share: float | None = None  # seconds of this worker's time for the bucket (with a timeout)
    spent: float = 0.0
    failures: int = 0  # this worker's failed trials here (skipped ones excluded)
    seen_done: int = -1  # complete trials at the last progress event
    status: BucketStatus | None = None  # how this worker last left the bucket


def _run_buckets(runs: list[_BucketRun], loaded: LoadedModel, storage: optuna.storages.BaseStorage,
                 settings: SearchSettings, deadline: float | None,
                 on_event: Callable[[TrialEvent], None] | None) -> None:
    """Work through the buckets in order until each has `settings.trials` complete trials, in all workers.

    A bucket whose remaining trials all run elsewhere (or whose dense baseline is running
    elsewhere) is left for the next pass, so a worker never idles while another bucket has work.
    When every unfinished bucket is busy elsewhere, the worker waits, failing the trials of dead
    workers meanwhile, so a killed worker's trial is retried here. A lone worker never finds a
    bucket busy, so it runs the buckets one after another exactly as before.
    """
    pending = list(runs)
    while pending:
        busy, ran = [], False
        for k, run in enumerate(pending):
            if run.study is None:
                here = settings.space.restricted_to(run.meta.block_sizes)
                anchors = [] if run.meta.left_dense else here.anchor_params(run.meta.rep_len,
                                                                           _carried(runs, run, settings))
                run.study, meta = create_or_load(storage, study_name(settings.study, run.edge), run.meta,
                                                 here.dense_params(), anchors=anchors)
                run.study.sampler = LaneSeededTPE(settings.seed)
                run.meta = meta  # the creator's: every worker agrees
                space = settings.space.restricted_to(meta.block_sizes)
                run.objective = Objective(loaded, run.samples, meta, space, run.study, storage,
                                          settings.batch_size, settings.trials, run.confirm_samples)
                if deadline is not None:
                    run.share = (deadline - time.monotonic()) / (len(pending) - k)
            run.status, worked = _work(run, storage, settings, on_event)
            if run.status is BucketStatus.DONE:
                _confirm(run, on_event)  # before the next bucket starts from what this one confirmed
            ran = ran or worked
            if run.status is BucketStatus.BUSY:
                busy.append(run)
        pending = busy
        if pending and not ran:
            if deadline is not None and time.monotonic() >= deadline:
                return  # the rest is running elsewhere; this worker's time is up
            time.sleep(POLL_S)  # the other workers are other processes (or hosts): only the storage tells
            for run in pending:
                reap(run.study, storage)  # type: ignore[arg-type]
                _emit(run, on_event, "waiting", only_if_changed=True)


def _carried(runs: list[_BucketRun], run: _BucketRun, settings: SearchSettings) -> list[dict]:
    """The budget confirmed at the next shorter bucket, as anchors of `run` (none while it is unconfirmed,
    e.g. still searched by another worker)."""
    if run.index == 0 or not settings.space.anchors:
        return []
    prev = runs[run.index - 1]
    if prev.study is None:
        return []
    chosen = stored_walk(prev.study).chosen
    if chosen is None:
        return []
    params = next(t.params for t in prev.study.get_trials(deepcopy=False) if t.number == chosen.number)
    return settings.space.carried(params, prev.meta.rep_len, run.meta.rep_len)


def _work(run: _BucketRun, storage: optuna.storages.BaseStorage, settings: SearchSettings,
          on_event: Callable[[TrialEvent], None] | None) -> tuple[BucketStatus, bool]:
    """Run trials on one bucket while it needs more than the trials running elsewhere.

    Returns (how the bucket was left, whether a trial ran). Every trial's sampler seed comes from
    `LaneSeededTPE`, so a resumed search suggests exactly what an uninterrupted one would have.
    """
    study = run.study
    assert study is not None and run.objective is not None
    target = min(settings.trials, run.meta.target)  # 1 (the dense baseline) for a bucket left dense
    if not has_heartbeat(storage):
        fail_orphans(study, storage)
    ran = False
    while True:
        ensure_dense_trial(study, run.objective.space)
        trials = study.get_trials(deepcopy=False)
        counts = TrialCounts.of(trials)
        done = counts.evaluated
        running = sum(t.state == TrialState.RUNNING for t in trials)
        if counts.finished(target):
            return BucketStatus.DONE, ran
        if run.failures > target:
            return BucketStatus.FAILING, ran
        if run.share is not None and run.spent >= run.share:
            return BucketStatus.TIMEOUT, ran
        dense_running = any(is_dense_trial(t) and t.state == TrialState.RUNNING for t in trials)
        dense_done = any(is_dense_trial(t) and t.state == TrialState.COMPLETE for t in trials)
        if dense_done and not run.checked:
            run.checked = check_baseline(study, settings)
        if done + running >= target or (dense_running and not dense_done):
            return BucketStatus.BUSY, ran
        if not any(t.state == TrialState.WAITING for t in trials):
            refined = run.objective.refinement()
            if refined is not None:
                enqueue_bisection(study, refined.params, refined.low, refined.high)
        finished: list[FrozenTrial] = []
        start = time.monotonic()
        # Only the expected failures become failed trials; anything else is a bug and propagates.
        study.optimize(run.objective, n_trials=1, catch=EXPECTED_TRIAL_ERRORS,
                       callbacks=[lambda _study, trial: finished.append(trial)])
        run.spent += time.monotonic() - start
        ran = True
        last = finished[-1]
        skipped = is_skipped(last)
        run.failures += last.state == TrialState.FAIL and not skipped
        _emit(run, on_event, "SKIPPED" if skipped else "REUSED" if reused_from(last) is not None
              else last.state.name)
        if is_feasible(last) and reused_from(last) is None:
            _confirm(run, on_event)  # at once: every costlier trial after it is then pruned unrun


def _emit(run: _BucketRun, on_event: Callable[[TrialEvent], None] | None, state: str,
          only_if_changed: bool = False) -> None:
    if on_event is None or run.study is None:
        return
    trials = run.study.get_trials(deepcopy=False)
    done = TrialCounts.of(trials).evaluated
    if only_if_changed and done == run.seen_done:
        return
    run.seen_done = done
    on_event(TrialEvent(run.index, run.edge, done, run.meta.target, chosen_cost(run.study), run.spent, state))


@dataclass
class SearchRun:
    profile: Profile
    outcomes: list[BucketOutcome]
    profile_path: Path
    plot_path: Path | None
    storage: str  # where the trials are, for resuming


def run_search(model: str, workload: str, settings: SearchSettings, out: str | os.PathLike[str],
               storage_url: str | None = None, answer_tokens: int = DEFAULT_ANSWER_TOKENS,
               on_event: Callable | None = None, plot: bool = True, confirm: str | None = None,
               write: bool = True) -> SearchRun:
    """Search (or resume), then write the profile atomically and its frontier plot beside it.

    `confirm` names a workload whose samples confirm the candidates instead of a split of `workload`.
    `write=False` (a `--workers` helper) writes neither: the process that started the helpers does.
    """
    from ..evaluate.inputs import load_inputs, load_more

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # progress is ours; Optuna's per-trial INFO lines are noise
    out = Path(out)
    loaded, work = load_inputs(model, workload, answer_tokens, threads=settings.threads)  # before any journal
    extra = None if confirm is None else load_more(loaded, confirm, answer_tokens)
    for note in (*work.warnings, *(extra.warnings if extra else ())):
        warnings.warn(note, SearchWarning, stacklevel=2)
    split_buckets(work, settings, extra)  # refuse bad buckets before the storage exists
    storage, where = storage_for(out, storage_url)
    profile, outcomes = search(loaded, work, settings, storage, storage_url=storage_url, on_event=on_event,
                               confirm=extra)
    plot_path = None
    if write:
        out.parent.mkdir(parents=True, exist_ok=True)
        profile.save(out)
    if write and plot:
        from ..plot import plot_frontier

        plot_path = plot_frontier(outcomes, out.with_suffix(".png"),
                                  title=f"{loaded.name} on {work.name}: accuracy vs attention cost per bucket")
    return SearchRun(profile, outcomes, out, plot_path, where)
