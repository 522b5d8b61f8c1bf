"""What the studies in a storage amount to: each bucket's choice (`BucketOutcome`), its progress
(`BucketProgress`), and the profile, built from the storage alone (whoever ran the trials).
"""

from __future__ import annotations

import dataclasses
import enum
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import SearchError
from ..profile.buckets import Span, bucketize, spans
from ..profile.budget import Budget
from ..profile.floor import floor_target, holds_on_confirmation, judge_floor
from ..profile.profile import (Accuracy, Bucket, DeviceSection, Floor, KernelConfig, Profile, Provenance, TaskAccuracy)
from ..workload.files import TokenSample, Workload
from .confirm import Candidate, Walk, split_for_confirmation, walk
from .space import SearchSpace
from .study import (BucketMeta, TrialCounts, TrialRecord, bucket_studies, confirmations, counts_as_trial, is_dense_trial,
                    is_feasible, meta_of, reused_from, worker_of)

__all__ = ["BucketOutcome", "BucketProgress", "BucketStatus", "bucket_outcomes", "bucket_parts", "candidates", "chosen_cost",
           "confirmation_verdicts", "dense_record", "profile_from_storage", "stored_walk", "study_progress", "trial_budget"]


class BucketStatus(str, enum.Enum):
    """How one worker left a bucket."""

    DONE = "done"  # the bucket has all its complete trials
    BUSY = "busy"  # the rest of its trials run elsewhere (or its dense baseline does)
    TIMEOUT = "timeout"  # this worker's share of --timeout is spent
    FAILING = "failing"  # more trials failed here than the bucket has trials: the search gave up on it


@dataclass(frozen=True)
class BucketOutcome:
    """A bucket's chosen point plus every trial, for the final table and the plot."""

    bucket: Bucket
    first_len: int  # shortest length of the bucket's range, as the profile has it
    trials: list[FrozenTrial]
    chosen: FrozenTrial | None
    floor_accuracy: float | None  # the accuracy the constraint compared with (None: no dense baseline yet)
    kernel: KernelConfig | None
    status: BucketStatus | None = None  # how this worker's search left it (None: read from storage only)
    failed_confirmation: tuple[int, ...] = ()  # candidates (trial numbers) that missed the floor on confirmation
    index: int = 0  # the bucket's position
    final: bool = False  # the last bucket (longer inputs use it too)
    complete: int = 0  # evaluated (complete, not reused) trials in storage
    target: int = 0  # evaluated trials the search asked for
    reused: int = 0  # complete trials that copied a measured one (the same blocks kept)
    pruned: int = 0  # trials settled unrun (they could not be chosen)

    @property
    def span(self) -> Span:
        """The lengths the bucket serves, as the profile applies it."""
        return Span(self.index, self.first_len, self.bucket.max_len, self.final)

    @property
    def incomplete(self) -> bool:
        """Short of its trials (a --timeout, a worker still running, trials that kept failing): the bucket's
        `reason` in the profile says so."""
        return not TrialCounts(self.complete, self.reused, self.pruned).finished(self.target)


def _per_task(tasks: list[str], dense: list[bool], sparse: list[bool]) -> dict[str, TaskAccuracy]:
    out = {}
    for task in sorted(set(tasks)):
        idx = [i for i, t in enumerate(tasks) if t == task]
        out[task] = TaskAccuracy(sparse=sum(sparse[i] for i in idx) / len(idx),
                                 dense=sum(dense[i] for i in idx) / len(idx), n=len(idx))
    return out


def _accuracy(floor: Floor, dense: list[bool], sparse: list[bool], tasks: list[str]) -> tuple[Accuracy, str | None]:
    """The profile's record of one measurement, and the task that bound it."""
    v = judge_floor(floor, dense, sparse, tasks)
    m = v.overall
    return Accuracy(sparse=m.sparse, dense=m.dense, n=m.n, per_task=_per_task(tasks, dense, sparse),
                    lower_bound=round(m.lower_bound, 6) if floor.confidence is not None else None), v.binding


def dense_record(study: optuna.Study) -> TrialRecord | None:
    """The bucket's dense baseline: the first complete dense trial's record, or None before it ran."""
    dense = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if is_dense_trial(t)]
    for t in sorted(dense, key=lambda t: t.number):
        record = TrialRecord.of(t)
        if record is not None:
            return record
    return None


def trial_budget(meta: BucketMeta, params: dict[str, Any]) -> Budget:
    """The budget a trial of this bucket's study measured, from its parameters."""
    space = SearchSpace(method=meta.method, estimators=meta.estimators, block_sizes=meta.block_sizes or (64,),
                        dense_layers=meta.dense_layers, dense_tails=meta.dense_tails)
    return space.budget_of(params)


def bucket_parts(meta: BucketMeta, workload: Workload) -> tuple[list[TokenSample], list[TokenSample]]:
    """The (search, confirmation) samples a bucket's study measured, rebuilt from the workload it searched.

    A study stores per-sample results, not samples; the split depends on the samples alone
    (`split_for_confirmation`), so the workload gives them back in the order the results are stored.
    A SearchError for another workload, or a study that confirmed on a separate file (`--confirm`)."""
    if workload.sha256 != meta.workload.sha256:
        raise SearchError(f"workload: {workload.name} is not the workload the study searched "
                          f"({meta.workload.name}, sha256 {meta.workload.sha256[:12]})")
    if "fraction" not in meta.identity.get("confirm", {}):
        raise SearchError("workload: the study confirmed on a separate file (--confirm); its confirmation samples "
                          "are not in the searched workload")
    group = bucketize(workload.samples, meta.edges)[meta.index]
    if len(group) == meta.n + meta.confirm_n:
        # The stored fraction is rounded; the stored count gives the split exactly (it depends on n and the count).
        search, confirm = split_for_confirmation(group, meta.confirm_n / len(group))
        if [s.task for s in search] == list(meta.tasks) and [s.task for s in confirm] == list(meta.confirm_tasks):
            return search, confirm
    raise SearchError(f"workload: bucket <= {meta.max_len} tokens does not split into the study's {meta.n} + "
                      f"{meta.confirm_n} samples (tokenized for another model?)")


def candidates(study: optuna.Study) -> list[Candidate]:
    """Sparse trials that evaluated every search sample and met the floor there, cheaper than dense (a trial
    that reused another's measurement is that trial's candidate, not one of its own)."""
    meta = meta_of(study)
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        record = TrialRecord.of(t)
        if is_dense_trial(t) or reused_from(t) is not None or record is None or not record.complete or not is_feasible(t) or t.value >= 1.0:
            continue
        out.append(Candidate(t.number, float(t.value), trial_budget(meta, t.params)))  # type: ignore[arg-type]
    return out


def confirmation_verdicts(study: optuna.Study) -> dict[int, bool]:
    """Stored confirmations judged by `floor.holds_on_confirmation`: held (True) or not; an early-stopped one
    did not."""
    meta, base = meta_of(study), dense_record(study)
    if base is None or base.confirm_correct is None:
        return {}
    records = {t.number: TrialRecord.of(t) for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    out = {}
    for number, correct in confirmations(study).items():
        rec = records.get(number)
        finished = len(correct) == len(base.confirm_correct) and None not in correct
        out[number] = rec is not None and finished and holds_on_confirmation(
            meta.floor, (base.correct, rec.correct, meta.tasks), (base.confirm_correct, correct, meta.confirm_tasks))
    return out


def stored_walk(study: optuna.Study) -> Walk:
    """The confirmation walk over the study's candidates and stored verdicts, at the study's limit: what the
    profile would choose now, and what is still to confirm."""
    return walk(candidates(study), confirmation_verdicts(study), meta_of(study).confirm_limit)


def chosen_cost(study: optuna.Study) -> float | None:
    """The cost of what the profile would hold now: the walk's confirmed choice (not a candidate that failed or
    awaits confirmation), dense (1.0) while none is confirmed, None before the dense baseline completes."""
    if dense_record(study) is None:
        return None
    chosen = stored_walk(study).chosen
    return 1.0 if chosen is None else chosen.cost


def _outcome(study: optuna.Study) -> BucketOutcome:
    """The bucket's choice: the cheapest candidate that held on the confirmation part (`confirm.walk`);
    dense, with the reason, when none did."""
    meta = meta_of(study)
    floor = meta.floor
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    base_record = dense_record(study)
    if base_record is None:
        raise SearchError(f"study {study.study_name!r}: the dense baseline trial has not completed; "
                          f"run the search (it resumes) before writing the profile")
    base = min((t for t in complete if is_dense_trial(t) and TrialRecord.of(t) is not None), key=lambda t: t.number)
    dense = base_record.correct
    dense_acc = sum(dense) / len(dense)
    target = floor_target(floor, dense_acc)
    found = candidates(study)
    w = walk(found, confirmation_verdicts(study), meta.confirm_limit)
    if not w.done:
        raise SearchError(f"study {study.study_name!r}: {len(w.confirmed)} candidates confirmed so far, trial "
                          f"{w.missing.number} is next (not confirmed yet); run the search (it resumes) "  # type: ignore[union-attr]
                          f"before writing the profile")
    confirm_dense = base_record.confirm_correct or []
    kernel = None
    sparse = [t for t in complete if not is_dense_trial(t)]
    if w.chosen is not None:
        chosen = next(t for t in complete if t.number == w.chosen.number)
        rec = TrialRecord.of(chosen)
        assert rec is not None
        confirmed = confirmations(study)[chosen.number]
        accuracy, _ = _accuracy(floor, dense, rec.correct, meta.tasks)
        confirmation, bound_by = _accuracy(floor, confirm_dense, confirmed, meta.confirm_tasks)
        skipped = len(w.failed) + len(w.pruned)
        reason = (f"cheapest of {len(found)} candidates (met the floor on {meta.n} search samples) that also held on "
                  f"{meta.confirm_n} fresh confirmation samples and on all {meta.n + meta.confirm_n} together"
                  + (f"; {len(w.failed)} cheaper failed confirmation, {len(w.pruned)} skipped by monotonicity"
                     if skipped else ""))
        bucket = Bucket(max_len=meta.max_len, budget=w.chosen.budget, reason=reason, accuracy=accuracy,
                        confirmation=confirmation, bound_by=bound_by,
                        sparsity=round(rec.sparsity, 6), cost=round(chosen.value, 6))  # type: ignore[arg-type]
        kernel = _kernel_config(rec.cost, w.chosen.budget)
    else:
        whole = dense + confirm_dense  # search and confirmation samples: the bucket's dense accuracy
        if meta.left_dense:
            reason = (f"left dense: it holds {meta.dense_share:.1%} of the workload's dense attention cost, under "
                      f"the {meta.min_share:.0%} (--min-share) a bucket needs to be worth a sparse budget")
        elif floor.kind == "absolute" and sum(whole) / len(whole) < floor.value:
            reason = f"dense accuracy {sum(whole) / len(whole):.3f} is itself below the absolute floor {floor.value}"
        elif w.failed:
            reason = (f"none of the {len(w.failed)} cheapest of {len(found)} candidates held the floor on "
                      f"{meta.confirm_n} confirmation samples")
        else:
            reason = f"no sparse budget met the floor ({target:.3f}) on {meta.n} search samples in {len(sparse)} trials"
        confirmation = None
        if confirm_dense:
            confirmation, _ = _accuracy(floor, confirm_dense, confirm_dense, meta.confirm_tasks)
        bucket = Bucket(max_len=meta.max_len, dense=True, reason=reason,
                        accuracy=Accuracy(sparse=dense_acc, dense=dense_acc, n=len(dense),
                                          per_task=_per_task(meta.tasks, dense, dense)),
                        confirmation=confirmation, sparsity=0.0, cost=1.0)
        chosen = base
    counts = TrialCounts.of(trials)
    bucket = _noted(bucket, counts, meta.target)
    span = _span(meta)
    return BucketOutcome(bucket=bucket, first_len=span.first, index=meta.index, final=span.final, trials=trials,
                         chosen=chosen,
                         floor_accuracy=target, kernel=kernel, failed_confirmation=tuple(c.number for c in w.failed),
                         complete=counts.evaluated, target=meta.target, reused=counts.reused, pruned=counts.pruned)


def _span(meta: BucketMeta) -> Span:
    """The bucket's lengths as the profile will apply them (`Profile.span`): the first starts at min_len."""
    return spans(meta.edges, meta.min_len)[meta.index]


def _noted(bucket: Bucket, counts: TrialCounts, target: int) -> Bucket:
    """A bucket short of its trials says so first in its reason, with its trial count."""
    if counts.finished(target):
        return bucket
    note = f"incomplete: {counts.evaluated} of {target} trials"
    return dataclasses.replace(bucket, reason=f"{note}; {bucket.reason}" if bucket.reason else note)


def _unfinished(span: Span, trials: list[FrozenTrial], target: int) -> BucketOutcome:
    """A bucket the search stopped before its dense baseline completed (or never reached): dense until the
    search resumes, since nothing was measured there."""
    done = TrialCounts.of(trials).evaluated
    bucket = Bucket(max_len=span.last, dense=True,
                    reason=f"incomplete: {done} of {target} trials, stopped before the dense baseline completed; "
                           f"dense until the search resumes")
    return BucketOutcome(bucket=bucket, first_len=span.first, index=span.index or 0, final=span.final, trials=trials,
                         chosen=None, floor_accuracy=None,
                         kernel=None, complete=done, target=target)


def _kernel_config(cost: dict[str, Any], budget: Budget) -> KernelConfig:
    from ..kernels.configs import default_config

    if cost.get("label") == "measured" and cost.get("config"):
        return KernelConfig(**cost["config"], ms=cost["ms"], dense_ms=cost["dense_ms"],
                            selection_ms=cost["selection_ms"] or None)
    return KernelConfig(**default_config(budget.block_size))


def bucket_outcomes(storage: optuna.storages.BaseStorage, prefix: str,
                    allow_incomplete: bool = False) -> list[BucketOutcome]:
    """Every bucket's choice, by edge. A bucket without its dense baseline, or never started, is a SearchError,
    or with `allow_incomplete` (what a search stopped by its --timeout leaves) a dense `incomplete` bucket."""
    studies = bucket_studies(storage, prefix)
    if not allow_incomplete:
        return [_outcome(s) for s in studies]
    out = []
    for s in studies:
        meta = meta_of(s)
        started = dense_record(s) is not None
        out.append(_outcome(s) if started else
                   _unfinished(_span(meta), s.get_trials(deepcopy=False), meta.target))
    last = meta_of(studies[-1])
    reached = {o.bucket.max_len for o in out}
    for span in spans(last.edges, last.min_len):
        if span.last not in reached:
            out.append(_unfinished(span, [], last.trials))
    return sorted(out, key=lambda o: o.bucket.max_len)


@dataclass(frozen=True)
class BucketProgress:
    """Where one bucket's study stands, from the storage (for `sparsetune collect` and dashboards)."""

    max_len: int
    target: int  # evaluated trials the search that created the study asked for
    complete: int  # evaluated: complete and measured (these count toward `target`)
    running: int
    waiting: int  # queued: the dense trial, or a dead worker's trial to retry
    failed: int  # including skipped ones
    retried: int  # trials that re-run a dead worker's trial
    workers: tuple[str, ...]  # `host:pid` of every worker with a complete trial here
    baseline: bool  # the dense trial is complete
    best_cost: float | None  # `chosen_cost`: what the profile would hold now (relative to dense)
    reused: int = 0  # complete, copying a measured trial that kept the same blocks
    pruned: int = 0  # settled unrun: could not be chosen

    @property
    def finished(self) -> bool:
        return TrialCounts(self.complete, self.reused, self.pruned).finished(self.target)

    def to_dict(self) -> dict[str, Any]:
        return {"max_len": self.max_len, "complete": self.complete, "target": self.target, "running": self.running,
                "waiting": self.waiting, "failed": self.failed, "retried": self.retried, "reused": self.reused,
                "pruned": self.pruned, "finished": self.finished, "workers": list(self.workers),
                "baseline": self.baseline, "best_cost": self.best_cost}


def _retried_trial_number(t: FrozenTrial) -> int | None:
    with warnings.catch_warnings():  # experimental since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)


def study_progress(storage: optuna.storages.BaseStorage, prefix: str) -> list[BucketProgress]:
    """Per bucket of the studies `<prefix>:<max_len>`: trial counts by state, workers, best cost so far.

    Buckets no worker has reached yet are listed with zero trials.
    """
    rows = []
    studies = bucket_studies(storage, prefix)
    metas: list[BucketMeta] = []
    for study in studies:
        meta = meta_of(study)
        metas.append(meta)
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        counts = TrialCounts.of(trials)
        rows.append(BucketProgress(
            max_len=meta.max_len, target=meta.target, complete=counts.evaluated,
            reused=counts.reused, pruned=counts.pruned,
            running=sum(t.state == TrialState.RUNNING for t in trials),
            waiting=sum(t.state == TrialState.WAITING for t in trials),
            failed=sum(t.state == TrialState.FAIL for t in trials),
            retried=sum(_retried_trial_number(t) is not None for t in trials),
            workers=tuple(sorted({w for t in complete if counts_as_trial(t) and (w := worker_of(t)) is not None})),
            baseline=any(is_dense_trial(t) for t in complete),
            best_cost=chosen_cost(study)))
    last = metas[-1]
    started = {r.max_len for r in rows}
    rows += [BucketProgress(max_len=e, target=last.trials, complete=0, running=0, waiting=0, failed=0,
                            retried=0, workers=(), baseline=False, best_cost=None)
             for e in last.edges if e not in started]
    return sorted(rows, key=lambda r: r.max_len)


def profile_from_storage(storage: optuna.storages.BaseStorage, prefix: str, allow_incomplete: bool = False,
                         outcomes: list[BucketOutcome] | None = None) -> Profile:
    """The profile of everything the studies `<prefix>:<max_len>` hold, whoever ran their trials.

    Deterministic for given storage contents: `created` is the last complete trial's completion time. A bucket
    short of its trials starts its `reason` with ``incomplete: <complete> of <target> trials``;
    `provenance.trials_per_bucket` is the target. A bucket without its dense baseline (or never started) is a
    SearchError, or with `allow_incomplete` a dense bucket that says so (`bucket_outcomes`). `outcomes`: that
    function's result, when the caller already has it.
    """
    from .._version import __version__

    studies = bucket_studies(storage, prefix)
    if outcomes is None:
        outcomes = bucket_outcomes(storage, prefix, allow_incomplete)
    meta = meta_of(studies[-1])
    missing = [e for e in meta.edges if e not in {o.bucket.max_len for o in outcomes}]
    if missing:
        raise SearchError(f"study {prefix!r}: buckets ending at {', '.join(map(str, missing))} were never "
                          f"started; run the search (it resumes) before writing the profile")
    # Complete trials only: skipped or failed ones may still end after the last trial that counts.
    finished = [t.datetime_complete for s in studies for t in s.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    last_done = max(finished) if finished else datetime.now(timezone.utc)  # type: ignore[type-var]
    created = last_done.astimezone().replace(microsecond=0)
    kernels = {o.bucket.max_len: o.kernel for o in outcomes if o.kernel is not None}
    return Profile(
        model=meta.model,
        workload=meta.workload,
        floor=meta.floor,
        method=meta.method,  # type: ignore[arg-type]
        provenance=Provenance(
            sparsetune=__version__, created=created.isoformat().replace("+00:00", "Z"), study=prefix,
            trials_per_bucket=meta.trials,  # the target; a bucket short of it says so in its reason
            seed=meta.seed, storage=Provenance.create(study=prefix, trials_per_bucket=0, seed=0,
                                                      storage=meta.storage).storage),
        min_len=meta.min_len,
        buckets=tuple(o.bucket for o in outcomes),
        devices={meta.device: DeviceSection(timing=meta.timing, kernels=kernels)} if kernels else {},  # type: ignore[arg-type]
    )
