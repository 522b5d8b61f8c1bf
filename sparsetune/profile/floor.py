"""THE floor rule: the accuracy a bucket must reach, and how a measurement is judged against it.

`floor_target` turns a floor and the bucket's dense accuracy into an absolute target (relative:
``value x dense``; absolute: ``value``). `judge_floor` judges paired per-sample results against it,
for the bucket and for each task in it. Search (the trial constraint, its early stop and the
confirmation), the deploy gate and the benchmarks all judge through it.

The bounds (one-sided, at the floor's confidence):
- relative floors: Tango's score bound on the paired difference, sparse minus dense accuracy on the same
  samples (`stats.paired_bounds`). A bound conditional on the discordant pairs shrinks to the point
  estimate when sparse never beats dense (the usual case), so it cannot tell 1 lost sample in 30 from 1
  in 3000; the score bound can (with nothing lost or gained it is -z^2 / (n + z^2)), and it credits the
  samples sparse fixes with their own uncertainty.
- absolute floors: the exact Clopper–Pearson bound on the sparse accuracy itself.
A floor *holds* when the bound (or, without a confidence, the point estimate) reaches the target;
it is *broken* when the upper bound is below the target: a shortfall beyond noise.

Per task: with `floor.per_task` every task must hold the floor on its own samples; without it the
bucket's aggregate must hold and no task may be broken (an aggregate that hides a collapsed task
is refused either way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ..stats import clopper_pearson_lower, clopper_pearson_upper, losses_allowed, paired_bounds, samples_needed
from .profile import Floor

__all__ = ["DEFAULT_CONFIDENCE", "ConfirmationVerdict", "FloorMeasure", "FloorVerdict", "Part", "Resolution",
           "TOLERANCE", "best_case", "floor_target", "holds_on_confirmation", "judge_confirmation", "judge_floor",
           "kept", "measure_floor", "out_of_reach", "resolution"]

TOLERANCE = 1e-12  # float slack when comparing with the target (0.95 x 0.8 is not exactly 0.76)
DEFAULT_CONFIDENCE = 0.9  # bounds shown beside point estimates when the floor has no confidence


def floor_target(floor: Floor, dense_accuracy: float) -> float:
    """The absolute accuracy a bucket must reach under `floor`, given its dense accuracy."""
    return floor.value * dense_accuracy if floor.kind == "relative" else floor.value


@dataclass(frozen=True)
class FloorMeasure:
    """Paired dense/sparse results of one group of samples judged against a floor."""

    n: int
    dense: float  # dense accuracy
    sparse: float  # sparse accuracy (point estimate)
    lower_bound: float  # of the sparse accuracy, at `confidence` (see the module docstring)
    upper_bound: float
    confidence: float
    target: float  # floor_target
    measured: float  # what is compared with the target: lower_bound with a floor confidence, else sparse

    @property
    def met(self) -> bool:
        return self.measured >= self.target - TOLERANCE

    @property
    def broken(self) -> bool:
        """The shortfall is beyond noise: even the upper bound misses the target."""
        return self.upper_bound < self.target - TOLERANCE

    @property
    def shortfall(self) -> float:
        """``target - measured``: feasible when <= 0."""
        return self.target - self.measured


def measure_floor(floor: Floor, dense: Sequence[bool], sparse: Sequence[bool],
                  confidence: float | None = None) -> FloorMeasure:
    """Judge `sparse` against `floor`, paired with `dense` on the same samples.

    Bounds are at the floor's confidence; without one, at `confidence` (default `DEFAULT_CONFIDENCE`),
    for display and the "broken" test only: the point estimate is judged then.
    """
    if len(dense) != len(sparse):
        raise ValueError(f"paired samples: dense has {len(dense)} results, sparse {len(sparse)}")
    level = floor.confidence if floor.confidence is not None else confidence or DEFAULT_CONFIDENCE
    n = len(dense)
    dense_acc = sum(map(bool, dense)) / n if n else 0.0
    right = sum(map(bool, sparse))
    sparse_acc = right / n if n else 0.0
    if n == 0:
        lower = upper = 0.0
    elif floor.kind == "relative":
        pb = paired_bounds(dense, sparse, level)
        lower, upper = max(0.0, dense_acc + pb.lower), min(1.0, dense_acc + pb.upper)
    else:
        lower, upper = clopper_pearson_lower(right, n, level), clopper_pearson_upper(right, n, level)
    target = floor_target(floor, dense_acc)
    measured = lower if floor.confidence is not None else sparse_acc
    return FloorMeasure(n=n, dense=dense_acc, sparse=sparse_acc, lower_bound=lower, upper_bound=upper,
                        confidence=level, target=target, measured=measured)


@dataclass(frozen=True)
class FloorVerdict:
    """A bucket judged against the floor: the aggregate and each task."""

    overall: FloorMeasure
    tasks: dict[str, FloorMeasure] = field(default_factory=dict)
    per_task: bool = False

    @property
    def met(self) -> bool:
        if not self.overall.met:
            return False
        if self.per_task:
            return all(m.met for m in self.tasks.values())
        return not any(m.broken for m in self.tasks.values())

    @property
    def binding(self) -> str | None:
        """The task that decides: the one furthest below its target (or closest to it), if tasks differ."""
        if len(self.tasks) < 2:
            return None
        return min(self.tasks, key=lambda t: (self.tasks[t].measured - self.tasks[t].target, t))

    @property
    def shortfall(self) -> float:
        """The search constraint (feasible when <= 0): the worst shortfall that counts."""
        worst = self.overall.shortfall
        for m in self.tasks.values():
            if self.per_task:
                worst = max(worst, m.shortfall)
            elif m.broken:  # a collapsed task: infeasible by how far its upper bound misses
                worst = max(worst, m.target - m.upper_bound)
        return worst


def judge_floor(floor: Floor, dense: Sequence[bool], sparse: Sequence[bool],
                tasks: Sequence[str] | None = None, confidence: float | None = None) -> FloorVerdict:
    """`sparse` against `floor`, for the whole group and, given each sample's task, for every task."""
    overall = measure_floor(floor, dense, sparse, confidence)
    per: dict[str, FloorMeasure] = {}
    if tasks is not None and len(set(tasks)) > 1:
        if len(tasks) != len(dense):
            raise ValueError(f"tasks: need one per sample ({len(dense)}), got {len(tasks)}")
        for task in sorted(set(tasks)):
            idx = [i for i, t in enumerate(tasks) if t == task]
            per[task] = measure_floor(floor, [dense[i] for i in idx], [sparse[i] for i in idx], confidence)
    return FloorVerdict(overall, per, floor.per_task)


Part = tuple[Sequence[bool], Sequence[bool], Sequence[str]]  # (dense, sparse, tasks) of one group of samples


def best_case(partial: Sequence[bool | None], n: int) -> list[bool]:
    """An early-stopped measurement of `n` samples at its best: every sample not evaluated yet right (those
    after `partial`, and those it holds as None)."""
    return [*(c is None or bool(c) for c in partial), *[True] * (n - len(partial))]


@dataclass(frozen=True)
class ConfirmationVerdict:
    """A candidate chosen on the search part, judged with the confirmation part (`judge_confirmation`)."""

    fresh: FloorVerdict  # the confirmation part alone, on its point estimate
    pooled: FloorVerdict  # every sample, as the floor judges (its bound)

    @property
    def met(self) -> bool:
        return self.fresh.met and self.pooled.met


def kept(part: Part) -> Part:
    """A part with sparse's gains taken back: a sample counts as right only where dense got it right too."""
    dense, sparse, tasks = part
    return dense, [bool(s) and bool(d) for s, d in zip(sparse, dense, strict=True)], tasks


def judge_confirmation(floor: Floor, search: Part, confirm: Part) -> ConfirmationVerdict:
    """THE confirmation rule. The confirmation part, which the choice never saw, must meet the floor on its own
    point estimate (no task broken), and all the samples together must meet the floor as `floor` judges it
    (its bound): the fresh samples guard against the winner's curse, the pooled ones give the bound its power
    (at n = 53 alone a 0.95 floor at 90% confidence would admit no loss at all).

    Both count only the answers sparse keeps from dense (`kept`): a gain does not pay for a loss. Where a
    budget flips answers both ways (an aggregation task the model half-solves), the gains on the samples the
    search happened to draw are luck that a fresh draw does not repeat, while the losses are what the budget
    does; netting them lets the cheapest candidate be the one whose flips fell best.

    The search judges every trial by it before confirmation too, with the unseen samples right (`best_case`)
    and the confirmation part as dense had it, so a trial that could still hold runs on and one that cannot
    stops early; a confirmation stops early the same way."""
    search, confirm = kept(search), kept(confirm)
    point = replace(floor, confidence=None)
    fresh = judge_floor(point, confirm[0], confirm[1], confirm[2], floor.confidence)
    pooled = judge_floor(floor, [*search[0], *confirm[0]], [*search[1], *confirm[1]], [*search[2], *confirm[2]])
    return ConfirmationVerdict(fresh, pooled)


def holds_on_confirmation(floor: Floor, search: Part, confirm: Part) -> bool:
    """Whether a candidate holds under the confirmation rule (`judge_confirmation`)."""
    return judge_confirmation(floor, search, confirm).met


def out_of_reach(floor: Floor, dense: Sequence[bool], partial: Sequence[bool],
                 tasks: Sequence[str] | None = None, confidence: float | None = None) -> bool:
    """The early stop of a group judged alone: True when even all remaining samples right (`partial` covers
    the first ones) would miss the floor, so evaluating the rest cannot change the verdict."""
    return not judge_floor(floor, dense, best_case(partial, len(dense)), tasks, confidence).met


@dataclass(frozen=True)
class Resolution:
    """Whether n samples can show the floor at its confidence at all (before spending trials)."""

    n: int
    dense_right: int
    losses_allowed: int  # -1: not even a perfect budget could be shown to hold
    samples_needed: int  # samples (at this dense accuracy) with which losing none would show it

    @property
    def resolvable(self) -> bool:
        return self.losses_allowed >= 0


def resolution(floor: Floor, dense: Sequence[bool]) -> Resolution:
    """For a relative floor with a confidence: how many samples sparse may lose (gaining none) with the floor
    still shown, and how many samples (at this dense accuracy) would let it lose none."""
    n, right = len(dense), sum(map(bool, dense))
    if floor.kind != "relative" or floor.confidence is None or right == 0 or floor.value >= 1:
        return Resolution(n, right, right, n)
    need = samples_needed(floor.value, right / n, floor.confidence)
    return Resolution(n, right, losses_allowed(n, right, floor.value, floor.confidence), need)
