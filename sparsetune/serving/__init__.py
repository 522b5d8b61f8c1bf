"""`sparsetune serve`: a profile behind an OpenAI-compatible server, its budget looked up per request.

    target.py     what to serve: a deploy folder, or a model plus a profile; refused before anything loads
    recorder.py   per-request records (KV length, bucket, budget, achieved sparsity), log lines, totals
    requests.py   the OpenAI request bodies it takes, checked (unknown field: 422, bad value: 400)
    app.py        FastAPI routes over transformers' public generate(), the recorder around each call; uvicorn

Above the runtime layer, beside `deploy` (whose model checks it reuses); nothing below imports it.
`import sparsetune.serving` is cheap: fastapi, uvicorn, torch and transformers load in `run_server`.
"""

from .recorder import Recorder, RecordingPolicy, RequestRecord, ServingStats
from .target import Target, resolve_target

__all__ = ["Recorder", "RecordingPolicy", "RequestRecord", "ServingStats", "Target", "resolve_target", "run_server"]


def __getattr__(name: str):  # PEP 562: the server itself (and its imports) on first use
    if name == "run_server":
        from .app import run_server

        return run_server
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
