"""The accuracy/cost frontier per bucket as a PNG: every trial, the floor, and the chosen point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._io import replacing

if TYPE_CHECKING:
    from .search.results import BucketOutcome

__all__ = ["frontier_figure", "plot_frontier"]


def _cost_axis(ax: Any) -> None:
    """Log-scaled cost axis labelled in plain numbers at 1, 2 and 5 per decade (1 only over more than two
    decades). Matplotlib's default labels minor ticks too when the axis spans under a decade: they overlap."""
    import math

    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    low, high = ax.get_xlim()
    if high / low < 2.5:  # too narrow to hold two of 1, 2, 5: widen it so the axis says where it is
        low = high / 2.5
        ax.set_xlim(low, high)
    subs = (1.0, 2.0, 5.0) if math.log10(high / low) <= 2 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=8)


def frontier_figure(outcomes: list[BucketOutcome], title: str = "") -> Any:
    """The plot as a matplotlib `Figure` (no pyplot state): one panel per bucket, x = attention cost relative
    to dense, y = accuracy. Panel titles give each bucket's span as the profile does (`Profile.bucket_range`,
    the last bucket open-ended); one legend names every marker any panel uses."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from optuna.trial import TrialState

    from .search.study import TrialRecord, is_dense_trial, is_feasible

    n = len(outcomes)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows))
    FigureCanvasAgg(fig)  # files only: no display on servers
    axes = fig.subplots(rows, cols, squeeze=False, sharey=True)
    for k, (ax, o) in enumerate(zip(axes.flat, outcomes)):
        records = {t.number: r for t in o.trials if t.state == TrialState.COMPLETE and (r := TrialRecord.of(t))}
        done = [t for t in o.trials if t.number in records]
        # A miss is judged on the floor's bound, so a point may sit above the floor line and still miss; an
        # early-stopped trial's accuracy is over the samples it ran before the floor went out of reach; a
        # feasible trial that missed on the fresh confirmation samples was never a choice.
        def kind_of(t: Any) -> str:
            if is_feasible(t):
                return "unconfirmed" if t.number in o.failed_confirmation else "feasible"
            return "miss" if records[t.number].complete else "stopped"

        for kind, style in (("feasible", dict(c="tab:green", label="feasible")),
                            ("unconfirmed", dict(facecolors="none", edgecolors="tab:orange", marker="D",
                                                 label="feasible, failed confirmation")),
                            ("miss", dict(c="tab:red", marker="x", label="bound below floor")),
                            ("stopped", dict(facecolors="none", edgecolors="tab:red", marker="o",
                                             label="stopped early (accuracy so far)"))):
            pts = [t for t in done if not is_dense_trial(t) and kind_of(t) == kind]
            if not pts:  # the legend names only markers some panel shows
                continue
            ax.scatter([t.value for t in pts], [records[t.number].accuracy for t in pts], s=18, alpha=0.8, **style)
        dense = [t for t in done if is_dense_trial(t)]
        if dense:
            ax.scatter([1.0], [records[dense[0].number].accuracy], c="black", marker="s", s=30, label="dense")
        if o.floor_accuracy is not None:  # None: stopped before the dense baseline, no floor yet
            ax.axhline(o.floor_accuracy, color="gray", ls="--", lw=1, label="floor")
        if o.chosen is not None and not o.bucket.dense and o.chosen.number in records:
            ax.scatter([o.chosen.value], [records[o.chosen.number].accuracy], marker="*", s=220,
                       facecolors="gold", edgecolors="black", zorder=5, label="chosen")
        _cost_axis(ax)
        method = "" if o.bucket.dense or o.bucket.budget is None else f", {o.bucket.budget.ranking}"
        ax.set_title(f"{o.span.label} tokens (n={o.bucket.accuracy.n if o.bucket.accuracy else '?'}){method}",
                     fontsize=10)
        ax.set_xlabel("attention cost / dense")
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("exact-match accuracy")
    # One legend for all panels: the first panel alone may lack a marker (a dense bucket has no star).
    handles: dict[str, Any] = {}
    for ax in axes.flat[:n]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    axes[0][0].legend(list(handles.values()), list(handles), fontsize=7, loc="best", markerscale=0.7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_frontier(outcomes: list[BucketOutcome], path: str | os.PathLike[str], title: str = "") -> Path:
    """`frontier_figure` written atomically to `path` (a PNG)."""
    fig = frontier_figure(outcomes, title)
    path = Path(path)
    with replacing(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=110)
    return path
