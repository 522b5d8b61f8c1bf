"""The `sparsetune` command: thin typer commands over library calls.

How to add or fill in a command:
- write one module per command, its function decorated with ``@app.command()`` (or
  ``@workload_app.command()``) from `_app`, whose parameters use the shared option aliases there,
  so `--model` means the same everywhere; import the module below;
- hold no rules: which options combine, and every check of a value, is the library's, which raises;
- import the library module inside the function body: `--help` stays fast, and the runtime
  API (`import sparsetune`) never pulls in typer or rich;
- raise a `SparsetuneError` subclass for bad input and let it propagate: `main` turns it
  into one line ``error: <message>`` on stderr and exit code 2 (`_EXIT_CODES` is the only
  place errors become exit codes). ``SPARSETUNE_DEBUG=1`` also prints the traceback.
  Usage errors (unknown option, missing argument) are click's, and exit 2 as well.
"""

from __future__ import annotations

import os
import sys
import traceback

from ..errors import SparsetuneError
# Importing a command module registers its command; this order is the order of `--help`.
from . import show, search, collect, eval, apply, retime, serve, workload  # noqa: F401, I001
from ._app import EXIT_BAD_INPUT, EXIT_INCOMPLETE, EXIT_INTERRUPTED, app

__all__ = ["EXIT_BAD_INPUT", "EXIT_INCOMPLETE", "EXIT_INTERRUPTED", "app", "main"]


# ---------------------------------------------------------------- entry point

# The one table that turns exceptions into exit codes; anything else is a bug and keeps its traceback.
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (SparsetuneError, EXIT_BAD_INPUT),
)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the app, map known errors to ``error: ...`` and an exit code."""
    try:
        app(args=argv, prog_name="sparsetune")
    except Exception as exc:  # noqa: BLE001 - re-raised unless the table knows it
        code = next((c for kind, c in _EXIT_CODES if isinstance(exc, kind)), None)
        if code is None:
            raise
        if os.environ.get("SPARSETUNE_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__  # always exactly one line
        print(f"error: {message}", file=sys.stderr)
        sys.exit(code)
