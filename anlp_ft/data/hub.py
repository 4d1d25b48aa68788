"""The lecture's example datasets: real rows from the hub when it is reachable, same-schema samples offline.

Each source returns rows with the hub dataset's own column names, so code written against the samples
runs unchanged on the real data. Offline, a notice says that generated samples stand in.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Callable

from ..runtime import hub_reachable
from .arithmetic import arithmetic_problems
from .chat import make_chats
from .flan import task_mixture


@dataclass(frozen=True)
class HubSource:
    hub_id: str
    config: str | None
    description: str
    offline: Callable[[int, int], list[dict]]  # (n, seed) -> rows in the hub schema


_TOPICS = [("graph neural networks", "molecular property prediction", "a message-passing architecture"),
           ("speech recognition", "low-resource languages", "self-supervised pre-training"),
           ("protein folding", "structure prediction", "an attention-based model"),
           ("question answering", "long documents", "retrieval-augmented generation")]


def _papers(n: int, seed: int) -> list[dict]:
    rng, rows = random.Random(seed), []
    for _ in range(n):
        field, task, method = rng.choice(_TOPICS)
        gain = rng.randint(2, 15)
        article = (f"Recent progress in {field} has been driven by large labelled datasets. In {task}, however, "
                   f"labels are scarce. We propose {method} for {task} and evaluate it on four benchmarks. "
                   f"Section 2 reviews prior work. Section 3 describes {method}. Section 4 reports experiments: "
                   f"our approach improves the strongest baseline by {gain} points on average.")
        abstract = f"We propose {method} for {task} in {field}, improving on prior work by {gain} points."
        rows.append({"article": article, "abstract": abstract, "section_names": "introduction\nmethod\nexperiments"})
    return rows


def _math(n: int, seed: int) -> list[dict]:
    return [{"problem": p["question"], "level": "Level 1", "type": "Prealgebra",
             "solution": p["solution"].replace(f"The answer is {p['answer']}.",
                                               f"The answer is $\\boxed{{{p['answer']}}}$.")}
            for p in arithmetic_problems(n, seed=seed, ops=("+", "-", "*"))]


def _orca(n: int, seed: int) -> list[dict]:
    system = "You are an AI assistant. You will be given a task. You must generate a short, exact answer."
    return [{"id": f"offline.{i}", "system_prompt": system, "question": ex["prompt"], "response": ex["answer"]}
            for i, ex in enumerate(task_mixture(["sorting", "median", "comparison"], n, seed=seed)[:n])]


def _lmsys(n: int, seed: int) -> list[dict]:
    rows = []
    for i, chat in enumerate(make_chats(n, seed=seed, multi_turn=0.5)):
        turns = [m for m in chat["messages"] if m["role"] != "system"]
        rows.append({"conversation_id": f"offline-{i}", "model": "offline-sample", "conversation": turns,
                     "turn": len(turns) // 2, "language": "English"})
    return rows


SOURCES: dict[str, HubSource] = {
    "scientific_papers": HubSource("ccdv/arxiv-summarization", None, "article -> abstract", _papers),
    "competition_math": HubSource("EleutherAI/hendrycks_math", "prealgebra", "problem -> solution", _math),
    "openorca": HubSource("Open-Orca/OpenOrca", None, "system prompt + question -> response", _orca),
    "lmsys_chat": HubSource("lmsys/lmsys-chat-1m", None, "multi-turn user/assistant conversations", _lmsys),
}


def load_lecture_dataset(name: str, n: int = 4, *, seed: int = 0) -> list[dict]:
    """n rows of one of the lecture's datasets, streamed from the hub; offline (or when the hub refuses,
    e.g. a gated dataset without a token) generated rows in the same schema, with a printed notice."""
    if name not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(SOURCES)}")
    source = SOURCES[name]
    reason = "the hub is not reachable"
    if hub_reachable():
        try:
            from datasets import load_dataset

            stream = load_dataset(source.hub_id, source.config, split="train", streaming=True)
            rows = [dict(r) for r in itertools.islice(stream, n)]
            print(f"{name}: {n} rows from {source.hub_id} ({source.description})")
            return rows
        except Exception as e:  # gated, renamed or rate-limited: say so and carry on with samples
            reason = f"loading {source.hub_id} failed ({type(e).__name__}: {str(e)[:120]})"
    print(f"{name}: {reason}; showing {n} generated rows in the same schema as {source.hub_id}")
    return source.offline(n, seed)
