"""THE floor rule: the accuracy a bucket must reach, and how a measurement is judged against it.

`floor_target` turns a floor and the bucket's dense accuracy into an absolute target (relative:
``value x dense``; absolute: ``value``). `measure_floor` judges paired per-sample results against it:
on the point estimate, or, when the floor has a confidence level, on the paired lower bound of the
sparse accuracy (`stats.paired_lower_bound`). Search (the trial constraint and its early stop), the
deploy gate and the benchmarks all judge through these two functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..stats import paired_lower_bound
from .profile import Floor

__all__ = ["FloorMeasure", "TOLERANCE", "floor_target", "measure_floor", "out_of_reach"]

TOLERANCE = 1e-12  # float slack when comparing with the target (0.95 x 0.8 is not exactly 0.76)


def floor_target(floor: Floor, dense_accuracy: float) -> float:
    """The absolute accuracy a bucket must reach under `floor`, given its dense accuracy."""
    return floor.value * dense_accuracy if floor.kind == "relative" else floor.value


@dataclass(frozen=True)
class FloorMeasure:
    """Paired dense/sparse results judged against a floor."""

    dense: float  # dense accuracy
    sparse: float  # sparse accuracy (point estimate)
    lower_bound: float | None  # paired lower bound of the sparse accuracy (>= 0), when a level was given
    target: float  # floor_target
    measured: float  # what is compared with the target: lower_bound with a floor confidence, else sparse

    @property
    def met(self) -> bool:
        return self.measured >= self.target - TOLERANCE

    @property
    def shortfall(self) -> float:
        """``target - measured``: the search's constraint value (feasible when <= 0)."""
        return self.target - self.measured


def measure_floor(floor: Floor, dense: Sequence[bool], sparse: Sequence[bool],
                  confidence: float | None = None) -> FloorMeasure:
    """Judge `sparse` against `floor`, paired with `dense` on the same samples.

    The lower bound is computed at the floor's confidence, else at `confidence` (for display only);
    without either it is None and the point estimate is judged.
    """
    level = floor.confidence if floor.confidence is not None else confidence
    n = len(dense)
    dense_acc = sum(map(bool, dense)) / n if n else 0.0
    sparse_acc = sum(map(bool, sparse)) / len(sparse) if len(sparse) else 0.0
    lower = None
    if level is not None:
        lower = max(0.0, paired_lower_bound(dense, sparse, level).sparse_lower_bound)
    measured = lower if floor.confidence is not None else sparse_acc
    return FloorMeasure(dense=dense_acc, sparse=sparse_acc, lower_bound=lower,
                        target=floor_target(floor, dense_acc), measured=measured)  # type: ignore[arg-type]


def out_of_reach(floor: Floor, dense: Sequence[bool], partial: Sequence[bool]) -> bool:
    """The early stop: True when even all remaining samples right (`partial` covers the first ones)
    would miss the floor, so evaluating the rest cannot change the verdict."""
    rest = len(dense) - len(partial)
    return not measure_floor(floor, dense, list(partial) + [True] * rest).met
