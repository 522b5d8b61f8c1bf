"""The ``text`` style of `tasks`: RULER-style tasks in plain English for pretrained LMs.

Each generator returns what `tasks.make_sample` sizes: (needles, query words, answer words) from a
``parts`` function, then (context words, answer words) from a ``context`` function that lays the
needles between whole haystack sentences. Prompts are raw completions: the question is followed by
the start of its own answer sentence, so the answer is the next words, not a chat reply.
"""

from __future__ import annotations

import random
import string
from typing import Callable

__all__ = ["TASKS"]

# Haystack: short, true-sounding, repetitive sentences with no numbers and no key words in them.
_THINGS = ("grass", "sky", "sea", "road", "house", "garden", "river", "forest", "bread", "window", "lamp",
           "table", "hill", "stone", "cloud", "field", "bridge", "door", "boat", "tree", "cup", "chair")
_COLOURS = ("green", "blue", "grey", "white", "brown", "yellow", "red", "dark", "quiet", "old", "warm", "wide")
_FILLER_FORMS = ("The {t} is {c}.", "A {c} {t} stands nearby.", "We walked past the {t} again.",
                 "Nothing about the {t} has changed.", "The {t} looked {c} today.", "Here is the {t}.")
# Needle keys: adjective-animal pairs, never in the haystack.
_KEY_ADJ = ("quiet", "rapid", "golden", "silent", "brave", "lucky", "hidden", "bright", "gentle", "wild",
            "frozen", "clever", "purple", "sleepy", "proud", "tiny")
_KEY_ANIMAL = ("otter", "falcon", "badger", "heron", "lynx", "walrus", "gecko", "bison", "raven", "koala",
               "panda", "moose", "shark", "tiger", "camel", "zebra")
# multikey and mv name people: distinct one-word keys (adjective-animal keys share halves, and SmolLM2-135M
# confused them). multikey's distractors are other kinds of number, each of another person.
_NAMES = ("Alice", "Boris", "Carmen", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ingrid", "Jonas", "Keiko",
          "Lars", "Mateo", "Nadia", "Oscar", "Priya", "Quentin", "Rosa", "Stefan", "Tomas", "Ulla", "Victor")
_KINDS = ("room number", "locker code", "ticket number", "phone code", "order number", "seat number")
# cwe's vocabulary: plain nouns, one token or two in common BPE vocabularies.
_CWE_WORDS = ("apple", "candle", "mirror", "pencil", "garden", "rocket", "button", "ladder", "pillow", "carpet",
              "guitar", "wallet", "jacket", "basket", "bottle", "helmet", "ticket", "magnet", "saddle", "hammer")

Parts = tuple[list[list[str]], list[str], list[str]]


def _sentence(rng: random.Random) -> list[str]:
    return rng.choice(_FILLER_FORMS).format(t=rng.choice(_THINGS), c=rng.choice(_COLOURS)).split()


def _number(rng: random.Random) -> str:
    return str(rng.randint(10000, 99999))


def _key(rng: random.Random) -> str:
    a, b = rng.sample([(a, b) for a in _KEY_ADJ for b in _KEY_ANIMAL], 1)[0]  # rng.sample: drawn workloads depend on it
    return f"{a}-{b}"


def _pass_key(key: str, value: str) -> list[str]:
    return f"The special pass key for {key} is {value}.".split()


def _haystack(intro: str) -> Callable[[int, list[list[str]], random.Random], tuple[list[str], list[str]]]:
    """A context: `intro`, then about `n_words` words of sentences, the needles between sentences in order."""

    def context(n_words: int, needles: list[list[str]], rng: random.Random) -> tuple[list[str], list[str]]:
        sentences: list[list[str]] = []
        size = 0
        while size < n_words:
            sentences.append(_sentence(rng))
            size += len(sentences[-1])
        cuts = sorted(rng.randint(0, len(sentences)) for _ in needles)
        words = intro.split()
        prev = 0
        for cut, needle in zip(cuts, needles):
            words += [w for s in sentences[prev:cut] for w in s] + needle
            prev = cut
        return words + [w for s in sentences[prev:] for w in s], []

    return context


def _retrieval(rng: random.Random) -> Parts:
    key = _key(rng)
    value = _number(rng)
    query = f"What is the special pass key for {key}? The special pass key for {key} is".split()
    return [_pass_key(key, value)], query, [value]


def _multi_key(rng: random.Random) -> Parts:
    """3-5 numbers of different kinds, each of another person; one is the asked person's pass key."""
    people = rng.sample(_NAMES, rng.randint(3, 5))
    values = [_number(rng) for _ in people]
    kinds = rng.sample(_KINDS, len(people))
    asked = rng.randrange(len(people))
    kinds[asked] = "pass key"
    query = f"What is the pass key of {people[asked]}? The pass key of {people[asked]} is".split()
    needles = [f"The {kind} of {who} is {value}.".split() for kind, who, value in zip(kinds, people, values)]
    return needles, query, [values[asked]]


def _multi_value(rng: random.Random) -> Parts:
    """Two pass keys of one person, answered both in order: ``41752 and 38291``."""
    who = rng.choice(_NAMES)
    values = [_number(rng), _number(rng)]
    needles = [f"One pass key of {who} is {values[0]}.".split(), f"The other pass key of {who} is {values[1]}.".split()]
    query = f"What are the two pass keys of {who}? The two pass keys of {who} are".split()
    return needles, query, [values[0], "and", values[1]]


def _variable(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_uppercase, k=5))


def _variable_tracking(rng: random.Random) -> Parts:
    """The queried chain and one distractor chain, each `hops` assignments long; first hops come first."""
    hops = rng.randint(2, 3)
    names: list[str] = []
    while len(names) < 2 * hops:
        name = _variable(rng)
        names += [name] if name not in names else []
    chains = [names[:hops], names[hops:]]
    values = [_number(rng) for _ in chains]
    steps = [[f"VAR {chain[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in zip(chain, chain[1:])]
             for chain, value in zip(chains, values)]
    needles = [step.split() for hop in range(hops) for chain in steps for step in [chain[hop]]]
    asked = rng.randrange(2)
    last = chains[asked][-1]
    query = f"Question: what number does VAR {last} hold? Answer: VAR {last} holds the number".split()
    return needles, query, [values[asked]]


def _cwe_context(n_words: int, needles: list[list[str]], rng: random.Random) -> tuple[list[str], list[str]]:
    pool = rng.sample(_CWE_WORDS, 12)
    items = rng.choices(pool, weights=[3] + [1] * 11, k=max(n_words, 4))
    counts = {w: items.count(w) for w in pool}
    top = max(pool, key=lambda w: counts[w])
    if sorted(counts.values())[-2] == counts[top]:  # a unique answer
        items.insert(rng.randrange(len(items) + 1), top)
    words = "Below is a list of words. One word appears more often than any other. List:".split()
    return words + [w + "," for w in items[:-1]] + [items[-1] + "."], [top]


_CWE_QUERY = "Question: which word appears most often in the list above? Answer: the most frequent word is".split()

# name -> (parts, context), registered as `tasks.TEXT_REGISTRY`.
TASKS: dict[str, tuple[Callable[[random.Random], Parts], Callable]] = {
    "niah": (_retrieval, _haystack("A special pass key is hidden in the text below. Find it and remember it.")),
    "multikey": (_multi_key, _haystack("Some numbers are hidden in the text below. Remember them.")),
    "mv": (_multi_value, _haystack("Two pass keys are hidden in the text below. Remember both.")),
    "vt": (_variable_tracking,
           _haystack("Variable assignments are hidden in the text below. Keep track of the values they pass on.")),
    "cwe": (lambda rng: ([], _CWE_QUERY, []), _cwe_context),
}
