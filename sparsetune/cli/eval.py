"""`sparsetune eval`: dense vs sparse accuracy per bucket and task."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ._app import AnswerTokensOpt, BucketsOpt, JsonOpt, ModelOpt, ProfileOpt, ThreadsOpt, WorkloadOpt, app, console


@app.command(name="eval")
def eval_(
    model: ModelOpt,
    workload: WorkloadOpt,
    profile: ProfileOpt = None,
    budget: Annotated[Optional[str], typer.Option(
        "--budget", help="A fixed budget, e.g. keep=0.3,block=64,sink=1,local=1 (or tau=0.9,...); without "
                         "--budget or --profile, dense alone (the baseline).")] = None,
    buckets: BucketsOpt = None,
    confidence: Annotated[float, typer.Option(
        "--confidence", help="Level of the lower confidence bound shown, in (0, 1).")] = 0.9,
    force: Annotated[bool, typer.Option("--force", help="Evaluate a profile tuned for another model (its config "
                                                        "hash differs).")] = False,
    answer_tokens: AnswerTokensOpt = 8,
    threads: ThreadsOpt = None,
    json_output: JsonOpt = False,
) -> None:
    """Accuracy per length bucket and task, dense and sparse side by side, with sparsity and lower bound.

    Without --budget or --profile it evaluates dense alone: the baseline.
    """
    import json

    from ..evaluate.arguments import eval_policy
    from ..evaluate.inputs import check_inputs

    # Every argument is checked before the model loads.
    policy, edges = eval_policy(profile, budget, buckets, confidence=confidence, threads=threads)
    if profile is not None:  # a profile's budgets hold only for its model, as `apply` says
        from ..deploy import check_model, model_folder

        note = check_model(policy, model_folder(model), force)  # type: ignore[arg-type]
        if note:
            print(f"warning: {note}", file=sys.stderr)
    check_inputs(model, workload)
    from ..evaluate import compare, load_inputs  # torch and transformers load here, after every check
    from .progress import StepProgress

    if policy is None:
        print("eval: no --budget or --profile: evaluating dense attention (the baseline)", file=sys.stderr)
    with StepProgress(console(stderr=True), f"eval: {model} on {workload}") as progress:
        loaded, work = load_inputs(model, workload, answer_tokens, progress=progress.update, threads=threads)
        for note in work.warnings:
            print(f"warning: {note}", file=sys.stderr)
        rows = compare(loaded, work.samples, policy, edges, confidence=confidence, progress=progress.update)
    if json_output:
        sys.stdout.write(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
        return
    from .render import render_comparison

    what = f"profile {profile}" if profile else f"budget {budget}" if budget else "dense (the baseline)"
    render_comparison(rows, console(), title=f"{loaded.name} on {work.name}: {what}")
