"""Ctrl-C for long commands: one line at once, the process gone within about a second, nothing lost."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["GRACE_S", "quick_interrupt"]

GRACE_S = 1.0  # how long a clean unwind may take after Ctrl-C before the process exits anyway


@contextlib.contextmanager
def quick_interrupt(message: str, code: int = 130) -> Iterator[None]:
    """On the first Ctrl-C: print `message` (one line), silence Optuna's per-trial failure report (its
    traceback of the interrupt), and raise KeyboardInterrupt so the running trial is marked failed and
    the storage stays consistent. If that unwind takes longer than `GRACE_S` (a long C call), or on a
    second Ctrl-C, exit with `code` at once: storages are append-only and a resumed search fails
    the orphaned trial, exactly as after a kill. Only in the main thread; elsewhere nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def hard_exit(*_args: object) -> None:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os._exit(code)

    def on_interrupt(_signum: int, _frame: object) -> None:
        print(message, file=sys.stderr, flush=True)
        with contextlib.suppress(Exception):
            import logging

            logging.getLogger("optuna").setLevel(logging.CRITICAL)  # "Trial N failed ... KeyboardInterrupt"
        signal.signal(signal.SIGINT, hard_exit)
        timer = threading.Timer(GRACE_S, hard_exit)
        timer.daemon = True
        timer.start()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
