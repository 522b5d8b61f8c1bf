"""`sparsetune search`: search per-bucket budgets and write a profile (resumable)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ._app import (AnswerTokensOpt, BucketsOpt, ConfidenceOpt, JsonOpt, ModelOpt, OutOpt, SeedOpt, StorageOpt,
                   StudyOpt, WorkloadOpt, app, console)


@app.command()
def search(
    ctx: typer.Context,
    model: ModelOpt,
    workload: WorkloadOpt,
    out: OutOpt = Path("profile.yaml"),
    floor: Annotated[float, typer.Option("--floor", help="Accuracy floor in (0, 1].")] = 0.95,
    floor_kind: Annotated[str, typer.Option("--floor-kind", help="relative (x dense) or absolute.")] = "relative",
    confidence: ConfidenceOpt = 0.9,
    per_task: Annotated[bool, typer.Option(
        "--per-task/--aggregate", help="Every task must hold the floor on its own samples (default: the bucket's "
                                       "aggregate must, and no task may miss it beyond noise).")] = False,
    confirm: Annotated[Optional[str], typer.Option(
        "--confirm", help="JSONL samples to confirm candidates on (default: a third of each bucket, per task).",
        show_default=False)] = None,
    min_dense: Annotated[float, typer.Option(
        "--min-dense", help="Refuse a bucket whose dense accuracy is below this (a broken prompt format).")] = 0.2,
    min_share: Annotated[float, typer.Option(
        "--min-share", help="Leave a bucket dense, unsearched, when it holds less than this share of the workload's "
                            "dense attention cost (0: search every bucket).")] = 0.02,
    buckets: BucketsOpt = "auto",
    method: Annotated[str, typer.Option("--method", help="Block selection rule: topk or coverage.")] = "topk",
    estimator: Annotated[str, typer.Option(
        "--estimator", help="How blocks are ranked, one or a comma-separated choice the search makes per bucket: "
                            "pooled (mean-pooled q.k), sampled (exact attention of every stride-th query), peak (sampled, "
                            "each block's largest mass instead of the mean), salient (peak, plus every query of the last blocks and of "
                            "the blocks they read most: a needle's own tokens), "
                            "antidiagonal (XAttention's strided sums), vslash (the last queries' vertical and slash "
                            "lines), quest (per-block key bounds), oracle (the true mass: a dense pass, needs "
                            "--allow-oracle).")] = "pooled",
    dense_layers: Annotated[str, typer.Option(
        "--dense-layers", help="First layers that attend densely: one value, or a comma-separated choice the "
                               "search makes per bucket (e.g. 0,2).")] = "0",
    dense_tail: Annotated[str, typer.Option(
        "--dense-tail", help="Last query blocks kept dense (where the question is; decode then runs dense): one "
                             "value or a choice (e.g. 0,1).")] = "0",
    anchors: Annotated[bool, typer.Option(
        "--anchors/--no-anchors", help="Start each bucket's study from the simple policies, cheapest first: fixed "
                                       "token budgets (128-1024 tokens), fixed keeps 0.5-0.1 (block 64, sink 1, "
                                       "local 1, per estimator) and the budget confirmed at the shorter bucket; "
                                       "TPE explores from there.")] = True,
    allow_oracle: Annotated[bool, typer.Option(
        "--allow-oracle", help="Let the search use the oracle estimator (a diagnostic ceiling, not deployable: "
                               "the profile says so).")] = False,
    trials: Annotated[int, typer.Option("--trials", help="Complete trials per bucket.")] = 40,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Stop after this many seconds.")] = None,
    storage: StorageOpt = None,
    study: StudyOpt = None,
    seed: SeedOpt = 0,
    answer_tokens: AnswerTokensOpt = 8,
    threads: Annotated[Optional[int], typer.Option(
        "--threads", help="Torch CPU threads for this worker (default: torch's, all cores); give each of several "
                          "workers on one host its share.", show_default=False)] = None,
    workers: Annotated[int, typer.Option(
        "--workers", help="Worker processes on this machine, sharing the storage and its trials (each takes an "
                          "equal share of the cores unless --threads says otherwise); the search is the same "
                          "as N users' workers on one storage.")] = 1,
    helper: Annotated[bool, typer.Option("--helper", hidden=True,
                                         help="A --workers helper: search, write nothing.")] = False,
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite an existing file at --out that is not a profile of this model and workload.")] = False,
    json_output: JsonOpt = False,
) -> None:
    """Search per-bucket budgets under an accuracy floor and write a profile (resumes from its storage).

    Exit codes: 0 done, 2 bad input (nothing written), 3 stopped by --timeout (the profile names its
    incomplete buckets; rerun to resume), 130 interrupted (finished trials are kept; rerun to resume).
    """
    import json
    import time
    import warnings

    from .._io import check_writable
    from ..deploy import check_overwrite
    from ..evaluate.inputs import check_inputs
    from ..profile.buckets import parse_edges
    from ..errors import FailingBucketWarning, SearchError, SearchWarning
    from ..search.space import SearchSettings, SearchSpace, parse_choices
    from ..search.workers import helpers, threads_per_worker
    from ._app import EXIT_INCOMPLETE, EXIT_INTERRUPTED
    from .interrupt import quick_interrupt

    # Every argument is checked before anything is written or any storage is opened.
    if workers < 1:
        raise SearchError(f"workers: must be an integer >= 1, got {workers!r}")
    settings = SearchSettings(floor=floor, floor_kind=floor_kind, confidence=confidence or None,
                              per_task=per_task, min_dense=min_dense, min_share=min_share,
                              edges=parse_edges(buckets),
                              trials=trials, timeout=timeout, study=study or out.stem, seed=seed,
                              space=SearchSpace(method=method, anchors=anchors, estimators=tuple(
                                  e.strip() for e in estimator.split(",") if e.strip()),
                                  dense_layers=parse_choices("dense-layers", dense_layers),
                                  dense_tails=parse_choices("dense-tail", dense_tail)),
                              threads=threads_per_worker(workers, threads), allow_oracle=allow_oracle)
    check_writable(out, SearchError)
    check_writable(out.with_suffix(".png"), SearchError)
    check_overwrite(out, model, workload, force)
    check_inputs(model, workload, confirm)
    from ..search import BucketStatus, run_search  # torch and transformers load here, after every check
    from ..search.run import failing_message

    out_console = console()
    start = time.monotonic()
    resume = f"sparsetune search {' '.join(sys.argv[2:])}" if len(sys.argv) > 2 else "the same command"
    try:
        with warnings.catch_warnings(), quick_interrupt(
                f"interrupted: finished trials are kept; rerun `{resume}` to resume", EXIT_INTERRUPTED):
            warnings.simplefilter("always", SearchWarning)
            warnings.simplefilter("ignore", FailingBucketWarning)  # said below, once, from the outcomes
            warnings.showwarning = lambda message, *_a, **_k: print(f"warning: {message}", file=sys.stderr)
            from .progress import SearchProgress

            # Progress goes to stderr, so it shows with --json too (a scripted search is long work as well).
            if helper:  # started by another `search --workers`: it shows progress and writes the profile
                run_search(model, workload, settings, out, storage, answer_tokens, confirm=confirm, write=False)
                return
            with helpers(_helper_args(ctx, settings.threads), workers - 1), SearchProgress(console(stderr=True)) as progress:
                run = run_search(model, workload, settings, out, storage, answer_tokens,
                                 on_event=progress.update, confirm=confirm)
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None  # quick_interrupt has said so, in one line
    seconds = time.monotonic() - start
    for o in run.outcomes:
        if o.status is BucketStatus.FAILING:
            print(f"warning: {failing_message(o.bucket.max_len)}", file=sys.stderr)
    # Only a timeout leaves buckets short (a lone worker otherwise returns when all are done); the profile's
    # reasons name them and their trial counts.
    incomplete = [o.span.label for o in run.outcomes if o.incomplete and timeout is not None]
    if incomplete:
        print(f"warning: --timeout {timeout:g} s stopped the search; incomplete buckets (their budgets rest on "
              f"fewer trials, or on none: dense): {', '.join(incomplete)}; rerun the same command to resume",
              file=sys.stderr)
    if json_output:
        sys.stdout.write(json.dumps({"profile": run.profile.to_dict(), "path": str(run.profile_path),
                                     "plot": str(run.plot_path) if run.plot_path else None,
                                     "storage": run.storage, "seconds": round(seconds, 1),
                                     "incomplete": incomplete}, indent=2) + "\n")
    else:
        from .render import render_profile

        render_profile(run.profile, out_console, title=str(out))
        out_console.print(f"wrote {out} and {run.plot_path} in {seconds:.0f} s; trials are in {run.storage}")
    if incomplete:
        raise typer.Exit(EXIT_INCOMPLETE)



def _helper_args(ctx: typer.Context, threads: int | None) -> list[str]:
    """This command's options as parsed, for its `--workers` helpers: one worker each, its share of threads."""
    args: list[str] = []
    for p in ctx.command.params:
        value = ctx.params.get(p.name)  # type: ignore[arg-type]
        if p.name in ("workers", "helper", "threads", "json_output") or value is None:
            continue
        if getattr(p, "is_flag", False):
            if p.secondary_opts:
                args.append(p.opts[0] if value else p.secondary_opts[0])
            elif value:
                args.append(p.opts[0])
        else:
            args += [p.opts[0], str(value)]
    return args + (["--threads", str(threads)] if threads is not None else [])
