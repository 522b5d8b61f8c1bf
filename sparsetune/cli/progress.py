"""Progress for long commands (imported only by the CLI), on stderr so stdout keeps the results.

On a terminal: rich bars (search: one per bucket) or a spinner with the elapsed time. Piped or logged:
plain lines as things happen (search: one per finished trial), never a silence until the end.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from ..search.run import TrialEvent

__all__ = ["SearchProgress", "working"]


def _best(cost: float | None) -> str:
    return "-" if cost is None else f"{cost:.2f}x"


class SearchProgress:
    """Context manager whose `update` is `search`'s `on_event` callback."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live = console.is_terminal
        self._start = time.monotonic()
        self._progress = Progress(
            TextColumn("[bold]{task.fields[bucket]}[/bold]"), BarColumn(bar_width=20), MofNCompleteColumn(),
            TextColumn("best {task.fields[best]} {task.fields[last]}"),
            TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, transient=False)
        self._tasks: dict[int, int] = {}

    def __enter__(self) -> SearchProgress:
        if self._live:
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live:
            self._progress.__exit__(*exc)

    def update(self, e: TrialEvent) -> None:
        if not self._live:  # one plain line per event: readable in a log, visible in a pipe as it happens
            print(f"search: <= {e.max_len} tokens: {min(e.done, e.total)}/{e.total} trials, best {_best(e.best_cost)} "
                  f"dense cost, last {e.last_state.lower()}, {time.monotonic() - self._start:.0f} s",
                  file=self._console.file, flush=True)
            return
        if e.bucket not in self._tasks:
            self._tasks[e.bucket] = self._progress.add_task(
                "", total=e.total, bucket=f"<={e.max_len}", best="-", last="-")
        self._progress.update(self._tasks[e.bucket], completed=min(e.done, e.total), best=_best(e.best_cost),
                              last=e.last_state.lower())


@contextlib.contextmanager
def working(console: Console, text: str, after_s: float = 2.0) -> Iterator[None]:
    """A spinner with the elapsed time while a long step runs. Piped: a plain line once it has run `after_s`
    (so a quick failure stays one `error:` line) and another when it ends."""
    start = time.monotonic()
    if not console.is_terminal:
        said = threading.Event()

        def say() -> None:
            said.set()
            print(f"{text} ...", file=console.file, flush=True)

        timer = threading.Timer(after_s, say)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
        if said.is_set():
            print(f"{text}: done in {time.monotonic() - start:.0f} s", file=console.file, flush=True)
        return
    with Progress(SpinnerColumn(), TextColumn(text), TimeElapsedColumn(), console=console, transient=True) as bar:
        bar.add_task("", total=None)
        yield
