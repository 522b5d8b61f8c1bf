"""Progress for long commands (imported only by the CLI), on stderr so stdout keeps the results.

On a terminal: rich bars (search: one per bucket; eval and apply --check: one per stage, after a spinner
while the model loads). Piped or logged: plain lines as things happen (search: one per finished trial;
eval and apply --check: one every few seconds per stage), never a silence until the end.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from ..search.run import TrialEvent

__all__ = ["SearchProgress", "StepProgress"]


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


class StepProgress:
    """A long step (load, fill answers, evaluate) whose `update` is the evaluation layer's `progress` callback
    (`evaluate.progress.Progress`).

    On a terminal: a spinner until the first batch, then a bar per stage. Piped or logged, as `search` does:
    plain lines, the first once the step has run `after_s` (so a quick failure stays one `error:` line), then
    one per stage at most every `every_s` seconds and when the stage completes, and one when the step ends.
    """

    def __init__(self, console: Console, text: str, after_s: float = 2.0, every_s: float = 5.0) -> None:
        self._console, self._text, self._after_s, self._every_s = console, text, after_s, every_s
        self._live = console.is_terminal
        self._start = self._last = time.monotonic()
        self._said = threading.Event()
        self._timer: threading.Timer | None = None
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=20), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
        self._tasks: dict[str, int] = {}
        self._waiting: int | None = None

    def _say(self, line: str) -> None:
        self._said.set()
        self._last = time.monotonic()
        print(line, file=self._console.file, flush=True)

    def __enter__(self) -> StepProgress:
        self._start = self._last = time.monotonic()
        if self._live:
            self._progress.__enter__()
            self._waiting = self._progress.add_task(self._text, total=None)
        else:
            self._timer = threading.Timer(self._after_s, self._say, args=(f"{self._text} ...",))
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._live:
            self._progress.__exit__(exc_type, *exc)  # type: ignore[arg-type]
            return
        assert self._timer is not None
        self._timer.cancel()
        if self._said.is_set() and exc_type is None:
            self._say(f"{self._text}: done in {time.monotonic() - self._start:.0f} s")

    def update(self, stage: str, done: int, total: int) -> None:
        if self._live:
            if self._waiting is not None:
                self._progress.remove_task(self._waiting)
                self._waiting = None
            if stage not in self._tasks:
                self._tasks[stage] = self._progress.add_task(f"{self._text}: {stage}", total=total)
            self._progress.update(self._tasks[stage], completed=min(done, total))
            return
        now = time.monotonic()
        if now - self._start >= self._after_s and (now - self._last >= self._every_s or done >= total):
            self._say(f"{self._text}: {stage} {min(done, total)}/{total} samples, {now - self._start:.0f} s")
