"""Arithmetic problems with step-by-step solutions in the lecture's style, and the verifiers that grade them.

"What is 23 + 45?" -> "Let's think step-by-step. 23 + 40 = 63. 63 + 5 = 68. The answer is 68."
Answers are checked by a program, so a fine-tuned model's accuracy is measured, not eyeballed.
"""
from __future__ import annotations

import random
import re
from typing import Iterable

OPS = ("+", "-", "*")
_ANSWER = re.compile(r"The answer is (-?\d+)\.?\s*$")
_NUMBER = re.compile(r"-?\d+")


def _steps(a: int, op: str, b: int) -> list[str]:
    """Split the second operand into tens and ones, as one would on paper."""
    tens, ones = b - b % 10, b % 10
    if op == "*":  # b is a single digit here: distribute over a's tens and ones
        return [f"{a - a % 10} * {b} = {(a - a % 10) * b}", f"{a % 10} * {b} = {a % 10 * b}",
                f"{(a - a % 10) * b} + {a % 10 * b} = {a * b}"]
    if tens == 0 or ones == 0:
        return [f"{a} {op} {b} = {a + b if op == '+' else a - b}"]
    first = a + tens if op == "+" else a - tens
    return [f"{a} {op} {tens} = {first}", f"{first} {op} {ones} = {first + ones if op == '+' else first - ones}"]


def make_problem(a: int, op: str, b: int) -> dict:
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    answer = {"+": a + b, "-": a - b, "*": a * b}[op]
    steps = ". ".join(_steps(a, op, b))
    return {
        "question": f"What is {a} {op} {b}?",
        "solution": f"Let's think step-by-step. {steps}. The answer is {answer}.",
        "answer": str(answer),
    }


def arithmetic_problems(
    n: int, *, seed: int, digits: int = 2, ops: Iterable[str] = ("+",), exclude: Iterable[str] = ()
) -> list[dict]:
    """n distinct problems {question, solution, answer}; subtraction stays non-negative and
    multiplication takes a one-digit second operand. `exclude` holds questions to avoid (a test split)."""
    ops, seen = tuple(ops), set(exclude)
    low, high = 10 ** (digits - 1) if digits > 1 else 0, 10**digits - 1
    capacity = len(ops) * (high - low + 1) ** 2
    if n > capacity - len(seen):
        raise ValueError(f"asked for {n} distinct {digits}-digit problems, but only {capacity - len(seen)} exist")
    rng, out = random.Random(seed), []
    while len(out) < n:
        op = rng.choice(ops)
        a, b = rng.randint(low, high), rng.randint(low, high)
        if op == "-" and b > a:
            a, b = b, a
        if op == "*":
            b = rng.randint(2, 9)
        problem = make_problem(a, op, b)
        if problem["question"] not in seen:
            seen.add(problem["question"])
            out.append(problem)
    return out


def train_test_problems(n_train: int, n_test: int, *, seed: int, **kwargs) -> tuple[list[dict], list[dict]]:
    """Disjoint train and held-out problems: no test question appears in training."""
    test = arithmetic_problems(n_test, seed=seed + 1, **kwargs)
    train = arithmetic_problems(n_train, seed=seed, exclude=[p["question"] for p in test], **kwargs)
    return train, test


def extract_answer(text: str, *, strict: bool = False) -> str | None:
    """The answer a generation gives. strict: only the trained format, "... The answer is N." at the end;
    lenient: the last number anywhere, so a right but wordy answer still counts."""
    text = text.strip()
    if strict:
        match = _ANSWER.search(text)
        return match.group(1) if match else None
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def is_correct(text: str, answer: str, *, strict: bool = False) -> bool:
    return extract_answer(text, strict=strict) == str(answer)
