"""Writes lectures/02_instruction_and_chat_tuning.ipynb and solutions/02_instruction_tuning.ipynb (without outputs).

Cell ids are fixed here so that re-running the script, executing the notebooks and `anlp-ft assign` keep diffs
small. Run from the repository root: `python tools/build_02.py [lectures|solutions]`, then execute both notebooks
in place and run `anlp-ft assign` to regenerate labs/02_instruction_tuning.ipynb.
"""
from __future__ import annotations

import sys

from nbbuild import BADGE, COLAB, ROOT, SETUP, code, exercise, hidden, md, write_notebooks

LAB = "02_instruction_tuning"
LECTURE = "02_instruction_and_chat_tuning"


# --------------------------------------------------------------------------------------------------------------
# The lab (solutions/, source of truth for labs/)
# --------------------------------------------------------------------------------------------------------------
def lab_cells():
    url = COLAB.format(folder="labs", name=LAB)
    return [
        md("title", f"""
# Lab 02: Instruction tuning

{BADGE.format(url=url)}

Instruction tuning is fine-tuning on pairs (instruction + input, output) drawn from *many* tasks, each phrased
*many* ways. FLAN (Wei et al., 2022) showed that a model tuned this way follows instructions for tasks it never
saw in training. Self-Instruct (Wang et al., 2023) had the model write the instructions itself.

**Learning goals.** After this lab you can

1. write FLAN-style templates and build a shuffled multi-task mixture;
2. instruction-tune SmolLM2 on some task families and measure zero-shot accuracy on a held-out family, against
   the pre-trained model and against training on a single template;
3. measure how held-out accuracy changes with the number of training families;
4. generate new instructions with the model from seed tasks (Self-Instruct) and filter them with ROUGE-L.

| Exercise | What | Points |
|---|---|---|
| ex1 | `my_templates`: three or more templates for the held-out family | 2 |
| ex2 | `build_mixture`: a shuffled multi-task mixture, templates cycled | 2 |
| ex3 | `instruction_tune`: LoRA instruction tuning on a mixture | 3 |
| ex4 | `self_instruct_prompt`: the in-context prompt that asks for a new task | 2 |
| ex5 | `novel_instructions`: the ROUGE-L < 0.7 filter | 3 |

Write your code where it says `# YOUR CODE HERE`; the `check(...)` cell after each exercise tells you what is wrong.
Run the notebook top to bottom: a blank exercise is reported and skipped, not an error.
"""),
        code("colab-setup", SETUP),
        code("parameters", '''
PROFILE = None        # "quick" (CPU, a few minutes) or "full" (a Colab T4); None: from $ANLP_FT_PROFILE or the device
SEED = 0
MODEL = None          # None: SmolLM2-135M (offline: SmolLM2-135M-Instruct)
STEPS = None          # optimizer steps of each instruction-tuning run
BATCH = None          # examples per step
LR = None             # LoRA learning rate
N_TEST = None         # held-out examples
SWEEP = None          # numbers of training families for the family-count curve
N_SELF_INSTRUCT = None  # Self-Instruct: prompts sent to the model
''', tags=["parameters"]),
        code("resolve", '''
import copy
import random
import statistics

import matplotlib.pyplot as plt
import torch
from peft import LoraConfig, get_peft_model

from anlp_ft.assignments import MISSING, Checker, attempt
from anlp_ft.data.flan import FAMILIES, TaskFamily, task_examples, verify
from anlp_ft.evaluate import generate
from anlp_ft.formatting import encode_example, plain_prompt
from anlp_ft.models import load_model, load_tokenizer
from anlp_ft.plots import plot_bars, plot_curves
from anlp_ft.results import expect, record_outcomes
from anlp_ft.runtime import by_profile, pick_device, resolve_profile, seed_everything
from anlp_ft.self_instruct import SEED_INSTRUCTIONS, parse_instruction, rouge_l
from anlp_ft.train import TrainConfig, fit

PROFILE = resolve_profile(PROFILE)
STEPS = STEPS or by_profile(PROFILE, quick=16, full=80)
BATCH = BATCH or by_profile(PROFILE, quick=8, full=16)
LR = LR or by_profile(PROFILE, quick=2e-3, full=1e-3)
N_TEST = N_TEST or by_profile(PROFILE, quick=32, full=128)
SWEEP = SWEEP or by_profile(PROFILE, quick=[0, 1, 4], full=[0, 1, 2, 4, 6])  # 0: the pre-trained model
N_SELF_INSTRUCT = N_SELF_INSTRUCT or by_profile(PROFILE, quick=16, full=96)
HELD_OUT = "last_word"  # never trained on: the zero-shot test
FAMILY_ORDER = ["addition", "counting", "uppercase", "reversal", "sorting", "median"]  # the sweep adds them in order
TRAIN_FAMILIES = FAMILY_ORDER[:4]  # the main multi-task run
MAX_NEW_TOKENS = 8  # answers are one word or a short number
DEVICE = pick_device()
seed_everything(SEED)
print(f"profile {PROFILE} on {DEVICE}: {STEPS} steps x {BATCH} per run, lr {LR}, {N_TEST} held-out examples of "
      f"{HELD_OUT!r}; training families {TRAIN_FAMILIES}; sweep over {SWEEP} families; "
      f"{N_SELF_INSTRUCT} Self-Instruct prompts")
'''),
        code("load", '''
tokenizer = load_tokenizer(MODEL)
base = load_model(MODEL, device=DEVICE)  # the pre-trained model; every run below tunes a copy of it
base.eval()
check = Checker("02")
'''),
        # ---------------------------------------------------------------------------------------------- ex1
        md("s1", """
## 1. Task families and templates

FLAN turned existing datasets into instructions with about ten hand-written templates per task. Our task families
are small and checkable by a program; each has several templates with the same fields:
"""),
        code("families", '''
# NBVAL_CHECK_OUTPUT
for name, family in FAMILIES.items():
    print(f"{name}:")
    for template in family.templates:
        print(f"    {template}")
example = task_examples(HELD_OUT, 1, seed=SEED)[0]
print("\\none example:", example)
'''),
        md("s1-ex", f"""
We hold out the family `{"last_word"}`: no run below trains on it. Its library templates are used to test every
model. You also write your own templates for it: phrasings that nobody trained on, a second zero-shot test.

**Exercise 1 (2 points).** Return at least three templates for the `last_word` family. Each must use the field
`{{items}}` (a comma-separated list of words) and nothing else, and each must be phrased differently: the check
rejects two templates whose ROUGE-L is 0.7 or more (the Self-Instruct threshold, section 5), and a set made only of
the library's templates.
"""),
        exercise("ex1", '''
def my_templates() -> list[str]:
    """Three or more instruction templates for the last_word family, each using {items} once."""
    # BEGIN SOLUTION
    return ["Tell me which word ends this list: {items}",
            "{items}. Of these, which one is at the end?",
            "Look at the words {items} and give me only the final one."]
    # END SOLUTION
''', "ex1", 2),
        code("ex1-check", '''
check("ex1", my_templates, HELD_OUT)
'''),
        hidden("ex1-hidden", '''
from anlp_ft.assignments.public import lab02
lab02.ex1(my_templates(), "last_word")
assert len(set(my_templates())) == len(my_templates())
''', "ex1"),
        # ---------------------------------------------------------------------------------------------- ex2
        md("s2", """
## 2. A multi-task mixture

Instruction tuning trains on all the families at once: every batch mixes them, and each family appears in all of
its phrasings.

**Exercise 2 (2 points).** Write `build_mixture(families, n_per_family, seed, single_template=False)`. With
`rng = random.Random(seed)`, make `n_per_family` examples of each family (a `TaskFamily`) with
`family.example(rng, template)`, where the i-th example of a family uses template `i % len(family.templates)`,
or template 0 for all when `single_template` is true. Then shuffle the whole list with the same `rng` and return it.
"""),
        exercise("ex2", '''
def build_mixture(families: list[TaskFamily], n_per_family: int, seed: int, single_template: bool = False) -> list[dict]:
    """A shuffled multi-task mixture: n_per_family examples of each family, templates cycled (or only template 0)."""
    rng = random.Random(seed)
    # BEGIN SOLUTION
    mixture = []
    for family in families:
        for i in range(n_per_family):
            mixture.append(family.example(rng, 0 if single_template else i % len(family.templates)))
    rng.shuffle(mixture)
    return mixture
    # END SOLUTION
''', "ex2", 2),
        code("ex2-check", '''
check("ex2", build_mixture)
'''),
        code("ex2-show", '''
# NBVAL_CHECK_OUTPUT
def training_mixture(family_names, single_template=False):
    """About STEPS * BATCH examples in all (each seen once), split evenly over the families."""
    n = -(-STEPS * BATCH // len(family_names))
    return attempt("ex2", build_mixture, [FAMILIES[f] for f in family_names], n, SEED, single_template)

mixture = training_mixture(TRAIN_FAMILIES)
if mixture is not MISSING:
    print(f"{len(mixture)} examples:", {f: sum(e["family"] == f for e in mixture) for f in TRAIN_FAMILIES})
    for e in mixture[:6]:
        print(f"  [{e['family']}, template {e['template']}] {e['prompt']!r} -> {e['answer']!r}")
'''),
        hidden("ex2-hidden", '''
from anlp_ft.assignments.public import lab02
lab02.ex2(build_mixture)
assert len(mixture) >= STEPS * BATCH and {e["family"] for e in mixture} == set(TRAIN_FAMILIES)
''', "ex2"),
        # ---------------------------------------------------------------------------------------------- ex3
        md("s3", """
## 3. Zero-shot on a held-out family

The prompt is the course's plain format, `Question: <instruction>\\nAnswer:`, and the response is the bare answer.
Two verifiers grade a generation: **exact match** (the answer and nothing else: the format *and* the content) and
**lenient** (the answer appears somewhere in the output: the content alone). First, the pre-trained model:
"""),
        code("base-eval", '''
held_out = task_examples(HELD_OUT, N_TEST, seed=SEED + 1000)  # all three library templates

def zero_shot(model, examples) -> dict:
    """Greedy answers to plain prompts; exact-match and lenient accuracy."""
    outputs = generate(model, tokenizer, [plain_prompt(e["prompt"]) for e in examples],
                       max_new_tokens=MAX_NEW_TOKENS, batch_size=64)
    return {"exact": statistics.mean(verify(o, e["answer"]) for o, e in zip(outputs, examples)),
            "lenient": statistics.mean(verify(o, e["answer"], strict=False) for o, e in zip(outputs, examples)),
            "outputs": outputs}

pretrained = zero_shot(base, held_out)
print(f"pre-trained on {HELD_OUT!r}: exact match {pretrained['exact']:.1%}, lenient {pretrained['lenient']:.1%}")
for e, o in list(zip(held_out, pretrained["outputs"]))[:3]:
    print(f"  {e['prompt']!r} -> {o!r} (answer {e['answer']!r})")
'''),
        md("s3-ex", """
**Exercise 3 (3 points).** Write `instruction_tune(model, examples)`: encode each example with
`encode_example(tokenizer, plain_prompt(ex["prompt"]), " " + ex["answer"])`, wrap the model with
`get_peft_model(model, lora_config())`, train it with
`fit(model, data, TrainConfig(steps=STEPS, batch_size=BATCH, lr=LR, warmup_steps=2, seed=SEED), pad_token_id=tokenizer.pad_token_id)`
and return `(model, history)`.

`lora_config()` puts LoRA (lecture 4) on the upper half of the layers only: the backward pass then stops halfway
down, which makes each run cheap enough to repeat five times on a CPU.
"""),
        code("lora", '''
def lora_config() -> LoraConfig:
    n = base.config.num_hidden_layers
    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                      target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                      layers_to_transform=list(range(n // 2, n)))
'''),
        exercise("ex3", '''
def instruction_tune(model, examples: list[dict]):
    """LoRA instruction tuning on (instruction, answer) examples; returns (tuned model, History)."""
    # BEGIN SOLUTION
    data = [encode_example(tokenizer, plain_prompt(ex["prompt"]), " " + ex["answer"]) for ex in examples]
    model = get_peft_model(model, lora_config())
    config = TrainConfig(steps=STEPS, batch_size=BATCH, lr=LR, warmup_steps=2, seed=SEED)
    history = fit(model, data, config, pad_token_id=tokenizer.pad_token_id)
    return model, history
    # END SOLUTION
''', "ex3", 3),
        code("ex3-run", '''
def run(family_names, single_template=False):
    """Instruction-tune a fresh copy of the pre-trained model on the families; its zero-shot held-out results."""
    examples = training_mixture(family_names, single_template)
    model, history = attempt("ex3", instruction_tune, copy.deepcopy(base), examples, default=(MISSING, MISSING))
    if model is MISSING:
        return MISSING
    return {"model": model, "history": history, **zero_shot(model, held_out)}

multi = run(TRAIN_FAMILIES)
seen_examples = [e for f in TRAIN_FAMILIES for e in task_examples(f, N_TEST // 4, seed=SEED + 2000)]
seen = MISSING if multi is MISSING else zero_shot(multi["model"], seen_examples)
if multi is not MISSING:
    print(f"multi-task ({len(TRAIN_FAMILIES)} families, all templates): loss {multi['history'].loss[0]:.2f} -> "
          f"{multi['history'].final_loss:.2f}")
    print(f"  training families, new examples: exact match {seen['exact']:.1%}")
    print(f"  held-out {HELD_OUT!r}: exact match {pretrained['exact']:.1%} -> {multi['exact']:.1%}, "
          f"lenient {pretrained['lenient']:.1%} -> {multi['lenient']:.1%}")
    for e, o in list(zip(held_out, multi["outputs"]))[:3]:
        print(f"  {e['prompt']!r} -> {o!r}")
    check("ex3", multi["history"], multi["exact"] - pretrained["exact"], at_least=0.15)
'''),
        hidden("ex3-hidden", '''
assert multi["history"].final_loss < multi["history"].loss[0] / 2
assert multi["exact"] - pretrained["exact"] >= 0.15, (pretrained["exact"], multi["exact"])
''', "ex3"),
        code("own-templates", '''
# Your templates (exercise 1): phrasings of the held-out task that no run trained on.
def own_template_examples():
    family = TaskFamily(HELD_OUT, tuple(my_templates()), FAMILIES[HELD_OUT].sample)
    rng = random.Random(SEED + 3000)
    return [family.example(rng, i % len(family.templates)) for i in range(N_TEST)]

own_examples = attempt("ex1", own_template_examples)
own_pretrained = attempt("ex1", zero_shot, base, own_examples)
own_multi = MISSING if multi is MISSING else attempt("ex1", zero_shot, multi["model"], own_examples)
if own_multi is not MISSING:
    print(f"your templates: exact match {own_pretrained['exact']:.1%} (pre-trained) -> {own_multi['exact']:.1%} "
          f"(multi-task), lenient {own_pretrained['lenient']:.1%} -> {own_multi['lenient']:.1%}")
'''),
        # ---------------------------------------------------------------------------------------------- sweep
        md("s4", """
## 4. One template, or many? One family, or many?

Same families, same number of examples and steps, but every example phrased with template 0 only. Then the number
of training families, in the order of `FAMILY_ORDER`: 0 (the pre-trained model), 1 and 4 in the quick profile,
also 2 and 6 in the full one; every run sees the same number of examples and steps in all.
"""),
        code("single", '''
single = run(TRAIN_FAMILIES, single_template=True)
if single is not MISSING:
    print(f"held-out exact match: many templates {multi['exact']:.1%}, single template {single['exact']:.1%} "
          f"(lenient {multi['lenient']:.1%} vs {single['lenient']:.1%})")
    del single["model"]
'''),
        code("sweep", '''
sweep = {}
for k in SWEEP:
    result = pretrained if k == 0 else multi if k == len(TRAIN_FAMILIES) else run(FAMILY_ORDER[:k])
    sweep[k] = MISSING if result is MISSING else {"exact": result["exact"], "lenient": result["lenient"]}
    if result is not MISSING:
        print(f"{k} families {FAMILY_ORDER[:k]}: held-out exact match {result['exact']:.1%}, lenient {result['lenient']:.1%}")
        if "model" in result and result is not multi:
            del result["model"]
'''),
        md("s4-read", """
Reading the numbers (the table in the results section has those of *your* run). When we ran the quick profile,
the pre-trained model never answered with the bare word (exact match 0%: it starts a sentence, "The last word in
this list is"). Trained on addition alone it answered every held-out question with a number (0%); on addition and
counting, also 0% (with `SWEEP = [1, 2, 4]`); with uppercase and reversal added, which also read and write words,
31%. How much a held-out family gains depends on how related the training families are: FLAN held out whole
*clusters* of related tasks for this reason.

Many templates did **not** beat a single template here: the single-template run scored 66% against 31%. Several
of the multi-template errors are counts (" 4"): the counting family's templates ("How many words are in this
list?") look like the held-out ones ("What is the last word in this list?"). FLAN's gain from many templates was
measured with far larger models and mixtures; at this size, with 32 held-out examples, we print the difference and
do not assert it.
"""),
        # ---------------------------------------------------------------------------------------------- ex4/5
        md("s5", """
## 5. Self-Instruct: the model writes the instructions

Self-Instruct starts from a pool of seed tasks. It shows the model a few of them, numbered, and lets it write the
next one; a new task is kept only if it is not a near-copy of a task already in the pool (ROUGE-L < 0.7 with
every one). The kept tasks join the pool. (The paper then has the model write inputs and outputs for each task.)

**Exercise 4 (2 points).** Write `self_instruct_prompt(pool, k, rng)`: draw `rng.sample(pool, k)` and return

```
Come up with a series of tasks:
Task 1: <first drawn task>
...
Task k: <k-th drawn task>
Task k+1:
```
(lines joined with `"\\n"`, nothing after the final colon).
"""),
        exercise("ex4", '''
def self_instruct_prompt(pool: list[str], k: int, rng: random.Random) -> str:
    """k tasks drawn from the pool, numbered, and the number of the next task for the model to write."""
    # BEGIN SOLUTION
    shown = rng.sample(list(pool), k)
    lines = ["Come up with a series of tasks:"] + [f"Task {i + 1}: {task}" for i, task in enumerate(shown)]
    return "\\n".join(lines) + f"\\nTask {k + 1}:"
    # END SOLUTION
''', "ex4", 2),
        code("ex4-check", '''
check("ex4", self_instruct_prompt)
'''),
        code("ex4-generate", '''
K_SHOWN = 6
prompt_rng = random.Random(SEED)
si_prompts = attempt("ex4", lambda: [self_instruct_prompt(list(SEED_INSTRUCTIONS), K_SHOWN, prompt_rng)
                                     for _ in range(N_SELF_INSTRUCT)])
si_outputs, candidates = MISSING, MISSING
if si_prompts is not MISSING:
    print(si_prompts[0])
    si_outputs = generate(base, tokenizer, si_prompts, max_new_tokens=24, do_sample=True, temperature=0.8,
                          top_p=0.95, seed=SEED, batch_size=32)
    parsed = [parse_instruction(o) for o in si_outputs]
    candidates = [p for p in parsed if p is not None]
    print(f"\\n{len(si_outputs)} generations, {len(candidates)} usable as instructions; the first few:")
    for o, p in list(zip(si_outputs, parsed))[:5]:
        print(f"  {o.strip()[:70]!r:75} -> {p!r}")
'''),
        md("s5-ex", """
**Exercise 5 (3 points).** Write `novel_instructions(candidates, pool, threshold=0.7)`: go through the candidates in
order; compute the ROUGE-L F-measure of the candidate with every instruction in the (growing) pool with
`rouge_l(a, b)`; if the highest is at least `threshold`, reject it as `(candidate, highest score, the pool
instruction reaching it)`, otherwise keep it and add it to the pool. Do not modify the `pool` argument (copy it).
Return `(kept, rejected)`.
"""),
        exercise("ex5", '''
def novel_instructions(candidates: list[str], pool: list[str], threshold: float = 0.7):
    """Self-Instruct's filter: (kept, rejected), rejected as (candidate, score, nearest pool instruction)."""
    # BEGIN SOLUTION
    pool, kept, rejected = list(pool), [], []
    for c in candidates:
        score, nearest = max(((rouge_l(c, p), p) for p in pool), key=lambda pair: pair[0])
        if score >= threshold:
            rejected.append((c, score, nearest))
        else:
            kept.append(c)
            pool.append(c)
    return kept, rejected
    # END SOLUTION
''', "ex5", 3),
        code("ex5-check", '''
check("ex5", novel_instructions)
'''),
        code("ex5-run", '''
filtered = attempt("ex5", novel_instructions, candidates, list(SEED_INSTRUCTIONS))
kept, rejected = (MISSING, MISSING) if filtered is MISSING else filtered
if kept is not MISSING:
    print(f"kept {len(kept)}, rejected {len(rejected)} of {len(candidates)} candidates (pool of "
          f"{len(SEED_INSTRUCTIONS)} seed tasks)")
    print("kept, e.g.:")
    for c in kept[:5]:
        print(f"  {c!r}")
    print("rejected, e.g.:")
    for c, score, nearest in rejected[:5]:
        print(f"  {c!r}  (ROUGE-L {score:.2f} with {nearest!r})")
'''),
        hidden("ex4-hidden", '''
from anlp_ft.assignments.public import lab02
from anlp_ft.self_instruct import instruction_prompt
lab02.ex4(self_instruct_prompt)
assert self_instruct_prompt(list(SEED_INSTRUCTIONS), 3, random.Random(7)) == \\
    instruction_prompt(SEED_INSTRUCTIONS, 3, random.Random(7))
''', "ex4"),
        hidden("ex5-hidden", '''
from anlp_ft.assignments.public import lab02
from anlp_ft.self_instruct import rouge_filter
lab02.ex5(novel_instructions)
reference = rouge_filter(candidates, SEED_INSTRUCTIONS)
assert kept == reference.kept and [r[0] for r in rejected] == [r[0] for r in reference.rejected]
''', "ex5"),
        # ---------------------------------------------------------------------------------------------- results
        md("results-md", """
## Results

Every measured outcome, the plots, and the assertions (with margins) that the lab's claims hold.
"""),
        code("results", '''
def get(result, key):
    return MISSING if result is MISSING else result[key]

outcomes = {
    f"held-out ({HELD_OUT}) exact match, pre-trained": pretrained["exact"],
    f"held-out ({HELD_OUT}) lenient, pre-trained": pretrained["lenient"],
    f"held-out exact match, {len(TRAIN_FAMILIES)} families, all templates": get(multi, "exact"),
    f"held-out lenient, {len(TRAIN_FAMILIES)} families, all templates": get(multi, "lenient"),
    f"held-out exact match, {len(TRAIN_FAMILIES)} families, single template": get(single, "exact"),
    "training families, exact match": get(seen, "exact"),
    "your templates, exact match, pre-trained": get(own_pretrained, "exact"),
    "your templates, exact match, multi-task": get(own_multi, "exact"),
}
for k in SWEEP:
    outcomes[f"held-out exact match, {k} training families"] = get(sweep[k], "exact")
outcomes["Self-Instruct: generations"] = MISSING if si_outputs is MISSING else len(si_outputs)
outcomes["Self-Instruct: usable candidates"] = MISSING if candidates is MISSING else len(candidates)
outcomes["Self-Instruct: kept (ROUGE-L < 0.7)"] = MISSING if kept is MISSING else len(kept)
outcomes["Self-Instruct: rejected"] = MISSING if rejected is MISSING else len(rejected)
record_outcomes("02_instruction_tuning", outcomes)
'''),
        code("plots", '''
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
bars = {"pre-trained": pretrained["exact"]}
if multi is not MISSING:
    bars["many templates"] = multi["exact"]
if single is not MISSING:
    bars["single template"] = single["exact"]
plot_bars(bars, title=f"zero-shot exact match on held-out {HELD_OUT!r}", ax=axes[0])
if all(sweep[k] is not MISSING for k in SWEEP):
    plot_curves(SWEEP, {"exact match": [sweep[k]["exact"] for k in SWEEP],
                        "lenient": [sweep[k]["lenient"] for k in SWEEP]},
                xlabel="training families", ylabel=f"held-out accuracy ({HELD_OUT})",
                title="more training families", ax=axes[1])
    axes[1].set_xticks(SWEEP)
fig.tight_layout()
plt.show()
'''),
        code("expects", '''
expect("held-out exact match gain of multi-task tuning over pre-trained",
       MISSING if multi is MISSING else multi["exact"] - pretrained["exact"], at_least=0.15)
expect(f"held-out exact match, {max(SWEEP)} minus 1 training families",
       MISSING if any(sweep[k] is MISSING for k in SWEEP) else sweep[max(SWEEP)]["exact"] - sweep[1]["exact"],
       at_least=0.15)
expect("training families, exact match", get(seen, "exact"), at_least=0.1)
expect("Self-Instruct: kept instructions", MISSING if kept is MISSING else len(kept), at_least=1)
if multi is not MISSING and single is not MISSING:  # printed, not asserted: not significant at these sizes
    print(f"many minus single template, held-out exact match: {multi['exact'] - single['exact']:+.3f} "
          f"(not asserted)")
'''),
    ]


# --------------------------------------------------------------------------------------------------------------
# The lecture
# --------------------------------------------------------------------------------------------------------------
def lecture_cells():
    url = COLAB.format(folder="lectures", name=LECTURE)
    return [
        md("title", f"""
# Lecture 02: Instruction and chat tuning

{BADGE.format(url=url)}

**Instruction tuning** is fine-tuning on pairs (instruction + input, output): the same loss as lecture 1, on data
that teaches the model to do what it is asked. The variations are in where the data comes from:

| | instructions | inputs | outputs | example |
|---|---|---|---|---|
| templates over existing datasets | humans (templates) | datasets | datasets | FLAN, T0, Natural Instructions |
| written by people | humans | humans | humans | Dolly, OpenAssistant |
| generated by a model | model | model | model | Self-Instruct, Alpaca |
| answered by a stronger model | datasets / humans | datasets | model | OpenOrca, (distillation: lecture 3) |

and in the domain (general, code, mathematics, medicine...). **Chat tuning** is instruction tuning on
conversations: a system prompt, then alternating user and assistant turns, written as one token sequence.

In this notebook: FLAN-style templates and mixtures; Self-Instruct's prompt, a generation and the ROUGE-L filter;
a chat as one token sequence in the Llama 3 format and in SmolLM2's ChatML, with the loss on assistant turns only;
OpenOrca-style system prompts and lmsys-style multi-turn data.
"""),
        code("colab-setup", SETUP),
        code("parameters", '''
PROFILE = None  # "quick" (CPU) or "full" (a Colab T4); None: from $ANLP_FT_PROFILE or the device
SEED = 0
MODEL = None    # None: SmolLM2-135M (offline: SmolLM2-135M-Instruct)
N_SELF_INSTRUCT = None  # Self-Instruct prompts sent to the model
''', tags=["parameters"]),
        code("resolve", '''
import random

import matplotlib.pyplot as plt

from anlp_ft.data.flan import FAMILIES, task_examples, task_mixture
from anlp_ft.data.hub import load_lecture_dataset
from anlp_ft.evaluate import generate
from anlp_ft.formatting import IGNORE_INDEX, encode_chat, encode_example, plain_prompt
from anlp_ft.models import load_model, load_tokenizer
from anlp_ft.results import expect, record_outcomes
from anlp_ft.runtime import by_profile, pick_device, resolve_profile, seed_everything
from anlp_ft.self_instruct import SEED_INSTRUCTIONS, instruction_prompt, parse_instruction, rouge_filter, rouge_l

PROFILE = resolve_profile(PROFILE)
N_SELF_INSTRUCT = N_SELF_INSTRUCT or by_profile(PROFILE, quick=16, full=64)
DEVICE = pick_device()
seed_everything(SEED)
print(f"profile {PROFILE} on {DEVICE}: {N_SELF_INSTRUCT} Self-Instruct prompts")
'''),
        code("load", '''
tokenizer = load_tokenizer(MODEL)
model = load_model(MODEL, device=DEVICE)
model.eval()
'''),
        md("flan-md", """
## 1. FLAN: many tasks, several templates each

FLAN (Wei et al., 2022) rephrased 62 datasets with about ten templates each and fine-tuned on the mixture. The
claim: a model tuned on many tasks follows instructions for *unseen* tasks, zero-shot. To test it, whole task
clusters are held out of training. Our small version: checkable task families, each with several templates.
"""),
        code("flan-templates", '''
# NBVAL_CHECK_OUTPUT
for name in ("comparison", "last_word"):
    family = FAMILIES[name]
    print(f"{name}: {len(family.templates)} templates")
    for t in range(len(family.templates)):
        ex = task_examples(name, 1, seed=t, templates=[t])[0]
        print(f"    {family.templates[t]!r:62} e.g. {ex['prompt']!r} -> {ex['answer']!r}")
'''),
        md("flan-mix-md", """
Training data is a shuffled mixture of the families (all their templates), each example a (prompt, answer) pair
encoded as in lecture 1: the loss is on the answer only. The held-out family, here `last_word`, appears nowhere in it.
"""),
        code("flan-mixture", '''
# NBVAL_CHECK_OUTPUT
train_families = ["addition", "counting", "uppercase", "reversal"]
mixture = task_mixture(train_families, 3, seed=SEED)
for ex in mixture[:6]:
    print(f"[{ex['family']:>9}, template {ex['template']}] {plain_prompt(ex['prompt'])!r} -> {' ' + ex['answer']!r}")
encoded = encode_example(tokenizer, plain_prompt(mixture[0]["prompt"]), " " + mixture[0]["answer"])
print(f"\\nfirst example: {len(encoded['input_ids'])} tokens, "
      f"{sum(l != IGNORE_INDEX for l in encoded['labels'])} of them trained on (answer and end-of-sequence)")
print("held out:", "last_word" not in {ex["family"] for ex in mixture})
'''),
        md("flan-result-md", """
Lab 02 runs this experiment: SmolLM2 tuned with LoRA on these four families answers the held-out `last_word`
questions much better than the pre-trained model, while a model tuned on addition alone does not; how much a held-out
family gains depends on how related the training families are.

## 2. Self-Instruct: instruction, input and output from the model

Self-Instruct (Wang et al., 2023) starts from 175 hand-written seed tasks. Repeatedly: show the model 8 tasks from
the pool, let it write a new one, keep it if its ROUGE-L with every task in the pool is below 0.7, and have the
model write an input and an output for it. Alpaca used the same recipe with a stronger model. The prompt:
"""),
        code("si-prompt", '''
# NBVAL_CHECK_OUTPUT
rng = random.Random(SEED)
print(instruction_prompt(SEED_INSTRUCTIONS, 6, rng))
'''),
        code("si-generate", '''
rng = random.Random(SEED)
prompts = [instruction_prompt(SEED_INSTRUCTIONS, 6, rng) for _ in range(N_SELF_INSTRUCT)]
outputs = generate(model, tokenizer, prompts, max_new_tokens=24, do_sample=True, temperature=0.8, top_p=0.95,
                   seed=SEED, batch_size=32)
candidates = [c for c in (parse_instruction(o) for o in outputs) if c is not None]
result = rouge_filter(candidates, SEED_INSTRUCTIONS)
print(f"{len(outputs)} generations -> {len(candidates)} usable -> {len(result.kept)} kept, "
      f"{len(result.rejected)} rejected (ROUGE-L >= 0.7 with the pool)")
for c in result.kept[:4]:
    print(f"  kept:     {c!r}")
for c, score, nearest in result.rejected[:3]:
    print(f"  rejected: {c!r} (ROUGE-L {score:.2f} with {nearest!r})")
'''),
        md("rouge-md", """
ROUGE-L is the F-measure of the longest common subsequence of words: near-copies score high, new tasks low.
"""),
        code("rouge", '''
# NBVAL_CHECK_OUTPUT
for a, b in [("Sort these numbers from smallest to largest.", "Sort the numbers from smallest to largest."),
             ("Sort these numbers from smallest to largest.", "Sort these words alphabetically."),
             ("Sort these numbers from smallest to largest.", "Write a short poem about the sea.")]:
    print(f"{rouge_l(a, b):.2f}  {a!r} vs {b!r}")
'''),
        md("si-instance-md", """
The second step writes an input and an output for a kept task, again by prompting the model. A 135M model writes
weak instances; the paper used GPT-3 and filtered again.
"""),
        code("si-instance", '''
task = result.kept[0] if result.kept else SEED_INSTRUCTIONS[0]
instance_prompt = f"Task: {task}\\nInput:"
print(instance_prompt + generate(model, tokenizer, [instance_prompt], max_new_tokens=40)[0])
'''),
        md("chat-md", """
## 3. Chat tuning: a conversation as one token sequence

A chat is a list of messages: a system prompt, then user and assistant turns. The chat *template* writes it as one
token sequence with special tokens around each turn. The Llama 3 format, as in the lecture:

```
<|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{system}<|eot_id|><|start_header_id|>user<|end_header_id|>\\n\\n{user}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n{assistant}<|eot_id|>
```

written out here by hand:
"""),
        code("llama3", '''
# NBVAL_CHECK_OUTPUT
def llama3_format(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The Llama 3 chat format: a header per turn, <|eot_id|> closing each one."""
    text = "<|begin_of_text|>"
    for m in messages:
        text += f"<|start_header_id|>{m['role']}<|end_header_id|>\\n\\n{m['content']}<|eot_id|>"
    if add_generation_prompt:
        text += "<|start_header_id|>assistant<|end_header_id|>\\n\\n"
    return text

chat = [{"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."}]
print(llama3_format(chat))
'''),
        md("chatml-md", """
SmolLM2 uses ChatML: `<|im_start|>role\\n...<|im_end|>`. Its tokenizer carries the template, and
`tokenizer.apply_chat_template` renders any conversation. Without a system message SmolLM2's template inserts its
default one. For training, the labels cover the assistant turns only (their text and `<|im_end|>`): the model
learns to answer, not to write the user's turns.
"""),
        code("chatml", '''
# NBVAL_CHECK_OUTPUT
print(tokenizer.apply_chat_template(chat, tokenize=False))
print(repr(tokenizer.apply_chat_template(chat[1:2], tokenize=False, add_generation_prompt=True)))
encoded_chat = encode_chat(tokenizer, chat)
trained = [t for t, l in zip(encoded_chat["input_ids"], encoded_chat["labels"]) if l != IGNORE_INDEX]
print(f"\\n{len(encoded_chat['input_ids'])} tokens, {len(trained)} trained on: {tokenizer.decode(trained)!r}")
'''),
        code("chat-mask-plot", '''
fig, ax = plt.subplots(figsize=(12, 1.2))
ax.imshow([[l != IGNORE_INDEX for l in encoded_chat["labels"]]], aspect="auto", cmap="Blues", vmin=0, vmax=1.5)
ax.set(yticks=[], xlabel="token position", title="positions in the loss (dark: assistant turns)")
plt.show()
'''),
        md("orca-md", """
## 4. System prompts (OpenOrca)

OpenOrca pairs FLAN questions with answers from GPT-4 / GPT-3.5, each generated under one of a few hand-written
system messages ("You are an AI assistant. You will be given a task. You must generate a detailed and long
answer.", "...think step-by-step and justify your steps", ...). The system message is part of the training
sequence, so the same question can be trained with different behaviours. Offline, same-schema rows stand in.
"""),
        code("orca", '''
# NBVAL_CHECK_OUTPUT
orca = load_lecture_dataset("openorca", 2, seed=SEED)
for row in orca:
    messages = [{"role": "system", "content": row["system_prompt"]}, {"role": "user", "content": row["question"]},
                {"role": "assistant", "content": row["response"]}]
    print(tokenizer.apply_chat_template(messages, tokenize=False)[:600])
'''),
        md("system-effect-md", """
The system prompt steers the pre-trained chat model even before any tuning of ours: the same question under two
system prompts.
"""),
        code("system-effect", '''
question = {"role": "user", "content": "What is the capital of France?"}
systems = ["You are a helpful assistant. Answer with one word.",
           "You are a pirate. Always answer like a pirate, in a long sentence."]
replies = generate(model, tokenizer, [[{"role": "system", "content": s}, question] for s in systems], max_new_tokens=24)
for s, r in zip(systems, replies):
    print(f"system: {s!r}\\n  -> {r.strip()!r}")
'''),
        md("lmsys-md", """
## 5. Multi-turn data (lmsys-chat-1m)

lmsys-chat-1m holds a million real conversations with 25 models, many of them multi-turn. A multi-turn
conversation is one training sequence; every assistant turn is in the loss, and later turns can depend on earlier
ones. Offline, same-schema rows stand in.
"""),
        code("lmsys", '''
# NBVAL_CHECK_OUTPUT
rows = load_lecture_dataset("lmsys_chat", 3, seed=SEED)
multi_turn = max(rows, key=lambda r: r["turn"])
print(f"{multi_turn['conversation_id']}: {multi_turn['turn']} turns, model {multi_turn['model']}")
encoded_multi = encode_chat(tokenizer, multi_turn["conversation"])
spans, inside = [], False
for t, l in zip(encoded_multi["input_ids"], encoded_multi["labels"]):
    if l != IGNORE_INDEX and not inside:
        spans.append([])
    inside = l != IGNORE_INDEX
    if inside:
        spans[-1].append(t)
print(tokenizer.apply_chat_template(multi_turn["conversation"], tokenize=False))
print(f"{len(spans)} assistant spans in the loss:", [tokenizer.decode(s) for s in spans])
'''),
        md("results-md", """
## Results

What this notebook measured, and assertions with margins.
"""),
        code("results", '''
outcomes = {
    "Self-Instruct generations": len(outputs),
    "Self-Instruct usable candidates": len(candidates),
    "Self-Instruct kept (ROUGE-L < 0.7)": len(result.kept),
    "Self-Instruct rejected": len(result.rejected),
    "chat tokens / trained on (5-message chat)": f"{len(encoded_chat['input_ids'])} / {len(trained)}",
    "multi-turn assistant spans in the loss": len(spans),
}
record_outcomes("02_instruction_and_chat_tuning_lecture", outcomes)
expect("Self-Instruct kept instructions", len(result.kept), at_least=1)
expect("share of the chat's tokens in the loss", len(trained) / len(encoded_chat["input_ids"]), at_most=0.3)
expect("assistant spans in the multi-turn conversation", len(spans), at_least=2)
'''),
    ]


def main() -> int:
    return write_notebooks({ROOT / "solutions" / f"{LAB}.ipynb": lab_cells(), ROOT / "lectures" / f"{LECTURE}.ipynb": lecture_cells()})


if __name__ == "__main__":
    sys.exit(main())
