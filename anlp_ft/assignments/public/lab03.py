"""Public checks for lab 03, chat tuning (labs/03_chat_tuning.ipynb).

Each function checks one exercise and raises CheckFailed with what to fix; a returned string is shown after
the tick. ex1 and ex2 need only the tokenizer; ex3 runs a few greedy generations. ex1 compares with stored
renderings (EXPECTED, recomputed from the solution by the course's tests); ex2 with the labels transformers gives
from the assistant's turns marked in the template (return_assistant_tokens_mask), a different way to find them, and
then by a property on another model's template: what the labels cover reads each assistant reply and <|im_end|>.
"""
from __future__ import annotations

import copy

from ...data.chat import follows_format, follows_rule, make_chats, recall_chats
from ...evaluate import generate
from ...formatting import IGNORE_INDEX, encode_chat, training_template
from ..checks import CheckFailed
from ..checks import require as _require

__all__ = ["EXPECTED", "ex1", "ex2", "ex3", "ex4"]

EXAMPLE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]
TWO_TURNS = recall_chats(1, seed=0)[0]["messages"]  # system, user, assistant, user, assistant
# ex1: each case's rendering, whole and as a prompt (all but the last message, with the generation prompt).
EXPECTED: dict = {
    "lecture": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nThe capital of France is Paris.<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "two turns": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBegin every reply with 'Sure!' and then give "
        "the answer.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nRemember this: my number is 876.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nSure! Noted.<|eot_id|><|start_header_id|>user"
        "<|end_header_id|>\n\nWhat is my number?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        "Sure! The answer is 876.<|eot_id|>",
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBegin every reply with 'Sure!' and then give "
        "the answer.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nRemember this: my number is 876.<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nSure! Noted.<|eot_id|><|start_header_id|>user"
        "<|end_header_id|>\n\nWhat is my number?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
}
CASES = {"lecture": EXAMPLE, "two turns": TWO_TURNS}
# ex2: Qwen2's chat template, ChatML with its own default system prompt. The course's training_template does not know
# it, so only labels found from the tokenizer's rendering are right on it.
OTHER_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                  "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
                  "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
                  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


# ex1: a Jinja chat template for the Llama 3 format ------------------------------------------------------------
def _render(tokenizer, template: str, messages: list[dict], generation: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                             add_generation_prompt=generation)
    except Exception as error:  # a Jinja syntax error, an undefined variable
        raise CheckFailed(f"apply_chat_template could not render your template: {error}") from None


def ex1(llama3_template, tokenizer) -> str:
    template = llama3_template() if callable(llama3_template) else llama3_template
    _require(isinstance(template, str) and template.strip(),
             "the template must be a string of Jinja code (it loops over `messages`)")
    for name, messages in CASES.items():
        want, want_prompt = EXPECTED[name]
        got = _render(tokenizer, template, messages, False)
        if got != want:
            if got.strip() == want.strip():
                raise CheckFailed("only whitespace at the start or end differs: use {{- ... }} or keep the template "
                                  "on one line, with no newlines outside the quoted strings")
            if "<|begin_of_text|>" not in got:
                raise CheckFailed("the text must start with <|begin_of_text|>, once, before the first message")
            if got.count("<|begin_of_text|>") > 1:
                raise CheckFailed("<|begin_of_text|> must appear once, before the loop, not once per message")
            if "<|end_header_id|>\n\n" not in got:
                raise CheckFailed("after each <|end_header_id|> comes a blank line: '\\n\\n', then the content")
            raise CheckFailed(f"the {name} example renders differently from the expected string.\n"
                              f"  expected: {want!r}\n  got:      {got!r}")
        _require(_render(tokenizer, template, messages[:-1], True) == want_prompt,
                 "with add_generation_prompt=True the text must end with the assistant's header "
                 "'<|start_header_id|>assistant<|end_header_id|>\\n\\n' (and nothing after it); without it, no "
                 "header: use {% if add_generation_prompt %}")
    return (f"{len(CASES)} conversations ({', '.join(CASES)}) render exactly, with and without the generation "
            "prompt")


# ex2: assistant-only labels ------------------------------------------------------------------------------------
def _diagnose(tokenizer, ids: list[int], got: list[int], want: list[int]) -> str:
    extra = [i for i, (g, w) in enumerate(zip(got, want)) if g != IGNORE_INDEX and w == IGNORE_INDEX]
    missing = [i for i, (g, w) in enumerate(zip(got, want)) if g == IGNORE_INDEX and w != IGNORE_INDEX]
    wrong = [i for i, (g, w) in enumerate(zip(got, want)) if g != IGNORE_INDEX and w != IGNORE_INDEX and g != w]
    def show(where: list[int]) -> str:
        return "".join(tokenizer.decode([ids[i]]) for i in where[:12])

    if wrong:
        return "some labels differ from input_ids: a labelled position must copy its token (no shifting)"
    if extra and all(tokenizer.decode([ids[i]]).strip() == "" for i in extra):
        return (f"the newline after <|im_end|> is labelled ({len(extra)} positions): it is layout, not something "
                "the model must write; stop the labels at <|im_end|>")
    if extra:
        return (f"{len(extra)} positions are labelled that must be -100, e.g. {show(extra)!r}: "
                "only assistant turns count")
    if missing and all(ids[i] == tokenizer.eos_token_id for i in missing):
        return ("the assistant's end-of-turn token <|im_end|> must be labelled too: it is how the model learns to "
                "stop")
    return f"{len(missing)} assistant tokens are -100 but must be labelled, e.g. {show(missing)!r}: label every " \
           "assistant turn, not only the last one"


def ex2(build_chat_example, tokenizer, chats: list[list[dict]] | None = None) -> str:
    chats = chats or [make_chats(1, seed=0)[0]["messages"], TWO_TURNS]
    try:
        template = training_template(tokenizer)
    except ValueError as error:
        raise CheckFailed(f"this check compares with transformers' labels, which it cannot find here: {error}") \
            from None
    for messages in chats:
        got = build_chat_example(tokenizer, messages)
        _require(isinstance(got, dict) and {"input_ids", "labels"} <= set(got),
                 "build_chat_example must return a dict with the keys 'input_ids' and 'labels'")
        want = encode_chat(tokenizer, messages, chat_template=template)
        ids, labels = list(got["input_ids"]), list(got["labels"])
        _require(ids == want["input_ids"],
                 "input_ids must be the tokens of tokenizer.apply_chat_template(messages, tokenize=False), tokenized "
                 "with add_special_tokens=False")
        _require(len(labels) == len(ids), f"labels has {len(labels)} entries for {len(ids)} input_ids")
        if labels != want["labels"]:
            turns = sum(m["role"] == "assistant" for m in messages)
            raise CheckFailed(f"on a chat with {turns} assistant turn(s): "
                              + _diagnose(tokenizer, ids, labels, want["labels"]))
        whole = build_chat_example(tokenizer, messages, assistant_only=False)
        _require(list(whole["input_ids"]) == ids and list(whole["labels"]) == ids,
                 "with assistant_only=False the labels must copy input_ids: the loss on the whole sequence")
    n = sum(x != IGNORE_INDEX for x in want["labels"])
    _check_on_other_template(build_chat_example, tokenizer)
    return (f"labels match transformers' assistant mask on single- and multi-turn chats ({n} of {len(want['labels'])} "
            "tokens labelled), and cover exactly the assistant's replies on Qwen2's template")


def _labelled_text(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The text of each run of labelled positions."""
    runs: list[list[int]] = []
    for i, (token, label) in enumerate(zip(ids, labels)):
        if label != IGNORE_INDEX:
            if i == 0 or labels[i - 1] == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
    return [tokenizer.decode(run) for run in runs]


def _check_on_other_template(build_chat_example, tokenizer) -> None:
    other = copy.deepcopy(tokenizer)
    other.chat_template = OTHER_TEMPLATE
    messages = [m for m in TWO_TURNS if m["role"] != "system"]  # Qwen2's template adds its default system prompt
    where = "with Qwen2's chat template on the tokenizer (ChatML with its own default system prompt)"
    try:
        got = build_chat_example(other, messages)
    except Exception as error:  # e.g. a helper that only knows SmolLM2's template
        raise CheckFailed(f"{where}, build_chat_example raised {type(error).__name__}: {error}. Find the turns "
                          "from what the tokenizer's template renders, whatever the template") from None
    ids = other(other.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"]
    _require(list(got["input_ids"]) == ids,
             f"{where}, input_ids must be the tokens of tokenizer.apply_chat_template(messages, tokenize=False): "
             "render with the tokenizer's own template, not SmolLM2's")
    want = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
    covered = _labelled_text(other, ids, list(got["labels"]))
    _require(covered == want,
             f"{where}, the labelled tokens read {covered!r}, not each assistant reply and its <|im_end|> "
             f"{want!r}: find where each turn starts and ends from the tokenizer's rendering (render the chat up to "
             "the turn with add_generation_prompt=True, and through it)")


# ex3: adherence and accuracy from greedy replies -------------------------------------------------------------
def ex3(evaluate_chats, model, tokenizer, n: int = 6, max_new_tokens: int = 12) -> str:
    chats = make_chats(n, seed=123)
    got = evaluate_chats(model, chats)
    _require(isinstance(got, dict) and {"adherence", "accuracy", "outputs"} <= set(got),
             "evaluate_chats must return a dict with 'adherence', 'accuracy' and 'outputs'")
    outputs = generate(model, tokenizer, [c["messages"][:-1] for c in chats], max_new_tokens=max_new_tokens)
    _require(len(got["outputs"]) == n, f"expected one output per chat ({n}), got {len(got['outputs'])}")
    if [o.strip() for o in got["outputs"]] != [o.strip() for o in outputs]:
        raise CheckFailed("the replies differ from greedy generation on each chat without its last (assistant) "
                          "message: generate(model, tokenizer, [c['messages'][:-1] for c in chats], "
                          f"max_new_tokens=MAX_NEW_TOKENS). First expected {outputs[0]!r}, got {got['outputs'][0]!r}")
    adherence = sum(follows_format(o, c["rule"]) for o, c in zip(outputs, chats)) / n
    acc = sum(follows_rule(o, c["rule"], c["answer"]) for o, c in zip(outputs, chats)) / n
    _require(abs(got["adherence"] - adherence) < 1e-9,
             f"adherence should be {adherence:.3f} (the fraction of replies with follows_format(output, rule)), "
             f"got {got['adherence']}")
    _require(abs(got["accuracy"] - acc) < 1e-9,
             f"accuracy should be {acc:.3f} (the fraction with follows_rule(output, rule, answer)), "
             f"got {got['accuracy']}")
    return f"adherence {adherence:.2f}, accuracy {acc:.2f} on {n} chats"


# ex4: chat tuning reaches the adherence target -------------------------------------------------------------
def ex4(history, before: float, after: float, target: float = 0.95) -> str:
    _require(history is not None and len(getattr(history, "loss", [])) > 1,
             "chat_tune must return (model, history) with the History that fit() returns")
    first, last = history.loss[0], history.final_loss
    _require(last < first / 2, f"the training loss went from {first:.3f} to only {last:.3f}: check the LoRA "
                               "settings, learning rate and steps given above")
    _require(after >= target, f"adherence on held-out prompts is {after:.1%} after tuning, below the {target:.0%} "
                              f"target (before: {before:.1%}): train on the assistant-only examples with the given "
                              "configuration")
    return f"adherence {before:.1%} -> {after:.1%}"
