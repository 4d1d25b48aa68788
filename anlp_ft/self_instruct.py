"""Self-Instruct plumbing (Wang et al., 2023): the seed tasks, the prompt's header, reading the new task a model
writes, and ROUGE-L, the similarity its filter uses (a new task is kept only below 0.7 with every task in the pool).

The in-context prompt and the filter are lab 02's exercises (lecture 02 writes them out): their reference versions
live only in solutions/02_instruction_tuning.ipynb.
"""
from __future__ import annotations

import re

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
