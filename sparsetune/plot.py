"""The accuracy/cost frontier per bucket as a PNG: every trial, the floor, and the chosen point."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ._io import replacing

if TYPE_CHECKING:
    from .search.results import BucketOutcome

__all__ = ["plot_frontier"]


def plot_frontier(outcomes: list[BucketOutcome], path: str | os.PathLike[str], title: str = "") -> Path:
    """One panel per bucket: x = attention cost relative to dense, y = accuracy; written atomically."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt
    from optuna.trial import TrialState

    from .search.study import TrialRecord, is_dense_trial, is_feasible

    n = len(outcomes)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.6 * rows), squeeze=False, sharey=True)
    for ax, o in zip(axes.flat, outcomes):
        records = {t.number: r for t in o.trials if t.state == TrialState.COMPLETE and (r := TrialRecord.of(t))}
        done = [t for t in o.trials if t.number in records]
        for feasible, style in ((True, dict(c="tab:green", label="feasible")),
                                (False, dict(c="tab:red", marker="x", label="below floor"))):
            pts = [t for t in done if is_feasible(t) == feasible and not is_dense_trial(t)]
            ax.scatter([t.value for t in pts], [records[t.number].accuracy for t in pts], s=18, alpha=0.8, **style)
        dense = [t for t in done if is_dense_trial(t)]
        if dense:
            ax.scatter([1.0], [records[dense[0].number].accuracy], c="black", marker="s", s=30, label="dense")
        ax.axhline(o.floor_accuracy, color="gray", ls="--", lw=1, label="floor")
        if o.chosen is not None and not o.bucket.dense:
            ax.scatter([o.chosen.value], [records[o.chosen.number].accuracy], marker="*", s=220,
                       facecolors="gold", edgecolors="black", zorder=5, label="chosen")
        ax.set_xscale("log")
        ax.set_title(f"{o.first_len}-{o.bucket.max_len} tokens (n={o.bucket.accuracy.n if o.bucket.accuracy else '?'})",
                     fontsize=10)
        ax.set_xlabel("attention cost / dense")
        ax.grid(alpha=0.3)
    for ax in axes.flat[n:]:
        ax.axis("off")
    axes[0][0].set_ylabel("exact-match accuracy")
    axes[0][0].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path = Path(path)
    try:
        with replacing(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return path
