"""`sparsetune serve`: a deploy folder (or a model plus --profile) behind an OpenAI-compatible server."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ._app import ProfileOpt, app


_HELP = (
    "Serve a profile through an OpenAI-compatible server (FastAPI over transformers' generate); each request runs the budget its own "
    "KV length selects, dense below the first bucket.\n\n"
    "Endpoints: /v1/completions, /v1/chat/completions, /v1/models, /health, and "
    "GET /sparsetune/stats: totals per bucket (?recent=N adds the last N requests). One log line per request "
    "gives its KV length, bucket, budget and achieved sparsity.\n\n"
    "Needs the serve extra: pip install 'sparsetune\\[serve]'. Exit code 2: bad input (no profile, a profile "
    "for another model, port taken).")


@app.command(help=_HELP)
def serve(
    folder: Annotated[str, typer.Argument(
        help="A deploy folder made by `sparsetune apply`, or a model folder ('demo') with --profile.",
        show_default=False)],
    profile: ProfileOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port, printed at start).")] = 8000,
    device: Annotated[str, typer.Option("--device", help="Where the model runs: auto, cpu, cuda:0, ...")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="Model dtype: auto (as saved), float16, ...")] = "auto",
    log_level: Annotated[str, typer.Option("--log-level", help="Server and per-request log level.")] = "info",
) -> None:
    """Thin: resolve the target (refused before anything loads), then run the server (`serving.app`)."""
    from ..serving import resolve_target
    from ..serving.app import STATS_PATH, run_server

    target = resolve_target(folder, profile)  # refused here, before anything loads

    def ready(url: str) -> None:
        print(f"sparsetune serve: {url}  model {target.model_id}; {target.describe()}; totals at "
              f"{url}{STATS_PATH}", file=sys.stderr, flush=True)

    run_server(target, host=host, port=port, device=device, dtype=dtype, log_level=log_level, ready=ready)
