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
    assert w.done and w.chosen is None and len(w.confirmed) == 2
