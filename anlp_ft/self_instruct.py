"""Self-Instruct plumbing (Wang et al., 2023): prompt a model with a few tasks from a pool, read the new task it
writes, and keep it only when it is not a near-copy of one already in the pool (ROUGE-L below 0.7).

The lab writes the prompt and the filter itself; these are the reference versions its checks compare against,
and the lecture's.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Sequence

from rouge_score import rouge_scorer

# Hand-written seed tasks, as the paper's 175: short, varied, each a complete instruction.
SEED_INSTRUCTIONS: tuple[str, ...] = (
    "Sort these numbers from smallest to largest.",
    "Write the given word in capital letters.",
    "Give the opposite of the given adjective.",
    "Translate the sentence into French.",
    "Name the capital city of the given country.",
    "Count the vowels in the given word.",
    "Summarize the paragraph in one sentence.",
    "Write a short poem about the sea.",
    "Suggest a title for the given story.",
    "Classify the review as positive or negative.",
    "List three fruits that are red.",
    "Explain why the sky is blue to a child.",
)
HEADER = "Come up with a series of tasks:"
THRESHOLD = 0.7  # the paper's: a new instruction is kept only if its ROUGE-L with every pool member is below this


def instruction_prompt(pool: Sequence[str], k: int, rng: random.Random) -> str:
    """The paper's in-context prompt: k tasks drawn from the pool, numbered, then the number of the next one,
    for the model to continue with a new task."""
    if not 0 < k <= len(pool):
        raise ValueError(f"k must be between 1 and the pool size {len(pool)}, got {k}")
    shown = rng.sample(list(pool), k)
    lines = [HEADER] + [f"Task {i + 1}: {t}" for i, t in enumerate(shown)]
    return "\n".join(lines) + f"\nTask {k + 1}:"


def parse_instruction(text: str, *, min_words: int = 3, max_words: int = 25) -> str | None:
    """The new task in a continuation: its first line, stripped. None when it is unusable (too short or long,
    not starting with a letter, or another "Task n:" line), the paper's heuristic filters."""
    line = text.strip().split("\n", 1)[0].strip()
    line = re.split(r"\s*Task \d+:", line, maxsplit=1)[0].strip()
    words = line.split()
    if not min_words <= len(words) <= max_words or not line[0].isalpha():
        return None
    return line


_SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F-measure between two texts: longest common subsequence of words, 0 (disjoint) to 1 (same)."""
    return _SCORER.score(a, b)["rougeL"].fmeasure


def most_similar(candidate: str, pool: Sequence[str]) -> tuple[float, str]:
    """The pool member closest to candidate by ROUGE-L, and its score (0 and "" for an empty pool)."""
    best = max(((rouge_l(candidate, p), p) for p in pool), default=(0.0, ""), key=lambda x: x[0])
    return best


@dataclass
class FilterResult:
    kept: list[str] = field(default_factory=list)
    rejected: list[tuple[str, float, str]] = field(default_factory=list)  # (candidate, score, nearest pool member)


def rouge_filter(candidates: Sequence[str], pool: Sequence[str], threshold: float = THRESHOLD) -> FilterResult:
    """Keep each candidate whose ROUGE-L with every instruction in the pool is below threshold. A kept one
    joins the pool at once, so two near-identical candidates in one batch are not both kept."""
    pool, result = list(pool), FilterResult()
    for c in candidates:
        score, nearest = most_similar(c, pool)
        if score >= threshold:
            result.rejected.append((c, score, nearest))
        else:
            result.kept.append(c)
            pool.append(c)
    return result
