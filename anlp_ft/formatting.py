"""Examples -> token ids and labels. The loss is taken on the response only: labels are -100 (ignored by the
cross-entropy) on the prompt and on padding.

Prompt and response are tokenized separately and concatenated, so training sees exactly the token boundary
that generation sees: at inference the prompt's tokens are given and the response's tokens are produced.
"""
from __future__ import annotations

from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from .data.chat import validate_messages

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"

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


def plain_prompt(question: str) -> str:
    """The course's plain prompt format; responses follow it after a space."""
    return PLAIN_TEMPLATE.format(question=question)


def _check_length(n: int, max_length: int | None, what: str) -> None:
    if max_length is not None and n > max_length:
        raise ValueError(f"{what} is {n} tokens, longer than max_length={max_length}: raise max_length "
                         f"(at most the model's context) or shorten the example")


def encode_example(tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, *,
                   max_length: int | None = None, add_eos: bool = True) -> dict[str, list[int]]:
    """input_ids = prompt + response (+ eos); labels copy the response (and eos) and mask the prompt."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    if add_eos:
        response_ids = response_ids + [tokenizer.eos_token_id]
    if not response_ids:
        raise ValueError(f"empty response for prompt {prompt[:60]!r}: there is nothing to learn from it")
    ids = prompt_ids + response_ids
    _check_length(len(ids), max_length, f"the example {prompt[:40]!r}")
    return {"input_ids": ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids}


def _chat_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids of a conversation up to the point where the assistant speaks next."""
    validate_messages(messages)
    return _chat_ids(tokenizer, messages, generation_prompt=True)


def encode_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict], *, max_length: int | None = None,
                assistant_only: bool = True) -> dict[str, list[int]]:
    """A conversation as one token sequence (tokenizer.apply_chat_template); with assistant_only, labels
    cover the assistant turns (their content and end-of-turn token) and nothing else.

    Each assistant turn's span is found by rendering the conversation up to that turn with and without it.
    """
    validate_messages(messages)
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the conversation has no assistant turn: there is nothing to learn from it")
    ids = _chat_ids(tokenizer, messages, generation_prompt=False)
    _check_length(len(ids), max_length, "the conversation")
    if not assistant_only:
        return {"input_ids": ids, "labels": list(ids)}
    labels = [IGNORE_INDEX] * len(ids)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = _chat_ids(tokenizer, messages[:i], generation_prompt=True)
        end = _chat_ids(tokenizer, messages[: i + 1], generation_prompt=False)
        if ids[: len(end)] != end or end[: len(start)] != start:
            raise ValueError("the chat template does not render a conversation prefix-by-prefix, so assistant "
                             "turns cannot be located; use a template whose turns only append tokens")
        # The newline after the end-of-turn token is layout, not something the model must produce.
        stop = len(end)
        def is_layout(i: int) -> bool:
            return ids[i] != tokenizer.eos_token_id and not tokenizer.decode(ids[i]).strip()

        while stop > len(start) and is_layout(stop - 1):
            stop -= 1
        labels[len(start): stop] = ids[len(start): stop]
    return {"input_ids": ids, "labels": labels}


def pad_batch(examples: Sequence[dict], pad_token_id: int, *, pad_to_multiple_of: int | None = None,
              side: str = "right") -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest example in the batch: input_ids, attention_mask and labels
    (-100 on padding). Examples without labels get none."""
    if not examples:
        raise ValueError("cannot pad an empty batch")
    length = max(len(e["input_ids"]) for e in examples)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    out: dict[str, list] = {"input_ids": [], "attention_mask": []}
    has_labels = "labels" in examples[0]
    if has_labels:
        out["labels"] = []

    def put(seq, fill):
        pad = [fill] * (length - len(seq))
        return list(seq) + pad if side == "right" else pad + list(seq)

    for e in examples:
        out["input_ids"].append(put(e["input_ids"], pad_token_id))
        out["attention_mask"].append(put([1] * len(e["input_ids"]), 0))
        if has_labels:
            out["labels"].append(put(e["labels"], IGNORE_INDEX))
    return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}


class Collator:
    """DataLoader collate_fn: dynamic right padding (see pad_batch)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.pad_token_id, self.pad_to_multiple_of = pad_token_id, pad_to_multiple_of

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        return pad_batch(examples, self.pad_token_id, pad_to_multiple_of=self.pad_to_multiple_of)


def pack_examples(examples: Sequence[dict], max_length: int) -> list[dict[str, list[int]]]:
    """Concatenate short encoded examples into sequences of at most max_length tokens (no example is split),
    so a batch holds few pad tokens. As in run_clm's grouping, a later example can attend to an earlier one
    in the same sequence; the labels still mask every prompt."""
    packed, ids, labels = [], [], []
    for i, e in enumerate(examples):
        _check_length(len(e["input_ids"]), max_length, f"example {i}")
        if len(ids) + len(e["input_ids"]) > max_length:
            packed.append({"input_ids": ids, "labels": labels})
            ids, labels = [], []
        ids, labels = ids + list(e["input_ids"]), labels + list(e["labels"])
    if ids:
        packed.append({"input_ids": ids, "labels": labels})
    return packed
