"""YAML in and out for profiles: strict on reading, stable and readable on writing.

Reading differs from `yaml.safe_load` in two ways, both so a hand-edited file cannot
silently mean something else:
- timestamps stay strings (``created: 2026-11-28T10:00:00Z`` is text, not a datetime), and
- a key given twice in one mapping is an error instead of "the last one wins", and
- nesting deeper than `MAX_DEPTH` is an error (not a RecursionError).

Writing keeps the caller's key order and puts mappings whose values are all scalars on
one line (``budget: {method: topk, block_size: 64, keep: 0.45, ...}``), as people write them.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["YamlSyntaxError", "load", "dump"]

_TIMESTAMP = "tag:yaml.org,2002:timestamp"


class YamlSyntaxError(Exception):
    """Text that is not YAML, or a mapping with a duplicate key; carries a 1-based line."""

    def __init__(self, message: str, line: int | None, column: int | None) -> None:
        super().__init__(message)
        self.message, self.line, self.column = message, line, column


MAX_DEPTH = 64  # nesting a profile never needs; deeper input is refused before Python's recursion limit


class _Loader(yaml.SafeLoader):
    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        # PyYAML composes recursively; 5,000 nested levels would end in a RecursionError.
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# A copy without the timestamp resolver; the class attribute is shared with SafeLoader otherwise.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    out: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            seen = key in out
        except TypeError:  # an unhashable key such as a list: report it like PyYAML does
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark) from None
        if seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        out[key] = loader.construct_object(value_node, deep=True)
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load(text: str) -> Any:
    """Parse one YAML document; raise `YamlSyntaxError` with the line on any YAML problem."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        parts = [p for p in (exc.context, exc.problem) if p]
        message = " ".join(" ".join(parts).split()) or "invalid YAML"
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        raise YamlSyntaxError(message, line, column) from None
    except yaml.YAMLError as exc:  # e.g. a reader error (control characters) without a mark
        raise YamlSyntaxError(" ".join(str(exc).split()), None, None) from None
    except RecursionError:  # a last guard: the composer's own limit should come first
        raise YamlSyntaxError(f"nested too deeply (more than {MAX_DEPTH} levels)", None, None) from None


class _Dumper(yaml.SafeDumper):
    pass


def _represent_dict(dumper: _Dumper, data: dict[Any, Any]) -> yaml.Node:
    scalars = all(not isinstance(v, (dict, list, tuple)) for v in data.values())
    return dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=bool(data) and scalars)


def _represent_list(dumper: _Dumper, data: list[Any] | tuple[Any, ...]) -> yaml.Node:
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=False)


def _represent_str(dumper: _Dumper, data: str) -> yaml.Node:
    # PyYAML writes NEL and the Unicode line/paragraph separators raw inside quotes, and its
    # reader then folds them into spaces; double quotes make it escape them (\N, \L, \P).
    style = '"' if any(c in data for c in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)
_Dumper.add_representer(dict, _represent_dict)
_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(tuple, _represent_list)


def dump(data: Any, header: str = "") -> str:
    """YAML text of plain data (dicts, lists, str, int, float, bool, None) in the given key order."""
    body = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120,
                     default_flow_style=False)
    return header + body
