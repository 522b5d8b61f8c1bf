"""Pure statistics and the floor rule: exact binomial bounds, paired score bounds, floor judgement per bucket and task,
and whether n can resolve a floor."""

from __future__ import annotations

import random

import pytest

from sparsetune.profile import Floor
from sparsetune.profile.floor import floor_target, judge_floor, measure_floor, out_of_reach, resolution
from sparsetune.stats import clopper_pearson_lower, clopper_pearson_upper, losses_allowed, paired_bounds, samples_needed


def test_clopper_pearson_known_values():
    assert clopper_pearson_lower(10, 10, 0.9) == pytest.approx(0.1 ** 0.1, abs=1e-9)  # alpha ** (1/n)
    assert clopper_pearson_lower(5, 10, 0.95) == pytest.approx(0.2224, abs=1e-4)  # Beta(5, 6) 5% quantile
    assert clopper_pearson_lower(0, 10, 0.9) == 0.0


def test_paired_bounds_sanity():
    rng = random.Random(0)
    same = [rng.random() < 0.7 for _ in range(50)]
    pb = paired_bounds(same, same, 0.9)
    assert (pb.lost, pb.gained, pb.n) == (0, 0, 50) and -0.05 <= pb.lower < 0 < pb.upper <= 0.05

    dense = [True] * 40 + [False] * 10
    sparse = [False] * 20 + [True] * 20 + [False] * 10  # 20 lost, none gained
    worse = paired_bounds(dense, sparse, 0.9)
    assert (worse.lost, worse.gained) == (20, 0)
    # A bound conditional on the 20 discordant pairs would be -20/50 itself; the score bound is below it.
    assert worse.lower < -0.4 < worse.upper < 0
    judged = measure_floor(Floor(value=0.35, confidence=0.9), dense, sparse)
    assert judged.lower_bound == judged.measured == pytest.approx(0.8 + worse.lower)
    assert judged.target == pytest.approx(0.28) and judged.met

    mixed_sparse = list(dense)
    for i in range(6):
        mixed_sparse[i] = False  # 6 lost
    for i in range(40, 43):
        mixed_sparse[i] = True  # 3 gained
    bounds = [paired_bounds(dense, mixed_sparse, c).lower for c in (0.5, 0.8, 0.9, 0.95, 0.99)]
    assert bounds == sorted(bounds, reverse=True) and bounds[-1] < bounds[0]  # more confidence, lower bound
    assert bounds[0] == pytest.approx(-3 / 50, abs=1e-6)  # at 50% the score bound is the point estimate
    assert all(b < -3 / 50 for b in bounds[1:])
    with pytest.raises(ValueError, match="dense has 2 results, sparse 1"):
        paired_bounds([True, False], [True], 0.9)
    assert measure_floor(Floor(value=1.0, confidence=0.9), [False] * 3, [False] * 3).met  # nothing to lose
    assert not measure_floor(Floor(value=1.0, confidence=0.9), same, same).met  # a floor of 1 is never shown


def test_floor_target_relative_and_absolute():
    assert floor_target(Floor(value=0.95), 0.8) == pytest.approx(0.76)
    assert floor_target(Floor(kind="absolute", value=0.5), 0.8) == 0.5


def test_point_floor_is_judged_on_the_point_estimate_with_float_slack():
    dense = [True] * 20
    sparse = [True] * 19 + [False]
    m = measure_floor(Floor(value=0.95), dense, sparse)
    assert m.measured == m.sparse == pytest.approx(0.95) and m.met  # 0.95 >= 0.95 x 1.0
    assert m.shortfall == pytest.approx(0.0)
    assert m.confidence == 0.9 and m.lower_bound < m.sparse  # bounds for display (and "broken") only
    bounded = measure_floor(Floor(value=0.95, confidence=0.9), dense, sparse)
    assert bounded.measured == bounded.lower_bound == m.lower_bound < m.sparse  # judged on the bound
    assert not bounded.met


def test_early_stop_only_when_even_all_remaining_right_misses():
    dense = [True] * 10
    floor = Floor(value=0.8)
    assert not out_of_reach(floor, dense, [False, False])  # 8/10 still reachable
    assert out_of_reach(floor, dense, [False, False, False])  # at most 7/10


def test_clopper_pearson_bounds_match_the_closed_forms_at_the_edges():
    # All successes: the lower bound is (1 - confidence)^(1/n); none: the upper bound is 1 - that.
    assert clopper_pearson_lower(45, 45, 0.9) == pytest.approx(0.1 ** (1 / 45), abs=1e-9)
    assert clopper_pearson_upper(0, 45, 0.9) == pytest.approx(1 - 0.1 ** (1 / 45), abs=1e-9)
    assert clopper_pearson_upper(45, 45, 0.9) == 1.0


def test_score_bound_does_not_collapse_to_the_point_estimate_when_sparse_never_wins():
    import statistics

    z = statistics.NormalDist().inv_cdf(0.9)
    same = [True] * 50 + [False] * 3
    assert paired_bounds(same, same, 0.9).lower == pytest.approx(-z * z / (53 + z * z), abs=1e-9)  # closed form
    dense = [True] * 60 + [False] * 4
    one_lost = [True] * 59 + [False] * 5  # one loss, no gain: a conditional bound would say exactly -1/64
    pb = paired_bounds(dense, one_lost, 0.9)
    assert (pb.lost, pb.gained) == (1, 0) and pb.lower < -1 / 64 < pb.upper
    # A gain is credited, with its uncertainty: one lost and one gained is between none and one lost.
    swap = list(one_lost)
    swap[60] = True
    assert pb.lower < paired_bounds(dense, swap, 0.9).lower < paired_bounds(dense, dense, 0.9).lower
    # Swapping the roles of dense and sparse mirrors the bounds.
    back = paired_bounds(one_lost, dense, 0.9)
    assert back.lower == pytest.approx(-pb.upper, abs=1e-9) and back.upper == pytest.approx(-pb.lower, abs=1e-9)


def test_score_bound_covers_the_true_difference_at_its_level():
    rng = random.Random(7)
    covered, reps = 0, 600
    for _ in range(reps):  # P(lost) = 3%, P(gained) = 1%: the true difference is -0.02
        pairs = [(True, False) if u < 0.03 else (False, True) if u < 0.04 else (v, v)
                 for u, v in ((rng.random(), rng.random() < 0.9) for _ in range(53))]
        covered += paired_bounds([d for d, _ in pairs], [s for _, s in pairs], 0.9).lower <= -0.02
    assert 0.87 <= covered / reps <= 0.97


def test_n_needed_to_show_a_relative_floor():
    assert samples_needed(0.95, 1.0, 0.9) == 32  # z^2 (1 - 0.05) / 0.05 = 31.2
    assert losses_allowed(31, 31, 0.95, 0.9) == -1
    assert losses_allowed(32, 32, 0.95, 0.9) == 0
    assert losses_allowed(160, 147, 0.95, 0.9) == 3


def test_relative_floor_with_confidence_needs_enough_samples():
    floor = Floor(kind="relative", value=0.95, confidence=0.9)
    perfect_small = measure_floor(floor, [True] * 30, [True] * 30)
    assert not perfect_small.met and not perfect_small.broken  # 30 perfect samples cannot show 0.95
    assert measure_floor(floor, [True] * 40, [True] * 40).met
    res = resolution(floor, [True] * 30 + [False] * 2)
    assert not res.resolvable and res.samples_needed == 34  # z^2 (1 - s) / s with s = 0.05 x 30/32
    assert resolution(floor, [True] * 147 + [False] * 13).losses_allowed == 3


def test_point_estimate_without_confidence():
    floor = Floor(kind="relative", value=0.95)
    m = measure_floor(floor, [True] * 20, [True] * 19 + [False])
    assert m.measured == m.sparse == 0.95 and m.met


def test_a_collapsed_task_fails_the_aggregate_floor():
    # 4 tasks of 16: the aggregate keeps 58/64 (0.906 of dense), but task "vt" keeps 10/16.
    floor = Floor(kind="relative", value=0.9)
    tasks = ["niah"] * 16 + ["mk"] * 16 + ["cwe"] * 16 + ["vt"] * 16
    dense = [True] * 64
    sparse = [True] * 54 + [False] * 6 + [True] * 4
    sparse = [True] * 48 + [True] * 4 + [False] * 6 + [True] * 6  # vt: 10 of 16 right
    v = judge_floor(floor, dense, sparse, tasks)
    assert v.overall.met
    assert v.tasks["vt"].broken
    assert not v.met and v.binding == "vt" and v.shortfall > 0


def test_per_task_floor_judges_every_task_on_its_own():
    floor = Floor(kind="relative", value=0.95, confidence=0.9, per_task=True)
    tasks = ["a"] * 60 + ["b"] * 20
    dense = [True] * 80
    v = judge_floor(floor, dense, [True] * 80, tasks)
    assert v.overall.met and v.tasks["a"].met and not v.tasks["b"].met  # 20 samples cannot show 0.95
    assert not v.met and v.binding == "b"
    v_agg = judge_floor(Floor(kind="relative", value=0.95, confidence=0.9), dense, [True] * 80, tasks)
    assert v_agg.met
