"""Local parallel workers: `search --workers N` starts N-1 helper processes on the same storage.

The helpers are the same `sparsetune search` command a user would start on another GPU or host, with one
difference (`--helper`): they search and confirm but write no profile, so only the calling process writes
it, once every helper has stopped. Optuna's storage is what they share; nothing else passes between them.
Separate processes rather than threads: each holds its own model and torch thread pool, and a small model's
forward passes scale across processes far better than across intra-op threads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from ..errors import SearchError

__all__ = ["helpers", "threads_per_worker"]


def threads_per_worker(workers: int, threads: int | None) -> int | None:
    """Each worker's torch threads: `threads` when given, else an equal share of the cores (None for one worker:
    torch's default)."""
    if threads is not None or workers == 1:
        return threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // workers)


@contextmanager
def helpers(args: Sequence[str], count: int) -> Iterator[list[subprocess.Popen]]:
    """Run `count` helper processes of ``sparsetune search ARGS --helper`` while the body runs; on leaving,
    wait for them (they stop when every bucket is settled) and raise SearchError naming a helper that failed.
    An exception in the body (an interrupt) stops them first: their finished trials are in the storage."""
    logs = [tempfile.TemporaryFile(mode="w+", prefix="sparsetune-helper-") for _ in range(count)]
    procs = [subprocess.Popen([sys.executable, "-m", "sparsetune.cli", "search", *args, "--helper"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
             for log in logs]
    try:
        yield procs
    except BaseException:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
        raise
    finally:
        failed = []
        for k, (p, log) in enumerate(zip(procs, logs), start=1):
            code = p.wait()
            if code != 0:
                log.seek(0)
                # its last line that says something (a usage error comes in a rich box: drop the frame)
                lines = [t for t in (line.strip("│╭╮╰╯─ \t") for line in log.read().splitlines())
                         if any(c.isalnum() for c in t)]
                failed.append(f"helper {k} exited with {code}: {lines[-1] if lines else 'no output'}")
            log.close()
    if failed:
        raise SearchError("search --workers: " + "; ".join(failed))
