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


@app.command()
def collect(
    out: OutOpt = Path("profile.yaml"),
    storage: StorageOpt = None,
    study: StudyOpt = None,
    status: Annotated[bool, typer.Option("--status", help="Only show each bucket's progress; write nothing.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Write the profile and plot from a study's trials in storage, running none; shows each bucket's progress.

    Safe while workers still run (the profile then holds the trials finished so far).
    """
    import json

    from .errors import SearchError
    from .plot import plot_frontier
    from .search import bucket_outcomes, open_storage, profile_from_storage, study_progress

    name = study or out.stem
    journal = out.with_name(out.stem + ".optuna.journal")
    if storage is None and not journal.exists():
        raise SearchError(f"storage: no {journal} (the search's default storage for -o {out}); "
                          f"pass the search's --storage URL")
    st = open_storage(storage, journal)
    progress = study_progress(st, name)
    rows = [{"max_len": b.max_len, "complete": b.complete, "target": b.target, "running": b.running,
             "waiting": b.waiting, "failed": b.failed, "retried": b.retried, "workers": list(b.workers),
             "baseline": b.baseline, "best_cost": b.best_cost} for b in progress]
    console = _console()
    if not json_output:
        from rich.table import Table

        table = Table(title=f"study {name}: trials per bucket")
        for col in ("bucket", "complete", "running", "waiting", "failed", "retried", "workers", "best"):
            table.add_column(col, justify="left" if col in ("bucket", "workers") else "right")
        for b in progress:
            table.add_row(f"<= {b.max_len}", f"{b.complete}/{b.target}", str(b.running), str(b.waiting),
                          str(b.failed), str(b.retried), str(len(b.workers)),
                          "-" if b.best_cost is None else f"{b.best_cost:.2f}x dense")
        console.print(table)
    if status:
        if json_output:
            sys.stdout.write(json.dumps({"storage": storage or str(journal), "buckets": rows}, indent=2) + "\n")
        return
    profile = profile_from_storage(st, name)
    outcomes = bucket_outcomes(st, name)
    profile.save(out)
    plot_path = plot_frontier(outcomes, out.with_suffix(".png"),
                              title=f"{profile.model.name} on {profile.workload.name}: "
                                    f"accuracy vs attention cost per bucket")
    if json_output:
        sys.stdout.write(json.dumps({"profile": profile.to_dict(), "path": str(out), "plot": str(plot_path),
                                    "storage": storage or str(journal), "buckets": rows}, indent=2) + "\n")
        return
    from ._show import render_profile

    render_profile(profile, console, title=str(out))
    unfinished = [b for b in progress if b.complete < b.target]
    note = f"; {len(unfinished)} bucket(s) still short of their trials" if unfinished else ""
    console.print(f"wrote {out} and {plot_path} from {storage or journal}{note}")


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
    from .errors import BudgetError
    from .evaluate import compare
    from .pipeline import load_inputs, parse_edges
    from .profile import load_profile

    if (profile is None) == (budget is None):
        raise BudgetError("eval: give exactly one of --profile and --budget")
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


ApplyModelOpt = Annotated[Optional[str], typer.Option(
    "--model", "-m", help="'demo' or a local Hugging Face model folder (needed for a deploy folder and --check).")]
ApplyOutOpt = Annotated[Optional[Path], typer.Option(
    "--out", "-o", help="Deploy folder to create; with --format json or hf-overrides, the file (default: stdout).")]


@app.command()
def apply(
    profile: ProfileArg,
    model: ApplyModelOpt = None,
    out: ApplyOutOpt = None,
    in_place: Annotated[bool, typer.Option("--in-place", help="Make the model folder itself the deploy folder.")] = False,
    link: Annotated[str, typer.Option("--link", help="How the deploy folder holds the model's other files: "
                                                     "symlink or hardlink (never a copy).")] = "symlink",
    fmt: Annotated[str, typer.Option("--format", help="folder (deploy folder), json (flat lookup table) or "
                                                      "hf-overrides (vLLM --hf-overrides, SGLang "
                                                      "--json-model-override-args).")] = "folder",
    check: Annotated[bool, typer.Option("--check", help="Gate on held-out samples (--workload): exit 1 when a "
                                                        "bucket misses the profile's floor; writes nothing then.")] = False,
    workload: Annotated[Optional[str], typer.Option(
        "--workload", "-w", help="Held-out samples for --check: a JSONL file, or 'demo-heldout'.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Apply a profile tuned for another model "
                                                        "(its config hash differs).")] = False,
    answer_tokens: AnswerTokensOpt = 8,
    json_output: JsonOpt = False,
) -> None:
    """Deploy a profile with its model (links, never copies), export it for serving engines, or gate it.

    Exit codes: 0 done (every checked bucket meets the floor), 1 a bucket misses the floor, 2 bad input.
    """
    import json

    from . import apply as deploy_lib
    from .profile import load_profile

    if fmt not in ("folder", "json", "hf-overrides"):
        raise deploy_lib.DeployError(f"format: must be folder, json or hf-overrides, got {fmt!r}")
    if check and workload is None:
        raise deploy_lib.DeployError("workload: --check needs held-out samples (--workload FILE or demo-heldout)")
    if workload is not None and not check:
        raise deploy_lib.DeployError("workload: only used with --check")
    if fmt == "folder" and model is None:
        raise deploy_lib.DeployError("model: a deploy folder (and --check) needs --model")
    if fmt == "folder" and not check and out is None and not in_place:
        raise deploy_lib.DeployError("out: give the deploy folder with --out, or --in-place, or --check")
    if fmt != "folder" and (in_place or (check and out is None)):
        raise deploy_lib.DeployError(f"format: --format {fmt} writes a file; give --out FILE "
                                     + ("(--in-place is for deploy folders)" if in_place else "with --check"))

    loaded_profile = load_profile(profile)
    warnings = [w for w in [deploy_lib.schema_note(profile)] if w]
    folder = deploy_lib.model_folder(model) if model is not None else None
    if folder is not None:
        warnings += [w for w in [deploy_lib.check_model(loaded_profile, folder, force)] if w]
    if fmt == "folder" and folder is not None:
        import torch

        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
        warnings += [w for w in [deploy_lib.device_warning(loaded_profile, gpu)] if w]
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)

    result: dict = {"warnings": warnings}
    report = None
    if check:
        from .pipeline import load_inputs

        held_out = str(deploy_lib.DEMO_HELDOUT) if workload == "demo-heldout" else workload
        loaded, work = load_inputs(model, held_out, answer_tokens)
        report = deploy_lib.check_profile(loaded_profile, loaded, work.samples, workload=work.name)
        result["check"] = report.to_dict()
        if not json_output:
            _render_check(report, _console(), title=f"check: {profile} with {loaded.name} on {work.name}")
    if report is None or report.ok:
        if fmt == "folder" and (out is not None or in_place):
            done = deploy_lib.deploy(loaded_profile, folder, out, in_place=in_place, link=link)
            result["deployed"] = done.to_dict()
            if not json_output:
                how = "in place" if in_place else f"{len(done.linked)} files {link}ed"
                typer.echo(f"deployed {profile} to {done.folder} ({how}); load it with: import sparsetune; "
                           f"AutoModelForCausalLM.from_pretrained({str(done.folder)!r}, "
                           f"attn_implementation='sparsetune')")
        elif fmt != "folder":
            table = (deploy_lib.lookup_table if fmt == "json" else deploy_lib.hf_overrides)(loaded_profile)
            text = json.dumps(table, indent=2, ensure_ascii=False) + "\n"
            if out is None:
                sys.stdout.write(text)
                return
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text, encoding="utf-8")
            result["exported"] = {"format": fmt, "path": str(out)}
            if not json_output:
                typer.echo(f"wrote {fmt} table of {profile} to {out}")
    elif not json_output and (out is not None or in_place):
        typer.echo("not deployed: a bucket misses the floor", err=True)
    if json_output:
        sys.stdout.write(json.dumps(result, indent=2) + "\n")
    if report is not None and not report.ok:
        raise typer.Exit(1)


def _render_check(report, console, title: str) -> None:
    """The gate's table: one row per profile bucket."""
    from rich.table import Table

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"

    colour = {"pass": "green", "fail": "bold red", "dense": "dim", "untested": "yellow"}
    judged = (f"{report.confidence:.0%} lower bound" if report.judged_on == "lower_bound" else "point estimate")
    floor = report.floor
    table = Table(title=f"{title}\nfloor: {floor['kind']} {floor['value']} on the {judged}", title_justify="left")
    for name in ("bucket", "n", "dense", "sparse", "lower bound", "floor", "sparsity", "verdict"):
        table.add_column(name, justify="left" if name in ("bucket", "verdict") else "right")
    for b in report.buckets:
        span = f"{b.first}+" if b.last is None else f"{b.first}-{b.last}"
        table.add_row(span, str(b.n), pct(b.dense), pct(b.sparse), pct(b.lower_bound), pct(b.floor),
                      pct(b.sparsity), f"[{colour[b.verdict]}]{b.verdict}[/]")
    console.print(table)
    console.print("[green]pass[/]: every checked bucket meets the floor" if report.ok
                  else "[bold red]fail[/]: a bucket misses the floor")


@app.command()
def retime(
    profile: ProfileArg,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Where to write (default: in place).")] = None,
    json_output: JsonOpt = False,
) -> None:
    """Time the kernel launch configs of a profile's buckets on this GPU and add its device section.

    Budgets and accuracy are kept: tune once, time kernels on each GPU type.
    """
    from .profile import load_profile
    from .search import retime_profile

    updated = retime_profile(load_profile(profile))
    updated.save(out or profile)
    if json_output:
        sys.stdout.write(updated.to_json())
        return
    from ._show import render_profile

    render_profile(updated, _console(), title=str(out or profile))


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
