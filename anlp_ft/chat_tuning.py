"""Chat tuning helpers: the lecture's Llama 3 chat template, format-only adherence to a system rule, and
recall dialogues whose answer is only in an earlier turn.

Adherence is checked apart from correctness: "did the reply take the form the system prompt asked for"
is what system-prompt tuning teaches; whether 47 + 38 came out right is the model's arithmetic.
"""
from __future__ import annotations

import json
import random
import re
from typing import Iterable

from .data.chat import RULES

# The lecture's Llama 3 format. Every turn is a header, a blank line, the content and <|eot_id|>;
# add_generation_prompt opens the assistant's header so the model writes the reply.
LLAMA3_CHAT_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def render_llama3(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The same format in plain Python: what LLAMA3_CHAT_TEMPLATE must render."""
    text = "<|begin_of_text|>" + "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{m['content']}<|eot_id|>" for m in messages)
    return text + ("<|start_header_id|>assistant<|end_header_id|>\n\n" if add_generation_prompt else "")


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
