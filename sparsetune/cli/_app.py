"""The typer app, its sub-apps and the shared option aliases every command module uses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

__all__ = ["EXIT_BAD_INPUT", "EXIT_INCOMPLETE", "EXIT_INTERRUPTED", "app", "console", "workload_app"]

# Exit codes (README "Exit codes"); `cli._EXIT_CODES` maps errors to them. 0 done; 1 `apply --check` found a
# bucket below the floor; 2 bad input, nothing written; 3 `search --timeout` stopped the search (a profile,
# if one could be written, names its incomplete buckets; the same command resumes); 130 interrupted by
# Ctrl-C (finished trials are kept; the same command resumes).
EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130

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


BucketsOpt = Annotated[Optional[str], typer.Option(
    "--buckets", help="Bucket upper edges in tokens (512,1024,2048) or 'auto' (length quantiles).")]
AnswerTokensOpt = Annotated[int, typer.Option(
    "--answer-tokens", help="Fidelity mode: greedy tokens of the dense model that become the answer "
                            "of samples without one.")]
ConfidenceOpt = Annotated[float, typer.Option(
    "--confidence", help="Judge the floor on a one-sided lower confidence bound at this level; 0 judges the point "
                         "estimate (not recommended: the cheapest budget then passes by luck).")]


ApplyModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="'demo' or a local Hugging Face model folder (needed for a deploy folder and --check).")]
ApplyOutOpt = Annotated[Optional[Path], typer.Option(
    "--out", "-o", help="Deploy folder to create; with --format json or hf-overrides, the file (default: stdout).")]



def console(stderr: bool = False) -> Any:
    """A rich console (on stderr for progress); piped output gets 120 columns unless COLUMNS says otherwise."""
    from rich.console import Console

    out = Console(highlight=False, stderr=stderr)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 120
    return out


def _print_version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(f"sparsetune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """Tune block-sparse attention budgets per request length under an accuracy floor."""
