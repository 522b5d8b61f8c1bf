"""Typed dataclasses as the single source of truth for a file format.

From a dataclass's type hints plus per-field `rule(...)` metadata this module derives
- `convert`: raw YAML/JSON data -> dataclass instances, raising `ProfileError` whose message
  starts with the field path (``buckets[2].budget.keep: must be in (0, 1], got 1.5``);
- `check_fields`: the same type and value rules for instances built in code (called from
  each dataclass's ``__post_init__``, so search code cannot build an invalid profile either);
- `to_plain`: instances -> plain dicts in field order, for YAML and JSON;
- `schema_of`: the JSON Schema, so the shipped schema cannot drift from the code.

Supported annotations: str, int, float, bool, Literal[...], X | None, tuple[X, ...],
dict[str | int, X] and nested dataclasses. That is all the profile needs; anything else is
a programming error and raises TypeError.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import numbers
import types
import typing
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from ..errors import BudgetError, ProfileError

__all__ = ["rule", "convert", "check_fields", "to_plain", "schema_of", "join", "show"]

_MISSING = dataclasses.MISSING
INT_LIMIT = 2**63  # integers must fit in 64 bits (int64), as JSON readers and serving engines hold them


def rule(doc: str, *, default: Any = _MISSING, default_factory: Any = _MISSING,
         min: float | None = None, max: float | None = None,  # noqa: A002 - reads like the schema
         min_open: bool = False, max_open: bool = False,
         choices: tuple[Any, ...] | None = None, pattern: str | None = None, pattern_doc: str = "",
         nonempty: bool = False, datetime_iso: bool = False, omit_default: bool = False) -> Any:
    """A dataclass field with its documentation and value rules (checked and put in the schema).

    `min`/`max` bound numbers (open ends with `min_open`/`max_open`); `choices` lists the
    allowed values; `pattern` is a regular expression a string must match in full, described to
    users by `pattern_doc`; `nonempty` forbids "" and empty containers; `datetime_iso` asks
    for an ISO 8601 time with a timezone; `omit_default` leaves the field out of written files
    while it has its default (``dense: false`` on every sparse bucket is noise).
    """
    meta = {"doc": doc, "min": min, "max": max, "min_open": min_open, "max_open": max_open,
            "choices": choices, "pattern": pattern, "pattern_doc": pattern_doc, "nonempty": nonempty,
            "datetime_iso": datetime_iso, "omit_default": omit_default}
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


# ---------------------------------------------------------------- messages and paths


def show(value: Any) -> str:
    """A short repr of a user's value for an error message (one line, at most ~60 characters)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def join(path: str, tail: str) -> str:
    """``join("buckets[2]", "budget")`` -> ``buckets[2].budget``; ``join("a", "[3]")`` -> ``a[3]``."""
    if not path:
        return tail
    return path + tail if tail.startswith("[") else f"{path}.{tail}"


def _key_path(path: str, key: Any) -> str:
    return f"{path}[{key}]" if isinstance(key, int) else f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _fail(path: str, message: str) -> ProfileError:
    return ProfileError(f"{path or '(top level)'}: {message}")


# ---------------------------------------------------------------- type hints


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _init_fields(cls: type) -> tuple[dataclasses.Field[Any], ...]:
    return tuple(f for f in dataclasses.fields(cls) if f.init)


def _is_required(f: dataclasses.Field[Any]) -> bool:
    return f.default is _MISSING and f.default_factory is _MISSING


def _optional_inner(tp: Any) -> Any | None:
    """X for ``X | None``, else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
        raise TypeError(f"unsupported union {tp!r}")
    return None


# ---------------------------------------------------------------- raw -> typed


def convert(tp: Any, value: Any, path: str) -> Any:
    """Check `value` against the annotation `tp` and return it typed (dataclasses built)."""
    inner = _optional_inner(tp)
    if inner is not None:
        return None if value is None else convert(inner, value, path)
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value in choices:
            return value
        raise _fail(path, f"must be one of {', '.join(map(repr, choices))}, got {show(value)}")
    if origin is tuple:
        (item_tp, _ellipsis) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise _fail(path, f"must be a list, got {show(value)}")
        return tuple(convert(item_tp, item, f"{path}[{i}]") for i, item in enumerate(value))
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise _fail(path, f"must be a mapping, got {show(value)}")
        out: dict[Any, Any] = {}
        for raw_key, item in value.items():
            key = _convert_key(key_tp, raw_key, path)
            if key in out:
                raise _fail(_key_path(path, key), "given twice (once as a number, once as text)")
            out[key] = convert(item_tp, item, _key_path(path, key))
        return out
    if dataclasses.is_dataclass(tp):
        return value if isinstance(value, tp) else _build(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(path, f"must be true or false, got {show(value)}")
    if tp is int:
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            if not -INT_LIMIT <= int(value) < INT_LIMIT:  # what JSON readers and serving engines (int64) hold
                raise _fail(path, f"must be an integer in [-2**63, 2**63), got {show(value)}")
            return int(value)
        raise _fail(path, f"must be an integer, got {show(value)}")
    if tp is float:
        if isinstance(value, numbers.Real) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:
                number = math.inf
            if math.isfinite(number):
                return number
        raise _fail(path, f"must be a finite number, got {show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise _fail(path, f"must be a string, got {show(value)}")
    raise TypeError(f"unsupported annotation {tp!r} at {path}")


def _convert_key(key_tp: Any, key: Any, path: str) -> Any:
    if key_tp is str:
        if isinstance(key, str):
            return key
        raise _fail(path, f"keys must be strings, got {show(key)}")
    if key_tp is int:
        # JSON turns integer keys into text, so "1024" is accepted back as 1024.
        if isinstance(key, str) and key.isascii() and key.isdigit():
            return int(key)
        if isinstance(key, numbers.Integral) and not isinstance(key, bool):
            return int(key)
        raise _fail(path, f"keys must be integers, got {show(key)}")
    raise TypeError(f"unsupported key annotation {key_tp!r}")


def _build(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, Mapping):
        raise _fail(path, f"must be a mapping of {cls.__name__} fields, got {show(value)}")
    fields = {f.name: f for f in _init_fields(cls)}
    for key in value:
        if not isinstance(key, str):
            raise _fail(path, f"field names must be strings, got {show(key)}")
        if key not in fields:
            hint = difflib.get_close_matches(key, list(fields), n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            where = join(path, key) if key.isidentifier() else _key_path(path, key)  # keep it one line
            raise _fail(where, f"unknown field{did_you_mean}; expected one of {', '.join(fields)}")
    for name, f in fields.items():
        if _is_required(f) and value.get(name) is None:
            raise _fail(join(path, name), "required field missing" if name not in value else "required, got None")
    hints = _hints(cls)
    kwargs = {name: convert(hints[name], item, join(path, name)) for name, item in value.items()}
    try:
        return cls(**kwargs)
    except (ProfileError, BudgetError) as exc:  # rules checked by the constructor: add our path
        raise ProfileError(join(path, str(exc))) from None


# ---------------------------------------------------------------- value rules


def check_fields(obj: Any) -> None:
    """Type-check, normalise (ints to float, lists to tuples) and rule-check `obj`'s fields.

    Called from ``__post_init__``; messages start with the field name, and `convert`
    prefixes the path of the enclosing object.
    """
    hints = _hints(type(obj))
    for f in _init_fields(type(obj)):
        value = getattr(obj, f.name)
        if value is None and _is_required(f):
            raise _fail(f.name, "required, got None")
        value = convert(hints[f.name], value, f.name)
        _check_rule(f, value)
        object.__setattr__(obj, f.name, value)


def _interval(m: Mapping[str, Any]) -> str:
    lo, hi = m["min"], m["max"]
    fmt = lambda x: repr(x) if not float(x).is_integer() else str(int(x))  # noqa: E731 - 1 not 1.0
    if lo is not None and hi is not None:
        return f"in {'(' if m['min_open'] else '['}{fmt(lo)}, {fmt(hi)}{')' if m['max_open'] else ']'}"
    if lo is not None:
        return f"{'>' if m['min_open'] else '>='} {fmt(lo)}"
    return f"{'<' if m['max_open'] else '<='} {fmt(hi)}"


def _check_rule(f: dataclasses.Field[Any], value: Any) -> None:
    m = f.metadata
    if value is None or not m:
        return
    if m["choices"] is not None and value not in m["choices"]:
        raise _fail(f.name, f"must be one of {', '.join(map(str, m['choices']))}, got {show(value)}")
    if m["min"] is not None or m["max"] is not None:
        lo, hi = m["min"], m["max"]
        below = lo is not None and (value <= lo if m["min_open"] else value < lo)
        above = hi is not None and (value >= hi if m["max_open"] else value > hi)
        if below or above:
            raise _fail(f.name, f"must be {_interval(m)}, got {show(value)}")
    if m["nonempty"] and len(value) == 0:
        raise _fail(f.name, "must not be empty")
    if m["pattern"] is not None:
        import re

        if not re.fullmatch(m["pattern"], value):
            raise _fail(f.name, f"must be {m['pattern_doc']}, got {show(value)}")
    if m["datetime_iso"]:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is None or moment.tzinfo is None:
            raise _fail(f.name, f"must be an ISO 8601 time with a timezone such as "
                                f"2026-11-28T10:00:00Z, got {show(value)}")


# ---------------------------------------------------------------- typed -> plain


def to_plain(obj: Any) -> Any:
    """Plain data in field order: None fields and defaulted `omit_default` fields left out."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in _init_fields(type(obj)):
            value = getattr(obj, f.name)
            if value is None:
                continue
            if f.metadata.get("omit_default") and value == f.default:
                continue
            out[f.name] = to_plain(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_plain(v) for v in obj]
    if isinstance(obj, dict):
        keys = sorted(obj) if all(isinstance(k, int) for k in obj) else list(obj)
        return {k: to_plain(obj[k]) for k in keys}
    return obj


# ---------------------------------------------------------------- JSON Schema


def schema_of(tp: Any, defs: dict[str, Any], extra: Mapping[type, Mapping[str, dict[str, Any]]]) -> dict[str, Any]:
    """JSON Schema of annotation `tp`; dataclasses go to `defs` and are referenced.

    `extra[cls][field]` adds keywords for classes without `rule` metadata (the shared `Budget`).
    """
    inner = _optional_inner(tp)
    if inner is not None:
        sub = schema_of(inner, defs, extra)
        if isinstance(sub.get("type"), str):
            return {**sub, "type": [sub["type"], "null"]}
        return {"anyOf": [sub, {"type": "null"}]}
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = list(typing.get_args(tp))
        return {"const": choices[0]} if len(choices) == 1 else {"enum": choices}
    if origin is tuple:
        return {"type": "array", "items": schema_of(typing.get_args(tp)[0], defs, extra)}
    if origin is dict:
        key_tp, item_tp = typing.get_args(tp)
        out: dict[str, Any] = {"type": "object", "additionalProperties": schema_of(item_tp, defs, extra)}
        if key_tp is int:
            out["propertyNames"] = {"pattern": "^[0-9]+$"}  # integer keys; JSON writes them as text
        return out
    if dataclasses.is_dataclass(tp):
        name = tp.__name__
        if name not in defs:
            defs[name] = {}  # reserve first: guards against recursion
            defs[name] = _object_schema(tp, defs, extra)
        return {"$ref": f"#/$defs/{name}"}
    simple = {bool: "boolean", int: "integer", float: "number", str: "string"}
    if tp in simple:
        return {"type": simple[tp]}
    raise TypeError(f"unsupported annotation {tp!r}")


def _object_schema(cls: type, defs: dict[str, Any], extra: Mapping[type, Mapping[str, dict[str, Any]]]) -> dict[str, Any]:
    hints = _hints(cls)
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    props: dict[str, Any] = {}
    for f in _init_fields(cls):
        sub = schema_of(hints[f.name], defs, extra)
        m = f.metadata
        keywords: dict[str, Any] = {}
        if m:
            keywords["description"] = m["doc"]
            for key, open_key, plain, strict in (("min", "min_open", "minimum", "exclusiveMinimum"),
                                                 ("max", "max_open", "maximum", "exclusiveMaximum")):
                if m[key] is not None:
                    keywords[strict if m[open_key] else plain] = m[key]
            if m["choices"] is not None:
                keywords["enum"] = list(m["choices"])
            if m["pattern"] is not None:
                keywords["pattern"] = f"^(?:{m['pattern']})$"
            if m["nonempty"]:
                container = typing.get_origin(_optional_inner(hints[f.name]) or hints[f.name])
                keywords[{tuple: "minItems", dict: "minProperties"}.get(container, "minLength")] = 1
            if m["datetime_iso"]:
                keywords["format"] = "date-time"
        if f.default is not _MISSING and f.default is not None:
            keywords["default"] = f.default
        keywords.update(extra.get(cls, {}).get(f.name, {}))
        keywords = {k: v for k, v in keywords.items() if v is not None}  # extra may unset with None
        description = {"description": keywords.pop("description")} if "description" in keywords else {}
        props[f.name] = {**description, **sub, **keywords}  # 2020-12 allows keywords beside $ref
    out: dict[str, Any] = {"type": "object", "description": " ".join(doc.split()), "properties": props}
    required = [f.name for f in _init_fields(cls) if _is_required(f)]
    if required:
        out["required"] = required
    out["additionalProperties"] = False
    return out
