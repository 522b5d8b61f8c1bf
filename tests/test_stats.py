"""Pure statistics and the floor rule: exact binomial bounds, the paired difference, floor judgement."""

from __future__ import annotations

import random

import pytest

from sparsetune.profile import Floor
from sparsetune.profile.floor import floor_target, measure_floor, out_of_reach
from sparsetune.stats import clopper_pearson_lower, paired_lower_bound


def test_clopper_pearson_known_values():
    assert clopper_pearson_lower(10, 10, 0.9) == pytest.approx(0.1 ** 0.1, abs=1e-9)  # alpha ** (1/n)
    assert clopper_pearson_lower(5, 10, 0.95) == pytest.approx(0.2224, abs=1e-4)  # Beta(5, 6) 5% quantile
    assert clopper_pearson_lower(0, 10, 0.9) == 0.0


def test_paired_lower_bound_sanity():
    rng = random.Random(0)
    same = [rng.random() < 0.7 for _ in range(50)]
    pd = paired_lower_bound(same, same)
    assert pd.difference == 0 and -0.05 <= pd.lower_bound <= 0 and pd.n == 50
    assert measure_floor(Floor(value=1.0, confidence=0.9), same, same).met  # nothing lost: even a floor of 1

    dense = [True] * 40 + [False] * 10
    sparse = [False] * 20 + [True] * 20 + [False] * 10  # 20 lost, none gained
    worse = paired_lower_bound(dense, sparse, 0.9)
    assert (worse.dense_only, worse.sparse_only) == (20, 0)
    # Conditional on the 20 discordant pairs, all of them losses: the bound is -n_d / n itself.
    assert worse.difference == pytest.approx(-0.4) and worse.lower_bound == pytest.approx(-0.4)
    assert worse.sparse_lower_bound == pytest.approx(0.8 + worse.lower_bound)
    judged = measure_floor(Floor(value=0.5, confidence=0.9), dense, sparse)
    assert judged.lower_bound == judged.measured == pytest.approx(worse.sparse_lower_bound)
    assert judged.target == pytest.approx(0.4) and judged.met  # 0.4 >= 0.5 x 0.8

    mixed_sparse = list(dense)
    for i in range(6):
        mixed_sparse[i] = False  # 6 lost
    for i in range(40, 43):
        mixed_sparse[i] = True  # 3 gained
    bounds = [paired_lower_bound(dense, mixed_sparse, c).lower_bound for c in (0.5, 0.8, 0.9, 0.95, 0.99)]
    assert bounds == sorted(bounds, reverse=True) and bounds[-1] < bounds[0]  # more confidence, lower bound
    assert all(b <= -3 / 50 + 1e-9 for b in bounds[1:])  # below the point estimate
    with pytest.raises(ValueError, match="dense has 2 results, sparse 1"):
        paired_lower_bound([True, False], [True])
    assert measure_floor(Floor(value=1.0, confidence=0.9), [False] * 3, [False] * 3).met  # nothing to lose


def test_floor_target_relative_and_absolute():
    assert floor_target(Floor(value=0.95), 0.8) == pytest.approx(0.76)
    assert floor_target(Floor(kind="absolute", value=0.5), 0.8) == 0.5


def test_point_floor_is_judged_on_the_point_estimate_with_float_slack():
    dense = [True] * 20
    sparse = [True] * 19 + [False]
    m = measure_floor(Floor(value=0.95), dense, sparse)
    assert m.lower_bound is None and m.measured == m.sparse == pytest.approx(0.95) and m.met  # 0.95 >= 0.95 x 1.0
    assert m.shortfall == pytest.approx(0.0)
    shown = measure_floor(Floor(value=0.95), dense, sparse, confidence=0.9)
    assert shown.lower_bound is not None and shown.measured == m.measured  # the bound is for display only
    bounded = measure_floor(Floor(value=0.95, confidence=0.9), dense, sparse)
    assert bounded.measured == bounded.lower_bound == shown.lower_bound <= m.sparse  # judged on the bound


def test_early_stop_only_when_even_all_remaining_right_misses():
    dense = [True] * 10
    floor = Floor(value=0.8)
    assert not out_of_reach(floor, dense, [False, False])  # 8/10 still reachable
    assert out_of_reach(floor, dense, [False, False, False])  # at most 7/10
