"""Progress of an evaluation, per finished batch: what `compare`, `check_profile` and `load_inputs` report."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["Progress", "per_batch"]

# progress(stage, samples done, samples in the stage), called after every batch: stage "answers" (fidelity
# answers of the dense model) or "evaluate" (dense and policy runs together).
Progress = Callable[[str, int, int], None]


def per_batch(progress: Progress | None, stage: str, total: int, passes: int = 1) -> Callable[[int], None] | None:
    """A `decode` `on_batch` callback that adds up a stage's samples across calls and reports them. With `passes`
    runs over each of the `total` samples (dense, then sparse), it reports samples, not runs: a sample counts
    once all its passes are done, shown as the share of the work done."""
    if progress is None:
        return None
    done = 0

    def on_batch(n: int) -> None:
        nonlocal done
        done += n
        progress(stage, done // passes, total)

    return on_batch
