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


BucketsOpt = Annotated[Optional[str], typer.Option(
    "--buckets", help="Bucket upper edges in tokens (512,1024,2048) or 'auto' (length quantiles).")]
AnswerTokensOpt = Annotated[int, typer.Option(
    "--answer-tokens", help="Fidelity mode: greedy tokens of the dense model that become the answer "
                            "of samples without one.")]
ConfidenceOpt = Annotated[Optional[float], typer.Option(
    "--confidence", help="Judge the floor on a lower confidence bound at this level (e.g. 0.9).")]


def _console():
    from rich.console import Console

    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120
    return console


@app.command()
def search(
    model: ModelOpt,
    workload: WorkloadOpt,
    out: OutOpt = Path("profile.yaml"),
    floor: Annotated[float, typer.Option("--floor", help="Accuracy floor in (0, 1].")] = 0.95,
    floor_kind: Annotated[str, typer.Option("--floor-kind", help="relative (x dense) or absolute.")] = "relative",
    confidence: ConfidenceOpt = None,
    buckets: BucketsOpt = "auto",
    method: Annotated[str, typer.Option("--method", help="Block selection: topk or coverage.")] = "topk",
    trials: Annotated[int, typer.Option("--trials", help="Complete trials per bucket.")] = 40,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Stop after this many seconds.")] = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
    seed: SeedOpt = 0,
    answer_tokens: AnswerTokensOpt = 8,
    json_output: JsonOpt = False,
) -> None:
    """Search per-bucket budgets under an accuracy floor and write a profile (resumes from its storage)."""
    import json
    import time

    from .pipeline import parse_edges, run_search
    from .search import SearchSettings, SearchSpace

    settings = SearchSettings(floor=floor, floor_kind=floor_kind, confidence=confidence, edges=parse_edges(buckets),
                              trials=trials, timeout=timeout, study=study or out.stem, seed=seed,
                              space=SearchSpace(method=method))
    console = _console()
    start = time.monotonic()
    resume = f"sparsetune search {' '.join(sys.argv[2:])}" if len(sys.argv) > 2 else "the same command"
    try:
        if json_output:
            run = run_search(model, workload, settings, out, storage, answer_tokens)
        else:
            from ._progress import SearchProgress

            with SearchProgress(console) as progress:
                run = run_search(model, workload, settings, out, storage, answer_tokens, on_event=progress.update)
    except KeyboardInterrupt:
        print(f"interrupted: finished trials are kept; rerun `{resume}` to resume", file=sys.stderr)
        raise typer.Exit(130) from None
    seconds = time.monotonic() - start
    if json_output:
        sys.stdout.write(json.dumps({"profile": run.profile.to_dict(), "path": str(run.profile_path),
                                     "plot": str(run.plot_path) if run.plot_path else None,
                                     "storage": run.storage, "seconds": round(seconds, 1)}, indent=2) + "\n")
        return
    from ._show import render_profile

    render_profile(run.profile, console, title=str(out))
    console.print(f"wrote {out} and {run.plot_path} in {seconds:.0f} s; trials are in {run.storage}")


@app.command(name="eval")
def eval_(
    model: ModelOpt,
    workload: WorkloadOpt,
    profile: ProfileOpt = None,
    budget: Annotated[Optional[str], typer.Option(
        "--budget", help="A fixed budget, e.g. keep=0.3,block=64,sink=1,local=1 (or tau=0.9,...).")] = None,
    buckets: BucketsOpt = None,
    confidence: Annotated[float, typer.Option("--confidence", help="Level of the lower bound.")] = 0.9,
    answer_tokens: AnswerTokensOpt = 8,
    json_output: JsonOpt = False,
) -> None:
    """Accuracy per length bucket and task, dense and sparse side by side, with sparsity and lower bound."""
    import json

    from .budget import Budget
    from .evaluate import compare
    from .pipeline import load_inputs, parse_edges
    from .profile import load_profile

    if (profile is None) == (budget is None):
        raise _NotYetAvailable("eval: give exactly one of --profile and --budget")
    policy = load_profile(profile) if profile is not None else Budget.parse(budget)
    loaded, work = load_inputs(model, workload, answer_tokens)
    edges = parse_edges(buckets)
    if edges is None and profile is not None:
        edges = policy.edges
    rows = compare(loaded, work.samples, policy, edges, confidence=confidence)
    if json_output:
        sys.stdout.write(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
        return
    from ._show import render_comparison

    render_comparison(rows, _console(), title=f"{loaded.name} on {work.name}: "
                      + (f"profile {profile}" if profile else f"budget {budget}"))


@app.command(**_PENDING)
def apply(ctx: typer.Context) -> None:
    """Deploy a profile with a model, or export it for serving engines (not yet available)."""
    _not_yet("apply")


@workload_app.command()
def synth(
    model: ModelOpt,
    out: OutOpt,
    tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated: niah,multikey,vt,cwe.")] = "niah,multikey,vt,cwe",
    lengths: Annotated[str, typer.Option("--lengths", help="Comma-separated lengths in tokens.")] = "256,512,1024,2048",
    per_length: Annotated[int, typer.Option("--per-length", help="Samples per task and length.")] = 16,
    seed: SeedOpt = 0,
) -> None:
    """Generate RULER-style synthetic tasks sized in tokens of the model's tokenizer, as JSONL."""
    from .errors import WorkloadError
    from .models import load_tokenizer
    from .workload import synth_workload, write_jsonl

    try:
        sizes = [int(x) for x in lengths.split(",") if x.strip()]
    except ValueError:
        raise WorkloadError(f"lengths: must be comma-separated integers, got {lengths!r}") from None
    rows = synth_workload(load_tokenizer(model), [t.strip() for t in tasks.split(",") if t.strip()], sizes,
                          per_length, seed)
    write_jsonl(out, rows)
    typer.echo(f"wrote {len(rows)} samples to {out}")


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
