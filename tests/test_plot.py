"""The frontier plot, read from matplotlib's figure objects: spans as the profile says them, the chosen
budget in the legend, and x tick labels that do not overlap."""

from __future__ import annotations

import optuna
import pytest

from sparsetune.profile import Budget
from sparsetune.profile.profile import Accuracy, Bucket
from sparsetune.search.results import BucketOutcome
from sparsetune.search.study import TrialRecord

pytest.importorskip("matplotlib")


def _outcome(max_len: int, first_len: int, costs: list[float], chosen: int | None, final: bool = False,
             failed: tuple[int, ...] = ()) -> BucketOutcome:
    """A bucket with a dense trial and sparse trials at `costs` (feasible above 0.3); `chosen` indexes `costs`,
    `failed` the feasible ones that missed on confirmation."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study()
    for i, cost in enumerate([1.0, *costs]):
        trial = study.ask()
        # below cost 0.15: stopped early, once the floor was out of reach
        TrialRecord(correct=[True] * 4, accuracy=1.0 if cost > 0.3 else 0.5, complete=cost > 0.15, sparsity=1 - cost,
                    dense=i == 0).store(trial)
        trial.set_constraint("floor", -0.1 if cost > 0.3 else 0.2)
        study.tell(trial, cost)
    trials = study.get_trials()
    accuracy = Accuracy(sparse=1.0, dense=1.0, n=4)
    if chosen is None:
        bucket = Bucket(max_len=max_len, dense=True, reason="none held", accuracy=accuracy)
        pick = trials[0]
    else:
        bucket = Bucket(max_len=max_len, budget=Budget(keep=0.5), accuracy=accuracy)
        pick = trials[1 + chosen]
    return BucketOutcome(bucket=bucket, first_len=first_len, trials=trials, chosen=pick, floor_accuracy=0.9,
                         kernel=None, final=final, failed_confirmation=tuple(trials[1 + i].number for i in failed))


def _figure(outcomes):
    from sparsetune.plot import frontier_figure

    fig = frontier_figure(outcomes, title="t")
    fig.canvas.draw()
    return fig


def test_titles_show_the_profiles_spans_and_the_star_is_in_the_legend():
    import matplotlib.pyplot as plt

    # The first bucket is dense (no star in its panel); the chosen point is in the second.
    outcomes = [_outcome(256, 254, [0.2, 0.5], None), _outcome(512, 257, [0.1, 0.4, 0.7], 1, final=True)]
    fig = _figure(outcomes)
    try:
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert titles[0].startswith("254-256 tokens") and titles[1].startswith("257-512+ tokens"), titles
        assert titles[1].endswith(", pooled") and "pooled" not in titles[0], titles  # the method of a sparse bucket
        legends = [ax.get_legend() for ax in fig.axes if ax.get_legend()] + list(fig.legends)
        labels = {t.get_text() for legend in legends for t in legend.get_texts()}
        assert {"chosen", "dense", "floor", "feasible", "bound below floor", "stopped early (accuracy so far)"} <= labels, labels
        assert "feasible, failed confirmation" not in labels, labels
    finally:
        plt.close(fig)


def test_feasible_trials_that_failed_confirmation_are_marked_as_such():
    import matplotlib.pyplot as plt

    # Costs 0.4 and 0.7 met the floor; 0.4 failed its confirmation, so 0.7 was chosen.
    fig = _figure([_outcome(512, 257, [0.1, 0.4, 0.7], 2, final=True, failed=(1,))])
    try:
        ax = fig.axes[0]
        by_label = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
        assert by_label["feasible, failed confirmation"] == [[0.4, 1.0]], by_label
        assert by_label["feasible"] == [[0.7, 1.0]], by_label
    finally:
        plt.close(fig)


@pytest.mark.parametrize("costs", [
    [0.02, 0.05, 0.3, 0.6, 0.9], [0.35, 0.5, 0.62, 0.8, 0.95], [0.001, 0.9], [0.55, 0.7, 0.8, 0.9],
    [0.13, 0.18, 0.24, 0.4, 0.6, 0.9],  # the demo's 513-1024 panel, whose labels overlapped
])
def test_x_tick_labels_do_not_overlap(costs):
    import matplotlib.pyplot as plt

    fig = _figure([_outcome(256, 254, costs, 2 if len(costs) > 2 else 1) for _ in range(4)])
    try:
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            panel = ax.get_window_extent(renderer)
            labels = [t for t in ax.get_xticklabels(minor=False) + ax.get_xticklabels(minor=True)
                      if t.get_visible() and t.get_text()]
            boxes = [t.get_window_extent(renderer) for t in labels]
            # Labels of ticks beyond the view limits are not drawn.
            boxes = sorted((b for b in boxes if panel.x0 - 1 <= (b.x0 + b.x1) / 2 <= panel.x1 + 1), key=lambda b: b.x0)
            assert len(boxes) >= 2, [t.get_text() for t in labels]  # the axis still says where it is
            for a, b in zip(boxes, boxes[1:]):
                assert a.x1 <= b.x0, [t.get_text() for t in labels]
    finally:
        plt.close(fig)
