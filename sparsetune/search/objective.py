"""The trial objective: evaluate one budget on a bucket, stop early once the floor is out of reach,
and report the attention cost (objective) and the floor shortfall (constraint).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from ..errors import SearchError, SparsetuneError
from ..evaluate.decode import EvalResult, evaluate
from ..profile.budget import Budget
from ..profile.floor import best_case, judge_confirmation
from ..runtime.hf_attention import AttentionStats
from ..timing import budget_cost, with_dense_layers
from ..workload.files import TokenSample
from ..workload.models import LoadedModel
from .confirm import keeps_no_more, walk
from .plan import Shape, mask_key, planned_density
from .refine import COST_TOLERANCE, Bisection, Outcome, midpoint, worth_below
from .results import candidates, confirmation_verdicts, stored_walk
from .space import SearchSpace
from .storage import reap, worker_id
from .study import (LIVE, BucketMeta, TrialRecord, counts_as_trial, deferred_to, is_dense_requested, is_dense_trial,
                    is_feasible, mark_deferred, mark_dense, mark_evaluating, mark_pruned, mark_reused, mark_skipped,
                    mark_started, planned_params, reused_from)

__all__ = ["EXPECTED_TRIAL_ERRORS", "Objective", "SkippedTrial"]

POLL_S = 1.0  # how often a worker waiting on another worker's dense trial looks at the storage again


class SkippedTrial(Exception):
    """A trial that another trial makes unnecessary: recorded as FAIL with a `skipped` user attr."""


# What a trial may fail with and the search go on: bad input found while evaluating (sparsetune's own
# errors), a surplus trial, and a budget too large for the GPU. Anything else is a bug and surfaces.
EXPECTED_TRIAL_ERRORS: tuple[type[BaseException], ...] = (SparsetuneError, SkippedTrial, torch.OutOfMemoryError)


def baseline_from_storage(study: optuna.Study, storage: optuna.storages.BaseStorage,
                          wait_s: float = 600.0) -> TrialRecord | None:
    """The bucket's dense trial's record (per-sample dense correctness on the search and confirmation
    parts), waiting while another worker runs it.

    None when no dense trial is complete or running (the caller then computes the baseline itself).
    The other worker may be on another host: polling the shared storage is the only signal there is.
    """
    deadline = time.monotonic() + wait_s
    while True:
        trials = study.get_trials(deepcopy=False)
        done = [t for t in trials if is_dense_trial(t) and t.state == TrialState.COMPLETE]
        if done:
            record = TrialRecord.of(min(done, key=lambda t: t.number))
            if record is not None:
                return record
        running = [t for t in trials if is_dense_trial(t) and t.state == TrialState.RUNNING]
        if not running or time.monotonic() > deadline:
            return None
        time.sleep(POLL_S)
        reap(study, storage)


class Objective:
    """Evaluates one trial's budget on a bucket; stops early once the floor is out of reach."""

    def __init__(self, loaded: LoadedModel | None, samples: list[TokenSample], meta: BucketMeta | None,
                 space: SearchSpace, study: optuna.Study, storage: optuna.storages.BaseStorage | None,
                 batch_size: int, target: int, confirm_samples: list[TokenSample] | None = None) -> None:
        self.loaded, self.samples, self.meta, self.space = loaded, samples, meta, space
        self.confirm_samples = confirm_samples or []
        self.study, self.storage, self.batch_size, self.target = study, storage, batch_size, target
        self.timings: dict[tuple, dict[str, Any]] = {}  # launch-config timings per (bucket, budget)
        # Every forward a budget will make on this bucket (search and confirmation parts): what `plan` needs.
        self.shapes: list[Shape] = [(len(s.input_ids), len(s.answer_ids or ()))
                                    for s in [*samples, *self.confirm_samples]]

    def __call__(self, trial: optuna.Trial) -> float:
        assert self.meta is not None and self.loaded is not None
        mark_started(trial, worker_id(), getattr(self.study.sampler, "last_seed", None))
        budget = self.space.suggest(trial)  # the enqueued dense trial gets its fixed parameters back
        is_dense = budget.is_dense or is_dense_requested(trial)
        reason = self._skip(trial.number, is_dense)
        if reason is not None:
            mark_skipped(trial, reason)
            raise SkippedTrial(f"skipped: {reason}")
        if not is_dense:
            source = self._unneeded(trial, budget)
            if source is not None:
                return source
            mark_evaluating(trial)
        confirm_dense = None
        if is_dense:  # the dense trial: its own baseline (and the confirmation part's), at dense SDPA's cost
            mark_dense(trial)
            result = self._run(None)
            dense = result.correct
            confirm_dense = self.evaluate(self.confirm_samples, None) if self.confirm_samples else []
            cost: dict[str, Any] = {"relative": 1.0, "label": self.meta.timing}
        else:
            base = baseline_from_storage(self.study, self.storage)  # type: ignore[arg-type]
            # Without the dense trial (it failed): compute the search part's baseline here.
            dense = base.correct if base is not None else self._run(None).correct
            unchanged = (base.confirm_correct or []) if base is not None else []

            def stop(partial: list[bool | None]) -> bool:
                return not self._judge(dense, partial, unchanged).met

            result = self._run(budget, None, stop, order=self._fail_first(dense))
            cost = self._cost(budget, 1.0 - result.sparsity)
        # An early-stopped trial is judged on its best case (the rest all right), which still misses.
        v = self._judge(dense, result.correct, confirm_dense if is_dense else unchanged)
        seen = [c for c in result.correct if c is not None]
        TrialRecord(correct=result.correct, accuracy=sum(seen) / max(len(seen), 1),
                    complete=len(seen) == len(self.samples), sparsity=result.sparsity, cost=cost,
                    seconds=round(result.seconds, 3),
                    lower_bound=v.overall.lower_bound if self.meta.floor.confidence is not None else None,
                    dense=is_dense, confirm_correct=confirm_dense).store(trial)
        trial.set_constraint("floor", v.shortfall)  # feasible when <= 0
        return float(cost["relative"])

    def planned_cost(self, budget: Budget) -> float:
        """The budget's cost-model cost at the bucket's length, from its planned density (`plan`)."""
        m = self.meta
        assert m is not None
        return budget_cost(budget, m.rep_len, planned_density(budget, self.shapes), m.model.head_dim,
                           m.model.heads, m.model.kv_heads, m.model.layers)

    def refinement(self) -> Bisection | None:
        """The next bisection trial, or None: `refine.midpoint` on the measured trials, a trial that failed its
        confirmation (or copied one that did) counting as a miss, and the dense trial as every family's keep 1."""
        assert self.meta is not None
        trials = self.study.get_trials(deepcopy=False)
        verdicts = confirmation_verdicts(self.study)
        w = walk(candidates(self.study), verdicts, self.meta.confirm_limit)
        if w.spent:
            return None  # every trial is pruned now: nothing cheaper can be confirmed
        # Every stored failure, not only the walk's: it stops at its choice, before costlier candidates that failed.
        failed = {n for n, held in verdicts.items() if not held}
        outcomes, dense = [], None
        for t in trials:
            if t.state != TrialState.COMPLETE:
                continue
            if is_dense_trial(t):
                dense = t.number
                continue
            refuted = t.number in failed or reused_from(t) in failed  # met the floor here, failed confirmation
            outcomes.append(Outcome(t.number, t.params, self.space.budget_of(t.params),
                                    held=is_feasible(t) and not refuted))
        # (Two workers may still both enqueue one midpoint in the same instant; `_unneeded` prunes the later copy.)
        # A copy that deferred to a trial which then failed measured nothing: its point is open again.
        failed_runs = {t.number for t in trials if t.state == TrialState.FAIL}
        tried = {tuple(sorted(planned_params(t).items()))
                 for t in trials if t.state != TrialState.FAIL and deferred_to(t) not in failed_runs}
        ceiling = self.planned_cost(w.chosen.budget) if w.chosen is not None else None
        return midpoint(outcomes, self.planned_cost, ceiling, tried, dense)

    def _unneeded(self, trial: optuna.Trial, budget: Budget) -> float | None:
        """Settle a trial without evaluating it, when that is known before it runs: a budget that keeps the
        blocks a measured trial kept reuses that measurement (its value is returned). Pruned
        (`optuna.TrialPruned`): one that keeps every block (the dense trial measured that); one that keeps no more
        than a miss of its family, or than a candidate of its family that failed confirmation (the confirmation
        walk would skip it); any, once the walk has met its limit of failures (`Walk.spent`: nothing cheaper is
        confirmed); one that the budget already confirmed for the bucket plans to cost within `COST_TOLERANCE` of
        (it cannot make the profile cheaper by more than the search resolves); one that keeps the blocks of an
        earlier trial still running. None: evaluate it."""
        if planned_density(budget, self.shapes) >= 1.0:
            mark_pruned(trial, "keeps every visible block here: the dense trial measured that")
            raise optuna.TrialPruned("keeps every block")
        key = mask_key(budget, self.shapes)
        trials = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
        for t in trials:
            if t.state != TrialState.COMPLETE or is_dense_trial(t) or reused_from(t) is not None \
                    or t.number == trial.number:
                continue
            record = TrialRecord.of(t)
            other = self.space.budget_of(t.params)
            # Kept sets are nested as the ratio grows within a family, and accuracy is taken not to rise as
            # blocks are dropped (the confirmation walk's rule too): below a miss there is no hit.
            if record is not None and keeps_no_more(budget, other) and any(v > 0 for v in t.constraints.values()):
                mark_pruned(trial, f"keeps no more than trial {t.number}, which missed the floor")
                raise optuna.TrialPruned("below a miss of its family")
            if record is not None and mask_key(other, self.shapes) == key:
                record.store(trial)
                mark_reused(trial, t.number)
                for name, value in t.constraints.items():
                    trial.set_constraint(name, value)
                return float(t.value)  # type: ignore[arg-type]
        # Two workers can enqueue one bisection midpoint in the same instant (and TPE can repeat a point): the
        # later trial leaves it to the earlier one, which is measuring the same blocks now.
        for t in trials:
            params = planned_params(t)
            if t.state == TrialState.RUNNING and t.number < trial.number and not is_dense_trial(t) \
                    and params.keys() == trial.params.keys() \
                    and mask_key(self.space.budget_of(params), self.shapes) == key:
                mark_deferred(trial, t.number)
                mark_pruned(trial, f"keeps the blocks of trial {t.number}, which is measuring them now")
                raise optuna.TrialPruned("the same blocks as a running trial")
        assert self.meta is not None
        w = stored_walk(self.study)
        # Below a confirmation failure of its family the walk would skip it even if it met the floor here.
        failed = next((c for c in w.failed if keeps_no_more(budget, c.budget)), None)
        if failed is not None:
            mark_pruned(trial, f"keeps no more than trial {failed.number}, which failed its confirmation")
            raise optuna.TrialPruned("below a confirmation failure of its family")
        if w.spent:  # no candidate cheaper than the walk's choice will be confirmed, so none can replace it
            mark_pruned(trial, f"the confirmation walk met its limit of {self.meta.confirm_limit} failures: "
                               "nothing cheaper is confirmed")
            raise optuna.TrialPruned("no confirmation left")
        chosen = w.chosen
        # Within COST_TOLERANCE of the confirmed cost (or above it) a budget cannot make the profile cheaper by
        # more than the search resolves (the frontier moves by a sample or two), so it is not worth its samples.
        if chosen is not None and self.planned_cost(budget) >= worth_below(self.planned_cost(chosen.budget)):
            mark_pruned(trial, f"trial {chosen.number}, already confirmed, plans to cost within "
                               f"{COST_TOLERANCE:.0%} of it")
            raise optuna.TrialPruned("costs no less than the confirmed budget")
        return None

    def _judge(self, dense: list[bool], partial: list[bool], confirm_dense: list[bool]) -> Any:
        """A trial as its confirmation will judge it (`floor.judge_confirmation`), before it is confirmed: the
        rest of the search part right, the confirmation part as dense had it. So a trial that could still
        hold once confirmed is feasible, and one that could not stops early."""
        assert self.meta is not None
        confirm_tasks = self.meta.confirm_tasks[:len(confirm_dense)]
        return judge_confirmation(self.meta.floor, (dense, best_case(partial, len(dense)), self.meta.tasks),
                                  (confirm_dense, confirm_dense, confirm_tasks)).pooled

    def evaluate(self, samples: list[TokenSample], budget: Budget | None,
                 stop: Callable[[list[bool | None]], bool] | None = None) -> list[bool | None]:
        """Per-sample results of `budget` (None: dense) on `samples`; stopped early once `stop(results so far)`
        says the rest cannot change the verdict (None then where a sample was not evaluated)."""
        return self._run(budget, samples, stop).correct

    def _skip(self, number: int, is_dense: bool) -> str | None:
        """Why trial `number` is not needed (before any work), or None.

        Trial numbers order the starts of all workers (the storage assigns them atomically), so
        when two workers race for the last slot, or both re-queue the dense trial, the later
        start sees the earlier one and steps aside.
        """
        trials = [t for t in self.study.get_trials(deepcopy=False) if t.number != number]
        if is_dense:
            first = [t.number for t in trials if is_dense_trial(t) and t.state in LIVE and t.number < number]
            return f"dense trial {first[0]} is this bucket's baseline" if first else None
        ahead = sum((t.state == TrialState.COMPLETE and counts_as_trial(t))
                    or (t.state == TrialState.RUNNING and t.number < number) for t in trials)
        # The dense trial needs a slot of its own until it runs.
        ahead += not any(is_dense_trial(t) and t.state in (TrialState.COMPLETE, TrialState.RUNNING) for t in trials)
        if ahead >= self.target:
            return f"the bucket already has its {self.target} trials complete or running"
        return None

    def _fail_first(self, dense: list[bool]) -> list[int]:
        """The search part in the order most likely to end a missing trial soonest: the samples dense got right,
        those lost most often by this bucket's measured sparse trials first; dense's own misses last. A budget is
        judged on the answers it keeps from dense (`floor.kept`), so only a sample dense got right can count
        against it, and a loss found early ends a hopeless trial sooner. The order never changes a verdict: a
        trial that holds runs every sample, and one stopped early misses even at its best case."""
        lost = [0] * len(dense)
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            record = TrialRecord.of(t)
            if record is None or record.dense or reused_from(t) is not None:
                continue
            for i, c in enumerate(record.correct[:len(dense)]):
                lost[i] += c is False
        return sorted(range(len(dense)), key=lambda i: (not dense[i], -lost[i], i))

    def _run(self, budget: Budget | None, samples: list[TokenSample] | None = None,
             stop: Callable[[list[bool | None]], bool] | None = None,
             order: list[int] | None = None) -> EvalResult:
        """Evaluate `samples` (default: the search part) in chunks, in `order` (default: as given), stopping once
        `stop(results so far)` says the rest cannot change the verdict. Results are aligned with the samples,
        None where not evaluated."""
        assert self.meta is not None and self.loaded is not None
        samples = self.samples if samples is None else samples
        n = len(samples)
        at = list(range(n)) if order is None else order
        correct: list[bool | None] = [None] * n
        visible = skipped = seconds = 0.0
        calls: dict[str, int] = {}
        step = self.batch_size * 2
        for start in range(0, n, step):
            chunk = at[start:start + step]

            def chunk_stop(part: list[bool | None], chunk: list[int] = chunk,
                           verdict: Callable[[list[bool | None]], bool] = stop) -> bool:  # after each batch
                for i, c in zip(chunk, part):
                    correct[i] = c
                return verdict(correct)

            r = evaluate(self.loaded, [samples[i] for i in chunk], budget, batch_size=self.batch_size,
                         stop=None if stop is None else chunk_stop)
            for i, c in zip(chunk, r.correct):
                correct[i] = c
            visible += r.stats.visible_blocks
            skipped += r.stats.skipped_blocks
            seconds += r.seconds
            for k in ("sparse_calls", "dense_calls", "fallback_calls"):
                calls[k] = calls.get(k, 0) + getattr(r.stats, k)
            if stop is not None and (None in r.correct or (start + step < n and stop(correct))):
                break
        stats = AttentionStats(visible_blocks=visible, skipped_blocks=skipped, **calls)
        return EvalResult(correct=correct, per_task={}, stats=stats, seconds=seconds)

    def _cost(self, budget: Budget, density: float) -> dict[str, Any]:
        m = self.meta
        assert m is not None
        if m.timing == "cost-model":
            return {"relative": budget_cost(budget, m.rep_len, density, m.model.head_dim, m.model.heads,
                                            m.model.kv_heads, m.model.layers), "label": "cost-model"}
        key = (m.max_len, budget)
        if key not in self.timings:
            from ..timing import time_launch_configs

            t = time_launch_configs(m.rep_len, budget, m.model.heads, m.model.kv_heads, m.model.head_dim,
                                    dtype=torch.bfloat16)
            if t.total_ms is None or not t.dense_ms:
                raise SearchError(f"timing: no launch config ran for {budget.to_dict()}: {t.notes}")
            self.timings[key] = {"relative": with_dense_layers(t.total_ms / t.dense_ms, budget, m.model.layers),
                                 "label": "measured", "ms": t.best_ms,
                                 "selection_ms": t.selection_ms, "dense_ms": t.dense_ms, "config": t.best_config}
        return self.timings[key]
