"""The typer app, its sub-apps and the shared option aliases every command module uses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

from ..errors import MODEL_FORMS

__all__ = ["EXIT_BAD_INPUT", "EXIT_INCOMPLETE", "EXIT_INTERRUPTED", "app", "console", "workload_app"]

# Exit codes (README "Exit codes"); `cli._EXIT_CODES` maps errors to them. 0 done; 1 `apply --check` found a
# bucket below the floor; 2 bad input, nothing written; 3 `search --timeout` stopped the search (the profile
# names its incomplete buckets and their trial counts; the same command resumes); 130 interrupted by
# Ctrl-C (finished trials are kept; the same command resumes).
EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130

class _FlagsTakeNoValue:
    """typer 0.29's rich help prints every option's type, flags too (`--json <bool>`), as if a flag took a
    value. An empty metavar is what its help panel prints instead (typer's own click, `typer._click`, never
    shows a flag's metavar elsewhere)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if isinstance(p, TyperOption) and p.is_flag and p.metavar is None:
                p.metavar = ""
        return params


class _Command(_FlagsTakeNoValue, TyperCommand):
    pass


class _Group(_FlagsTakeNoValue, TyperGroup):
    pass


class _Typer(typer.Typer):
    """A typer app whose commands (any module's `@app.command()`) use `_Command`."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _Command)
        return super().command(*args, **kwargs)


app = _Typer(
    cls=_Group,
    name="sparsetune",
    help="Tune block-sparse attention budgets per request length under an accuracy floor.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # main() reports errors; tracebacks only with SPARSETUNE_DEBUG=1
)
workload_app = _Typer(cls=_Group, help="Make and inspect workloads.", no_args_is_help=True)
app.add_typer(workload_app, name="workload")

# ---------------------------------------------------------------- shared option aliases
# One definition per option, so every command spells and documents it the same way.
# Use as `model: ModelOpt` (required) or `json_output: JsonOpt = False`.

ProfileArg = Annotated[Path, typer.Argument(help="Profile YAML file.", show_default=False)]
ProfileOpt = Annotated[Optional[Path], typer.Option("--profile", "-p", help="Profile YAML file.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help=f"{MODEL_FORMS[0].upper()}{MODEL_FORMS[1:]}.")]
ThreadsOpt = Annotated[Optional[int], typer.Option(
    "--threads", help="Torch CPU threads (default: torch's, all cores); give each of several jobs on one host its "
                      "share.")]
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
    "--model", "-m", help=f"{MODEL_FORMS[0].upper()}{MODEL_FORMS[1:]} (needed for a deploy folder and --check).")]
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
