"""An OpenAI-compatible server running a profile, built on transformers' public API only.

Why not transformers' own server: it has no extension point for a per-request hook, and its private
classes change shape between minor releases (5.25 moved generation into a spawned process and replaced
the handlers' generate managers with engine clients), which broke every install of the serve extra. So
the server is small and ours: FastAPI routes over ``AutoModelForCausalLM.generate`` and
``TextIteratorStreamer``, both public and stable across transformers 5.x.

- The model loads once, is enabled with the profile (`sparsetune.enable`; the policy is the profile
  itself, wrapped by `RecordingPolicy`), and runs every generate call on one inference thread, one
  request at a time, each inside `Recorder.run`: one log line per request, totals at GET /sparsetune/stats.
- A prompt that leaves the model no position is a 400; ``max_tokens`` is capped at the positions left.
- Requests are checked by `requests.py` (unknown field: 422; bad value: 400). Errors raised while
  generating (ValueError, TypeError) are 400s with their message, not 500s.

Endpoints: /v1/completions, /v1/chat/completions (models with a chat template), /v1/models, /health.
"""

# No `from __future__ import annotations` here: FastAPI reads the routes' annotations (`Request`), which are
# imported inside `build_app`, so they must be evaluated where the routes are defined.
import asyncio
import json
import logging
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import ServeError
from .recorder import Recorder, log
from .requests import Generation, RequestError, parse_chat, parse_completion
from .target import Target

__all__ = ["STATS_PATH", "bind", "build_app", "check_extra", "run_server"]

STATS_PATH = "/sparsetune/stats"
DEFAULT_MAX_TOKENS = {"completion": 16, "chat": 256}  # OpenAI's default for completions; chat answers run longer


def check_extra() -> None:
    """ServeError unless the serving dependencies (the `serve` extra) import."""
    missing = []
    for name in ("fastapi", "uvicorn"):
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


def _max_positions(model: Any) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    value = getattr(config, "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


class Engine:
    """The enabled model and its tokenizer; every generate call runs on one thread, inside `Recorder.run`."""

    def __init__(self, target: Target, recorder: Recorder, device: str = "auto", dtype: str = "auto") -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..runtime.hf_attention import enable

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.tokenizer = AutoTokenizer.from_pretrained(target.model)
        try:
            model = AutoModelForCausalLM.from_pretrained(target.model, dtype=dtype if dtype == "auto"
                                                         else getattr(torch, dtype))
        except AttributeError:
            raise ServeError(f"dtype: not a torch dtype: {dtype!r} (auto, float32, float16, bfloat16)") from None
        self.model = enable(model.to(device).eval(), recorder.policy)
        recorder.model = self.model
        self.recorder, self.model_id = recorder, target.model_id
        self.limit = _max_positions(self.model)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsetune-generate")

    def encode(self, gen: Generation) -> dict[str, Any]:
        """The prompt's (or the chat's) input ids and attention mask on the model's device."""
        if gen.messages:
            if not getattr(self.tokenizer, "chat_template", None):
                raise RequestError("messages: the model has no chat template; use /v1/completions with a prompt")
            inputs = self.tokenizer.apply_chat_template(gen.messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=True, return_tensors="pt")
        else:
            inputs = self.tokenizer(gen.prompt, return_tensors="pt")
        return {k: v.to(self.model.device) for k, v in inputs.items() if k in ("input_ids", "attention_mask")}

    def generate_kwargs(self, gen: Generation, prompt: int, default: int, request_id: str) -> dict[str, Any]:
        """generate()'s arguments: max_new_tokens capped at the positions left, sampling, stop strings."""
        if self.limit is not None and prompt >= self.limit:
            raise RequestError(f"prompt: {prompt} tokens, but the model has {self.limit} positions "
                               "(max_position_embeddings) and needs one for the answer; shorten the prompt")
        wanted = gen.max_tokens or default
        new = wanted if self.limit is None else min(wanted, self.limit - prompt)
        if new < wanted and gen.max_tokens is not None:
            log.info("request %s: max_new_tokens %d capped at %d (prompt %d of the model's %d positions)",
                     request_id, wanted, new, prompt, self.limit)
        kwargs: dict[str, Any] = {"max_new_tokens": new}
        if gen.temperature is not None:
            kwargs["do_sample"] = gen.temperature > 0
            if gen.temperature > 0:
                kwargs["temperature"] = gen.temperature
        if gen.top_p is not None:
            kwargs["top_p"] = gen.top_p
        if gen.stop:
            kwargs.update(stop_strings=list(gen.stop), tokenizer=self.tokenizer)
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is not None:
            kwargs["pad_token_id"] = self.tokenizer.eos_token_id  # one prompt: padding never happens
        return kwargs

    async def run(self, request_id: str, inputs: dict[str, Any], kwargs: dict[str, Any], seed: int | None,
                  streamer: Any = None) -> list[int]:
        """The generated token ids (the answer only), generated on the inference thread as `request_id`."""
        import torch

        prompt = int(inputs["input_ids"].shape[-1])

        def call() -> list[int]:
            try:
                if seed is not None:
                    torch.manual_seed(seed)
                with torch.no_grad():
                    out = self.model.generate(**inputs, **kwargs, streamer=streamer)
                return out[0, prompt:].tolist()
            finally:
                if streamer is not None:
                    streamer.end()  # a failed generate must not leave the stream waiting (a second end is harmless)

        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.recorder.run, call, request_id, prompt)


def _finish_reason(generated: list[int], max_new: int) -> str:
    return "length" if len(generated) >= max_new else "stop"


def _usage(prompt: int, generated: list[int]) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": len(generated), "total_tokens": prompt + len(generated)}


def build_app(target: Target, recorder: Recorder, *, device: str = "auto", dtype: str = "auto") -> Any:
    """The FastAPI app serving `target` (its model loaded and enabled now) with `recorder`'s hooks and route."""
    check_extra()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from transformers import TextIteratorStreamer

    engine = Engine(target, recorder, device=device, dtype=dtype)
    started = int(time.time())
    app = FastAPI(title="sparsetune serve")

    async def bad_request(request: Request, exc: Exception) -> Any:
        status = getattr(exc, "status", 400)
        message = " ".join(str(exc).split()) or type(exc).__name__
        log.warning("%s %s: %d (%s: %s)", request.method, request.url.path, status, type(exc).__name__, message)
        return JSONResponse({"detail": message}, status_code=status)

    for kind in (RequestError, ValueError, TypeError):
        app.add_exception_handler(kind, bad_request)

    async def body_of(request: Request) -> Any:
        try:
            return json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(f"body: not valid JSON ({exc})", 422) from None

    async def respond(request: Request, gen: Generation, kind: str) -> Any:
        if gen.model is not None and gen.model != target.model_id:
            raise RequestError(f"model: this server serves {target.model_id!r}, got {gen.model!r}")
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        request_id = request.headers.get("x-request-id") or f"{prefix}-{uuid.uuid4().hex}"
        inputs = engine.encode(gen)
        prompt = int(inputs["input_ids"].shape[-1])
        kwargs = engine.generate_kwargs(gen, prompt, DEFAULT_MAX_TOKENS[kind], request_id)
        created = int(time.time())
        head = {"id": request_id, "object": "chat.completion" if kind == "chat" else "text_completion",
                "created": created, "model": target.model_id}

        def choice(text: str, finish: str | None, stream: bool) -> dict[str, Any]:
            if kind == "completion":
                return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            message = {"role": "assistant", "content": text}
            return {"index": 0, "delta" if stream else "message": message, "finish_reason": finish}

        if not gen.stream:
            generated = await engine.run(request_id, inputs, kwargs, gen.seed)
            text = engine.tokenizer.decode(generated, skip_special_tokens=True)
            return JSONResponse({**head, "choices": [choice(text, _finish_reason(generated, kwargs["max_new_tokens"]),
                                                            False)], "usage": _usage(prompt, generated)})

        streamer = TextIteratorStreamer(engine.tokenizer, skip_prompt=True, skip_special_tokens=True)
        task = asyncio.ensure_future(engine.run(request_id, inputs, kwargs, gen.seed, streamer))
        chunk_head = {**head, "object": "chat.completion.chunk" if kind == "chat" else "text_completion"}

        def event(payload: dict[str, Any]) -> str:
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        async def events() -> AsyncIterator[str]:
            pieces = iter(streamer)
            while (text := await asyncio.to_thread(next, pieces, None)) is not None:
                if text:
                    yield event({**chunk_head, "choices": [choice(text, None, True)]})
            try:
                generated = await task
            except Exception as exc:  # noqa: BLE001 - the stream has started: report the error in it
                yield event({"error": {"message": f"{type(exc).__name__}: {exc}"}})
                return
            yield event({**chunk_head, "choices": [choice("", _finish_reason(generated, kwargs["max_new_tokens"]),
                                                          True)]})
            if gen.include_usage:
                yield event({**chunk_head, "choices": [], "usage": _usage(prompt, generated)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await respond(request, parse_completion(await body_of(request)), "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await respond(request, parse_chat(await body_of(request)), "chat")

    @app.get("/v1/models")
    def models() -> Any:
        return {"object": "list", "data": [{"id": target.model_id, "object": "model", "created": started,
                                            "owned_by": "sparsetune"}]}

    @app.get("/health")
    def health() -> Any:
        return {"status": "ok"}

    @app.get(STATS_PATH)
    def stats(recent: int = 0) -> Any:
        return {"model": target.model_id, "profile": str(target.profile_path),
                **recorder.stats.snapshot(max(recent, 0))}

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
