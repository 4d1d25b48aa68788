"""Writes solutions/03_chat_tuning.ipynb (without outputs).

Cell ids are fixed here so that re-running the script, executing the notebook and `anlp-ft assign` keep diffs
small. Run from the repository root: `python tools/build_03.py`, then execute the notebook in place and run
`anlp-ft assign` to regenerate labs/03_chat_tuning.ipynb.
"""
from __future__ import annotations

import sys

from nbbuild import BADGE, COLAB, ROOT, SETUP, code, exercise, hidden, md, write_notebooks

NAME = "03_chat_tuning"


def lab_cells():
    url = COLAB.format(folder="labs", name=NAME)
    return [
        md("title", f"""
# Lab 03: Chat tuning

{BADGE.format(url=url)}

A chat model reads a conversation, a list of messages with roles (system, user, assistant), rendered into one
token sequence by a **chat template**. Chat tuning trains the model on such conversations with the loss on the
assistant's turns only, so that it learns to answer, and to obey what the system prompt asks.

**Learning goals.** After this lab you can

1. render conversations with `tokenizer.apply_chat_template` (ChatML), and write a Jinja chat template for the
   Llama 3 format that renders the lecture's example exactly;
2. build assistant-only labels for multi-turn conversations, and compare training on them with training on the
   whole sequence;
3. tune SmolLM2 so that system prompts control its answers' format, and measure adherence on held-out prompts
   against the pre-trained model;
4. check that an answer uses information given in an earlier turn.

| Exercise | What | Points |
|---|---|---|
| ex1 | `llama3_template`: a Jinja chat template for the Llama 3 format | 2 |
| ex2 | `build_chat_example`: assistant-only labels for multi-turn chats | 3 |
| ex3 | `evaluate_chats`: adherence and accuracy from greedy replies | 2 |
| ex4 | `chat_tune`: LoRA chat tuning with `fit` | 3 |

Write your code where it says `# YOUR CODE HERE`; the `check(...)` cell after each exercise tells you what is wrong.
Run the notebook top to bottom: a blank exercise is reported and skipped, not an error.
"""),
        code("colab-setup", SETUP),
        code("parameters", '''
PROFILE = None   # "quick" (CPU, a few minutes) or "full" (a Colab T4); None: from $ANLP_FT_PROFILE or the device
SEED = 0
MODEL = None     # None: SmolLM2-135M (offline: SmolLM2-135M-Instruct)
STEPS = None     # optimizer steps of each chat-tuning run
BATCH = None     # conversations per step
LR = None        # LoRA learning rate
N_TEST = None    # held-out single-turn chats (adherence)
N_RECALL = None  # held-out two-turn chats (the multi-turn check)
''', tags=["parameters"]),
        code("resolve", '''
import copy
import math
import random

import matplotlib.pyplot as plt
import torch
from peft import LoraConfig, get_peft_model

from anlp_ft.assignments import MISSING, Checker, attempt
from anlp_ft.chat_tuning import follows_format, recall_chats, without_earlier_turns
from anlp_ft.data.chat import RULES, follows_rule, make_chats
from anlp_ft.evaluate import generate, perplexity
from anlp_ft.formatting import IGNORE_INDEX, encode_chat
from anlp_ft.models import load_model, load_tokenizer
from anlp_ft.plots import plot_bars, plot_curves, plot_loss
from anlp_ft.results import expect, record_outcomes
from anlp_ft.runtime import by_profile, pick_device, resolve_profile, seed_everything
from anlp_ft.train import TrainConfig, fit

PROFILE = resolve_profile(PROFILE)
STEPS = STEPS or by_profile(PROFILE, quick=20, full=60)
BATCH = BATCH or by_profile(PROFILE, quick=8, full=16)
LR = LR or by_profile(PROFILE, quick=2e-3, full=1e-3)
N_TEST = N_TEST or by_profile(PROFILE, quick=64, full=256)
N_RECALL = N_RECALL or by_profile(PROFILE, quick=32, full=128)
TARGET = 0.95          # adherence to the system prompt on held-out chats, after tuning
MAX_NEW_TOKENS = 12    # the longest compliant reply ("THE ANSWER IS SANTIAGO.") is 11 tokens
DEVICE = pick_device()
seed_everything(SEED)
print(f"profile {PROFILE} on {DEVICE}: chat tuning {STEPS} steps x {BATCH} conversations, lr {LR}; "
      f"{N_TEST} held-out chats, {N_RECALL} two-turn chats; adherence target {TARGET:.0%}")
'''),
        code("load", '''
tokenizer = load_tokenizer(MODEL)
base = load_model(MODEL, device=DEVICE)  # the pre-trained model; each tuning run trains a copy of it
base.eval()
check = Checker("03")
'''),
        # ------------------------------------------------------------------------------------------- section 1
        md("s1", """
## 1. Chat templates

A conversation is a list of `{"role", "content"}` messages. The tokenizer's chat template (a Jinja program stored
with the tokenizer) renders it into the text the model was trained on. SmolLM2 uses **ChatML**: each message is
`<|im_start|>{role}\\n{content}<|im_end|>\\n`. With `add_generation_prompt=True` the text ends with the opened
assistant turn, `<|im_start|>assistant\\n`: the point where the model writes its reply. Without a system message,
SmolLM2's template inserts a default one.

Our conversations carry a **system prompt with a rule** the reply must follow (reply with the bare answer, in capital
letters, as JSON, or starting with "Sure!"), so whether the model obeys can be checked by a program.
"""),
        code("chatml", '''
# NBVAL_CHECK_OUTPUT
for rule in RULES.values():
    print(f"{rule.name:>9}: system {rule.system!r}\\n{'':>11}reply  {rule.render('Paris')!r}")
chat = make_chats(1, seed=SEED)[0]["messages"]
print("\\n--- the conversation, rendered (ChatML) ---")
print(tokenizer.apply_chat_template(chat, tokenize=False))
print("--- its prompt: all but the last message, with the generation prompt ---")
print(tokenizer.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True))
print("--- without a system message, the template adds its default one ---")
print(tokenizer.apply_chat_template(chat[1:2], tokenize=False))
'''),
        md("s1b", """
### The Llama 3 format

The lecture's Llama 3 format puts each message after a header, `<|start_header_id|>{role}<|end_header_id|>`, then a
blank line, and closes it with `<|eot_id|>`; the text starts with `<|begin_of_text|>`:

```
<|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\\n\\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n{assistant}<|eot_id|>
```

**Exercise 1 (2 points).** Write `llama3_template()`, returning a Jinja chat template (a string) for this format:
`<|begin_of_text|>` once, then for each message its header, `\\n\\n`, its content and `<|eot_id|>`; and, when
`add_generation_prompt` is true, the assistant's header and `\\n\\n` at the end. `apply_chat_template(messages,
chat_template=..., tokenize=False)` must render the lecture's example below exactly. Jinja keeps every character
outside `{{ }}` and `{% %}`, newlines included: keep the template on one line (or build it from Python strings).
SmolLM2's own template above is a model to follow.
"""),
        code("expected", '''
# NBVAL_CHECK_OUTPUT
LECTURE_EXAMPLE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]
LLAMA3_EXPECTED = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\nYou are a helpful assistant.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\\n\\nWhat is the capital of France?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\\n\\nThe capital of France is Paris.<|eot_id|>"
)
print(LLAMA3_EXPECTED)
'''),
        exercise("ex1", '''
def llama3_template() -> str:
    """A Jinja chat template for the lecture's Llama 3 format."""
    # BEGIN SOLUTION
    return (
        "{{ '<|begin_of_text|>' }}"
        "{% for message in messages %}"
        "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    )
    # END SOLUTION
''', "ex1", 2),
        code("ex1-check", '''
check("ex1", llama3_template, tokenizer)
'''),
        code("ex1-show", '''
# NBVAL_CHECK_OUTPUT
rendered = attempt("ex1", lambda: tokenizer.apply_chat_template(LECTURE_EXAMPLE, chat_template=llama3_template(),
                                                                tokenize=False))
if rendered is not MISSING:
    print(rendered)
    print("equals the lecture's string:", rendered == LLAMA3_EXPECTED)
    print(repr(tokenizer.apply_chat_template(LECTURE_EXAMPLE[:2], chat_template=llama3_template(), tokenize=False,
                                             add_generation_prompt=True)[-60:]))
'''),
        hidden("ex1-hidden", '''
from anlp_ft.assignments.public import lab03
lab03.ex1(llama3_template, tokenizer)
lab03.ex1(llama3_template, tokenizer, recall_chats(1, seed=5)[0]["messages"])
assert tokenizer.apply_chat_template(LECTURE_EXAMPLE, chat_template=llama3_template(), tokenize=False) == LLAMA3_EXPECTED
''', "ex1"),
        # ------------------------------------------------------------------------------------------- section 2
        md("s2", """
## 2. Assistant-only labels

A conversation is trained on as one token sequence. The loss should count only what the assistant says: its
replies and the end-of-turn token `<|im_end|>` that closes each of them (so the model learns to stop). The system
prompt, the user turns and the headers `<|im_start|>assistant\\n` are given, not predicted: their labels are `-100`.
In a multi-turn conversation every assistant turn is labelled.

Where does an assistant turn start and end in the token sequence? Render the conversation *up to* message `i`
with `add_generation_prompt=True`: its length is where turn `i`'s content starts. Render it *through* message `i`:
its length is where the turn ends. (ChatML puts a newline after `<|im_end|>`; it is layout and stays `-100`.)

**Exercise 2 (3 points).** Write `build_chat_example(tokenizer, messages, assistant_only=True)`: `input_ids` are the
tokens of `tokenizer.apply_chat_template(messages, tokenize=False)` (tokenize that text with
`add_special_tokens=False`); `labels` copy `input_ids` on every assistant turn's content and its `<|im_end|>`, and
are `-100` elsewhere. With `assistant_only=False`, labels copy all of `input_ids` (the loss on the whole sequence).
The check compares your labels with the library's `encode_chat` on a single-turn and a multi-turn chat.
"""),
        exercise("ex2", '''
def build_chat_example(tokenizer, messages: list[dict], assistant_only: bool = True) -> dict:
    """input_ids of the rendered chat; labels on the assistant turns (content and <|im_end|>) or everywhere."""
    def ids_of(msgs, generation_prompt=False):
        text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    input_ids = ids_of(messages)
    # BEGIN SOLUTION
    if not assistant_only:
        return {"input_ids": input_ids, "labels": list(input_ids)}
    labels = [IGNORE_INDEX] * len(input_ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(ids_of(messages[:i], generation_prompt=True))
        end = len(ids_of(messages[: i + 1]))
        while end > start and input_ids[end - 1] != tokenizer.eos_token_id:  # drop the newline after <|im_end|>
            end -= 1
        labels[start:end] = input_ids[start:end]
    return {"input_ids": input_ids, "labels": labels}
    # END SOLUTION
''', "ex2", 3),
        code("ex2-check", '''
check("ex2", build_chat_example, tokenizer)
'''),
        code("ex2-show", '''
# NBVAL_CHECK_OUTPUT
two_turns = recall_chats(1, seed=SEED)[0]["messages"]
example = attempt("ex2", build_chat_example, tokenizer, two_turns)
if example is not MISSING:
    print("labelled (trained on) in [brackets]:")
    print("".join(f"[{tokenizer.decode([t])}]" if label != IGNORE_INDEX else tokenizer.decode([t])
                  for t, label in zip(example["input_ids"], example["labels"])))
    n = sum(label != IGNORE_INDEX for label in example["labels"])
    print(f"{n} of {len(example['labels'])} tokens labelled")
'''),
        hidden("ex2-hidden", '''
from anlp_ft.assignments.public import lab03
chats = [c["messages"] for c in make_chats(6, seed=11, multi_turn=0.5) + recall_chats(3, seed=12)]
lab03.ex2(build_chat_example, tokenizer, chats)
''', "ex2"),
        # ------------------------------------------------------------------------------------------- section 3
        md("s3", """
## 3. Data, and how we measure

Training conversations: single-turn questions (2-digit sums, capitals) under one of the four rules, and two-turn
conversations in which the user gives a number and then asks for it back. Held-out chats never pair a rule with a
question seen in training; held-out two-turn chats use numbers not seen in training.

Two measures on greedy replies:

* **adherence**: the reply has the form the system prompt asks for (`follows_format(reply, rule)`), right or wrong;
* **accuracy**: the reply has that form *and* the right answer (`follows_rule(reply, rule, answer)`).

**The multi-turn check.** On the two-turn chats, accuracy with the whole conversation, and with the first turn
removed (`without_earlier_turns`): the number is then nowhere in the prompt, so an answer that was right before
must have come from the earlier turn.
"""),
        code("data", '''
# NBVAL_CHECK_OUTPUT
n_train = STEPS * BATCH
train_chats = make_chats(n_train - n_train // 4, seed=SEED) + recall_chats(n_train // 4, seed=SEED)
random.Random(SEED).shuffle(train_chats)

seen = {(c["rule"], c["messages"][1]["content"]) for c in train_chats}
test_chats = [c for c in make_chats(4 * N_TEST, seed=SEED + 1) if (c["rule"], c["messages"][1]["content"]) not in seen]
test_chats = test_chats[:N_TEST]
seen_numbers = {c["answer"] for c in train_chats if len(c["messages"]) > 3}
recall_test = [c for c in recall_chats(4 * N_RECALL, seed=SEED + 2) if c["answer"] not in seen_numbers][:N_RECALL]
recall_control = [{**c, "messages": without_earlier_turns(c["messages"][:-1]) + c["messages"][-1:]} for c in recall_test]
assert len(test_chats) == N_TEST and len(recall_test) == N_RECALL
print(f"{len(train_chats)} training chats ({n_train // 4} two-turn), {len(test_chats)} held-out chats, "
      f"{len(recall_test)} held-out two-turn chats")
for c in recall_test[:1] + recall_control[:1]:
    print([f"{m['role']}: {m['content']}" for m in c["messages"]])
'''),
        md("s3b", """
**Exercise 3 (2 points).** Write `evaluate_chats(model, chats)`: greedy replies (`generate(model, tokenizer, prompts,
max_new_tokens=MAX_NEW_TOKENS)`) to each chat without its last message (the assistant's reference reply), then
return `{"adherence": ..., "accuracy": ..., "outputs": replies}` with the fractions of replies that pass
`follows_format(reply, chat["rule"])` and `follows_rule(reply, chat["rule"], chat["answer"])`. `generate` accepts
chats (lists of messages) and renders them with the tokenizer's template and the generation prompt.
"""),
        exercise("ex3", '''
def evaluate_chats(model, chats: list[dict]) -> dict:
    """Greedy replies to each chat's prompt; the fraction that obey the rule's format, and that are also right."""
    # BEGIN SOLUTION
    outputs = generate(model, tokenizer, [c["messages"][:-1] for c in chats], max_new_tokens=MAX_NEW_TOKENS,
                       batch_size=64)
    adherence = sum(follows_format(o, c["rule"]) for o, c in zip(outputs, chats)) / len(chats)
    accuracy = sum(follows_rule(o, c["rule"], c["answer"]) for o, c in zip(outputs, chats)) / len(chats)
    return {"adherence": adherence, "accuracy": accuracy, "outputs": outputs}
    # END SOLUTION
''', "ex3", 2),
        code("ex3-check", '''
check("ex3", evaluate_chats, base, tokenizer, max_new_tokens=MAX_NEW_TOKENS)
'''),
        code("ex3-run", '''
def show_replies(result, chats):
    if result is MISSING:
        return
    for rule in RULES:
        i = next(j for j, c in enumerate(chats) if c["rule"] == rule)
        print(f"  {rule:>9} | {chats[i]['messages'][-2]['content']!r} -> {result['outputs'][i].strip()[:70]!r}")

before = attempt("ex3", evaluate_chats, base, test_chats)
recall_before = attempt("ex3", evaluate_chats, base, recall_test)
if before is not MISSING:
    print(f"pre-trained: adherence {before['adherence']:.1%}, accuracy {before['accuracy']:.1%}; "
          f"two-turn accuracy {recall_before['accuracy']:.1%}")
    show_replies(before, test_chats)
'''),
        hidden("ex3-hidden", '''
from anlp_ft.assignments.public import lab03
lab03.ex3(evaluate_chats, base, tokenizer, n=4, max_new_tokens=MAX_NEW_TOKENS)
assert abs(before["adherence"] - sum(follows_format(o, c["rule"]) for o, c in zip(before["outputs"], test_chats)) / N_TEST) < 1e-9
''', "ex3"),
        # ------------------------------------------------------------------------------------------- section 4
        md("s4", """
## 4. Chat tuning: assistant-only loss against loss on the whole sequence

We tune with LoRA (rank 16 on every linear layer; lecture 4 explains it) through the course's `fit`, twice, with the
same data, steps and settings, changing only the labels:

* **assistant-only**: the loss on the assistant's turns (exercise 2);
* **whole sequence**: the loss on every token, system prompt and user turns included.

What is compared at equal steps: the loss on the *assistant tokens* of held-out chats (measured during training),
and adherence on held-out prompts. With the whole sequence, most of each step's loss (and gradient) goes to
predicting the system prompt and the question, which the model never has to write.

**Exercise 4 (3 points).** Write `chat_tune(examples)`: a LoRA copy of the pre-trained model
(`get_peft_model(copy.deepcopy(base), lora_config())`), trained with
`fit(model, examples, TRAIN_CONFIG, eval_fn=held_out_assistant_loss, pad_token_id=tokenizer.pad_token_id)`;
return `(model, history)`.
"""),
        code("config", '''
TRAIN_CONFIG = TrainConfig(steps=STEPS, batch_size=BATCH, lr=LR, warmup_steps=2, seed=SEED,
                           eval_every=max(1, STEPS // 2))

def lora_config():
    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")

# The measure tracked during training: the loss on the assistant tokens of held-out chats (the library's labels,
# so both runs are measured the same way).
held_out_examples = [encode_chat(tokenizer, c["messages"]) for c in test_chats[:16]]

def held_out_assistant_loss(model):
    return {"assistant_loss": math.log(perplexity(model, held_out_examples, pad_token_id=tokenizer.pad_token_id))}

loss_before = held_out_assistant_loss(base)["assistant_loss"]
print(f"pre-trained: held-out loss on assistant tokens {loss_before:.3f}")
'''),
        exercise("ex4", '''
def chat_tune(examples: list[dict]):
    """A LoRA copy of the pre-trained model, trained on the encoded examples; returns (model, history)."""
    seed_everything(SEED)
    # BEGIN SOLUTION
    model = get_peft_model(copy.deepcopy(base), lora_config())
    history = fit(model, examples, TRAIN_CONFIG, eval_fn=held_out_assistant_loss, pad_token_id=tokenizer.pad_token_id)
    return model, history
    # END SOLUTION
''', "ex4", 3),
        code("ex4-run", '''
assistant_data = attempt("ex2", lambda: [build_chat_example(tokenizer, c["messages"]) for c in train_chats])
tuned, history = attempt("ex4", chat_tune, assistant_data, default=(MISSING, MISSING))
after = attempt("ex3", evaluate_chats, tuned, test_chats)
if after is not MISSING:
    print(f"assistant-only: {STEPS} steps x {BATCH} in {history.seconds:.0f} s ({history.tokens_per_s:.0f} tokens/s); "
          f"training loss {history.loss[0]:.3f} -> {history.final_loss:.3f}")
    print(f"held-out adherence {before['adherence']:.1%} -> {after['adherence']:.1%}, "
          f"accuracy {before['accuracy']:.1%} -> {after['accuracy']:.1%}")
    show_replies(after, test_chats)
    check("ex4", history, before["adherence"], after["adherence"], target=TARGET)
'''),
        hidden("ex4-hidden", '''
assert history.final_loss < history.loss[0] / 2
# PART
assert after["adherence"] >= TARGET, after["adherence"]
assert history.evals[-1]["assistant_loss"] < loss_before
''', "ex4"),
        code("whole", '''
whole_data = attempt("ex2", lambda: [build_chat_example(tokenizer, c["messages"], assistant_only=False)
                                     for c in train_chats])
whole_model, whole_history = attempt("ex4", chat_tune, whole_data, default=(MISSING, MISSING))
whole_after = attempt("ex3", evaluate_chats, whole_model, test_chats)
if whole_after is not MISSING:
    labelled = lambda data: sum(sum(x != IGNORE_INDEX for x in e["labels"]) for e in data)
    print(f"labelled tokens per chat: assistant-only {labelled(assistant_data) / len(train_chats):.1f}, "
          f"whole sequence {labelled(whole_data) / len(train_chats):.1f}")
    print(f"{'':>16} {'held-out assistant loss':>24} {'adherence':>10} {'accuracy':>9}")
    for name, h, r in [("assistant-only", history, after), ("whole sequence", whole_history, whole_after)]:
        print(f"{name:>16} {h.evals[-1]['assistant_loss']:>24.3f} {r['adherence']:>10.1%} {r['accuracy']:>9.1%}")
'''),
        md("s5", """
## 5. The multi-turn check

The tuned model answers "What is my number?" from the earlier turn. With that turn removed, the same question has no
answer in the prompt.
"""),
        code("recall", '''
recall_after = attempt("ex3", evaluate_chats, tuned, recall_test)
control_after = attempt("ex3", evaluate_chats, tuned, recall_control)
if recall_after is not MISSING:
    print(f"two-turn accuracy: pre-trained {recall_before['accuracy']:.1%}, tuned {recall_after['accuracy']:.1%}; "
          f"tuned with the first turn removed {control_after['accuracy']:.1%}")
    for c, a, b in list(zip(recall_test, recall_after["outputs"], control_after["outputs"]))[:3]:
        print(f"  number {c['answer']} ({c['rule']}): with turn 1 {a.strip()!r}, without {b.strip()!r}")
'''),
        # ------------------------------------------------------------------------------------------- results
        md("results-md", """
## Results

Every measured outcome, the curves, and the assertions (with margins) that the lab's claims hold.
"""),
        code("results", '''
def get(result, key):
    return MISSING if result is MISSING else result[key]

def final_loss(h):
    return MISSING if h is MISSING else h.evals[-1]["assistant_loss"]

outcomes = {
    "adherence, pre-trained": get(before, "adherence"),
    "adherence, assistant-only tuning": get(after, "adherence"),
    "adherence, whole-sequence tuning": get(whole_after, "adherence"),
    "accuracy, pre-trained": get(before, "accuracy"),
    "accuracy, assistant-only tuning": get(after, "accuracy"),
    "accuracy, whole-sequence tuning": get(whole_after, "accuracy"),
    "held-out assistant loss, pre-trained": loss_before,
    "held-out assistant loss, assistant-only": final_loss(history),
    "held-out assistant loss, whole sequence": final_loss(whole_history),
    "two-turn accuracy, pre-trained": get(recall_before, "accuracy"),
    "two-turn accuracy, tuned": get(recall_after, "accuracy"),
    "two-turn accuracy, tuned, turn 1 removed": get(control_after, "accuracy"),
    "training tokens/s": MISSING if history is MISSING else round(history.tokens_per_s),
}
record_outcomes("03_chat_tuning", outcomes)
'''),
        code("plots", '''
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
if history is not MISSING and whole_history is not MISSING:
    plot_loss({"assistant-only": history, "whole sequence": whole_history}, title="training loss (each on its own labels)",
              ax=axes[0])
    steps = [0] + [e["step"] for e in history.evals]
    plot_curves(steps, {name: [loss_before] + [e["assistant_loss"] for e in h.evals]
                        for name, h in [("assistant-only", history), ("whole sequence", whole_history)]},
                xlabel="optimizer step", ylabel="loss", title="held-out loss on assistant tokens", ax=axes[1])
if after is not MISSING and whole_after is not MISSING:
    plot_bars({"pre-trained": before["adherence"], "whole seq.": whole_after["adherence"],
               "assistant-only": after["adherence"], "2-turn": recall_after["accuracy"],
               "2-turn, no turn 1": control_after["accuracy"]},
              title="held-out adherence; two-turn accuracy", ylabel="fraction", ax=axes[2])
    axes[2].tick_params(axis="x", labelsize=8)
    axes[2].set_ylim(0, 1.15)  # room for the labels above full bars
fig.tight_layout()
plt.show()
'''),
        code("expects", '''
expect("adherence, pre-trained", get(before, "adherence"), at_most=0.3)
expect(f"adherence after assistant-only tuning (target {TARGET:.0%})", get(after, "adherence"), at_least=TARGET)
expect("accuracy gain from tuning", MISSING if after is MISSING else after["accuracy"] - before["accuracy"],
       at_least=0.2)
expect("held-out assistant loss, whole sequence minus assistant-only", MISSING if whole_history is MISSING
       else final_loss(whole_history) - final_loss(history), at_least=0.03)
expect("two-turn accuracy, tuned", get(recall_after, "accuracy"), at_least=0.8)
expect("two-turn accuracy gain over removing turn 1", MISSING if recall_after is MISSING
       else recall_after["accuracy"] - control_after["accuracy"], at_least=0.7)
'''),
    ]


def main() -> int:
    return write_notebooks({ROOT / "solutions" / f"{NAME}.ipynb": lab_cells()})


if __name__ == "__main__":
    sys.exit(main())
