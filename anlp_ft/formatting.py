"""Examples -> token ids and labels. The loss is taken on the response only: labels are -100 (ignored by the
cross-entropy) on the prompt and on padding.

Prompt and response are tokenized separately and concatenated, so training sees exactly the token boundary
that generation sees: at inference the prompt's tokens are given and the response's tokens are produced.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from .data.chat import validate_messages

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"

# Which tokens the assistant wrote is the template's to say: transformers' return_assistant_tokens_mask labels the
# text a template renders inside {% generation %} ... {% endgeneration %} (TRL's assistant_only_loss works the same
# way). Both templates mark each reply and its <|im_end|>; the newline after <|im_end|> is layout, outside the mark.


def _chatml(default_system: str | None) -> str:
    system = ("{% if loop.first and messages[0]['role'] != 'system' %}"
              f"{{{{ '<|im_start|>system\n{default_system}<|im_end|>\n' }}}}{{% endif %}}") if default_system else ""
    return ("{% for message in messages %}" + system +
            "{% if message['role'] == 'assistant' %}"
            "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
            "{{ '\n' }}"
            "{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endif %}"
            "{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


CHATML_TEMPLATE = _chatml(None)  # ChatML as it is
# SmolLM2's own template (ChatML with a default system prompt), marked: it renders exactly the text of the unmarked one.
SMOLLM2_TEMPLATE = _chatml("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
# Short conversations the templates are compared on (training_template) and the recipes check a template with.
PROBE_CHATS = ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
               [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Bye"}])
GENERATION_MARK = re.compile(r"{%-?\s*generation\s*-?%}")


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


def training_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's chat template with the assistant's turns marked: its own when it has the marks, else the
    course's marked template that renders the same text (checked on probe conversations, with and without the
    generation prompt)."""
    own = tokenizer.chat_template
    if own and GENERATION_MARK.search(own):
        return own

    def render(template: str | None, messages: list[dict], generation: bool) -> str:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=generation)

    for marked in (SMOLLM2_TEMPLATE, CHATML_TEMPLATE):
        if own and all(render(own, m[:n], n < len(m)) == render(marked, m[:n], n < len(m))
                       for m in PROBE_CHATS for n in (len(m) - 1, len(m))):
            return marked
    raise ValueError("the tokenizer's chat template does not mark the assistant's turns with {% generation %} ... "
                     "{% endgeneration %} and renders differently from ChatML, so which tokens to train on is "
                     "unknown: mark its assistant turns (content and end-of-turn token), or use a ChatML template")


def chat_prompt_ids(tokenizer: PreTrainedTokenizerBase, messages: list[dict]) -> list[int]:
    """Token ids of a conversation up to the point where the assistant speaks next."""
    validate_messages(messages)
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_chat(tokenizer: PreTrainedTokenizerBase, messages: list[dict], *, chat_template: str | None = None,
                max_length: int | None = None, assistant_only: bool = True) -> dict[str, list[int]]:
    """A conversation as one token sequence, rendered by chat_template (default: the tokenizer's); with
    assistant_only, labels cover what the template marks as the assistant's (transformers'
    return_assistant_tokens_mask) and nothing else, so the template must mark it (training_template)."""
    validate_messages(messages)
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the conversation has no assistant turn: there is nothing to learn from it")
    template = chat_template or tokenizer.chat_template
    if assistant_only and not (template and GENERATION_MARK.search(template)):
        raise ValueError("the chat template does not mark the assistant's turns with {% generation %} ... "
                         "{% endgeneration %}, so which tokens to train on is unknown: pass chat_template="
                         "training_template(tokenizer) (SmolLM2's ChatML, marked), mark your template's "
                         "assistant turns, or train on the whole sequence (assistant_only=False)")
    out = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=True, return_dict=True,
                                        return_assistant_tokens_mask=assistant_only)
    ids = list(out["input_ids"])
    _check_length(len(ids), max_length, "the conversation")
    if not assistant_only:
        return {"input_ids": ids, "labels": list(ids)}
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, out["assistant_masks"])]
    if all(label == IGNORE_INDEX for label in labels):
        raise ValueError("the chat template's {% generation %} marks cover no token of this conversation: put "
                         "them around each assistant message's content and end-of-turn token")
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
