"""Writes lectures/03_knowledge_distillation.ipynb and solutions/04_knowledge_distillation.ipynb (without outputs).

Cell ids are fixed here so that re-running the script, executing the notebooks and `anlp-ft assign` keep diffs
small. Run from the repository root: `python tools/build_03_04.py [lectures|solutions]`, then execute both
notebooks in place and run `anlp-ft assign` to regenerate labs/04_knowledge_distillation.ipynb.
"""
from __future__ import annotations

import sys

from nbbuild import BADGE, COLAB, ROOT, SETUP, code, exercise, hidden, md, write_notebooks

LECTURE, LAB = "03_knowledge_distillation", "04_knowledge_distillation"


# --------------------------------------------------------------------------------------------------------------
# Shared pieces: the toy that shows mode covering against mode seeking
# --------------------------------------------------------------------------------------------------------------
TOY = '''
# A "teacher" distribution with two modes over 121 outcomes (a toy vocabulary), and a "student" that can only be
# one bump: q(x) proportional to exp(-(x - mu)^2 / (2 sigma^2)). We fit (mu, sigma) by gradient descent on a KL.
grid = torch.linspace(-6, 6, 121)
teacher_toy = torch.logsumexp(torch.stack([-(grid + 2.5) ** 2 / (2 * 0.6 ** 2),
                                           -(grid - 2.5) ** 2 / (2 * 0.6 ** 2) + math.log(0.6)]), 0)  # logits

def fit_one_bump(kl_fn, direction, steps=300, mu0=1.5, seed=0):
    """Fit the student's (mu, log sigma) to teacher_toy by minimising kl_fn(..., direction=direction), starting
    between the modes, nearer the right one (the reverse KL has a poor local minimum exactly in the middle)."""
    torch.manual_seed(seed)
    mu, log_sigma = torch.tensor(mu0, requires_grad=True), torch.tensor(0.0, requires_grad=True)
    optimizer = torch.optim.Adam([mu, log_sigma], lr=0.05)
    for _ in range(steps):
        student = -(grid - mu) ** 2 / (2 * log_sigma.exp() ** 2)  # logits of the student's bump
        loss = kl_fn(student.view(1, 1, -1), teacher_toy.view(1, 1, -1), torch.ones(1, 1, dtype=torch.bool),
                     temperature=1.0, direction=direction)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return mu.item(), log_sigma.exp().item(), (-(grid - mu) ** 2 / (2 * log_sigma.exp() ** 2)).detach()

def plot_fits(fits, ax):
    ax.plot(grid, teacher_toy.softmax(-1), color="black", lw=2, label="teacher p")
    for direction, (mu, sigma, logits) in fits.items():
        name = {"forward": "forward KL(p||q): covers both modes", "reverse": "reverse KL(q||p): picks one mode"}
        ax.plot(grid, logits.softmax(-1), lw=2, ls="--", label=f"{name[direction]} (mu {mu:.1f}, sigma {sigma:.1f})")
    ax.set(xlabel="outcome", ylabel="probability", title="fitting one bump to two modes")
    ax.legend(fontsize=8)
'''


# --------------------------------------------------------------------------------------------------------------
# The lab (solutions/, source of truth for labs/)
# --------------------------------------------------------------------------------------------------------------
def lab_cells():
    url = COLAB.format(folder="labs", name=LAB)
    return [
        md("title", f"""
# Lab 04: Knowledge distillation

{BADGE.format(url=url)}

A strong model's outputs become another model's training data. Three ways to use a teacher $p$ for a student $q_\\theta$:

* **token-level KD** (Hinton et al. 2015): at every position of a training sequence, the student matches the
  teacher's whole next-token distribution (soft labels) instead of the one gold token;
* **sequence-level KD** (Kim and Rush 2016): the teacher *generates* the answers and the student is fine-tuned on them;
* **the augmented teacher** (West et al. 2022): sample from a model, keep only what a verifier accepts,
  $q(y \\mid x) \\propto p_{{LLM}}(y \\mid x)\\, A(x, y)$, and fine-tune on that. The result can beat the model it came from.

**Learning goals.** After this lab you can

1. write the token-level KD loss with temperature (and its $T^2$ factor), in both KL directions, masked to the
   response tokens, and say what mode covering and mode seeking mean;
2. build a student from a teacher's layers and train it three ways at the same number of steps: hard labels,
   token-level KD, sequence-level KD; measure its held-out quality and its speed-up;
3. build an augmented teacher: sample $k$ solutions per problem, keep the verified ones, fine-tune, and measure
   that it beats the model it sampled from.

| Exercise | What | Points |
|---|---|---|
| ex1 | `kd_loss`: token-level KD with temperature, forward and reverse KL, masked | 3 |
| ex2 | `make_token_kd_loss`: the loss function that distils the teacher into the student during training | 2 |
| ex3 | `sequence_kd_data`: the teacher's generations as the student's training data | 2 |
| ex4 | `keep_verified`: the augmented teacher's data, filtered by a verifier | 3 |

Write your code where it says `# YOUR CODE HERE`; the `check(...)` cell after each exercise tells you what is wrong.
Run the notebook top to bottom: a blank exercise is reported and what depends on it is skipped, not an error.
"""),
        code("colab-setup", SETUP),
        code("parameters", '''
PROFILE = None         # "quick" (CPU, a few minutes) or "full" (a Colab T4); None: from $ANLP_FT_PROFILE or the device
SEED = 0
MODEL = None           # the pre-trained teacher; None: SmolLM2-360M-Instruct (offline: SmolLM2-135M-Instruct)
N_TEST = None          # held-out problems
TEACHER_STEPS = None   # LoRA steps that make the teacher good at the task
BATCH = None           # examples per step (teacher, students, augmented teacher)
STUDENT_LAYERS = None  # layers kept in the student (None: a third of the teacher's)
STUDENT_STEPS = None   # optimizer steps of each of the three students
TEMPERATURE = None     # token-level KD temperature
K = None               # samples per problem for the augmented teacher
AUG_PROBLEMS = None    # problems the augmented teacher samples solutions for
AUG_STEPS = None       # LoRA steps on the verified samples
''', tags=["parameters"]),
        code("resolve", '''
import copy
import math
import time

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model

from anlp_ft import distill
from anlp_ft.assignments import MISSING, Checker, attempt
from anlp_ft.data.arithmetic import is_correct, train_test_problems
from anlp_ft.evaluate import accuracy, generate, perplexity
from anlp_ft.formatting import IGNORE_INDEX, encode_example, plain_prompt
from anlp_ft.models import TEACHER_MODEL, load_model, load_tokenizer, student_from_teacher
from anlp_ft.plots import plot_bars, plot_loss
from anlp_ft.results import expect, record_outcomes
from anlp_ft.runtime import by_profile, pick_device, resolve_profile, seed_everything
from anlp_ft.train import TrainConfig, fit

PROFILE = resolve_profile(PROFILE)
N_TEST = N_TEST or by_profile(PROFILE, quick=32, full=256)
TEACHER_STEPS = TEACHER_STEPS or by_profile(PROFILE, quick=14, full=80)
BATCH = BATCH or by_profile(PROFILE, quick=8, full=16)
STUDENT_STEPS = STUDENT_STEPS or by_profile(PROFILE, quick=10, full=300)
TEMPERATURE = TEMPERATURE or 2.0
K = K or by_profile(PROFILE, quick=4, full=8)
AUG_PROBLEMS = AUG_PROBLEMS or by_profile(PROFILE, quick=32, full=256)
AUG_STEPS = AUG_STEPS or by_profile(PROFILE, quick=10, full=60)
N_TRAIN = by_profile(PROFILE, quick=STUDENT_STEPS * BATCH, full=1024)  # students cycle over these problems
MAX_NEW_TOKENS = 40  # a step-by-step solution of a 2-digit sum is about 35 tokens
LORA = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
DEVICE = pick_device()
seed_everything(SEED)
print(f"profile {PROFILE} on {DEVICE}: {N_TEST} held-out problems; teacher {TEACHER_STEPS} LoRA steps x {BATCH}; "
      f"students {STUDENT_STEPS} steps x {BATCH} on {N_TRAIN} problems, T = {TEMPERATURE}; augmented teacher "
      f"{K} samples x {AUG_PROBLEMS} problems, {AUG_STEPS} steps")
'''),
        code("load", '''
tokenizer = load_tokenizer(MODEL or TEACHER_MODEL)
base = load_model(MODEL or TEACHER_MODEL, device=DEVICE)  # the pre-trained model the teacher starts from
base.eval()
check = Checker("04")

train_problems, test_problems = train_test_problems(max(N_TRAIN, TEACHER_STEPS * BATCH), N_TEST, seed=SEED)
prompts = [plain_prompt(p["question"]) for p in test_problems]
answers = [p["answer"] for p in test_problems]
held_out = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"]) for p in test_problems]

def evaluate(model):
    """Held-out greedy accuracy (a generation is right when its last number is the answer)."""
    return accuracy(model, tokenizer, prompts, answers, is_correct, max_new_tokens=MAX_NEW_TOKENS, batch_size=64)

def held_out_loss(model):
    """Mean cross-entropy (nats per token) of the gold held-out solutions: no generation, so cheap and smooth."""
    return math.log(perplexity(model, held_out, pad_token_id=tokenizer.pad_token_id, batch_size=32))

before = evaluate(base)
print(f"pre-trained model: held-out accuracy {before.accuracy:.1%} of {before.n}")
print(f"{prompts[0]!r} -> {before.outputs[0]!r}")
'''),
        # ---------------------------------------------------------------------------------------------- ex1
        md("s1", """
## 1. The token-level KD loss

At a position of a training sequence, the teacher gives a distribution $p$ over the next token and the student
gives $q_\\theta$. Hard-label training uses only the gold token; **soft labels** use all of $p$: the cross-entropy
$-\\sum_v p(v) \\log q_\\theta(v)$, which is the KL divergence $\\mathrm{KL}(p \\,\\|\\, q_\\theta)$ plus the teacher's
entropy (a constant for the student). Hinton et al. soften both distributions with a **temperature** $T$,
$p_T(v) \\propto \\exp(z_v / T)$, so that the teacher's small probabilities (its "dark knowledge": which wrong
tokens are nearly right) carry signal, and multiply the loss by $T^2$ because the soft targets' gradients
shrink as $1/T^2$:

$$\\mathcal{L}_{KD} = T^2 \\cdot \\frac{1}{|R|} \\sum_{t \\in R} \\mathrm{KL}\\big(p_T(\\cdot \\mid x, y_{<t}) \\,\\big\\|\\, q_{\\theta, T}(\\cdot \\mid x, y_{<t})\\big)$$

over the response positions $R$ (not the prompt, not padding). This is the **forward** KL. The **reverse** KL,
$\\mathrm{KL}(q_\\theta \\,\\|\\, p)$, takes the expectation under the student instead.

**Exercise 1 (3 points).** Write `kd_loss(student_logits, teacher_logits, mask, temperature, direction)`: logits
(B, T, V) at the same positions, `mask` (B, T) true where a position counts. Divide the logits by the temperature,
`log_softmax` both, compute the KL per position in the given direction (`"forward"`: KL(teacher ‖ student),
`"reverse"`: KL(student ‖ teacher)), average over the masked positions and multiply by $T^2$.
"""),
        exercise("ex1", '''
def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
            temperature: float = 1.0, direction: str = "forward") -> torch.Tensor:
    """T^2 * mean over masked positions of KL(p_T || q_T) ("forward") or KL(q_T || p_T) ("reverse")."""
    # BEGIN SOLUTION
    log_q = (student_logits.float() / temperature).log_softmax(-1)
    log_p = (teacher_logits.float() / temperature).log_softmax(-1)
    if direction == "forward":
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    else:
        kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    return temperature ** 2 * kl[mask.bool()].mean()
    # END SOLUTION
''', "ex1", 3),
        code("ex1-check", '''
check("ex1", kd_loss)
'''),
        code("ex1-kl-div", '''
# The same number from PyTorch: F.kl_div(input, target) computes sum target * (log target - input), with the
# student's log-probabilities as `input` and the teacher's as `target` (log_target=True) for the forward KL.
g = torch.Generator().manual_seed(SEED)
s_logits, t_logits = torch.randn(2, 5, 50, generator=g), torch.randn(2, 5, 50, generator=g)
mask = torch.tensor([[0, 0, 1, 1, 1], [0, 1, 1, 1, 0]], dtype=torch.bool)
T = TEMPERATURE
reference = {
    "forward": T ** 2 * F.kl_div((s_logits / T).log_softmax(-1), (t_logits / T).log_softmax(-1), log_target=True,
                                 reduction="none").sum(-1)[mask].mean(),
    "reverse": T ** 2 * F.kl_div((t_logits / T).log_softmax(-1), (s_logits / T).log_softmax(-1), log_target=True,
                                 reduction="none").sum(-1)[mask].mean(),
}
kd_vs_kl_div = {}
for direction, want in reference.items():
    got = attempt("ex1", kd_loss, s_logits, t_logits, mask, T, direction)
    kd_vs_kl_div[direction] = MISSING if got is MISSING else abs(got.item() - want.item())
    print(f"{direction:>7} KL at T={T}: F.kl_div {want.item():.5f}, kd_loss {got if got is MISSING else round(got.item(), 5)}")
'''),
        hidden("ex1-hidden", '''
from anlp_ft.assignments.public import lab04
lab04.ex1(kd_loss, seed=1)
lab04.ex1(kd_loss, seed=2)
assert all(v < 1e-4 for v in kd_vs_kl_div.values()), kd_vs_kl_div
''', "ex1"),
        md("s1b", """
### Mode covering and mode seeking

Which direction we minimise matters when the student cannot represent the teacher. Below, the teacher has two
modes and the student is a single bump. Minimising the forward KL (expectation under the teacher) punishes the
student wherever the teacher has mass and the student has none: the student **covers both modes**, and puts mass
between them. Minimising the reverse KL (expectation under the student) punishes the student wherever it has mass
and the teacher has none: it **seeks one mode**. Both fits below use your `kd_loss`.
"""),
        code("modes", TOY + '''
fits = {d: attempt("ex1", fit_one_bump, kd_loss, d) for d in ("forward", "reverse")}
if all(f is not MISSING for f in fits.values()):
    fig, ax = plt.subplots(figsize=(7, 3.5))
    plot_fits(fits, ax)
    plt.show()
    for d, (mu, sigma, _) in fits.items():
        print(f"{d:>7} KL fit: mu {mu:+.2f}, sigma {sigma:.2f}")
'''),
        # ---------------------------------------------------------------------------------------------- teacher
        md("s2", """
## 2. The teacher and the student

**The teacher.** With the hub reachable it is SmolLM2-360M-Instruct; offline it is SmolLM2-135M-Instruct. In both
cases we first make it good at the task: a short LoRA fine-tuning on gold step-by-step solutions, merged into the
weights (`merge_and_unload`), so that the teacher is a plain model again.

**The student** (`student_from_teacher`) keeps a third of the teacher's layers, spread evenly (first and last
included), with the teacher's embeddings, final norm and LM head (DistilBERT's recipe). It is cheaper to run,
and it starts badly damaged: removing two thirds of the layers breaks what the model computed.

Training the teacher costs time, so it happens only when an exercise that needs it (ex2 or ex3) is implemented.
"""),
        # ---------------------------------------------------------------------------------------------- ex2
        md("s3", """
### Token-level KD as a training loss

`fit(model, data, config, loss_fn=...)` calls `loss_fn(model, batch)` instead of `model(**batch).loss`; a batch
holds `input_ids`, `attention_mask` and `labels` (-100 on the prompt and padding).

**Exercise 2 (2 points).** Write `make_token_kd_loss(teacher, temperature)`, which returns `loss_fn(student, batch)`:
run the teacher on the batch's `input_ids` and `attention_mask` without gradients (`torch.no_grad()`), run the
student on the same inputs, and return your `kd_loss` of the student's and the teacher's logits *at the positions
that predict a response token*: as in the cross-entropy, logits `[:, :-1]` predict `labels[:, 1:]`, so the mask is
`batch["labels"][:, 1:] != -100`. The student is trained on the gold sequences, with the teacher's soft labels
in place of the gold tokens.
"""),
        exercise("ex2", '''
def make_token_kd_loss(teacher, temperature: float = 2.0, direction: str = "forward"):
    """A loss_fn(student, batch) for fit: the student matches the teacher's next-token distributions on the
    response tokens of the batch."""
    teacher.eval()

    def loss_fn(student, batch):
        # BEGIN SOLUTION
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        with torch.no_grad():
            teacher_logits = teacher(**inputs).logits[:, :-1]
        student_logits = student(**inputs).logits[:, :-1]
        mask = batch["labels"][:, 1:] != IGNORE_INDEX
        return kd_loss(student_logits, teacher_logits, mask, temperature, direction)
        # END SOLUTION

    return loss_fn
''', "ex2", 2),
        code("ex2-check", '''
ex2_ok = check("ex2", make_token_kd_loss)
'''),
        hidden("ex2-hidden", '''
from anlp_ft.assignments.public import lab04
lab04.ex2(make_token_kd_loss, seed=1)
lab04.ex2(make_token_kd_loss, seed=2, temperature=1.0)
''', "ex2"),
        # ---------------------------------------------------------------------------------------------- ex3
        md("s4", """
### Sequence-level KD: the teacher writes the data

Kim and Rush approximate the teacher's distribution over whole sequences by its mode: generate the teacher's
(greedy) answer $\\hat y$ to each training prompt, and fine-tune the student on $(x, \\hat y)$ with the ordinary
cross-entropy. This also minimises a KL between teacher and student, over sequences instead of tokens, and it needs
only the teacher's outputs, not its logits (a teacher behind an API will do).

**Exercise 3 (2 points).** Write `sequence_kd_data(teacher, questions)`: greedy answers of the teacher to
`plain_prompt(q)` for each question, in batches (`generate(teacher, tokenizer, prompts, max_new_tokens=MAX_NEW_TOKENS,
batch_size=64)`), then encoded examples `encode_example(tokenizer, prompt, " " + answer.strip())`, skipping empty
answers. Return `(examples, answers)`, answers being the raw generations.
"""),
        exercise("ex3", '''
def sequence_kd_data(teacher, questions: list[str]) -> tuple[list[dict], list[str]]:
    """The teacher's greedy answers to the questions, as (plain prompt, " " + answer) training examples."""
    # BEGIN SOLUTION
    prompts_ = [plain_prompt(q) for q in questions]
    outputs = generate(teacher, tokenizer, prompts_, max_new_tokens=MAX_NEW_TOKENS, batch_size=64)
    examples = [encode_example(tokenizer, p, " " + o.strip()) for p, o in zip(prompts_, outputs) if o.strip()]
    return examples, outputs
    # END SOLUTION
''', "ex3", 2),
        code("ex3-check", '''
ex3_ok = check("ex3", sequence_kd_data, tokenizer)
'''),
        hidden("ex3-hidden", '''
from anlp_ft.assignments.public import lab04
lab04.ex3(sequence_kd_data, tokenizer, seed=1)
''', "ex3"),
        # ---------------------------------------------------------------------------------------------- students
        md("s5", """
### Three students at equal steps

First the teacher (LoRA on the gold solutions, merged), then one student per method, each with the same steps,
batch and learning rate (full fine-tuning of the student):

1. **hard labels**: cross-entropy on the gold solutions;
2. **token-level KD**: your `make_token_kd_loss` on the same gold sequences;
3. **sequence-level KD**: cross-entropy on the teacher's generations (your `sequence_kd_data`).

We measure each student's held-out accuracy and its held-out loss (the cross-entropy of the gold held-out solutions,
a smoother measure than accuracy when a student is still weak), and how many tokens per second the student
generates against the teacher.
"""),
        code("teacher", '''
def make_teacher():
    seed_everything(SEED)
    data = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"])
            for p in train_problems[:TEACHER_STEPS * BATCH]]
    model = get_peft_model(copy.deepcopy(base), LORA)
    history = fit(model, data, TrainConfig(steps=TEACHER_STEPS, batch_size=BATCH, lr=by_profile(PROFILE, quick=2e-3, full=1e-3),
                                           warmup_steps=2, seed=SEED), pad_token_id=tokenizer.pad_token_id)
    return model.merge_and_unload().eval(), history

teacher, teacher_history, teacher_eval = MISSING, MISSING, MISSING
if ex2_ok or ex3_ok:
    teacher, teacher_history = make_teacher()
    teacher_eval = evaluate(teacher)
    print(f"teacher: loss {teacher_history.loss[0]:.3f} -> {teacher_history.final_loss:.3f}; held-out accuracy "
          f"{before.accuracy:.1%} (pre-trained) -> {teacher_eval.accuracy:.1%}")
else:
    print("the teacher is trained once ex2 or ex3 is implemented")
'''),
        code("students", '''
def train_student(data, loss_fn=None):
    seed_everything(SEED)
    student = student_from_teacher(teacher, STUDENT_LAYERS or max(1, teacher.config.num_hidden_layers // 3))
    config = TrainConfig(steps=STUDENT_STEPS, batch_size=BATCH, lr=1e-3, warmup_steps=2, seed=SEED)
    history = fit(student, data, config, loss_fn=loss_fn, pad_token_id=tokenizer.pad_token_id)
    return student, history

students, student_histories = {}, {}
seq_kd_answers = MISSING
if teacher is not MISSING:
    gold = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"]) for p in train_problems[:N_TRAIN]]
    untrained = student_from_teacher(teacher, STUDENT_LAYERS or max(1, teacher.config.num_hidden_layers // 3))
    print(f"student: {untrained.config.num_hidden_layers} of {teacher.config.num_hidden_layers} layers, "
          f"{untrained.num_parameters() / 1e6:.0f}M of {teacher.num_parameters() / 1e6:.0f}M parameters")
    students["untrained"] = untrained
    students["hard labels"], student_histories["hard labels"] = train_student(gold)
    if ex2_ok:  # each KD student only once its exercise passes its check
        students["token-level KD"], student_histories["token-level KD"] = train_student(
            gold, make_token_kd_loss(teacher, TEMPERATURE))
    if ex3_ok:
        seq_kd_examples, seq_kd_answers = sequence_kd_data(teacher, [p["question"] for p in train_problems[:N_TRAIN]])
        right = sum(is_correct(a, p["answer"]) for a, p in zip(seq_kd_answers, train_problems))
        print(f"teacher's generations: {right} of {len(seq_kd_answers)} right; trained on all {len(seq_kd_examples)}")
        students["sequence-level KD"], student_histories["sequence-level KD"] = train_student(seq_kd_examples)
'''),
        code("students-eval", '''
student_results = {}
for name, model in students.items():
    result = evaluate(model)
    student_results[name] = {"accuracy": result.accuracy, "held-out loss": held_out_loss(model), "output": result.outputs[0]}
if student_results:
    student_results["teacher"] = {"accuracy": teacher_eval.accuracy, "held-out loss": held_out_loss(teacher),
                                  "output": teacher_eval.outputs[0]}
    print(f"{'model':>18} {'accuracy':>9} {'held-out loss':>14}   first held-out answer")
    for name, r in student_results.items():
        print(f"{name:>18} {r['accuracy']:>9.1%} {r['held-out loss']:>14.3f}   {r['output'].strip()[:60]!r}")

    speed_prompts = prompts[:16]
    teacher_speed = distill.generation_tokens_per_s(teacher, tokenizer, speed_prompts, new_tokens=16, repeats=2)
    student_speed = distill.generation_tokens_per_s(students["hard labels"], tokenizer, speed_prompts, new_tokens=16,
                                                    repeats=2)
    print(f"greedy generation, batch {len(speed_prompts)}: teacher {teacher_speed:.0f} tokens/s, student "
          f"{student_speed:.0f} tokens/s: {student_speed / teacher_speed:.2f}x")
'''),
        md("s5b", """
Read the table with its size in mind. In the quick profile each student takes ten steps on a CPU: enough to
bring its held-out loss far below the untrained student's, not enough to make a model that lost two thirds of its
layers add again (its accuracy stays near 0). The ordering between the three methods at this size comes from one
seed and ten steps: it is printed, not asserted. The full profile trains each student for 300 steps on a GPU.
"""),
        # ---------------------------------------------------------------------------------------------- ex4
        md("s6", """
## 3. The augmented teacher

West et al. (Symbolic Knowledge Distillation) sample many outputs from a large model and keep those a critic
accepts. The data then come from

$$q(y \\mid x) \\propto p_{LLM}(y \\mid x)\\, A(x, y),$$

with $A(x, y) \\in \\{0, 1\\}$ a verifier or a classifier. Fine-tuning on samples of $q$ can give a model better than
$p_{LLM}$ itself: $q$ is $p_{LLM}$ with its mistakes removed. For arithmetic the verifier is exact: is the last
number of the answer the sum?

We sample $K$ answers per problem from the **pre-trained** model (no gold solutions used), keep the verified ones,
and fine-tune the pre-trained model on them (LoRA).

**Exercise 4 (3 points).** Write `keep_verified(problems, samples, verify)`: `samples[i]` is the list of sampled
answers for `problems[i]`. For each sample, strip it; keep it when it is not empty, not a duplicate of an already
kept sample *of the same problem*, and `verify(sample, problem["answer"])` is true. Return the kept ones as
`{"question": ..., "solution": sample, "answer": ...}` dicts, in order.
"""),
        exercise("ex4", '''
def keep_verified(problems: list[dict], samples: list[list[str]], verify) -> list[dict]:
    """The samples the verifier accepts, as {question, solution, answer} (duplicates within a problem dropped)."""
    # BEGIN SOLUTION
    kept = []
    for problem, outs in zip(problems, samples):
        seen = set()
        for text in outs:
            text = text.strip()
            if text and text not in seen and verify(text, problem["answer"]):
                seen.add(text)
                kept.append({"question": problem["question"], "solution": text, "answer": problem["answer"]})
    return kept
    # END SOLUTION
''', "ex4", 3),
        code("ex4-check", '''
ex4_ok = check("ex4", keep_verified, is_correct)
'''),
        hidden("ex4-hidden", '''
from anlp_ft.assignments.public import lab04
lab04.ex4(keep_verified, is_correct, seed=1)
lab04.ex4(keep_verified, is_correct, seed=2)
''', "ex4"),
        code("augmented", '''
aug_problems = train_problems[-AUG_PROBLEMS:]  # questions only: the gold solutions are not used here
augmented, augmented_eval, aug_history, verified = MISSING, MISSING, MISSING, MISSING
if ex4_ok:
    tic = time.perf_counter()
    samples = distill.sample_solutions(base, tokenizer, [p["question"] for p in aug_problems], k=K, temperature=0.8,
                                       max_new_tokens=MAX_NEW_TOKENS, batch_size=64, seed=SEED)
    verified = keep_verified(aug_problems, samples, is_correct)
    covered = len({v["question"] for v in verified})
    print(f"{K} samples x {len(aug_problems)} problems in {time.perf_counter() - tic:.0f} s: {len(verified)} verified, "
          f"covering {covered} problems ({covered / len(aug_problems):.0%}, pass@{K})")
    for v in verified[:3]:
        print(f"  {v['question']!r} -> {v['solution'][:80]!r}")
    seed_everything(SEED)
    data = [encode_example(tokenizer, plain_prompt(v["question"]), " " + v["solution"]) for v in verified]
    augmented = get_peft_model(copy.deepcopy(base), LORA)
    aug_history = fit(augmented, data, TrainConfig(steps=AUG_STEPS, batch_size=BATCH, lr=1e-3, warmup_steps=2, seed=SEED),
                      pad_token_id=tokenizer.pad_token_id)
    augmented_eval = evaluate(augmented)
    print(f"held-out accuracy: pre-trained {before.accuracy:.1%} -> fine-tuned on its own verified samples "
          f"{augmented_eval.accuracy:.1%}")
    print(f"{prompts[0]!r} -> {augmented_eval.outputs[0]!r}")
'''),
        hidden("ex4-hidden-run", '''
# PART
assert len(verified) > 0 and all(is_correct(v["solution"], v["answer"]) for v in verified)
# PART
assert augmented_eval.accuracy > before.accuracy, (augmented_eval.accuracy, before.accuracy)
''', "ex4"),
        # ---------------------------------------------------------------------------------------------- results
        md("results-md", """
## Results

Every measured outcome, the curves, and the assertions (with margins) that the lab's claims hold.
"""),
        code("results", '''
def measured(name, key):
    return student_results[name][key] if name in student_results else MISSING

outcomes = {
    "pre-trained accuracy": before.accuracy,
    "teacher accuracy": MISSING if teacher_eval is MISSING else teacher_eval.accuracy,
    "kd_loss vs F.kl_div, max abs difference": MISSING if MISSING in kd_vs_kl_div.values() else max(kd_vs_kl_div.values()),
    "toy fit sigma, forward KL": MISSING if fits["forward"] is MISSING else fits["forward"][1],
    "toy fit sigma, reverse KL": MISSING if fits["reverse"] is MISSING else fits["reverse"][1],
}
for name in ("untrained", "hard labels", "token-level KD", "sequence-level KD", "teacher"):
    outcomes[f"{name}: accuracy"] = measured(name, "accuracy")
    outcomes[f"{name}: held-out loss"] = measured(name, "held-out loss")
outcomes["student / teacher tokens/s"] = student_speed / teacher_speed if student_results else MISSING
outcomes[f"augmented teacher: verified samples (of {K * AUG_PROBLEMS})"] = MISSING if verified is MISSING else len(verified)
outcomes["augmented teacher accuracy"] = MISSING if augmented_eval is MISSING else augmented_eval.accuracy
record_outcomes("04_knowledge_distillation", outcomes)
'''),
        code("plots", '''
fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
if fits["forward"] is not MISSING and fits["reverse"] is not MISSING:
    plot_fits(fits, axes[0])
if student_histories:
    plot_loss(student_histories, title="students' training loss (KD loss is on another scale)", ax=axes[1])
bars = {"pre-trained": before.accuracy}
if teacher_eval is not MISSING:
    bars["teacher"] = teacher_eval.accuracy
bars.update({name: r["accuracy"] for name, r in student_results.items() if name != "teacher"})
if augmented_eval is not MISSING:
    bars["augmented"] = augmented_eval.accuracy
plot_bars(bars, title="held-out accuracy", ax=axes[2])
axes[2].tick_params(axis="x", labelrotation=30)
fig.tight_layout()
plt.show()
'''),
        code("expects", '''
expect("kd_loss vs F.kl_div, max abs difference", outcomes["kd_loss vs F.kl_div, max abs difference"], at_most=1e-4)
expect("forward-KL sigma / reverse-KL sigma (mode covering vs seeking)",
       MISSING if fits["forward"] is MISSING else fits["forward"][1] / fits["reverse"][1], at_least=2.0)
expect("teacher minus pre-trained accuracy", MISSING if teacher_eval is MISSING else teacher_eval.accuracy - before.accuracy,
       at_least=0.1)
for name in ("hard labels", "token-level KD", "sequence-level KD"):
    expect(f"{name}: held-out loss below the untrained student's by",
           MISSING if name not in student_results else
           student_results["untrained"]["held-out loss"] - student_results[name]["held-out loss"], at_least=1.0)
expect("student / teacher tokens/s", outcomes["student / teacher tokens/s"], at_least=1.3)
expect("augmented teacher minus pre-trained accuracy",
       MISSING if augmented_eval is MISSING else augmented_eval.accuracy - before.accuracy, at_least=0.1)
if len(student_results) == 5:
    order = sorted(["hard labels", "token-level KD", "sequence-level KD"], key=lambda n: student_results[n]["held-out loss"])
    print("students by held-out loss (printed, not asserted at this size):", " < ".join(order))
'''),
    ]


# --------------------------------------------------------------------------------------------------------------
# The lecture
# --------------------------------------------------------------------------------------------------------------
def lecture_cells():
    url = COLAB.format(folder="lectures", name=LECTURE)
    return [
        md("title", f"""
# Lecture 03: Knowledge distillation

{BADGE.format(url=url)}

**Distillation is the thread through what came before.** A strong model's generations become another model's
data: instruction data written by a larger model, chat data from a deployed assistant, solutions sampled and checked.
Knowledge distillation makes this explicit: a **teacher** $p$ trains a **student** $q_\\theta$.

1. **Token-level KD** (Hinton et al. 2015): match the teacher's next-token distribution, soft labels, temperature.
2. **Sequence-level KD** (Kim and Rush 2016): generate with the teacher, fine-tune the student on the outputs.
3. **The augmented teacher** (West et al. 2022): $q(y \\mid x) \\propto p_{{LLM}}(y \\mid x)\\, A(x, y)$ with a verifier
   or classifier $A$: the student can become better than $p_{{LLM}}$.

Each is shown on SmolLM2 below; Lab 04 trains students all three ways.
"""),
        code("colab-setup", SETUP),
        code("parameters", '''
PROFILE = None  # "quick" (CPU) or "full" (a Colab T4); None: from $ANLP_FT_PROFILE or the device
SEED = 0
MODEL = None    # None: SmolLM2-135M (offline: SmolLM2-135M-Instruct)
N_PROBLEMS = None  # problems for the augmented-teacher demonstration
K = None           # samples per problem
''', tags=["parameters"]),
        code("resolve", '''
import math

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F

from anlp_ft import distill
from anlp_ft.data.arithmetic import is_correct, train_test_problems
from anlp_ft.evaluate import generate
from anlp_ft.formatting import encode_example, plain_prompt
from anlp_ft.models import load_model, load_tokenizer
from anlp_ft.results import expect, record_outcomes
from anlp_ft.runtime import by_profile, pick_device, resolve_profile, seed_everything

PROFILE = resolve_profile(PROFILE)
N_PROBLEMS = N_PROBLEMS or by_profile(PROFILE, quick=24, full=128)
K = K or by_profile(PROFILE, quick=4, full=8)
DEVICE = pick_device()
seed_everything(SEED)
print(f"profile {PROFILE} on {DEVICE}: {K} samples x {N_PROBLEMS} problems")
tokenizer = load_tokenizer(MODEL)
model = load_model(MODEL, device=DEVICE).eval()
'''),
        md("token-md", """
## 1. Token-level KD: soft labels and temperature

The gold data say *which* token comes next; a teacher says how likely *every* token is. Hinton et al. train the
student on these soft labels, the cross-entropy against the teacher's distribution,

$$-\\sum_v p(v) \\log q_\\theta(v) = \\mathrm{KL}(p \\,\\|\\, q_\\theta) + H(p),$$

so minimising it minimises the KL between teacher and student ($H(p)$ does not depend on the student). A
**temperature** $T$ softens both, $p_T(v) \\propto \\exp(z_v / T)$, so that the teacher's small probabilities carry
signal; the loss is multiplied by $T^2$, because the gradients of soft targets shrink as $1/T^2$:

$$\\mathcal{L}_{KD} = T^2\\, \\mathrm{KL}(p_T \\,\\|\\, q_{\\theta, T})$$

averaged over the response positions. Here is SmolLM2's next-token distribution after an arithmetic prompt, at
three temperatures. With a vocabulary of 49k tokens, the long tail takes over quickly as $T$ grows: moderate
temperatures (about 1 to 2) are the usual choice for LLMs.
"""),
        code("temperature", '''
prompt = plain_prompt("What is 23 + 45?") + " Let's think step-by-step. 23 + 40 ="
ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids.to(DEVICE)
with torch.no_grad():
    logits = model(ids).logits[0, -1].float().cpu()
top = logits.topk(6).indices
print(f"{prompt!r}")
entropies = {}
for T in (0.5, 1.0, 2.0):
    p = (logits / T).softmax(-1)
    entropies[T] = -(p * p.clamp_min(1e-12).log()).sum().item()
    shown = ", ".join(f"{tokenizer.decode([int(i)])!r} {p[i]:.2f}" for i in top)
    print(f"T={T}: entropy {entropies[T]:.2f} nats | {shown}")
'''),
        md("kd-md", """
The KD loss, written out with `log_softmax` (forward KL: the expectation is under the teacher), equals PyTorch's
`F.kl_div(student_log_probs, teacher_log_probs, log_target=True)`:
"""),
        code("kd-loss", '''
def kd_loss(student_logits, teacher_logits, mask, temperature=1.0, direction="forward"):
    log_q = (student_logits.float() / temperature).log_softmax(-1)
    log_p = (teacher_logits.float() / temperature).log_softmax(-1)
    if direction == "forward":   # KL(teacher || student)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    else:                        # KL(student || teacher)
        kl = (log_q.exp() * (log_q - log_p)).sum(-1)
    return temperature ** 2 * kl[mask].mean()

g = torch.Generator().manual_seed(SEED)
s_logits, t_logits = torch.randn(2, 6, 100, generator=g), torch.randn(2, 6, 100, generator=g)
mask = torch.ones(2, 6, dtype=torch.bool)
mask[:, :2] = False  # the prompt's positions do not count
T = 2.0
torch_value = T ** 2 * F.kl_div((s_logits / T).log_softmax(-1), (t_logits / T).log_softmax(-1), log_target=True,
                                reduction="none").sum(-1)[mask].mean()
ours = kd_loss(s_logits, t_logits, mask, T)
kl_div_difference = abs(ours.item() - torch_value.item())
print(f"kd_loss {ours.item():.5f}, F.kl_div {torch_value.item():.5f}")
'''),
        md("modes-md", """
**Forward or reverse?** $\\mathrm{KL}(p \\,\\|\\, q)$ (forward) weighs errors where the teacher has mass: a student that
cannot represent the teacher spreads out to **cover every mode**. $\\mathrm{KL}(q \\,\\|\\, p)$ (reverse) weighs errors
where the student has mass: it **seeks one mode** and ignores the rest. A one-bump student fitted to a two-mode teacher:
"""),
        code("modes", TOY + '''
fits = {d: fit_one_bump(kd_loss, d) for d in ("forward", "reverse")}
fig, ax = plt.subplots(figsize=(7, 3.5))
plot_fits(fits, ax)
plt.show()
'''),
        md("seq-md", """
## 2. Sequence-level KD: generate with the teacher, fine-tune the student

Kim and Rush replace the teacher's distribution over whole sequences by its mode: the teacher's (greedy or beam)
output $\\hat y$ for each training input. The student is trained on $(x, \\hat y)$ with the ordinary cross-entropy,
which again minimises a KL between teacher and student, now over sequences. It needs only the teacher's text, not its
logits. The teacher's outputs, here for a few problems, *are* the student's data:
"""),
        code("seq", '''
problems, _ = train_test_problems(N_PROBLEMS, 1, seed=SEED)
questions = [p["question"] for p in problems]
greedy = generate(model, tokenizer, [plain_prompt(q) for q in questions], max_new_tokens=40, batch_size=64)
greedy_accuracy = sum(is_correct(o, p["answer"]) for o, p in zip(greedy, problems)) / len(problems)
for q, o in list(zip(questions, greedy))[:3]:
    example = encode_example(tokenizer, plain_prompt(q), " " + o.strip())
    print(f"x = {q!r}\\n   y_teacher = {o.strip()[:90]!r} ({sum(l != -100 for l in example['labels'])} trained tokens)")
print(f"greedy answers right: {greedy_accuracy:.0%} of {len(problems)}: sequence-level KD copies the mistakes too")
'''),
        md("aug-md", """
## 3. The augmented teacher

West et al. (Symbolic Knowledge Distillation) sample many outputs from a large model and keep only those that a
critic accepts. The student's data then come from

$$q(y \\mid x) \\propto p_{LLM}(y \\mid x)\\, A(x, y),$$

with $A(x, y) = 1$ when a verifier (or a trained classifier) accepts $y$. $q$ is $p_{LLM}$ without its mistakes, so a
student trained on it **can be better than $p_{LLM}$**. For arithmetic the verifier is a program. With $K$ samples per
problem, far more problems get at least one right answer (pass@$K$) than the greedy answer gets right:
"""),
        code("aug", '''
samples = distill.sample_solutions(model, tokenizer, questions, k=K, temperature=0.8, max_new_tokens=40, seed=SEED)
kept = distill.keep_verified(problems, samples, is_correct)
covered = len({v["question"] for v in kept})
pass_at_k = covered / len(problems)
print(f"{K} samples x {len(problems)} problems: {len(kept)} accepted by the verifier, covering {covered} problems")
print(f"greedy accuracy {greedy_accuracy:.0%}; pass@{K} {pass_at_k:.0%}")
for v in kept[:3]:
    print(f"  {v['question']!r} -> {v['solution'][:80]!r}")
'''),
        md("results-md", """
## Results

Fine-tuning on the accepted samples, and students trained each of the three ways, are measured in Lab 04.
"""),
        code("results", '''
record_outcomes("03_knowledge_distillation", {
    "entropy of the next token at T=1": entropies[1.0],
    "entropy of the next token at T=2": entropies[2.0],
    "kd_loss vs F.kl_div, abs difference": kl_div_difference,
    "toy fit sigma, forward KL": fits["forward"][1],
    "toy fit sigma, reverse KL": fits["reverse"][1],
    "greedy accuracy": greedy_accuracy,
    f"pass@{K} (verified samples)": pass_at_k,
})
expect("entropy grows with temperature (T=2 minus T=1)", entropies[2.0] - entropies[1.0], at_least=0.5)
expect("kd_loss vs F.kl_div, abs difference", kl_div_difference, at_most=1e-5)
expect("forward-KL sigma / reverse-KL sigma", fits["forward"][1] / fits["reverse"][1], at_least=2.0)
expect(f"pass@{K} minus greedy accuracy", pass_at_k - greedy_accuracy, at_least=0.05)
'''),
    ]


def main() -> int:
    return write_notebooks({ROOT / "solutions" / f"{LAB}.ipynb": lab_cells(), ROOT / "lectures" / f"{LECTURE}.ipynb": lecture_cells()})


if __name__ == "__main__":
    sys.exit(main())
