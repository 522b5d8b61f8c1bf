"""transformers' OpenAI-compatible server, running a profile: what `transformers serve` builds, plus hooks.

`transformers.cli.serve.Serve` builds its handlers and runs uvicorn inside its constructor, so there is no
way in for a policy. `build_app` composes the same public pieces (`ModelManager`, `GenerationState`, the
endpoint handlers, `build_server`) with two subclasses, and `run_server` runs the app with uvicorn:

- `_Models` (a ModelManager) enables the loaded model with the profile (`sparsetune.enable`): transformers'
  manager accepts only its own attention names, so the model loads with its default and is switched, as
  user code would switch it. The policy is the profile itself (`RecordingPolicy` wraps its lookup), so every
  attention call of every request looks up the budget of its own KV length, dense below the first bucket.
- `_Generate` (a GenerateManager: sequential ``model.generate`` on one inference thread) refuses a prompt
  that leaves the model no position (400), caps ``max_new_tokens`` at the positions left (logged), and runs
  each generate call through `Recorder.run`: one log line per request, totals at GET /sparsetune/stats.

Also added to the app: a ValueError or TypeError raised while handling a request (``"max_tokens": "many"``,
a chat request to a model without a chat template) answers 400 with its message instead of a 500.
Everything else (streaming, chat templates, generation parameters, /v1/models, /health) is transformers'.
Continuous batching is not offered: its paged attention does not go through the registered attention.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import socket
import sys
from collections.abc import Callable
from typing import Any

from ..errors import ServeError
from .recorder import Recorder, log
from .target import Target

__all__ = ["STATS_PATH", "bind", "build_app", "check_extra", "run_server"]

STATS_PATH = "/sparsetune/stats"
_REQUEST: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar("sparsetune_request", default=None)


def check_extra() -> None:
    """ServeError unless the serving dependencies (the `serve` extra) import."""
    missing = []
    for name in ("fastapi", "uvicorn", "openai"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ServeError(f"serve: needs {', '.join(missing)}; install the serve extra: "
                         "pip install 'sparsetune[serve]'")


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: any free port); ServeError naming the address otherwise."""
    if not 0 <= port <= 65535:
        raise ServeError(f"port: must be in 0..65535, got {port}")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ServeError(f"host: cannot listen on {host!r}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections queue from now on, while the model loads
    except OSError as exc:
        sock.close()
        raise ServeError(f"port: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def _classes() -> dict[str, Any]:
    """transformers' serving classes, imported on first use (they need the serve extra)."""
    check_extra()
    from transformers.cli.serving import chat_completion, completion, model_manager, response, server, systemone
    from transformers.cli.serving import transcription, utils

    return {"ModelManager": model_manager.ModelManager, "GenerationState": utils.GenerationState,
            "GenerateManager": utils.GenerateManager, "chat": chat_completion.ChatCompletionHandler,
            "completion": completion.CompletionHandler, "response": response.ResponseHandler,
            "transcription": transcription.TranscriptionHandler, "systemone": systemone.SystemOneHandler,
            "build_server": server.build_server}


def _max_positions(model: Any) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def _subclasses(c: dict[str, Any], recorder: Recorder) -> tuple[type, type]:
    """The ModelManager and GenerationState that put the profile and the recorder in transformers' path."""
    from fastapi import HTTPException

    from ..runtime.hf_attention import enable

    class _Models(c["ModelManager"]):  # type: ignore[misc,valid-type]
        def load_model_and_processor(self, *args: Any, **kwargs: Any) -> Any:
            model, processor = super().load_model_and_processor(*args, **kwargs)
            if recorder.model is not model:
                enable(model, recorder.policy)
                recorder.model = model
            return model, processor

    class _Generate(c["GenerateManager"]):  # type: ignore[misc,valid-type]
        def _admit(self, model: Any, inputs: Any, gen_config: Any, request_id: str) -> contextvars.Token:
            prompt = int(inputs["input_ids"].shape[-1])
            limit = _max_positions(model)
            if limit is not None and prompt >= limit:
                raise HTTPException(status_code=400, detail=(
                    f"prompt: {prompt} tokens, but the model has {limit} positions (max_position_embeddings) "
                    "and needs one for the answer; shorten the prompt"))
            wanted = getattr(gen_config, "max_new_tokens", None)
            if limit is not None and isinstance(wanted, int) and prompt + wanted > limit:
                gen_config.max_new_tokens = limit - prompt
                log.info("request %s: max_new_tokens %d capped at %d (prompt %d of the model's %d positions)",
                         request_id, wanted, limit - prompt, prompt, limit)
            return _REQUEST.set((request_id, prompt))

        def generate_streaming(self, model: Any, processor: Any, inputs: Any, gen_config: Any, request_id: str,
                               **kwargs: Any) -> Any:
            token = self._admit(model, inputs, gen_config, request_id)
            try:
                return super().generate_streaming(model, processor, inputs, gen_config, request_id=request_id,
                                                  **kwargs)
            finally:
                _REQUEST.reset(token)

        async def generate_non_streaming(self, model: Any, processor: Any, inputs: Any, gen_config: Any,
                                         request_id: str, **kwargs: Any) -> Any:
            token = self._admit(model, inputs, gen_config, request_id)
            try:
                return await super().generate_non_streaming(model, processor, inputs, gen_config,
                                                            request_id=request_id, **kwargs)
            finally:
                _REQUEST.reset(token)

        def _recorded(self, fn: Callable[..., Any]) -> Callable[..., Any]:
            request = _REQUEST.get()
            return fn if request is None else functools.partial(recorder.run, fn, *request)

        def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return super().submit(self._recorded(fn), *args, **kwargs)

        def async_submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return super().async_submit(self._recorded(fn), *args, **kwargs)

    class _Generation(c["GenerationState"]):  # type: ignore[misc,valid-type]
        def __init__(self) -> None:
            super().__init__(continuous_batching=False)
            self.sparsetune_managers: dict[str, Any] = {}

        def get_manager(self, model_id: str, use_cb: bool = False) -> Any:
            if use_cb:
                return super().get_manager(model_id, use_cb=True)
            if model_id not in self.sparsetune_managers:  # only the event loop's thread gets here
                self.sparsetune_managers[model_id] = _Generate()
            return self.sparsetune_managers[model_id]

    return _Models, _Generation


def build_app(target: Target, recorder: Recorder, *, device: str = "auto", dtype: str = "auto") -> Any:
    """The FastAPI app serving `target` (its model loaded and enabled now) with `recorder`'s hooks and route."""
    c = _classes()
    from fastapi import Request
    from fastapi.responses import JSONResponse

    models_cls, generation_cls = _subclasses(c, recorder)
    models = models_cls(device=device, dtype=dtype, force_model=target.model_id)  # loads the model now
    state = generation_cls()
    try:
        app = c["build_server"](
            models, c["chat"](model_manager=models, generation_state=state),
            completion_handler=c["completion"](model_manager=models, generation_state=state),
            response_handler=c["response"](model_manager=models, generation_state=state),
            transcription_handler=c["transcription"](models, state),
            systemone_handler=c["systemone"](model_manager=models, generation_state=state),
            generation_state=state)
    except TypeError as exc:  # transformers changed how its server is composed
        import transformers

        raise ServeError(f"serve: transformers {transformers.__version__} composes its server differently "
                         f"({exc}); install the version the serve extra names") from None

    async def bad_request(request: Request, exc: Exception) -> Any:
        message = " ".join(str(exc).split()) or type(exc).__name__
        log.warning("%s %s: 400 (%s: %s)", request.method, request.url.path, type(exc).__name__, message)
        return JSONResponse({"detail": message}, status_code=400)

    app.add_exception_handler(ValueError, bad_request)
    app.add_exception_handler(TypeError, bad_request)

    @app.get(STATS_PATH)
    def stats(recent: int = 0) -> Any:
        body = {"model": target.model_id, "profile": str(target.profile_path),
                **recorder.stats.snapshot(max(recent, 0))}
        return JSONResponse(body)

    return app


def _configure_logging(level: str) -> None:
    """Request lines (and the attention's own warnings) on stderr, like uvicorn's, unless someone set a handler."""
    root = logging.getLogger("sparsetune")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s:     sparsetune: %(message)s"))
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(level.upper())


def run_server(target: Target, *, host: str = "127.0.0.1", port: int = 8000, device: str = "auto",
               dtype: str = "auto", log_level: str = "info",
               ready: Callable[[str], None] | None = None) -> None:
    """Serve `target` until Ctrl-C (a graceful stop: returns): bind first (a taken port fails before the model
    loads), build, run.

    `ready` gets the base URL (with the real port when `port` is 0) once the server accepts requests.
    """
    if log_level.upper() not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
        raise ServeError(f"log-level: must be one of critical, error, warning, info, debug, got {log_level!r}")
    check_extra()
    import uvicorn

    _configure_logging(log_level)
    sock = bind(host, port)
    try:
        recorder = Recorder(target.profile)
        app = build_app(target, recorder, device=device, dtype=dtype)
        actual = sock.getsockname()[1]
        url = f"http://{f'[{host}]' if ':' in host else host}:{actual}"

        class _Server(uvicorn.Server):  # says `ready` once it accepts requests and handles Ctrl-C
            async def startup(self, sockets: Any = None) -> None:
                await super().startup(sockets=sockets)
                if ready is not None and not self.should_exit:
                    ready(url)

        try:
            _Server(uvicorn.Config(app, log_level=log_level.lower())).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises Ctrl-C after its graceful shutdown: the normal way to stop
            pass
    finally:
        sock.close()
