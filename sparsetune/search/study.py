"""The search's data model in storage, typed: one Optuna study per bucket, described by `BucketMeta`
(the study's ``meta`` user attr, `search/meta.py`), with one `TrialRecord` per measured trial (trial user attrs).

Storage holds plain JSON; the conversion to and from it lives here (and the meta's in `meta.py`), so no other
module reads a user attr by its string key. The stored layout is unchanged from earlier versions, so
existing storages resume.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ..errors import SearchError
from .meta import BucketMeta

__all__ = [
    "ATTEMPTS",
    "LIVE",
    "TrialCounts",
    "BucketMeta",
    "TrialRecord",
    "bucket_studies",
    "confirmations",
    "create_or_load",
    "ensure_dense_trial",
    "is_dense_trial",
    "is_feasible",
    "is_evaluating",
    "is_skipped",
    "counts_as_trial",
    "deferred_to",
    "mark_deferred",
    "mark_dense",
    "mark_evaluating",
    "mark_pruned",
    "mark_reused",
    "pruned_reason",
    "reused_from",
    "mark_skipped",
    "mark_started",
    "planned_params",
    "meta_of",
    "seed_of",
    "store_confirmation",
    "study_name",
    "worker_of",
]

_META = "meta"  # study user attr: BucketMeta
_DENSE = "dense"  # trial user attr: the bucket's dense baseline trial
_SKIPPED = "skipped"  # trial user attr: why a trial was not needed
_WORKER = "worker"  # trial user attr: host:pid of the worker that ran it
_SEED = "seed"  # trial user attr: the TPE seed it was sampled with
_PRUNED = "pruned"  # trial user attr: why a trial was settled without running (state PRUNED)
_REUSED = "reuses"  # trial user attr: the trial whose measurement this one reuses (the same blocks kept)
_DEFERRED = "defers_to"  # trial user attr: the running trial that measures this pruned one's blocks
_BISECTS = "bisects"  # trial user attr: [miss, hold], the trials whose bracket it halves (`refine`)
_EVALUATING = "evaluating"  # trial user attr: the sparse budget passed every check and is being measured


def meta_of(study: optuna.Study) -> BucketMeta:
    return BucketMeta.from_attr(study.user_attrs[_META])


@dataclass(frozen=True)
class TrialRecord:
    """What a measured trial found (complete trials; a skipped or crashed trial has none)."""

    # Per sample of the search part: None where a trial stopped early before evaluating it (the dense trial's and
    # complete trials' hold no None). Older stores hold a stopped trial's evaluated prefix, which reads the same.
    correct: list[bool | None]
    accuracy: float  # over the evaluated samples
    complete: bool  # every sample evaluated (not stopped early)
    sparsity: float  # achieved: skipped / visible key blocks
    cost: dict[str, Any] = field(default_factory=dict)  # relative, label (measured | cost-model), timings
    seconds: float = 0.0
    lower_bound: float | None = None  # with a floor confidence: the paired lower bound judged
    dense: bool = False  # the bucket's dense baseline trial
    confirm_correct: list[bool] | None = None  # the dense trial only: dense on the confirmation part

    def store(self, trial: optuna.Trial) -> None:
        if self.dense:
            trial.set_user_attr(_DENSE, True)
        trial.set_user_attr("correct", _bits(self.correct))
        trial.set_user_attr("accuracy", self.accuracy)
        trial.set_user_attr("complete", self.complete)
        trial.set_user_attr("sparsity", self.sparsity)
        trial.set_user_attr("cost", self.cost)
        if self.lower_bound is not None:
            trial.set_user_attr("lower_bound", self.lower_bound)
        trial.set_user_attr("seconds", self.seconds)
        if self.confirm_correct is not None:
            trial.set_user_attr("confirm_correct", _bits(self.confirm_correct))

    @classmethod
    def of(cls, t: FrozenTrial) -> TrialRecord | None:
        a = t.user_attrs
        if "correct" not in a or "accuracy" not in a:
            return None
        return cls(correct=_unbits(a["correct"]), accuracy=a["accuracy"],
                   complete=bool(a.get("complete")), sparsity=a.get("sparsity", 0.0), cost=a.get("cost", {}),
                   seconds=a.get("seconds", 0.0), lower_bound=a.get("lower_bound"), dense=is_dense_trial(t),
                   confirm_correct=_unbits(a["confirm_correct"]) if "confirm_correct" in a else None)


def _bits(correct: Sequence[bool | None]) -> str:
    return "".join("-" if c is None else "1" if c else "0" for c in correct)


def _unbits(bits: str) -> list[bool | None]:
    return [None if c == "-" else c == "1" for c in bits]


_CONFIRM = "confirm:"  # study user attr prefix: a candidate trial's per-sample results on the confirmation part


def store_confirmation(study: optuna.Study, number: int, correct: list[bool | None]) -> None:
    """Keep trial `number`'s confirmation results (None where one stopped early did not evaluate). A finished
    trial's own attrs are frozen, so they live on the study; two workers writing the same trial's
    results write the same bits (evaluation is deterministic)."""
    study.set_user_attr(f"{_CONFIRM}{number}", _bits(correct))


def confirmations(study: optuna.Study) -> dict[int, list[bool | None]]:
    """Every stored confirmation of the bucket's study, by trial number."""
    return {int(k[len(_CONFIRM):]): _unbits(v) for k, v in study.user_attrs.items()
            if k.startswith(_CONFIRM) and k[len(_CONFIRM):].isdigit()}


def mark_started(trial: optuna.Trial, worker: str, seed: int | None) -> None:
    trial.set_user_attr(_WORKER, worker)
    trial.set_user_attr(_SEED, seed)


def mark_skipped(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(_SKIPPED, reason)


def is_skipped(t: FrozenTrial) -> bool:
    return _SKIPPED in t.user_attrs


def mark_pruned(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr(_PRUNED, reason)


def pruned_reason(t: FrozenTrial) -> str | None:
    return t.user_attrs.get(_PRUNED) if t.state == TrialState.PRUNED else None


def mark_evaluating(trial: optuna.Trial) -> None:
    # The worker's id, not True: a dead worker's trial is retried with its user attrs copied, and the
    # retry's own worker (`mark_started`) differs until it gets this far itself.
    trial.set_user_attr(_EVALUATING, trial.user_attrs.get(_WORKER))


def is_evaluating(t: FrozenTrial) -> bool:
    """Whether a sparse trial got past skipping, pruning and reuse to its measurement (dashboards, tests)."""
    return _EVALUATING in t.user_attrs and t.user_attrs[_EVALUATING] == t.user_attrs.get(_WORKER)


def mark_reused(trial: optuna.Trial, source: int) -> None:
    trial.set_user_attr(_REUSED, source)


def planned_params(t: FrozenTrial) -> dict[str, Any]:
    """The parameters a trial runs: a waiting (enqueued) trial has none suggested yet and a running one may have
    only some, so its fixed (enqueued) ones count too."""
    return {**t.system_attrs.get("fixed_params", {}), **t.params}


def mark_deferred(trial: optuna.Trial, source: int) -> None:
    trial.set_user_attr(_DEFERRED, source)


def deferred_to(t: FrozenTrial) -> int | None:
    """The running trial a pruned duplicate left its blocks to (`Objective._unneeded`), or None."""
    return t.user_attrs.get(_DEFERRED)


def enqueue_bisection(study: optuna.Study, params: dict[str, Any], low: int, high: int) -> None:
    """Enqueue a bisection trial (`refine.midpoint`): its parameters, and the bracket it halves."""
    study.enqueue_trial(params, user_attrs={_BISECTS: [low, high]})


def bisects(t: FrozenTrial) -> tuple[int, int] | None:
    """The (miss, hold) trials whose bracket `t` halves, or None when `t` is not a bisection trial."""
    pair = t.user_attrs.get(_BISECTS)
    return None if pair is None else (pair[0], pair[1])


def reused_from(t: FrozenTrial) -> int | None:
    """The trial whose measurement `t` copied (it kept the same blocks), or None when `t` was evaluated."""
    return t.user_attrs.get(_REUSED)


def counts_as_trial(t: FrozenTrial) -> bool:
    """Whether a complete trial counts toward the bucket's `trials`: it was evaluated, not copied."""
    return _REUSED not in t.user_attrs


# A bucket's study ends after this many times its trials, pruned and reused ones included: they cost nothing
# and do not count, but a study that keeps suggesting them has nothing cheaper left to find.
ATTEMPTS = 4


@dataclass(frozen=True)
class TrialCounts:
    """A bucket's trials by how they were settled."""

    evaluated: int  # complete and measured: these count toward `trials`
    reused: int  # complete, copying a measured trial that kept the same blocks
    pruned: int  # settled unrun: could not be chosen

    @classmethod
    def of(cls, trials: Sequence[FrozenTrial]) -> TrialCounts:
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        reused = sum(not counts_as_trial(t) for t in complete)
        return cls(evaluated=len(complete) - reused, reused=reused,
                   pruned=sum(t.state == TrialState.PRUNED for t in trials))

    def finished(self, target: int) -> bool:
        return self.evaluated >= target or self.evaluated + self.reused + self.pruned >= ATTEMPTS * target


def worker_of(t: FrozenTrial) -> str | None:
    return t.user_attrs.get(_WORKER)


def seed_of(t: FrozenTrial) -> int | None:
    return t.user_attrs.get(_SEED)


def mark_dense(trial: optuna.Trial) -> None:
    trial.set_user_attr(_DENSE, True)


def is_dense_requested(trial: optuna.Trial) -> bool:
    """The trial was enqueued as the dense baseline."""
    return bool(trial.user_attrs.get(_DENSE))


def is_dense_trial(t: FrozenTrial) -> bool:
    return bool(t.user_attrs.get(_DENSE)) or t.params.get("keep", t.params.get("tau")) == 1.0


def is_feasible(t: FrozenTrial) -> bool:
    return t.state == TrialState.COMPLETE and bool(t.constraints) and all(v <= 0 for v in t.constraints.values())


def study_name(prefix: str, max_len: int) -> str:
    return f"{prefix}:{max_len}"


def create_or_load(storage: optuna.storages.BaseStorage, name: str, meta: BucketMeta,
                   dense_params: dict[str, Any], wait_s: float = 30.0,
                   anchors: Sequence[dict[str, Any]] = ()) -> tuple[optuna.Study, BucketMeta]:
    """Create the bucket's study and enqueue its dense trial (then the `anchors`, simple policies TPE starts
    from), or load it if another worker made it.

    Creation is atomic in every Optuna storage, so exactly one worker enqueues the dense trial. It
    does so before writing the study's `meta`, and a loader waits for `meta`: a worker that loads
    a study in the instant after its creation therefore never sees it without its dense trial.
    Returns the study and the meta it holds (the creator's, which a resumed run reads back; a run with a larger
    trial target raises the stored one, never lowers it).
    """
    # An existing study is loaded without a create attempt: a refused rerun then writes nothing to the storage.
    try:
        if name in optuna.get_all_study_names(storage):
            raise optuna.exceptions.DuplicatedStudyError(name)
        study = optuna.create_study(study_name=name, storage=storage, direction="minimize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage)
        deadline = time.monotonic() + wait_s
        # Another process is creating it: polling the shared storage is the only signal there is.
        while _META not in study.user_attrs and time.monotonic() < deadline:
            time.sleep(0.2)
        old = study.user_attrs.get(_META)
        if old is None:  # its creator died between creating and describing it
            study.set_user_attr(_META, meta.to_attr())
            return study, meta
        if old.get("identity") != meta.identity:
            raise SearchError(
                f"study {name!r}: exists with another model, workload, floor, method or search space; "
                f"use another --study or storage") from None
        stored = BucketMeta.from_attr(old)
        if meta.trials > stored.trials:  # a resumed run asking for more trials: the profile reports that target
            stored = replace(stored, trials=meta.trials)
            study.set_user_attr(_META, stored.to_attr())
        return study, stored
    study.enqueue_trial(dense_params, user_attrs={_DENSE: True})
    for params in anchors:
        study.enqueue_trial(params)
    study.set_user_attr(_META, meta.to_attr())
    return study, meta


LIVE = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)


def ensure_dense_trial(study: optuna.Study, space: Any) -> None:
    """Re-enqueue the dense trial when it failed (e.g. its worker was killed) and none is pending.

    Two workers may both re-enqueue it; the later copy is skipped when it starts (`_Objective._skip`).
    """
    trials = study.get_trials(deepcopy=False)
    if not any(is_dense_trial(t) and t.state in LIVE for t in trials):
        study.enqueue_trial(space.dense_params(), user_attrs={_DENSE: True})


def bucket_studies(storage: optuna.storages.BaseStorage, prefix: str) -> list[optuna.Study]:
    """The bucket studies ``<prefix>:<max_len>`` that have their meta, by bucket edge."""
    names = [n for n in optuna.get_all_study_names(storage) if n.rsplit(":", 1)[0] == prefix
             and n.rsplit(":", 1)[-1].isdigit()]
    if not names:
        found = sorted({n.rsplit(":", 1)[0] for n in optuna.get_all_study_names(storage)
                        if n.rsplit(":", 1)[-1].isdigit()})
        there = (f"it holds the studies {', '.join(map(repr, found))}; pass one with --study" if found
                 else "it holds none (nothing searched yet?)")
        raise SearchError(f"study {prefix!r}: no bucket studies of that name in this storage; {there}")
    studies = [optuna.load_study(study_name=n, storage=storage) for n in names]
    studies = [s for s in studies if _META in s.user_attrs]
    return sorted(studies, key=lambda s: s.user_attrs[_META]["bucket"]["max_len"])
