"""Live progress of a search (imported only by the CLI): one bar per bucket, best cost, time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..search.run import TrialEvent

__all__ = ["SearchProgress"]


class SearchProgress:
    """Context manager whose `update` is `search`'s `on_event` callback."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.fields[bucket]}[/bold]"), BarColumn(), MofNCompleteColumn(),
            TextColumn("trials  best {task.fields[best]}  last {task.fields[last]}"),
            TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            console=console, transient=False)
        self._tasks: dict[int, int] = {}

    def __enter__(self) -> SearchProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)

    def update(self, e: TrialEvent) -> None:
        if e.bucket not in self._tasks:
            self._tasks[e.bucket] = self._progress.add_task(
                "", total=e.total, bucket=f"<= {e.max_len} tokens", best="-", last="-")
        best = "-" if e.best_cost is None else f"{e.best_cost:.2f}x dense"
        self._progress.update(self._tasks[e.bucket], completed=min(e.done, e.total), best=best,
                              last=e.last_state.lower())
