"""Writes lectures/01_finetuning_basics.ipynb and solutions/01_finetuning_basics.ipynb (without outputs).

Cell ids are fixed here so that re-running the script, executing the notebooks and `anlp-ft assign` keep diffs
small. Run from the repository root: `python tools/build_01.py`, then execute both notebooks in place and run
`anlp-ft assign` to regenerate labs/01_finetuning_basics.ipynb.
"""
from __future__ import annotations

import sys

from nbbuild import BADGE, COLAB, ROOT, SETUP, code, exercise, hidden, md, write_notebooks

NAME = "01_finetuning_basics"


# --------------------------------------------------------------------------------------------------------------
# Shared pieces
# --------------------------------------------------------------------------------------------------------------
GENERAL_PROMPTS = '''
# A fixed set of general prompts, far from arithmetic: how far has fine-tuning moved the model on them?
GENERAL_QUESTIONS = ["What is the capital of France?", "Why is the sky blue?", "Name three fruits.",
                     "Who wrote Romeo and Juliet?", "How do I boil an egg?", "What is photosynthesis?",
                     "Translate 'good morning' into French.", "Give me a synonym for happy."]
GENERAL_PROMPTS = [plain_prompt(q) for q in GENERAL_QUESTIONS] + [
    "The weather today is", "Once upon a time, in a small village,", "The best way to learn a language is",
    "Dear Sir or Madam, I am writing to"]
'''


def paraphrase_code() -> str:
    return '''
def paraphrase(question: str) -> str:
    """The same problem, asked in a format the fine-tuning never showed: "What is 23 + 45?" -> "Add 23 and 45."."""
    a, b = re.findall(r"\\d+", question)
    return f"Add {a} and {b}."
'''


# --------------------------------------------------------------------------------------------------------------
# The lab (solutions/, source of truth for labs/)
# --------------------------------------------------------------------------------------------------------------
def lab_cells():
    url = COLAB.format(folder="labs", name=NAME)
    cells = [
        md("title", f"""
# Lab 01: Fine-tuning basics

{BADGE.format(url=url)}

Fine-tuning starts from a pre-trained model and trains it on pairs $D = \\{{(x, y)\\}}$ with the cross-entropy of
the response $y$ given the prompt $x$:

$$\\mathcal{{L}}(\\theta) = -\\sum_{{(x, y) \\in D}} \\sum_{{t=1}}^{{|y|}} \\log p_\\theta(y_t \\mid x, y_{{<t}})$$

**Learning goals.** After this lab you can

1. turn a (prompt, response) pair into `input_ids` and `labels` with the prompt masked, and compute the loss by hand;
2. write the training loop: zero_grad, forward, backward, step, schedule;
3. fine-tune SmolLM2 on step-by-step arithmetic and measure held-out accuracy before and after;
4. measure data efficiency: a pre-trained model against random weights of the same configuration;
5. measure "narrowing": how far the model moved from the pre-trained one, and what it lost.

| Exercise | What | Points |
|---|---|---|
| ex1 | `build_example`: input_ids and labels, prompt masked | 2 |
| ex2 | `response_cross_entropy`: the loss by hand | 2 |
| ex3 | `train_loop`: the training loop | 3 |
| ex4 | `finetune`: fine-tune on step-by-step arithmetic | 3 |
| ex5 | `random_init`: same configuration, random weights | 1 |
| ex6 | `data_efficiency`: the held-out loss after training on n examples | 3 |
| ex7 | `token_kl`: KL(fine-tuned ‖ pre-trained) by hand | 2 |

Write your code where it says `# YOUR CODE HERE`; the `check(...)` cell after each exercise tells you what is wrong.
Run the notebook top to bottom: a blank exercise is reported and skipped, not an error.
"""),
        code("colab-setup", SETUP),
        code("parameters", '''
PROFILE = None    # "quick" (CPU, a few minutes) or "full" (a Colab T4); None: from $ANLP_FT_PROFILE or the device
SEED = 0
MODEL = None      # None: SmolLM2-135M (offline: SmolLM2-135M-Instruct)
STEPS = None      # optimizer steps of the arithmetic fine-tuning
BATCH = None      # examples per step
LR = None         # LoRA learning rate
N_TEST = None     # held-out problems
DE_SIZES = None   # data efficiency: training-set sizes
DE_LAYERS = None  # data efficiency: layers kept in both models (0: all of them)
DE_EPOCHS = None  # data efficiency: passes over each training set
''', tags=["parameters"]),
        code("resolve", '''
import copy
import math
import re

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from tqdm.auto import tqdm

from anlp_ft.assignments import MISSING, Checker, attempt
from anlp_ft.data.arithmetic import is_correct, train_test_problems
from anlp_ft.evaluate import accuracy, generate, kl_divergence, perplexity
from anlp_ft.formatting import IGNORE_INDEX, encode_example, pad_batch, plain_prompt
from anlp_ft.models import load_model, load_tokenizer, student_from_teacher
from anlp_ft.plots import plot_curves, plot_loss
from anlp_ft.results import expect, record_outcomes
from anlp_ft.runtime import by_profile, pick_device, resolve_profile, seed_everything
from anlp_ft.train import TrainConfig, fit

PROFILE = resolve_profile(PROFILE)
STEPS = STEPS or by_profile(PROFILE, quick=32, full=120)
BATCH = BATCH or by_profile(PROFILE, quick=16, full=16)
LR = LR or by_profile(PROFILE, quick=2e-3, full=1e-3)
N_TEST = N_TEST or by_profile(PROFILE, quick=64, full=256)
DE_SIZES = DE_SIZES or by_profile(PROFILE, quick=[8, 16, 32, 64], full=[16, 64, 256, 1024])
DE_LAYERS = DE_LAYERS if DE_LAYERS is not None else by_profile(PROFILE, quick=6, full=0)
DE_EPOCHS = DE_EPOCHS or by_profile(PROFILE, quick=2, full=3)
DE_BATCH, DE_LR = 8, 5e-4
TARGET = 0.9  # held-out accuracy after fine-tuning (section 4), in both profiles
FLOOR = 0.85  # what is asserted: the target less a margin for run-to-run noise (1 of 64 problems = 1.6 points)
MAX_NEW_TOKENS = 48  # the longest step-by-step solution of a 2-digit sum is 44 tokens (eos included)
DEVICE = pick_device()
seed_everything(SEED)
print(f"profile {PROFILE} on {DEVICE}: fine-tuning {STEPS} steps x {BATCH}, lr {LR}, {N_TEST} held-out problems; "
      f"data efficiency at {DE_SIZES} examples x {DE_EPOCHS} epochs, {DE_LAYERS or 'all'} layers; "
      f"accuracy target {TARGET:.0%} (asserted: {FLOOR:.0%})")
'''),
        code("load", '''
tokenizer = load_tokenizer(MODEL)
base = load_model(MODEL, device=DEVICE)  # the pre-trained model; every experiment below trains a copy of it
base.eval()
check = Checker("01")
'''),
        # ---------------------------------------------------------------------------------------------- ex1
        md("s1", """
## 1. From a pair (x, y) to input_ids and labels

The model reads the prompt and the response as one sequence. The loss must count only the response: the labels
copy `input_ids` but hold `-100` (`IGNORE_INDEX`, which `cross_entropy` skips) on the prompt's positions. An
end-of-sequence token closes the response, so the model learns where to stop.

**Exercise 1 (2 points).** Write `build_example(tokenizer, prompt, response)`. Tokenize the prompt and the response
*separately* with `add_special_tokens=False` (so training sees the same token boundary as generation), append
`tokenizer.eos_token_id` to the response, and return `{"input_ids": prompt + response, "labels": [-100] * len(prompt) + response}`.
Do not shift the labels: the model does that.
"""),
        exercise("ex1", '''
def build_example(tokenizer, prompt: str, response: str) -> dict:
    """input_ids = prompt + response + eos; labels = -100 on the prompt, then the response's tokens and eos."""
    # BEGIN SOLUTION
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE_INDEX] * len(prompt_ids) + response_ids}
    # END SOLUTION
''', "ex1", 2),
        code("ex1-check", '''
check("ex1", build_example, tokenizer)
'''),
        code("ex1-show", '''
# NBVAL_CHECK_OUTPUT
train_problems, test_problems = train_test_problems(STEPS * BATCH, N_TEST, seed=SEED)
problem = train_problems[0]
print(problem)
example = attempt("ex1", build_example, tokenizer, plain_prompt(problem["question"]), " " + problem["solution"])
if example is not MISSING:
    print(f"{'token':>14} {'input_id':>8} {'label':>6}")
    for token_id, label in zip(example["input_ids"], example["labels"]):
        print(f"{tokenizer.decode([token_id])!r:>14} {token_id:>8} {label:>6}")
'''),
        hidden("ex1-hidden", '''
from anlp_ft.assignments.public import lab01
lab01.ex1(build_example, tokenizer, plain_prompt("What is 7 + 5?"), " 12")
lab01.ex1(build_example, tokenizer, "Summarize: the cat sat on the mat.", " A cat sat.")
''', "ex1"),
        # ---------------------------------------------------------------------------------------------- ex2
        md("s2", """
## 2. The loss by hand

The logits at position $t$ are the model's distribution over the token at position $t+1$. So the loss compares
`logits[:, :-1]` with `labels[:, 1:]`, and averages $-\\log p(\\text{label})$ over the positions whose label is
not `-100`.

**Exercise 2 (2 points).** Write `response_cross_entropy(logits, labels)` by hand: `log_softmax` over the
vocabulary, pick the label's log-probability at each shifted position (`gather`), mask, average. Do not call
`F.cross_entropy`. The cell after it checks your function on random tensors and then against the model's own loss.
"""),
        exercise("ex2", '''
def response_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of -log p(label) over the positions whose label is not -100; logits (B, T, V), labels (B, T)."""
    # BEGIN SOLUTION
    logits, labels = logits[:, :-1].float(), labels[:, 1:]  # position t predicts token t + 1
    logp = logits.log_softmax(dim=-1)
    mask = labels != IGNORE_INDEX
    picked = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # log p(label); -100 -> any index
    return -(picked * mask).sum() / mask.sum()
    # END SOLUTION
''', "ex2", 2),
        code("ex2-check", '''
check("ex2", response_cross_entropy)
'''),
        code("ex2-model", '''
# The model's own loss (transformers shifts and masks the same way) against yours, on a padded batch of two examples.
pairs = [(plain_prompt(p["question"]), " " + p["solution"]) for p in train_problems[:2]]
batch = pad_batch([encode_example(tokenizer, x, y) for x, y in pairs], tokenizer.pad_token_id)
batch = {k: v.to(DEVICE) for k, v in batch.items()}
with torch.no_grad():
    out = base(**batch)
mine = attempt("ex2", response_cross_entropy, out.logits, batch["labels"])
print(f"model loss {out.loss.item():.4f}; by hand {mine if mine is MISSING else f'{mine.item():.4f}'}")
print(f"{int((batch['labels'] != IGNORE_INDEX).sum())} response tokens of {batch['labels'].numel()} positions count")
if mine is not MISSING:
    assert torch.allclose(mine, out.loss.float(), atol=1e-4), "the hand-made loss differs from the model's"
'''),
        hidden("ex2-hidden", '''
from anlp_ft.assignments.public import lab01
lab01.ex2(response_cross_entropy, seed=1)
lab01.ex2(response_cross_entropy, seed=2)
assert torch.allclose(response_cross_entropy(out.logits, batch["labels"]), out.loss.float(), atol=1e-4)
''', "ex2"),
        # ---------------------------------------------------------------------------------------------- ex3
        md("s3", """
## 3. The training loop

The lecture's loop, one optimizer step per batch:

```python
for batch in dataloader:
    optimizer.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    scheduler.step()
```

**Exercise 3 (3 points).** Write `train_loop(model, batches, optimizer, scheduler)` that does exactly this and returns
the loss of each step as a list of floats (`loss.item()`). The check runs it on a tiny model and compares the weights
with those of the reference loop. Then it runs for a few steps on SmolLM2 itself (all weights trained).
"""),
        exercise("ex3", '''
def train_loop(model, batches, optimizer, scheduler) -> list[float]:
    """One optimizer step per batch; returns the loss of each step."""
    model.train()
    losses = []
    # BEGIN SOLUTION
    for batch in batches:
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    # END SOLUTION
    return losses
''', "ex3", 3),
        code("ex3-check", '''
check("ex3", train_loop)
'''),
        code("ex3-run", '''
# A few steps of full fine-tuning with your loop: linear warmup then linear decay, AdamW.
demo_steps = 3
demo = copy.deepcopy(base)
data = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"]) for p in train_problems[:4 * demo_steps]]
batches = [{k: v.to(DEVICE) for k, v in pad_batch(data[i:i + 4], tokenizer.pad_token_id).items()}
           for i in range(0, len(data), 4)]
optimizer = torch.optim.AdamW(demo.parameters(), lr=5e-5)
scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 2) * (1 - s / demo_steps))
demo_losses = attempt("ex3", train_loop, demo, batches, optimizer, scheduler)
print("loss per step:", demo_losses if demo_losses is MISSING else [round(x, 3) for x in demo_losses])
del demo, optimizer, scheduler
'''),
        hidden("ex3-hidden", '''
from anlp_ft.assignments.public import lab01
lab01.ex3(train_loop, seed=1)
lab01.ex3(train_loop, seed=2)
''', "ex3"),
        # ---------------------------------------------------------------------------------------------- ex4
        md("s4", """
## 4. Fine-tuning SmolLM2 on step-by-step arithmetic

The data: 2-digit additions with step-by-step solutions, checked by a program. The held-out problems never appear
in training; a generation counts as right when its last number is the answer (`is_correct`).

**Exercise 4 (3 points).** Write `finetune(model, tokenizer, problems, config, eval_fn=None)`:
encode every problem as prompt `plain_prompt(p["question"])` and response `" " + p["solution"]`
(your `build_example` or `anlp_ft.formatting.encode_example`, which does the same), wrap the model with
`get_peft_model(model, LORA)`, train it with `fit(model, data, config, eval_fn=eval_fn, pad_token_id=tokenizer.pad_token_id)`
and return `(model, history)`.

`fit` is the course's loop: the one you wrote, on accelerate, with mixed precision on a GPU, gradient clipping and a
progress bar. LoRA (lecture 4) trains small added matrices instead of all 135M weights; here it is simply a fast
way to fine-tune. Target: held-out accuracy of 90% after (`TARGET`; the checks allow `FLOOR` = 85% for run-to-run
noise), from about 10% before. The quick
profile (32 steps x 16 examples, each seen once; under two minutes of training on a CPU) gets there; the full
profile trains 120 steps x 16 on a Colab T4.
"""),
        code("ex4-before", '''
prompts = [plain_prompt(p["question"]) for p in test_problems]
answers = [p["answer"] for p in test_problems]

def evaluate(model, prompts=prompts, answers=answers):
    return accuracy(model, tokenizer, prompts, answers, is_correct, max_new_tokens=MAX_NEW_TOKENS, batch_size=64)

before = evaluate(base)
print(f"held-out accuracy before fine-tuning: {before.accuracy:.1%} of {before.n}")
print(f"{prompts[0]!r} -> {before.outputs[0]!r}")
'''),
        code("general-prompts", GENERAL_PROMPTS + '''
LORA = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")

def kl_to_base(model):
    """Measured during training: KL(fine-tuned || pre-trained) on the general prompts (section 6)."""
    return {"kl": kl_divergence(model, base, tokenizer, GENERAL_PROMPTS)}
'''),
        exercise("ex4", '''
def finetune(model, tokenizer, problems, config, eval_fn=None):
    """LoRA fine-tuning on the problems' step-by-step solutions; returns (fine-tuned model, History)."""
    # BEGIN SOLUTION
    data = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"]) for p in problems]
    model = get_peft_model(model, LORA)
    history = fit(model, data, config, eval_fn=eval_fn, pad_token_id=tokenizer.pad_token_id)
    return model, history
    # END SOLUTION
''', "ex4", 3),
        code("ex4-run", '''
config = TrainConfig(steps=STEPS, batch_size=BATCH, lr=LR, warmup_steps=3, seed=SEED, eval_every=max(1, STEPS // 4))
tuned, history = attempt("ex4", finetune, copy.deepcopy(base), tokenizer, train_problems, config, kl_to_base,
                         default=(MISSING, MISSING))
after = attempt("ex4", evaluate, tuned)
if after is not MISSING:
    print(f"trained {STEPS} steps x {BATCH} examples at {history.tokens_per_s:.0f} tokens/s")
    print(f"held-out accuracy: {before.accuracy:.1%} before -> {after.accuracy:.1%} after")
    print(f"{prompts[0]!r} -> {after.outputs[0]!r}")
    check("ex4", before.accuracy, after.accuracy, history, target=FLOOR)
'''),
        hidden("ex4-hidden", '''
assert history.final_loss < history.loss[0] / 2
assert after.accuracy >= FLOOR, after.accuracy
assert all(e["kl"] >= 0 for e in history.evals)
''', "ex4"),
        # ---------------------------------------------------------------------------------------------- ex5/6
        md("s5", """
## 5. Data efficiency: pre-trained against random weights

Howard and Ruder (ULMFiT) showed that starting from a pre-trained model reaches a given quality with far fewer
labelled examples. We measure it: train two models of the *same configuration*, one from pre-trained weights and
one from random weights, on the first $n$ examples for several $n$, and compare their held-out loss (the mean
cross-entropy over the held-out responses, cheap to measure: no generation). The responses here are the short
answers (`" 68"`).

In the quick profile both models keep only `DE_LAYERS` of SmolLM2's 30 layers (`student_from_teacher`), so that eight
training runs fit in a minute on a CPU; the full profile uses the whole model.

**Exercise 5 (1 point).** Write `random_init(model)`: a new model of the same class and configuration with fresh
random weights (`type(model)(model.config)`), on the same device.

**Exercise 6 (3 points).** Write the body of `data_efficiency(make_model, sizes)`: for each size `n`, call
`seed_everything(SEED)`, build a model with `make_model()`, train it with `fit` on `de_train[:n]` for
`max(1, DE_EPOCHS * n // DE_BATCH)` steps, batch size `DE_BATCH`, learning rate `DE_LR`, `seed=SEED`,
`progress=False`, and append its held-out loss `math.log(perplexity(model, de_test, pad_token_id=tokenizer.pad_token_id))`.
"""),
        exercise("ex5", '''
def random_init(model):
    """A model of the same class and config as `model`, with fresh random weights."""
    # BEGIN SOLUTION
    return type(model)(model.config).to(model.device)
    # END SOLUTION
''', "ex5", 1),
        code("ex5-check", '''
check("ex5", random_init)
'''),
        hidden("ex5-hidden", '''
from anlp_ft.assignments.public import lab01
lab01.ex5(random_init)
fresh = random_init(base)
assert fresh.config.num_hidden_layers == base.config.num_hidden_layers and fresh is not base
del fresh
''', "ex5"),
        exercise("ex6", '''
de_problems, de_held_out = train_test_problems(max(DE_SIZES), 32, seed=SEED + 100)
de_train = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["answer"]) for p in de_problems]
de_test = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["answer"]) for p in de_held_out]

def data_efficiency(make_model, sizes) -> list[float]:
    """Held-out loss of a model made by make_model() and trained on the first n examples, for each n in sizes."""
    losses = []
    for n in tqdm(sizes, desc="data sizes"):
        # BEGIN SOLUTION
        seed_everything(SEED)
        model = make_model()
        steps = max(1, DE_EPOCHS * n // DE_BATCH)
        fit(model, de_train[:n], TrainConfig(steps=steps, batch_size=DE_BATCH, lr=DE_LR, seed=SEED, progress=False),
            pad_token_id=tokenizer.pad_token_id)
        losses.append(math.log(perplexity(model, de_test, pad_token_id=tokenizer.pad_token_id)))
        del model
        # END SOLUTION
    return losses
''', "ex6", 3),
        code("ex6-run", '''
def pretrained_model():
    return student_from_teacher(base, DE_LAYERS) if DE_LAYERS else copy.deepcopy(base)

def random_model():
    return attempt("ex5", random_init, pretrained_model())

print(f"both models: {pretrained_model().config.num_hidden_layers} layers, same configuration")
de_pretrained = attempt("ex6", data_efficiency, pretrained_model, DE_SIZES)
de_random = attempt("ex6", data_efficiency, random_model, DE_SIZES) if random_model() is not MISSING else MISSING
if de_pretrained is not MISSING and de_random is not MISSING:
    print(f"{'examples':>8} {'pre-trained':>12} {'random init':>12}")
    for n, p, r in zip(DE_SIZES, de_pretrained, de_random):
        print(f"{n:>8} {p:>12.3f} {r:>12.3f}")
    check("ex6", DE_SIZES, de_pretrained, de_random)
'''),
        hidden("ex6-hidden", '''
assert len(de_pretrained) == len(de_random) == len(DE_SIZES)
assert all(p < r for p, r in zip(de_pretrained, de_random))
assert de_pretrained[-1] < de_pretrained[0]
''', "ex6"),
        # ---------------------------------------------------------------------------------------------- ex7
        md("s6", """
## 6. Narrowing: what fine-tuning costs

Fine-tuning moves the model away from the pre-trained one, also on inputs that have nothing to do with the task.
One measure is the KL divergence between the fine-tuned model $P$ and the pre-trained model $Q$, averaged over the
positions of a fixed set of general prompts:

$$\\mathrm{KL}(P \\,\\|\\, Q) = \\frac{1}{|\\text{positions}|}\\sum_{\\text{positions}} \\sum_{v} p(v) \\left(\\log p(v) - \\log q(v)\\right)$$

It is 0 before fine-tuning (the same weights) and grows as training proceeds (measured during `finetune` above).

**Exercise 7 (2 points).** Write `token_kl(logits_p, logits_q, mask)`: the formula above, with `mask` (B, T) marking the
positions that count (not padding).
"""),
        exercise("ex7", '''
def token_kl(logits_p: torch.Tensor, logits_q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked positions of KL(P || Q) between next-token distributions; logits (B, T, V), mask (B, T)."""
    # BEGIN SOLUTION
    logp, logq = logits_p.float().log_softmax(-1), logits_q.float().log_softmax(-1)
    kl = (logp.exp() * (logp - logq)).sum(-1)
    return kl[mask.bool()].mean()
    # END SOLUTION
''', "ex7", 2),
        code("ex7-check", '''
check("ex7", token_kl)
'''),
        code("ex7-run", '''
@torch.no_grad()
def general_kl(model_p, model_q):
    batch = pad_batch([{"input_ids": tokenizer(t, add_special_tokens=False)["input_ids"]} for t in GENERAL_PROMPTS],
                      tokenizer.pad_token_id)
    batch = {k: v.to(DEVICE) for k, v in batch.items()}
    return token_kl(model_p(**batch).logits, model_q(**batch).logits, batch["attention_mask"]).item()

kl_before = attempt("ex7", general_kl, base, base)
kl_after = attempt("ex7", general_kl, tuned, base)
print(f"KL(fine-tuned || pre-trained) on {len(GENERAL_PROMPTS)} general prompts: before {kl_before}, after {kl_after}")
if history is not MISSING:
    print("during fine-tuning:", ", ".join(f"step {e['step']}: {e['kl']:.4f}" for e in history.evals))
'''),
        hidden("ex7-hidden", '''
from anlp_ft.assignments.public import lab01
lab01.ex7(token_kl, seed=1)
assert abs(general_kl(base, base)) < 1e-6
assert abs(general_kl(tuned, base) - kl_divergence(tuned, base, tokenizer, GENERAL_PROMPTS)) < 1e-4
''', "ex7"),
        md("s6b", """
### The symptoms

* **A model trained with a format requires the format.** The same held-out problems, asked as "Add 23 and 45."
  instead of the training format `Question: What is 23 + 45?\\nAnswer:`.
* **Other behaviour changes.** What does the model now answer to a general question?
"""),
        code("paraphrase", paraphrase_code() + '''
n_para = 32
para_prompts = [paraphrase(p["question"]) for p in test_problems[:n_para]]
print(f"{prompts[0]!r}  ->  {para_prompts[0]!r}")
para_tuned = attempt("ex4", evaluate, tuned, para_prompts, answers[:n_para])
format_tuned = MISSING if after is MISSING else sum(after.correct[:n_para]) / n_para
if para_tuned is not MISSING:
    print(f"fine-tuned, same {n_para} problems: training format {format_tuned:.1%}, paraphrased {para_tuned.accuracy:.1%}"
          )
    print(f"{para_prompts[0]!r} -> {para_tuned.outputs[0]!r}")
'''),
        code("general-answers", '''
questions = [plain_prompt(q) for q in GENERAL_QUESTIONS[:3]]
answers_base = generate(base, tokenizer, questions, max_new_tokens=24)
answers_tuned = attempt("ex4", generate, tuned, tokenizer, questions, max_new_tokens=24)
for i, q in enumerate(questions):
    print(q.replace("\\n", " "))
    print(f"   pre-trained: {answers_base[i].strip()[:100]!r}")
    if answers_tuned is not MISSING:
        print(f"   fine-tuned:  {answers_tuned[i].strip()[:100]!r}")
'''),
        # ---------------------------------------------------------------------------------------------- results
        md("results-md", """
## Results

Every measured outcome, the curves, and the assertions (with margins) that the lab's claims hold.
"""),
        code("results", '''
def value(x, attribute=None):
    return MISSING if x is MISSING else (getattr(x, attribute) if attribute else x)

outcomes = {
    "held-out accuracy before": before.accuracy,
    "held-out accuracy after": value(after, "accuracy"),
    "training tokens/s": MISSING if history is MISSING else round(history.tokens_per_s),
    "final training loss": MISSING if history is MISSING else history.final_loss,
    "KL to pre-trained, before": kl_before,
    "KL to pre-trained, after": kl_after,
    "accuracy, training format (32)": format_tuned,
    "accuracy, paraphrased (32)": value(para_tuned, "accuracy"),
}
for i, n in enumerate(DE_SIZES):
    outcomes[f"held-out loss at {n} ex., pre-trained"] = MISSING if de_pretrained is MISSING else de_pretrained[i]
    outcomes[f"held-out loss at {n} ex., random init"] = MISSING if de_random is MISSING else de_random[i]
record_outcomes("01_finetuning_basics", outcomes)
'''),
        code("plots", '''
fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
if history is not MISSING:
    plot_loss(history, title="fine-tuning on step-by-step arithmetic", ax=axes[0])
    steps = [0] + [e["step"] for e in history.evals]
    plot_curves(steps, {"KL(fine-tuned || pre-trained)": [0.0] + [e["kl"] for e in history.evals]},
                xlabel="optimizer step", ylabel="KL (nats per token)", title="narrowing on general prompts", ax=axes[2])
if de_pretrained is not MISSING and de_random is not MISSING:
    plot_curves(DE_SIZES, {"pre-trained": de_pretrained, "random init": de_random}, xlabel="training examples",
                ylabel="held-out loss", title="data efficiency", logx=True, ax=axes[1])
fig.tight_layout()
plt.show()
'''),
        code("expects", '''
expect("held-out accuracy before fine-tuning", before.accuracy, at_most=0.15)
expect(f"held-out accuracy after (target {TARGET:.0%})", value(after, "accuracy"), at_least=FLOOR)
expect("pre-trained minus random-init held-out loss, worst size", MISSING if de_random is MISSING or de_pretrained is MISSING
       else max(p - r for p, r in zip(de_pretrained, de_random)), at_most=-0.5)
expect("KL to pre-trained after fine-tuning", kl_after, at_least=0.01)
expect("KL grows during fine-tuning (last / first measurement)",
       MISSING if history is MISSING else history.evals[-1]["kl"] / history.evals[0]["kl"], at_least=1.0)
expect("accuracy lost by paraphrasing", MISSING if para_tuned is MISSING else format_tuned - para_tuned.accuracy,
       at_least=0.1)
'''),
    ]
    return cells


# --------------------------------------------------------------------------------------------------------------
# The lecture
# --------------------------------------------------------------------------------------------------------------
def lecture_cells():
    url = COLAB.format(folder="lectures", name=NAME)
    return [
        md("title", f"""
# Lecture 01: Fine-tuning basics

{BADGE.format(url=url)}

The lecture's first part, runnable. Standard language-model fine-tuning:

* **initialise** from a pre-trained model $\\theta_0$;
* **train** on a dataset of pairs $D = \\{{(x, y)\\}}$ with the cross-entropy of the response tokens given the prompt:

$$\\mathcal{{L}}(\\theta) = -\\sum_{{(x, y) \\in D}} \\sum_{{t=1}}^{{|y|}} \\log p_\\theta(y_t \\mid x, y_{{<t}})$$

In this notebook: the lecture's three example datasets; how a pair becomes `input_ids` and `labels` (the prompt
masked) and the loss by hand; the plain PyTorch loop and the accelerate loop, both running; and the effects of
fine-tuning, measured: data efficiency, "narrowing", a model that requires its training format and changes
its behaviour elsewhere.
"""),
        code("colab-setup", SETUP),
        code("parameters", '''
PROFILE = None     # "quick" (CPU, a few minutes) or "full" (a Colab T4); None: from $ANLP_FT_PROFILE or the device
SEED = 0
MODEL = None       # None: SmolLM2-135M (offline: SmolLM2-135M-Instruct)
LOOP_STEPS = None  # steps of each of the two hand-written loops
FT_STEPS = None    # optimizer steps of the fine-tuning whose effects we measure
FT_BATCH = None    # examples per step
N_TEST = None      # held-out problems
DE_SIZES = None    # data efficiency: training-set sizes
DE_LAYERS = None   # data efficiency: layers kept in both models (0: all of them)
''', tags=["parameters"]),
        code("resolve", '''
import copy
import math
import re

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from anlp_ft.data.arithmetic import is_correct, train_test_problems
from anlp_ft.data.flan import task_examples, verify
from anlp_ft.data.hub import load_lecture_dataset
from anlp_ft.evaluate import accuracy, generate, kl_divergence, perplexity
from anlp_ft.formatting import IGNORE_INDEX, Collator, encode_example, pad_batch, plain_prompt
from anlp_ft.models import load_model, load_tokenizer, student_from_teacher
from anlp_ft.plots import plot_curves, plot_loss
from anlp_ft.results import expect, record_outcomes
from anlp_ft.runtime import by_profile, compute_dtype, mixed_precision, pick_device, resolve_profile, seed_everything
from anlp_ft.train import TrainConfig, fit

PROFILE = resolve_profile(PROFILE)
LOOP_STEPS = LOOP_STEPS or by_profile(PROFILE, quick=4, full=20)
FT_STEPS = FT_STEPS or by_profile(PROFILE, quick=24, full=120)
FT_BATCH = FT_BATCH or by_profile(PROFILE, quick=16, full=16)
N_TEST = N_TEST or by_profile(PROFILE, quick=64, full=256)
DE_SIZES = DE_SIZES or by_profile(PROFILE, quick=[8, 16, 32, 64], full=[16, 64, 256, 1024])
DE_LAYERS = DE_LAYERS if DE_LAYERS is not None else by_profile(PROFILE, quick=6, full=0)
DE_EPOCHS, DE_BATCH, DE_LR = 3, 8, 5e-4
DEVICE = pick_device()
seed_everything(SEED)
print(f"profile {PROFILE} on {DEVICE}: loops {LOOP_STEPS} steps; fine-tuning {FT_STEPS} steps x {FT_BATCH}; "
      f"{N_TEST} held-out problems; data efficiency at {DE_SIZES} examples, {DE_LAYERS or 'all'} layers")
'''),
        code("load", '''
tokenizer = load_tokenizer(MODEL)
base = load_model(MODEL, device=DEVICE)  # theta_0: the pre-trained model. Each experiment trains a copy.
base.eval()
'''),
        md("datasets-md", """
## 1. Three fine-tuning datasets

Fine-tuning data is pairs (x, y). The lecture's examples: **article → abstract** (scientific papers),
**problem → solution** (competition mathematics), **prompt → response** (OpenOrca: a system prompt and a
question, answered). With the hub reachable these are real rows; offline, generated rows in the same schema
stand in (the notice says which).
"""),
        code("datasets", '''
# NBVAL_CHECK_OUTPUT
def show(row: dict, width: int = 110):
    for key, value in row.items():
        text = str(value).replace("\\n", " ")
        print(f"  {key:>14}: {text[:width]}{'...' if len(text) > width else ''}")

for name, x_key, y_key in [("scientific_papers", "article", "abstract"), ("competition_math", "problem", "solution"),
                           ("openorca", "question", "response")]:
    rows = load_lecture_dataset(name, 2, seed=SEED)
    print(f"x = {x_key}, y = {y_key}")
    show(rows[0])
    print()
'''),
        md("encode-md", """
## 2. From (x, y) to tokens: mask the prompt

Our running task: 2-digit addition with step-by-step solutions, checked by a program. Prompt and response are
tokenized separately and concatenated; the labels copy the response and hold `-100` on the prompt, which
`cross_entropy` ignores. The end-of-sequence token closes the response.
"""),
        code("encode", '''
# NBVAL_CHECK_OUTPUT
train_problems, test_problems = train_test_problems(FT_STEPS * FT_BATCH, N_TEST, seed=SEED)
problem = train_problems[0]
x, y = plain_prompt(problem["question"]), " " + problem["solution"]
prompt_ids = tokenizer(x, add_special_tokens=False)["input_ids"]
response_ids = tokenizer(y, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
input_ids = prompt_ids + response_ids
labels = [IGNORE_INDEX] * len(prompt_ids) + response_ids
assert {"input_ids": input_ids, "labels": labels} == encode_example(tokenizer, x, y)  # the library does the same
print(f"x = {x!r}\\ny = {y!r}")
print(f"{len(prompt_ids)} prompt tokens (masked), {len(response_ids)} response tokens (trained on)")
for token_id, label in list(zip(input_ids, labels))[len(prompt_ids) - 3: len(prompt_ids) + 6]:
    print(f"{tokenizer.decode([token_id])!r:>12} {token_id:>6} {label:>6}")
'''),
        md("ce-md", """
The loss by hand: the logits at position $t$ predict token $t+1$, so compare `logits[:, :-1]` with `labels[:, 1:]`
and average $-\\log p$ over the positions that are not `-100`. It equals the model's own loss.
"""),
        code("ce", '''
batch = pad_batch([encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"]) for p in train_problems[:2]],
                  tokenizer.pad_token_id)
batch = {k: v.to(DEVICE) for k, v in batch.items()}
with torch.no_grad():
    out = base(**batch)
logp = out.logits[:, :-1].float().log_softmax(-1)
target = batch["labels"][:, 1:]
mask = target != IGNORE_INDEX
nll = -logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
by_hand = (nll * mask).sum() / mask.sum()
print(f"model loss {out.loss.item():.4f}, by hand {by_hand.item():.4f} over {int(mask.sum())} response tokens")
assert torch.allclose(by_hand, out.loss.float(), atol=1e-4)
'''),
        md("loop-md", """
## 3. The training loop

### The plain PyTorch loop (the lecture's code example)

All weights are trained (full fine-tuning), with AdamW and a linear warmup-then-decay schedule. Here on short
answers (`" 68"`) for a few steps, to see it run.
"""),
        code("loop-data", '''
short_data = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["answer"]) for p in train_problems]
collate = Collator(tokenizer.pad_token_id)
'''),
        code("plain-loop", '''
model = copy.deepcopy(base)
model.train()
dataloader = DataLoader(short_data, batch_size=8, shuffle=True, collate_fn=collate,
                        generator=torch.Generator().manual_seed(SEED))
optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=1, num_training_steps=LOOP_STEPS)

plain_losses = []
for step, batch in zip(tqdm(range(LOOP_STEPS), desc="plain loop"), dataloader):
    batch = {k: v.to(DEVICE) for k, v in batch.items()}
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    plain_losses.append(loss.item())
print("loss per step:", [round(x, 3) for x in plain_losses])
del model, optimizer, scheduler
'''),
        md("accel-md", """
### The accelerate loop (the shape of transformers' `run_clm_no_trainer.py`)

`accelerator.prepare` places model, optimizer, data and schedule on the device(s) (one GPU, several, or the CPU) and
turns on mixed precision (fp16 with a gradient scaler on a T4); `accelerator.accumulate` adds gradient
accumulation; `accelerator.backward` replaces `loss.backward()`. The course's `fit` is this loop.
"""),
        code("accel-loop", '''
model = copy.deepcopy(base)
accelerator = Accelerator(mixed_precision=mixed_precision(compute_dtype(DEVICE)), gradient_accumulation_steps=2)
optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
train_dataloader = DataLoader(short_data, batch_size=4, shuffle=True, collate_fn=collate,
                              generator=torch.Generator().manual_seed(SEED))
lr_scheduler = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=1, num_training_steps=LOOP_STEPS)
model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(model, optimizer, train_dataloader, lr_scheduler)

model.train()
accel_losses = []
for step, batch in zip(tqdm(range(2 * LOOP_STEPS), desc="accelerate loop"), train_dataloader):
    with accelerator.accumulate(model):
        outputs = model(**batch)
        loss = outputs.loss
        accelerator.backward(loss)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad()
    accel_losses.append(loss.item())
print(f"{len(accel_losses)} micro-batches of 4 = {len(accel_losses) // 2} optimizer steps of 8; loss per micro-batch:",
      [round(x, 3) for x in accel_losses])
del model, optimizer, lr_scheduler, accelerator
'''),
        md("effects-md", """
## 4. The effects of fine-tuning

### Data efficiency (Howard and Ruder, ULMFiT)

Starting from a pre-trained model reaches a given quality with far fewer labelled examples. Two models of the
*same configuration*, one with pre-trained weights and one with random weights, trained the same way on the first
$n$ examples; held-out loss (mean cross-entropy over held-out responses) for each $n$. In the quick profile both
keep `DE_LAYERS` of the 30 layers so that eight runs fit in a minute on a CPU; the full profile uses all of them.
"""),
        code("data-efficiency", '''
de_problems, de_held_out = train_test_problems(max(DE_SIZES), 32, seed=SEED + 100)
de_train = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["answer"]) for p in de_problems]
de_test = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["answer"]) for p in de_held_out]

def pretrained_model():
    return student_from_teacher(base, DE_LAYERS) if DE_LAYERS else copy.deepcopy(base)

def random_model():
    like = pretrained_model()
    return type(like)(like.config).to(DEVICE)  # same configuration, fresh random weights

def held_out_loss_after_training(make_model, n):
    seed_everything(SEED)
    model = make_model()
    config = TrainConfig(steps=max(1, DE_EPOCHS * n // DE_BATCH), batch_size=DE_BATCH, lr=DE_LR, seed=SEED, progress=False)
    fit(model, de_train[:n], config, pad_token_id=tokenizer.pad_token_id)
    return math.log(perplexity(model, de_test, pad_token_id=tokenizer.pad_token_id))

de = {"pre-trained": [], "random init": []}
for n in tqdm(DE_SIZES, desc="data sizes"):
    de["pre-trained"].append(held_out_loss_after_training(pretrained_model, n))
    de["random init"].append(held_out_loss_after_training(random_model, n))
print(f"{'examples':>8} {'pre-trained':>12} {'random init':>12}")
for n, p, r in zip(DE_SIZES, de["pre-trained"], de["random init"]):
    print(f"{n:>8} {p:>12.3f} {r:>12.3f}")
'''),
        md("narrow-md", """
### Narrowing

We fine-tune on short answers (`" 68"`) and, while it trains, measure how far the model moves from the pre-trained
one on a fixed set of *general* prompts: the KL divergence between their next-token distributions,
$\\mathrm{KL}(P_{\\text{fine-tuned}} \\,\\|\\, Q_{\\text{pre-trained}})$, per token. It is 0 at the start and grows
as fine-tuning proceeds. (LoRA, from lecture 4, is used here as a fast way to fine-tune.)
"""),
        code("narrow-setup", GENERAL_PROMPTS + '''
prompts = [plain_prompt(p["question"]) for p in test_problems]
answers = [p["answer"] for p in test_problems]

def arithmetic_accuracy(model, prompts=prompts, answers=answers):
    return accuracy(model, tokenizer, prompts, answers, is_correct, max_new_tokens=10, batch_size=64)

# Other tasks, asked in the same plain format: do they survive fine-tuning on arithmetic?
other_tasks = [ex for family in ("uppercase", "last_word", "comparison") for ex in task_examples(family, 16, seed=SEED)]
other_prompts = [plain_prompt(ex["prompt"]) for ex in other_tasks]

def other_task_accuracy(model):
    outputs = generate(model, tokenizer, other_prompts, max_new_tokens=12, batch_size=64)
    return sum(verify(o, ex["answer"], strict=False) for o, ex in zip(outputs, other_tasks)) / len(other_tasks)

before = arithmetic_accuracy(base)
other_before = other_task_accuracy(base)
print(f"pre-trained: arithmetic {before.accuracy:.1%}, other tasks {other_before:.1%}")
'''),
        code("narrow-train", '''
model = get_peft_model(copy.deepcopy(base), LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                        target_modules="all-linear", task_type="CAUSAL_LM"))
config = TrainConfig(steps=FT_STEPS, batch_size=FT_BATCH, lr=1e-3, warmup_steps=2, seed=SEED,
                     eval_every=max(1, FT_STEPS // 4))
history = fit(model, short_data, config, pad_token_id=tokenizer.pad_token_id,
              eval_fn=lambda m: {"kl": kl_divergence(m, base, tokenizer, GENERAL_PROMPTS)})
tuned = model
after = arithmetic_accuracy(tuned)
print(f"{FT_STEPS} steps x {FT_BATCH} at {history.tokens_per_s:.0f} tokens/s; held-out arithmetic accuracy "
      f"{before.accuracy:.1%} -> {after.accuracy:.1%}")
print("KL(fine-tuned || pre-trained) on general prompts: step 0: 0 (same weights), " +
      ", ".join(f"step {e['step']}: {e['kl']:.4f}" for e in history.evals))
'''),
        md("symptoms-md", """
### The symptoms

* **A model trained with a format requires the format**: the same held-out problems, asked as "Add 23 and 45."
* **Other tasks may degrade**: the word and number tasks above, in the same plain format, before and after. (Measured here with LoRA and a few steps they held up; the clear changes are the format dependence, the KL on general prompts, and the short answers below.)
* **Behaviour elsewhere changes**: what the model answers to a general question.
"""),
        code("symptoms", paraphrase_code() + '''
para_prompts = [paraphrase(p["question"]) for p in test_problems]
para_before = arithmetic_accuracy(base, para_prompts)
para_after = arithmetic_accuracy(tuned, para_prompts)
other_after = other_task_accuracy(tuned)
print(f"arithmetic, training format:   {before.accuracy:6.1%} -> {after.accuracy:6.1%}")
print(f"arithmetic, paraphrased:       {para_before.accuracy:6.1%} -> {para_after.accuracy:6.1%}   e.g. {para_prompts[0]!r}")
print(f"other tasks (uppercase, last word, comparison): {other_before:6.1%} -> {other_after:6.1%}")
questions = [plain_prompt(q) for q in GENERAL_QUESTIONS[:3]]
for q, a, b in zip(questions, generate(base, tokenizer, questions, max_new_tokens=24),
                   generate(tuned, tokenizer, questions, max_new_tokens=24)):
    print(q.replace("\\n", " "))
    print(f"   pre-trained: {a.strip()[:100]!r}")
    print(f"   fine-tuned:  {b.strip()[:100]!r}")
'''),
        md("results-md", """
## Results

The measured outcomes, the curves, and assertions (with margins) that the effects hold.
"""),
        code("results", '''
kl_curve = [0.0] + [e["kl"] for e in history.evals]
outcomes = {
    "plain loop: first -> last loss": f"{plain_losses[0]:.3f} -> {plain_losses[-1]:.3f}",
    "accelerate loop: first -> last loss": f"{accel_losses[0]:.3f} -> {accel_losses[-1]:.3f}",
    "arithmetic accuracy before": before.accuracy,
    "arithmetic accuracy after": after.accuracy,
    "paraphrased accuracy before": para_before.accuracy,
    "paraphrased accuracy after": para_after.accuracy,
    "other tasks accuracy before": other_before,
    "other tasks accuracy after": other_after,
    "KL to pre-trained after": kl_curve[-1],
    "training tokens/s": round(history.tokens_per_s),
}
for i, n in enumerate(DE_SIZES):
    outcomes[f"held-out loss at {n} ex., pre-trained"] = de["pre-trained"][i]
    outcomes[f"held-out loss at {n} ex., random init"] = de["random init"][i]
record_outcomes("01_finetuning_basics_lecture", outcomes)

fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
plot_loss({"plain loop": type(history)(steps=list(range(len(plain_losses))), loss=plain_losses),
           "LoRA fine-tuning (fit)": history}, title="training loss", ax=axes[0])
plot_curves(DE_SIZES, de, xlabel="training examples", ylabel="held-out loss", title="data efficiency", logx=True,
            ax=axes[1])
plot_curves([0] + [e["step"] for e in history.evals], {"KL(fine-tuned || pre-trained)": kl_curve},
            xlabel="optimizer step", ylabel="KL (nats per token)", title="narrowing on general prompts", ax=axes[2])
fig.tight_layout()
plt.show()
'''),
        code("expects", '''
expect("pre-trained minus random-init held-out loss, worst size",
       max(p - r for p, r in zip(de["pre-trained"], de["random init"])), at_most=-0.5)
expect("arithmetic accuracy gain", after.accuracy - before.accuracy, at_least=0.3)
expect("KL to pre-trained grows (last / first measurement)", kl_curve[-1] / kl_curve[1], at_least=1.0)
expect("KL to pre-trained after fine-tuning", kl_curve[-1], at_least=0.01)
expect("accuracy lost by paraphrasing, fine-tuned model", after.accuracy - para_after.accuracy, at_least=0.2)
'''),
    ]


def main() -> int:
    return write_notebooks({ROOT / "solutions" / f"{NAME}.ipynb": lab_cells(), ROOT / "lectures" / f"{NAME}.ipynb": lecture_cells()})


if __name__ == "__main__":
    sys.exit(main())
