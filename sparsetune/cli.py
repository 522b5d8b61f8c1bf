"""The `sparsetune` command: thin typer commands over library calls.

How to add or fill in a command:
- write one function here, decorated with ``@app.command()`` (or ``@workload_app.command()``),
  whose parameters use the shared option aliases below, so `--model` means the same everywhere;
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
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import SparsetuneError

__all__ = ["app", "main"]

app = typer.Typer(
    name="sparsetune",
    help="Tune block-sparse attention budgets per request length under an accuracy floor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # main() reports errors; tracebacks only with SPARSETUNE_DEBUG=1
)
workload_app = typer.Typer(help="Make and inspect workloads.", no_args_is_help=True)
app.add_typer(workload_app, name="workload")

# ---------------------------------------------------------------- shared option aliases
# One definition per option, so every command spells and documents it the same way.
# Use as `model: ModelOpt` (required) or `json_output: JsonOpt = False`.

ProfileArg = Annotated[Path, typer.Argument(help="Profile YAML file.", show_default=False)]
ProfileOpt = Annotated[Optional[Path], typer.Option("--profile", "-p", help="Profile YAML file.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="'demo' or a local Hugging Face model folder.")]
WorkloadOpt = Annotated[str, typer.Option("--workload", "-w", help="'demo' or a JSONL file of samples.")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Where to write the result.")]
StorageOpt = Annotated[Optional[str], typer.Option(
    "--storage", help="Optuna storage URL (default: a local file next to the output).")]
StudyOpt = Annotated[Optional[str], typer.Option("--study", help="Optuna study name prefix.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


# ---------------------------------------------------------------- commands


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        typer.echo(f"sparsetune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Tune block-sparse attention budgets per request length under an accuracy floor."""


@app.command()
def show(profile: ProfileArg, json_output: JsonOpt = False) -> None:
    """Show a profile: buckets, budgets, accuracy, sparsity and kernel configs per device."""
    from .profile import load_profile

    loaded = load_profile(profile)
    if json_output:
        sys.stdout.write(loaded.to_json())
        return
    from rich.console import Console

    from ._show import render_profile

    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # piped output: do not squeeze the tables to 80 columns
    render_profile(loaded, console, title=str(profile))


# Placeholders until their issues land: they accept any arguments and say so, exit 2.
_PENDING = {"context_settings": {"allow_extra_args": True, "ignore_unknown_options": True}}


class _NotYetAvailable(SparsetuneError):
    pass


def _not_yet(command: str) -> None:
    raise _NotYetAvailable(f"`sparsetune {command}` is not yet available in this version")


@app.command(**_PENDING)
def search(ctx: typer.Context) -> None:
    """Search per-bucket budgets under an accuracy floor and write a profile (not yet available)."""
    _not_yet("search")


@app.command(**_PENDING)
def apply(ctx: typer.Context) -> None:
    """Deploy a profile with a model, or export it for serving engines (not yet available)."""
    _not_yet("apply")


@app.command(name="eval", **_PENDING)
def eval_(ctx: typer.Context) -> None:
    """Evaluate dense and sparse accuracy per length bucket (not yet available)."""
    _not_yet("eval")


@workload_app.command(**_PENDING)
def synth(ctx: typer.Context) -> None:
    """Generate RULER-style synthetic tasks sized in tokens (not yet available)."""
    _not_yet("workload synth")


# ---------------------------------------------------------------- entry point

# The one table that turns exceptions into exit codes; anything else is a bug and keeps its traceback.
_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (SparsetuneError, 2),
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


if __name__ == "__main__":
    main()
