"""Workloads: JSONL samples tokenized for one model, bucketed by length; synthetic workloads written as JSONL.

A line is ``{"prompt": str, "answer"?: str, "task"?: str}`` or ``{"input_ids": [int], "answer_ids"?: [int],
"task"?: str}``. Extra fields are ignored; known fields must have the right type. A sample without an
answer is scored in fidelity mode (`evaluate.fill_answers`). Every error starts with ``file:line:``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from .._io import atomic_write
from ..errors import WorkloadError
from . import tasks as _tasks

__all__ = [
    "DEFAULT_ANSWER_TOKENS",
    "DEFAULT_TASK",
    "DEMO_HELDOUT",
    "DEMO_WORKLOAD",
    "TokenSample",
    "Workload",
    "workload_path",
    "load_workload",
    "parse_lengths",
    "parse_tasks",
    "synth_workload",
    "write_jsonl",
]

DEMO_WORKLOAD = Path(__file__).resolve().parents[1] / "demo" / "workload.jsonl"
DEMO_HELDOUT = Path(__file__).resolve().parents[1] / "demo" / "heldout.jsonl"  # `--workload demo-heldout`
DEFAULT_ANSWER_TOKENS = 8  # fidelity mode: greedy tokens that become the reference answer
DEFAULT_TASK = "default"  # task of a line without "task"


@dataclass(frozen=True)
class TokenSample:
    input_ids: list[int]  # the prompt, with the tokenizer's special tokens (BOS)
    answer_ids: list[int] | None  # None: unlabelled, filled by the dense model in fidelity mode
    task: str
    line: int  # 1-based line in the workload file, for messages

    @property
    def length(self) -> int:
        """Prompt plus answer tokens: the KV length at the last query, which buckets are keyed by."""
        return len(self.input_ids) + len(self.answer_ids or ())


@dataclass(frozen=True)
class Workload:
    name: str  # "demo" or the file's name
    sha256: str  # of the file's bytes
    samples: list[TokenSample]
    path: Path | None = None
    warnings: tuple[str, ...] = ()  # what is odd but not wrong (e.g. prompts the tokenizer mostly cannot read)


def _type_name(value: Any) -> str:
    return "null" if value is None else {dict: "object", list: "array", str: "string", bool: "boolean",
                                         int: "integer", float: "number"}.get(type(value), type(value).__name__)


def _ids(where: str, name: str, value: Any, vocab_size: int | None) -> list[int]:
    if not isinstance(value, list):
        raise WorkloadError(f"{where}: field {name!r} must be an array of token ids, got {_type_name(value)}")
    if not value:
        raise WorkloadError(f"{where}: field {name!r} is empty")
    for i, t in enumerate(value):
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise WorkloadError(f"{where}: {name}[{i}] must be a non-negative integer, got {t!r}")
        if vocab_size is not None and t >= vocab_size:
            raise WorkloadError(f"{where}: {name}[{i}] = {t} is outside the model's vocabulary of {vocab_size}")
    return list(value)


def _unicode(where: str, name: str, value: str) -> str:
    """`value` unless it holds a lone surrogate (JSON allows ``"\\ud800"``; no tokenizer or file can hold it)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise WorkloadError(f"{where}: field {name!r} holds a lone surrogate (\\u{ord(value[e.start]):04x} at "
                            f"character {e.start + 1}), which is not Unicode text") from None
    return value


def _text(where: str, name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise WorkloadError(f"{where}: field {name!r} must be a string, got {_type_name(value)}")
    _unicode(where, name, value)
    if not value.strip():
        hint = " (omit it to score the model's own continuation)" if name == "answer" else ""
        raise WorkloadError(f"{where}: field {name!r} is empty{hint}")
    return value


def _encode(tokenizer: Any, prompt: str, answer: str | None) -> tuple[list[int], list[int] | None]:
    """Prompt ids with special tokens; answer ids as the model would continue the prompt.

    The answer follows the prompt after one space (unless either side already has whitespace there),
    as `tasks` writes them. Tokenizing the joined text and taking the tail gives the tokens a BPE model
    actually emits (" v12" and "v12" are different tokens); if the prompt's tokens are not a prefix of
    the joined text's, the answer is tokenized alone, without special tokens.
    """
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    if answer is None:
        return prompt_ids, None
    sep = "" if prompt[-1:].isspace() or answer[:1].isspace() else " "
    joined = list(tokenizer(prompt + sep + answer)["input_ids"])
    if joined[: len(prompt_ids)] == prompt_ids and len(joined) > len(prompt_ids):
        return prompt_ids, joined[len(prompt_ids):]
    return prompt_ids, list(tokenizer(sep + answer, add_special_tokens=False)["input_ids"])


def _parse_line(where: str, line: int, raw: str, tokenizer: Any, vocab_size: int | None) -> TokenSample:
    try:
        row = json.loads(raw)
    except json.JSONDecodeError as e:
        raise WorkloadError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(row, dict):
        raise WorkloadError(f"{where}: expected a JSON object, got {_type_name(row)}")
    task = row.get("task", DEFAULT_TASK)
    if not isinstance(task, str) or not task:
        raise WorkloadError(f"{where}: field 'task' must be a non-empty string, got {task!r}")
    _unicode(where, "task", task)
    if "prompt" in row and "input_ids" in row:
        raise WorkloadError(f"{where}: give either 'prompt' (text) or 'input_ids' (tokens), not both")
    if "input_ids" in row:
        if "answer" in row:
            raise WorkloadError(f"{where}: 'answer' is text; with 'input_ids' give 'answer_ids'")
        answer_ids = row.get("answer_ids")
        return TokenSample(
            input_ids=_ids(where, "input_ids", row["input_ids"], vocab_size),
            answer_ids=None if answer_ids is None else _ids(where, "answer_ids", answer_ids, vocab_size),
            task=task, line=line)
    if "prompt" not in row:
        raise WorkloadError(f"{where}: missing field 'prompt' (or 'input_ids')")
    if "answer_ids" in row:
        raise WorkloadError(f"{where}: 'answer_ids' are tokens; with 'prompt' give 'answer'")
    prompt = _text(where, "prompt", row["prompt"])
    answer = None if row.get("answer") is None else _text(where, "answer", row["answer"])
    if tokenizer is None:
        raise WorkloadError(
            f"{where}: the workload is text but the model has no tokenizer "
            "(add tokenizer files to the model folder, or give input_ids)")
    input_ids, answer_ids = _encode(tokenizer, prompt, answer)
    if not input_ids:
        raise WorkloadError(f"{where}: the prompt tokenizes to nothing")
    if answer is not None and not answer_ids:
        raise WorkloadError(f"{where}: the answer {answer!r} tokenizes to nothing")
    return TokenSample(input_ids=input_ids, answer_ids=answer_ids, task=task, line=line)


def workload_file(name: str | os.PathLike[str]) -> Path:
    """The file a `--workload` value names: the built-in `demo` and `demo-heldout`, else the path itself."""
    builtin = {"demo": DEMO_WORKLOAD, "demo-heldout": DEMO_HELDOUT}.get(os.fspath(name))
    return builtin if builtin is not None else Path(name).expanduser()


def workload_path(path_or_demo: str | os.PathLike[str]) -> tuple[str, Path]:
    """The name and file of a `--workload` value (`demo` or a JSONL path); WorkloadError when there is no
    such file. Cheap, so commands call it before a model loads."""
    if os.fspath(path_or_demo) == "demo":
        if not DEMO_WORKLOAD.is_file():
            raise WorkloadError(f"{DEMO_WORKLOAD}: the demo workload is missing from the package")
        return "demo", DEMO_WORKLOAD
    path = Path(path_or_demo).expanduser()
    if path.is_dir():
        raise WorkloadError(f"{path}: is a directory, expected a JSONL file (one JSON object per line)")
    if not path.is_file():
        raise WorkloadError(f"{path}: no such file")
    return path.name, path


def load_workload(
    path_or_demo: str | os.PathLike[str],
    tokenizer: Any | None,
    max_positions: int,
    answer_tokens: int = DEFAULT_ANSWER_TOKENS,
    vocab_size: int | None = None,
) -> Workload:
    """Read and tokenize a JSONL workload (or `demo`); every sample must fit the model's positions.

    A sample without an answer counts `answer_tokens` for the fidelity answer it will get.
    Blank lines are skipped. Raises WorkloadError starting with ``file:line:``.
    """
    name, path = workload_path(path_or_demo)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise WorkloadError(f"{path}: cannot read: {e.strerror or e}") from None
    shown = str(path_or_demo) if name != "demo" else str(path)
    samples: list[TokenSample] = []
    too_long: list[tuple[int, int]] = []  # (line, tokens)
    for number, raw in enumerate(data.split(b"\n"), start=1):
        where = f"{shown}:{number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise WorkloadError(f"{where}: not UTF-8 (byte {e.start + 1} of the line)") from None
        if not text.strip():
            continue
        sample = _parse_line(where, number, text, tokenizer, vocab_size)
        total = len(sample.input_ids) + (len(sample.answer_ids) if sample.answer_ids else answer_tokens)
        if total > max_positions:
            too_long.append((number, total))
        samples.append(sample)
    if not samples:
        raise WorkloadError(f"{shown}:1: empty workload: no samples (one JSON object per line)")
    if too_long:
        line, total = too_long[0]
        raise WorkloadError(
            f"{shown}:{line}: {total} tokens (prompt plus answer) exceed the model's {max_positions} positions "
            f"({len(too_long)} sample{'s' if len(too_long) > 1 else ''} too long)")
    notes = _unknown_tokens(shown, samples, tokenizer)
    return Workload(name=name, sha256=hashlib.sha256(data).hexdigest(), samples=samples, path=path, warnings=notes)


UNKNOWN_PROMPT_SHARE = 0.1  # prompts with more unknown tokens than this are mostly unreadable to the model
UNKNOWN_ANSWER_SHARE = 0.5  # answers with more are refused: exact match would compare <unk> with <unk>


def _unknown_tokens(shown: str, samples: Sequence[TokenSample], tokenizer: Any | None) -> tuple[str, ...]:
    """A workload in a language the tokenizer does not know: refuse answers that are mostly its unknown token
    (exact match would pass on <unk> = <unk>), and warn about prompts that are partly."""
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is None:
        return ()

    def share(parts: list[list[int]]) -> float:
        total = sum(map(len, parts))
        return sum(ids.count(unk) for ids in parts) / total if total else 0.0

    token = getattr(tokenizer, "unk_token", "<unk>")
    answers = share([list(s.answer_ids) for s in samples if s.answer_ids])
    if answers > UNKNOWN_ANSWER_SHARE:
        raise WorkloadError(f"{shown}: {answers:.0%} of the answers' tokens are the tokenizer's unknown token "
                            f"{token}, so exact match would compare {token} with {token}; the workload's text does "
                            "not fit this model's tokenizer")
    prompts = share([list(s.input_ids) for s in samples])
    if prompts > UNKNOWN_PROMPT_SHARE:
        return (f"{shown}: {prompts:.0%} of the prompts' tokens are the tokenizer's unknown token {token}; the "
                "model cannot read most of this workload",)
    return ()


# --------------------------------------------------------------------------------------------------
# Synthetic workloads


def parse_tasks(text: str) -> list[str]:
    """``niah,vt`` -> task names (checked by `synth_workload`)."""
    return [t.strip() for t in text.split(",") if t.strip()]


def parse_lengths(text: str) -> list[int]:
    """``256,512`` -> lengths in tokens (checked by `synth_workload`)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise WorkloadError(f"lengths: must be comma-separated integers, got {text!r}") from None


def synth_workload(
    tokenizer: Any | None, tasks: Sequence[str], lengths: Sequence[int], per_length: int, seed: int,
    max_positions: int | None = None, style: str = "words",
) -> list[dict[str, str]]:
    """RULER-style rows {"prompt", "answer", "task"} sized in tokens of `tokenizer` (words + BOS if None).

    `max_positions`: the model's longest input; a longer length is refused (no sample could be used).
    """
    if style not in _tasks.STYLES:
        raise WorkloadError(f"style: must be one of {', '.join(_tasks.STYLES)}, got {style!r}")
    known = tuple(_tasks.registry(style))  # `style`: words (the demo model's format) or text (tasks.py)
    unknown = [t for t in tasks if t not in known]
    if unknown or not tasks:
        raise WorkloadError(f"tasks: must be among {', '.join(known)}, got {', '.join(tasks) or 'none'} "
                            f"(the {style} style's tasks)")
    for n in lengths:
        if isinstance(n, bool) or not isinstance(n, int) or n < 16:
            raise WorkloadError(f"lengths: must be integers >= 16, got {n!r}")
        if max_positions is not None and n > max_positions:
            raise WorkloadError(f"lengths: {n} tokens exceed the model's {max_positions} positions "
                                f"(max_position_embeddings); use lengths <= {max_positions}")
    if isinstance(per_length, bool) or not isinstance(per_length, int) or per_length < 1:
        raise WorkloadError(f"per_length: must be an integer >= 1, got {per_length!r}")
    count = None if tokenizer is None else (lambda text: len(tokenizer(text)["input_ids"]))
    samples = _tasks.synth(list(tasks), list(lengths), per_length, seed, count_tokens=count, style=style)
    return [{"prompt": s.prompt, "answer": s.answer, "task": s.task} for s in samples]


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> Path:
    """Write rows one JSON object per line, atomically (a reader never sees half a file)."""
    return atomic_write(Path(path), "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), WorkloadError,
                        make_parents=True)


