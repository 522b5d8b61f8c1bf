"""`sparsetune eval`: dense vs sparse accuracy per bucket and task."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ._app import AnswerTokensOpt, BucketsOpt, JsonOpt, ModelOpt, ProfileOpt, WorkloadOpt, app, console


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

    from ..deploy import heldout_workload
    from ..evaluate import compare, load_inputs
    from ..evaluate.compare import eval_policy
    from ..profile.buckets import parse_edges
    from .progress import working

    policy, edges = eval_policy(profile, budget, parse_edges(buckets))
    with working(console(stderr=True), f"eval: {model} on {workload}"):
        loaded, work = load_inputs(model, heldout_workload(workload), answer_tokens)
        rows = compare(loaded, work.samples, policy, edges, confidence=confidence)
    if json_output:
        sys.stdout.write(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
        return
    from .render import render_comparison

    render_comparison(rows, console(), title=f"{loaded.name} on {work.name}: "
                      + (f"profile {profile}" if profile else f"budget {budget}"))
