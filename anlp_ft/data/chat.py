"""Chat dialogues whose system prompt sets a checkable rule, single- and multi-turn, and recall dialogues whose
answer is only in an earlier turn.

A chat is a list of {"role", "content"} messages (system, then user/assistant turns), the schema that
`tokenizer.apply_chat_template` and the lmsys/OpenOrca datasets use. Each dialogue records its rule and the
right answer, so whether a model follows the system prompt is measured by a program: `follows_rule` checks form
and answer, `follows_format` the form alone (what system-prompt tuning teaches; the sum is the model's arithmetic).
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from typing import Callable, Iterable

ROLES = ("system", "user", "assistant")

CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Germany": "Berlin",
            "Egypt": "Cairo", "Canada": "Ottawa", "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo",
            "Greece": "Athens", "Poland": "Warsaw", "Cuba": "Havana", "Chile": "Santiago", "Ireland": "Dublin",
            "Austria": "Vienna", "Portugal": "Lisbon", "Sweden": "Stockholm", "Thailand": "Bangkok",
            "Finland": "Helsinki"}


@dataclass(frozen=True)
class Rule:
    """A behaviour a system prompt asks for: how a compliant answer looks, and how to check one."""
    name: str
    system: str
    render: Callable[[str], str]
    ack: str  # the reply to "remember this", itself obeying the rule
    follows: Callable[[str, str], bool]  # (output, answer) -> complies and is right


def _json_answer(output: str, answer: str) -> bool:
    try:
        value = json.loads(output.strip())
    except ValueError:
        return False
    return isinstance(value, dict) and list(value) == ["answer"] and str(value["answer"]) == answer


RULES: dict[str, Rule] = {r.name: r for r in [
    Rule("bare", "Reply with the answer only: no words before or after it.",
         lambda a: a, "OK", lambda out, a: out.strip() == a),
    Rule("uppercase", "Always write your whole reply in capital letters.",
         lambda a: f"THE ANSWER IS {a.upper()}.", "NOTED.",
         lambda out, a: out.strip() == out.strip().upper() and a.upper() in out and any(c.isalpha() for c in out)),
    Rule("json", 'Reply only with JSON of the form {"answer": ...}.',
         lambda a: json.dumps({"answer": a}), json.dumps({"answer": "noted"}), _json_answer),
    Rule("sure", "Begin every reply with 'Sure!' and then give the answer.",
         lambda a: f"Sure! The answer is {a}.", "Sure! Noted.",
         lambda out, a: out.strip().startswith("Sure!") and a in out),
]}


def _question(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        return f"What is {a} + {b}?", str(a + b)
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", CAPITALS[country]


def make_chats(n: int, *, seed: int, rules: Iterable[str] | None = None, multi_turn: float = 0.0) -> list[dict]:
    """n dialogues {messages, rule, answer}. A fraction `multi_turn` gives a fact in the first user turn and
    asks about it in the second, so the answer needs the earlier turn."""
    names = list(rules) if rules is not None else list(RULES)
    unknown = [r for r in names if r not in RULES]
    if unknown:
        raise ValueError(f"unknown rules {unknown}; known: {', '.join(RULES)}")
    rng, out = random.Random(seed), []
    for _ in range(n):
        rule = RULES[rng.choice(names)]
        messages = [{"role": "system", "content": rule.system}]
        if rng.random() < multi_turn:
            x, y = rng.randint(10, 60), rng.randint(2, 30)
            answer = str(x + y)
            messages += [
                {"role": "user", "content": f"Remember this: my number is {x}."},
                {"role": "assistant", "content": rule.ack},
                {"role": "user", "content": f"What is my number plus {y}?"},
            ]
        else:
            question, answer = _question(rng)
            messages.append({"role": "user", "content": question})
        messages.append({"role": "assistant", "content": rule.render(answer)})
        out.append({"messages": messages, "rule": rule.name, "answer": answer})
    return out


def follows_rule(output: str, rule: str, answer: str) -> bool:
    """Whether a reply obeys the dialogue's system rule and gives the right answer."""
    return RULES[rule].follows(output, answer)


def validate_messages(messages: list[dict]) -> None:
    """Raise a ValueError naming the first malformed message (unknown role, missing content)."""
    if not messages:
        raise ValueError("a chat needs at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i} must be a dict with 'role' and 'content', got {m!r}")
        if m["role"] not in ROLES:
            raise ValueError(f"message {i} has unknown role {m['role']!r}; use one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise ValueError(f"message {i} content must be a string, got {type(m['content']).__name__}")


def follows_format(output: str, rule: str) -> bool:
    """Whether a reply takes the form the rule's system prompt asks for, right answer or not."""
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    text = output.strip()
    if rule == "bare":
        return re.fullmatch(r"[\w-]+", text) is not None  # one word or number, nothing around it
    if rule == "uppercase":
        return text == text.upper() and any(c.isalpha() for c in text)
    if rule == "json":
        try:
            value = json.loads(text)
        except ValueError:
            return False
        return isinstance(value, dict) and list(value) == ["answer"]
    return text.startswith("Sure!")  # "sure"


def recall_chats(n: int, *, seed: int, rules: Iterable[str] | None = None) -> list[dict]:
    """n dialogues {messages, rule, answer}: the first user turn gives a number, the second asks for it back,
    so the right answer is only in the earlier turn."""
    names = list(rules) if rules is not None else list(RULES)
    rng, out = random.Random(seed), []
    for _ in range(n):
        rule = RULES[rng.choice(names)]
        number = str(rng.randint(100, 999))
        messages = [
            {"role": "system", "content": rule.system},
            {"role": "user", "content": f"Remember this: my number is {number}."},
            {"role": "assistant", "content": rule.ack},
            {"role": "user", "content": "What is my number?"},
            {"role": "assistant", "content": rule.render(number)},
        ]
        out.append({"messages": messages, "rule": rule.name, "answer": number})
    return out


def without_earlier_turns(messages: list[dict]) -> list[dict]:
    """The system prompt and the last user turn only: the control for a multi-turn check."""
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return [m for m in messages[:1] if m["role"] == "system"] + [messages[last_user]]
