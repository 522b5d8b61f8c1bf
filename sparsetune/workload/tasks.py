"""RULER-style synthetic long-context tasks: the demo model trains on them, `workload synth` writes them.

Every task is words joined by spaces, so any tokenizer can size it; the demo model's tokenizer is
word-level, so there a word is a token. A *needle* is ``[ KEY VALUE ]`` hidden in filler text and
a query is ``? KEY`` at the end of the prompt:

- ``niah``: one needle; answer its value.
- ``multikey``: several needles with distinct keys; answer the queried key's value.
- ``vt``: two-hop variable tracking: ``[ K1 v ]`` ... ``[ K2 K1 ]``; ``? K2`` is answered with the
  chain ``K1 v``: two retrievals from two places in the context, both of which must survive sparsity.
- ``cwe``: common-word aggregation: a list of words; ``? common`` is answered with the most frequent.

Those are the ``words`` style, for the demo model. A pretrained LM gets the ``text`` style
(`TEXT_REGISTRY`): the same tasks in plain English, as raw completions that end where the answer
starts (``... What is the special pass key for quiet-otter? The special pass key for quiet-otter is``
answered `` 41752``), in a haystack of short sentences:

- ``niah``: one sentence "The special pass key for KEY is NUMBER." hidden in the haystack.
- ``multikey``: 3-5 sentences "The KIND of NAME is NUMBER." for different people and kinds (room number,
  locker code, ...); one is a pass key, and the question names its owner.
- ``mv``: two pass keys of one person ("One pass key of NAME is ...", "The other ..."), answered
  ``A and B`` in order of appearance.
- ``vt``: a chain of 2-3 assignments ``VAR A = 41752.`` ... ``VAR B = VAR A.`` (plus a distractor
  chain); asked for the number the last variable holds: one retrieval per hop.
- ``cwe``: a comma-separated list where one word is three times as frequent; asked for that word.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from . import prose

__all__ = [
    "REGISTRY",
    "STYLES",
    "TASKS",
    "TEXT_REGISTRY",
    "TEXT_TASKS",
    "Sample",
    "VOCAB",
    "SPECIAL_TOKENS",
    "make_sample",
    "registry",
    "style_for_model",
    "synth",
]


# A small fixed English filler vocabulary: the haystack.
FILLER = (
    "the of and to in is was for on are with as his they at be this from have or by one had not but "
    "what all were when we there can an your which their said if do will each about how up out them "
    "then she many some so these would other into has more her two like him see time could no make "
    "than first been its who now people my made over did down only way find use may water long little "
    "very after words called just where most know get through back much before go good new write our "
    "used me man too any day same right look think also around another came come work three word must "
    "because does part even place well such here take why things help put years different away again "
    "off went old number great tell men say small every found still between name should home big give"
).split()
KEYS = tuple(f"K{i:03d}" for i in range(256))  # needle keys and variable names
VALUES = tuple(f"v{i:02d}" for i in range(64))  # needle values
MARKS = ("[", "]", "?", "common")
SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>")
VOCAB: tuple[str, ...] = SPECIAL_TOKENS + MARKS + tuple(FILLER) + KEYS + VALUES


@dataclass(frozen=True)
class Sample:
    prompt: str
    answer: str
    task: str


def _needle(key: str, value: str) -> list[str]:
    return ["[", key, value, "]"]


def _place(filler: list[str], needles: list[list[str]], rng: random.Random) -> list[str]:
    """Insert needles into filler at random depths, keeping their order (assignments come in order)."""
    cuts = sorted(rng.randint(0, len(filler)) for _ in needles)
    out: list[str] = []
    prev = 0
    for cut, needle in zip(cuts, needles):
        out += filler[prev:cut] + needle
        prev = cut
    return out + filler[prev:]


def _retrieval(rng: random.Random, n: int) -> tuple[list[list[str]], list[str], list[str]]:
    """`n` needles with distinct keys; the query names one of them and the answer is its value."""
    keys = rng.sample(KEYS, n)
    vals = [rng.choice(VALUES) for _ in keys]
    needles = [_needle(k, v) for k, v in zip(keys, vals)]
    i = rng.randrange(n)
    return needles, ["?", keys[i]], [vals[i]]


def _vt_parts(rng: random.Random) -> tuple[list[list[str]], list[str], list[str]]:
    chains = rng.randint(1, 3)  # the queried chain plus distractor chains
    keys = rng.sample(KEYS, 2 * chains)
    firsts, seconds = [], []
    for c in range(chains):
        k1, k2 = keys[2 * c], keys[2 * c + 1]
        v = rng.choice(VALUES)
        firsts.append((_needle(k1, v), k2, k1, v))
        seconds.append(_needle(k2, k1))
    # First hops all come before second hops, as assignments in a program would.
    needles = [f[0] for f in firsts] + seconds
    _, k2, k1, v = firsts[rng.randrange(chains)]
    return needles, ["?", k2], [k1, v]


def _filler_context(n_words: int, needles: list[list[str]], rng: random.Random) -> tuple[list[str], list[str]]:
    filler = [rng.choice(FILLER) for _ in range(max(n_words, 0))]
    return _place(filler, needles, rng), []


def _cwe_context(n_words: int, needles: list[list[str]], rng: random.Random) -> tuple[list[str], list[str]]:
    pool = rng.sample(FILLER, 16)
    weights = [3] + [1] * 15  # the common word is three times as frequent as any other
    words = rng.choices(pool, weights=weights, k=max(n_words, 1))
    counts = {w: words.count(w) for w in pool}
    top = max(pool, key=lambda w: counts[w])
    if sorted(counts.values())[-2] == counts[top]:  # break ties so the answer is unique
        words.append(top)
    return words, [top]


@dataclass(frozen=True)
class _Task:
    """One generator: `parts` draws (needles, query words, answer words) before the filler; `context`
    draws the filler around the needles and, for aggregation tasks, the answer."""

    parts: Callable[[random.Random], tuple[list[list[str]], list[str], list[str]]]
    context: Callable[[int, list[list[str]], random.Random], tuple[list[str], list[str]]] = _filler_context


# The task registry: add a task by adding a line here (and a sentence to the module docstring).
REGISTRY: dict[str, _Task] = {
    "niah": _Task(parts=lambda rng: _retrieval(rng, 1)),
    "multikey": _Task(parts=lambda rng: _retrieval(rng, rng.randint(4, 8))),
    "vt": _Task(parts=_vt_parts),
    # the answer depends on the list, drawn in the context
    "cwe": _Task(parts=lambda rng: ([], ["?", "common"], []), context=_cwe_context),
}
TASKS = tuple(REGISTRY)


# The text style for pretrained LMs (module docstring); same task names where the task is the same.
TEXT_REGISTRY: dict[str, _Task] = {
    name: _Task(parts=parts, context=context) for name, (parts, context) in prose.TASKS.items()
}
TEXT_TASKS = tuple(TEXT_REGISTRY)
STYLES = {"words": REGISTRY, "text": TEXT_REGISTRY}


def registry(style: str) -> dict[str, _Task]:
    """The tasks of a style: ``words`` (the demo model's) or ``text`` (plain English, for pretrained LMs)."""
    try:
        return STYLES[style]
    except KeyError:
        raise ValueError(f"style: must be one of {', '.join(STYLES)}, got {style!r}") from None


def style_for_model(model: str) -> str:
    """The demo model reads the word-level format it was trained on; any other model gets plain text."""
    return "words" if model == "demo" else "text"


def _task(name: str, style: str = "words") -> _Task:
    tasks = registry(style)
    try:
        return tasks[name]
    except KeyError:
        raise ValueError(f"task: must be one of {', '.join(tasks)}, got {name!r}") from None


def make_sample(
    task: str,
    length: int,
    rng: random.Random,
    count_tokens: Callable[[str], int] | None = None,
    style: str = "words",
) -> Sample:
    """One sample whose prompt plus answer is about `length` tokens of `count_tokens` (default: words + 1 BOS)."""
    count = count_tokens or (lambda text: len(text.split()) + 1)
    kind = _task(task, style)
    state = rng.getstate()
    needles, query, answer = kind.parts(rng)
    fixed = sum(map(len, needles)) + len(query) + max(len(answer), 1) + 1
    n_words = max(length - fixed, 0)
    tried: dict[int, int] = {}  # filler words -> tokens
    best: tuple[int, str, list[str]] | None = None  # (miss, prompt, answer)
    for _ in range(8):  # resize the filler until the tokenizer's count matches (words != tokens in BPE)
        rng.setstate(state)
        needles, query, answer = kind.parts(rng)
        words, cwe_answer = kind.context(n_words, needles, rng)
        answer = answer or cwe_answer
        prompt = " ".join(words + query)
        total = count(prompt + " " + " ".join(answer))
        if best is None or abs(total - length) < best[0]:
            best = (abs(total - length), prompt, answer)
        if total == length or count_tokens is None:
            break
        tried[n_words] = total
        # Tokens per filler word: the slope between the two nearest tries, else this try's average.
        near = sorted(tried, key=lambda n: abs(tried[n] - length))[:2]
        a, b = (near + near)[:2]
        slope = (tried[a] - tried[b]) / (a - b) if a != b and tried[a] != tried[b] else total / max(n_words, 1)
        step = round((length - total) / max(slope, 0.1))
        if step == 0 or n_words + step in tried:
            break
        n_words = max(n_words + step, 0)
    _, prompt, answer = best
    return Sample(prompt=prompt, answer=" ".join(answer), task=task)


def synth(
    tasks: list[str],
    lengths: list[int],
    per_length: int,
    seed: int,
    count_tokens: Callable[[str], int] | None = None,
    style: str = "words",
) -> list[Sample]:
    """`per_length` samples of every task at every length, reproducible from `seed`."""
    rng = random.Random(seed)
    return [
        make_sample(task, length, random.Random(rng.getrandbits(64)), count_tokens, style)
        for length in lengths
        for task in tasks
        for _ in range(per_length)
    ]
