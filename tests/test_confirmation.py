"""Selection with confirmation: the split and the walk through candidates (no model needed)."""

from __future__ import annotations

from dataclasses import dataclass

from sparsetune.profile import Budget
from sparsetune.search.confirm import Candidate, split_for_confirmation, walk


@dataclass(frozen=True)
class S:
    input_ids: tuple[int, ...]
    task: str


def _samples(n_per_task: int) -> list[S]:
    return [S((t, i, i * 7 % 13), task) for t, task in enumerate(("a", "b", "c")) for i in range(n_per_task)]


def test_split_is_two_to_one_per_task_and_ignores_order():
    samples = _samples(30)
    search, confirm = split_for_confirmation(samples)
    assert len(search) == 60 and len(confirm) == 30
    assert {t: sum(s.task == t for s in confirm) for t in "abc"} == {"a": 10, "b": 10, "c": 10}
    again = split_for_confirmation(list(reversed(samples)))
    assert set(again[1]) == set(confirm)
    assert not set(search) & set(confirm)


def _c(number: int, cost: float, keep: float, block: int = 64, sink: int = 1, local: int = 1) -> Candidate:
    return Candidate(number, cost, Budget(method="topk", block_size=block, keep=keep, sink=sink, local=local))


def test_walk_takes_the_cheapest_candidate_that_holds():
    cands = [_c(1, 0.1, 0.1), _c(2, 0.2, 0.2), _c(3, 0.3, 0.3, block=32)]
    w = walk(cands, {})
    assert w.missing.number == 1 and not w.done
    w = walk(cands, {1: False})
    assert w.missing.number == 2
    w = walk(cands, {1: False, 2: False, 3: True})
    assert w.chosen.number == 3 and [c.number for c in w.failed] == [1, 2]


def test_walk_prunes_candidates_that_keep_no_more_than_a_failure_of_their_family():
    # Trial 2 is more expensive (e.g. other timing) but keeps less than failed trial 1: not evaluated.
    cands = [_c(1, 0.1, 0.2), _c(2, 0.15, 0.15), _c(3, 0.2, 0.3)]
    w = walk(cands, {1: False})
    assert w.missing.number == 3 and [c.number for c in w.pruned] == [2]


def test_walk_gives_up_after_the_limit_and_counts_duplicates_once():
    cands = [_c(1, 0.1, 0.1), _c(5, 0.1, 0.1), _c(2, 0.2, 0.2, block=32), _c(3, 0.3, 0.3, block=128)]
    w = walk(cands, {1: False, 2: False}, limit=2)
    assert w.done and w.spent and w.chosen is None and len(w.confirmed) == 2


def test_a_candidate_that_held_stays_chosen_when_the_limit_of_cheaper_failures_is_reached():
    # Trial 4 held; then the search found cheaper candidates 1, 2 and 3, and all three failed. The limit (3) of
    # failures is reached: nothing cheaper is confirmed, and 4 stays chosen (the walk used to stop at the limit,
    # leaving the bucket dense with a candidate that held).
    cands = [_c(1, 0.1, 0.1), _c(2, 0.2, 0.2, block=32), _c(3, 0.3, 0.3, block=128), _c(4, 0.4, 0.4, sink=2)]
    w = walk(cands, {4: True, 1: False, 2: False, 3: False}, limit=3)
    assert w.done and w.spent and w.chosen.number == 4 and [c.number for c in w.failed] == [1, 2, 3]
    # Below the limit, the cheapest candidate without a verdict is confirmed next.
    w = walk(cands, {4: True, 1: False}, limit=3)
    assert w.missing.number == 2 and not w.spent


# ---- THE confirmation rule (profile.floor.judge_confirmation), on its own ----

def _part(n: int, dense_right: int, lost: int, task: str = "t") -> tuple[list[bool], list[bool], list[str]]:
    """n samples, dense right on the first `dense_right`, sparse losing `lost` of those."""
    dense = [i < dense_right for i in range(n)]
    sparse = [d and i >= lost for i, d in enumerate(dense)]
    return dense, sparse, [task] * n


def test_confirmation_pools_the_samples_for_the_bound():
    from sparsetune.profile.floor import holds_on_confirmation, judge_confirmation, judge_floor
    from sparsetune.profile.profile import Floor

    floor = Floor(kind="relative", value=0.95, confidence=0.9)
    search, confirm = _part(107, 100, 0), _part(20, 20, 0)
    # 20 fresh samples alone cannot show the floor at 90% even with nothing lost ...
    assert not judge_floor(floor, confirm[0], confirm[1]).met
    # ... the rule judges them on their point estimate, and the bound on all 127
    verdict = judge_confirmation(floor, search, confirm)
    assert verdict.fresh.met and verdict.pooled.met and verdict.pooled.overall.n == 127
    assert holds_on_confirmation(floor, search, confirm)
    # losing enough of the search part sinks the pooled bound, though the fresh part is perfect
    assert not holds_on_confirmation(floor, _part(107, 100, 6), confirm)


def test_confirmation_fails_on_a_fresh_point_estimate_below_the_floor():
    from sparsetune.profile.floor import judge_confirmation
    from sparsetune.profile.profile import Floor

    floor = Floor(kind="relative", value=0.95, confidence=0.9)
    verdict = judge_confirmation(floor, _part(400, 400, 0), _part(20, 20, 2))  # 18/20 = 0.90 < 0.95
    assert verdict.pooled.met and not verdict.fresh.met and not verdict.met


def test_confirmation_fails_when_a_task_breaks_beyond_noise():
    from sparsetune.profile.floor import judge_confirmation
    from sparsetune.profile.profile import Floor

    floor = Floor(kind="relative", value=0.95, confidence=0.9)
    a, b = _part(300, 300, 0, "a"), _part(30, 30, 30, "b")  # task b collapses entirely on the fresh part
    search = ([*a[0], *a[0][:30]], [*a[1], *a[1][:30]], [*a[2], *["b"] * 30])
    confirm = ([*a[0][:60], *b[0]], [*a[1][:60], *b[1]], [*a[2][:60], *b[2]])
    verdict = judge_confirmation(floor, search, confirm)
    assert verdict.fresh.tasks["b"].broken and not verdict.met


def test_best_case_pads_the_unseen_as_right():
    from sparsetune.profile.floor import best_case

    assert best_case([False, True], 4) == [False, True, True, True]
    assert best_case([False, None, True, None], 4) == [False, True, True, True]  # unseen in any order
    assert best_case([], 0) == []


def test_confirmation_does_not_let_gains_pay_for_losses():
    from sparsetune.profile.floor import judge_confirmation, judge_floor, kept
    from sparsetune.profile.profile import Floor

    floor = Floor(kind="relative", value=0.95, confidence=0.9)
    dense = [i < 100 for i in range(107)]
    # sparse loses 6 of dense's 100 right answers and gains 5 of its 7 wrong ones: net, one lost
    sparse = [(6 <= i < 100) or i >= 102 for i in range(107)]
    search, confirm = (dense, sparse, ["t"] * 107), _part(53, 53, 0)
    pooled = judge_floor(floor, [*dense, *confirm[0]], [*sparse, *confirm[1]])
    assert pooled.met  # netted, the bound over 160 samples holds ...
    verdict = judge_confirmation(floor, search, confirm)
    assert not verdict.pooled.met and not verdict.met  # ... but six answers lost are more than 160 can show
    assert kept(search)[1] == [6 <= i < 100 for i in range(107)]
    # gains on the confirmation part do not pay either: 5 lost there, 5 gained, on a perfect search part
    c_dense = [i < 48 for i in range(53)]
    c_sparse = [(5 <= i < 48) or i >= 48 for i in range(53)]
    fresh_netted = judge_confirmation(floor, _part(107, 107, 0), (c_dense, c_sparse, ["t"] * 53))
    assert not fresh_netted.fresh.met and not fresh_netted.met
    # the same losses without the gains fail either way; fewer losses hold with or without gains
    assert not judge_confirmation(floor, _part(107, 100, 6), confirm).met
    assert judge_confirmation(floor, _part(107, 100, 2), confirm).met
