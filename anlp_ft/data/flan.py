"""FLAN-style task families: each task has several instruction templates and a checkable answer.

Instruction tuning trains on many families phrased many ways and tests on a family never seen in training.
Every answer is short and checked by a program; `verify` tells exact format from right content.
"""
from __future__ import annotations

import random
import re
import statistics
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

WORDS = ("apple", "river", "cloud", "tiger", "piano", "lemon", "stone", "candle", "garden", "rocket", "mirror",
         "forest", "bridge", "pencil", "window", "orange", "silver", "castle", "planet", "guitar", "butter", "jacket")


def _numbers(rng: random.Random, k: int) -> list[int]:
    return rng.sample(range(1, 100), k)


def _addition(rng):
    a, b = rng.randint(10, 99), rng.randint(10, 99)
    return {"a": a, "b": b}, str(a + b)


def _sorting(rng):
    xs = _numbers(rng, rng.randint(4, 5))
    return {"items": ", ".join(map(str, xs))}, ", ".join(map(str, sorted(xs)))


def _reversal(rng):
    ws = rng.sample(WORDS, rng.randint(3, 4))
    return {"items": " ".join(ws)}, " ".join(reversed(ws))


def _counting(rng):
    ws = rng.sample(WORDS, rng.randint(3, 7))
    return {"items": ", ".join(ws)}, str(len(ws))


def _comparison(rng):
    a, b = rng.sample(range(100, 1000), 2)
    return {"a": a, "b": b}, str(max(a, b))


def _median(rng):
    xs = _numbers(rng, rng.choice([3, 5]))
    return {"items": ", ".join(map(str, xs))}, str(int(statistics.median(xs)))


def _last_word(rng):
    ws = rng.sample(WORDS, rng.randint(3, 5))
    return {"items": ", ".join(ws)}, ws[-1]


def _uppercase(rng):
    w = rng.choice(WORDS)
    return {"word": w}, w.upper()


@dataclass(frozen=True)
class TaskFamily:
    name: str
    templates: tuple[str, ...]
    sample: Callable[[random.Random], tuple[dict, str]]

    def example(self, rng: random.Random, template: int) -> dict:
        fields, answer = self.sample(rng)
        return {"family": self.name, "template": template, "prompt": self.templates[template].format(**fields),
                "answer": answer}


FAMILIES: dict[str, TaskFamily] = {f.name: f for f in [
    TaskFamily("addition", ("What is {a} plus {b}?", "Add {a} and {b}.", "Compute the sum of {a} and {b}.",
                            "{a} + {b} = ?"), _addition),
    TaskFamily("sorting", ("Sort these numbers from smallest to largest: {items}",
                           "Arrange in ascending order: {items}",
                           "Put the following numbers in increasing order. {items}"), _sorting),
    TaskFamily("reversal", ("Reverse the order of these words: {items}",
                            "Write these words backwards, last first: {items}",
                            "Here are some words: {items}. List them in reverse order."), _reversal),
    TaskFamily("counting", ("How many words are in this list? {items}", "Count the items: {items}",
                            "{items}. How many items is that?"), _counting),
    TaskFamily("comparison", ("Which is larger, {a} or {b}?", "Give the bigger number: {a}, {b}",
                              "Of {a} and {b}, which number is greater?"), _comparison),
    TaskFamily("median", ("What is the median of {items}?", "Find the median of these numbers: {items}",
                          "{items}. Which number is in the middle when they are sorted?"), _median),
    TaskFamily("last_word", ("What is the last word in this list? {items}", "Name the final item: {items}",
                             "{items}. Which word comes last?"), _last_word),
    TaskFamily("uppercase", ("Write {word} in capital letters.", "Convert to upper case: {word}",
                             "Spell the word {word} using only capitals."), _uppercase),
]}


def task_examples(family: str, n: int, *, seed: int, templates: Sequence[int] | None = None) -> list[dict]:
    """n examples {family, template, prompt, answer} of one family, templates drawn from `templates`
    (default: all of the family's)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")
    fam = FAMILIES[family]
    ids = list(templates) if templates is not None else list(range(len(fam.templates)))
    if not ids or any(not 0 <= t < len(fam.templates) for t in ids):
        raise ValueError(f"{family} has templates 0..{len(fam.templates) - 1}, got {ids}")
    rng = random.Random(f"{family}-{seed}")
    return [fam.example(rng, rng.choice(ids)) for _ in range(n)]


def task_mixture(families: Iterable[str], n_per_family: int, *, seed: int,
                 templates: Sequence[int] | None = None) -> list[dict]:
    """A shuffled multi-task mixture, n_per_family examples of each family."""
    out = [ex for fam in families for ex in task_examples(fam, n_per_family, seed=seed, templates=templates)]
    random.Random(seed).shuffle(out)
    return out


def _normalize(text: str) -> str:
    return re.sub(r"[\s.!]+$", "", text.strip()).lower()


def verify(output: str, answer: str, *, strict: bool = True) -> bool:
    """strict: the output is the answer and nothing else (trailing period allowed); lenient: the answer
    appears in the output as a whole word or number sequence, so wordy but right answers count."""
    if strict:
        return _normalize(output) == _normalize(answer)
    return re.search(rf"(?<![\w]){re.escape(_normalize(answer))}(?![\w])", output.lower()) is not None
