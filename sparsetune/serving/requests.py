"""The OpenAI request bodies `sparsetune serve` takes, checked into plain data before anything generates.

Only what the server honours is accepted: an unknown field is a 422 naming it (a client that sends
``logprobs`` must learn it got none), a known field of the wrong type or range a 400 naming it. Nothing
here imports fastapi, torch or transformers; `RequestError.status` is the HTTP status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["CHAT_FIELDS", "COMPLETION_FIELDS", "Generation", "RequestError", "parse_chat", "parse_completion"]

_COMMON = frozenset({"model", "max_tokens", "temperature", "top_p", "stream", "stream_options", "stop", "seed",
                     "user", "n"})
COMPLETION_FIELDS = _COMMON | {"prompt"}
CHAT_FIELDS = _COMMON | {"messages", "max_completion_tokens"}


class RequestError(ValueError):
    """A request the server refuses; `status` is its HTTP status (400: a bad value, 422: an unknown field)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Generation:
    """What one request asks for, besides its prompt: `max_tokens` None means the endpoint's default."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None  # None: the model's generation config decides (greedy for most)
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False  # stream_options.include_usage: a last chunk with the usage
    messages: list[dict[str, str]] = field(default_factory=list)
    prompt: str = ""


def _number(body: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise RequestError(f"{key}: must be a number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _common(body: Any, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise RequestError(f"body: must be a JSON object, got {type(body).__name__}", 422)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise RequestError(f"{unknown[0]}: unknown or unsupported field (accepted: {', '.join(sorted(allowed))})",
                           422)
    out: dict[str, Any] = {}
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(f"model: must be a string, got {model!r}")
    out["model"] = model
    tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        raise RequestError(f"max_tokens: must be a positive integer, got {tokens!r}")
    out["max_tokens"] = tokens
    out["temperature"] = _number(body, "temperature", 0.0, 2.0)
    out["top_p"] = _number(body, "top_p", 0.0, 1.0)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop)):
        raise RequestError(f"stop: must be a string or a list of non-empty strings, got {stop!r}")
    out["stop"] = tuple(stop or ())
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise RequestError(f"seed: must be an integer, got {seed!r}")
    out["seed"] = seed
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestError(f"stream: must be true or false, got {stream!r}")
    out["stream"] = bool(stream)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise RequestError(f"stream_options: only {{\"include_usage\": bool}} is supported, got {options!r}")
    out["include_usage"] = bool(options.get("include_usage", False))
    if body.get("n", 1) != 1:
        raise RequestError(f"n: only 1 completion per request is supported, got {body['n']!r}")
    return out


def parse_completion(body: Any) -> Generation:
    """A /v1/completions body: one prompt string."""
    common = _common(body, COMPLETION_FIELDS)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise RequestError(f"prompt: must be a non-empty string, got {prompt!r}")
    return Generation(prompt=prompt, **common)


def parse_chat(body: Any) -> Generation:
    """A /v1/chat/completions body: messages with a role and string content."""
    common = _common(body, CHAT_FIELDS)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(f"messages: must be a non-empty list of {{role, content}} objects, got {messages!r}")
    for i, message in enumerate(messages):
        if (not isinstance(message, dict) or not isinstance(message.get("role"), str)
                or not isinstance(message.get("content"), str)):
            raise RequestError(f"messages[{i}]: must be an object with a string role and string content, "
                               f"got {message!r}")
    return Generation(messages=[{"role": m["role"], "content": m["content"]} for m in messages], **common)
