"""Lab 04's three students over seeds: hard labels vs token-level KD vs sequence-level KD at equal steps, batch and
learning rate, on one held-out set. Which one learns most from the teacher, and is the order the same on every seed?

    python benchmarks/kd_ranking.py --out benchmarks/results/kd_ranking.json   # the committed run
    python benchmarks/kd_ranking.py --seeds 0 --n-test 32                      # one quick point

For each seed, as lab 04's quick profile does: the teacher is the pre-trained model after TEACHER_STEPS LoRA steps on
gold step-by-step solutions (merged); each student is the pre-trained student model (SmolLM2-135M-Instruct) with a
fresh LoRA adapter, trained for the same steps, batch, learning rate and seed on the same questions (merged). Only the
training signal differs:

* hard labels:       the gold solutions, ordinary cross-entropy (the one right token at each position);
* token-level KD:    the same gold sequences, matching the teacher's whole next-token distribution at T (soft labels);
* sequence-level KD: the teacher's own greedy answers to the same questions, ordinary cross-entropy.

Held-out accuracy (lenient: the last number is the sum, what lab 04 reports; strict: the answer ends in "The answer
is N.") and the held-out loss of the gold solutions (the hard-label objective) on one fixed set of problems for every
seed. Whether a student copies the teacher's mistakes: on the problems the teacher gets wrong (its training questions,
whose answers are sequence-level KD's data, and the held-out ones), the share where the student gives the teacher's
wrong number; the hard-label student, trained on the same questions' gold solutions, is the control. The KD loss,
the distilling loss_fn and the sequence-level data are lab 04's exercises, taken from its solution.
Prints one JSON line per run and the mean and spread over seeds of each arm and of each arm minus hard labels.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import statistics

import torch
from peft import LoraConfig, get_peft_model
from seeds import (  # benchmarks/seeds.py: run as scripts, the folder is on the path
    finish_run,
    mean_sd_text,
    paired_text,
    print_saved_report,
    run_parser,
)

from anlp_ft.assignments.labspec import load_answers
from anlp_ft.data.arithmetic import arithmetic_problems, extract_answer, is_correct
from anlp_ft.evaluate import generate, perplexity
from anlp_ft.formatting import IGNORE_INDEX, encode_example, plain_prompt
from anlp_ft.models import INSTRUCT_MODEL, TEACHER_MODEL, load_model, load_tokenizer
from anlp_ft.runtime import pick_device, seed_everything
from anlp_ft.train import TrainConfig, fit

HELD_OUT_SEED = 10_000  # as benchmarks/augmented_teacher.py
MAX_NEW_TOKENS = 40  # as lab 04: a step-by-step solution of a 2-digit sum is about 35 tokens
LORA = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
ARMS = ("hard labels", "token-level KD", "sequence-level KD")


def greedy_answers(model, tokenizer, questions: list[str]) -> list[str | None]:
    """The number each greedy generation ends with (None: no number)."""
    outputs = generate(model, tokenizer, [plain_prompt(q) for q in questions], max_new_tokens=MAX_NEW_TOKENS,
                       batch_size=64)
    return [extract_answer(o) for o in outputs]


def measure(model, tokenizer, test: list[dict], keep_answers: bool = False) -> dict:
    outputs = generate(model, tokenizer, [plain_prompt(p["question"]) for p in test], max_new_tokens=MAX_NEW_TOKENS,
                       batch_size=64)
    gold = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"]) for p in test]
    row = {"lenient": statistics.mean(is_correct(o, p["answer"]) for o, p in zip(outputs, test)),
           "strict": statistics.mean(is_correct(o, p["answer"], strict=True) for o, p in zip(outputs, test)),
           "held-out loss": math.log(perplexity(model, gold, pad_token_id=tokenizer.pad_token_id, batch_size=32))}
    return {**row, "held-out answers": [extract_answer(o) for o in outputs]} if keep_answers else row


def copied_mistakes(student: list[str | None], teacher: list[str | None], truth: list[str]) -> float:
    """Of the problems where the teacher's number is wrong, the share where the student gives that same number."""
    wrong = [(s, t) for s, t, a in zip(student, teacher, truth) if t is not None and t != a]
    return sum(s == t for s, t in wrong) / len(wrong) if wrong else math.nan


def lora_fit(base, data: list[dict], steps: int, args, seed: int, pad_token_id: int, loss_fn=None,
             max_grad_norm: float | None = 1.0, optimizer: str = "adamw", lr: float | None = None):
    """A fresh LoRA adapter on `base` trained for `steps` (at lr, default args.lr), merged."""
    seed_everything(seed)
    model = get_peft_model(copy.deepcopy(base), LORA)
    config = TrainConfig(steps=steps, batch_size=args.batch, lr=lr or args.lr, optimizer=optimizer, warmup_steps=2,
                         seed=seed, max_grad_norm=max_grad_norm, progress=False)
    fit(model, data, config, loss_fn=loss_fn, pad_token_id=pad_token_id)
    return model.merge_and_unload().eval()  # merged: evaluated as fast as the pre-trained model


def teacher_and_data(teacher_base, tokenizer, test: list[dict], args, seed: int):
    """A seed's training problems (none of the held-out ones), their gold examples, and the teacher: the pre-trained
    model after teacher_steps LoRA steps on them, merged."""
    problems = arithmetic_problems(max(args.teacher_steps, args.steps) * args.batch, seed=seed,
                                   exclude=[p["question"] for p in test])
    gold = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"]) for p in problems]
    teacher = lora_fit(teacher_base, gold[:args.teacher_steps * args.batch], args.teacher_steps, args, seed,
                       tokenizer.pad_token_id)
    return teacher, problems, gold


def one_seed(teacher_base, student_base, tokenizer, sol, test: list[dict], args, seed: int) -> list[dict]:
    teacher, problems, gold = teacher_and_data(teacher_base, tokenizer, test, args, seed)
    pad = tokenizer.pad_token_id
    rows = [{"arm": "teacher", "seed": seed, **measure(teacher, tokenizer, test, keep_answers=True)}]
    questions = [p["question"] for p in problems[:args.steps * args.batch]]
    seq_examples, seq_answers = sol.sequence_kd_data(teacher, questions)
    rows[-1]["training answers"] = [extract_answer(a) for a in seq_answers]  # what sequence-level KD trains on
    rows[-1]["training truth"] = [p["answer"] for p in problems[:len(questions)]]
    print(json.dumps(_short(rows[-1])), flush=True)
    right = sum(is_correct(a, p["answer"]) for a, p in zip(seq_answers, problems))
    signals = {"hard labels": (gold[:len(questions)], None),
               "token-level KD": (gold[:len(questions)], sol.make_token_kd_loss(teacher, args.temperature)),
               "sequence-level KD": (seq_examples, None)}
    for arm, (data, loss_fn) in signals.items():
        student = lora_fit(student_base, data, args.steps, args, seed, pad, loss_fn=loss_fn)
        rows.append({"arm": arm, "seed": seed, "examples": len(data),
                     **measure(student, tokenizer, test, keep_answers=True),
                     "training answers": greedy_answers(student, tokenizer, questions)})
        if arm == "sequence-level KD":
            rows[-1]["teacher's right answers"] = right
        print(json.dumps(_short(rows[-1])), flush=True)
        del student
    return rows


def _short(row: dict) -> dict:
    """A row without its per-problem answers, for the progress lines."""
    return {k: v for k, v in row.items() if not isinstance(v, list)}


def mistakes_report(result: dict) -> list[str]:
    """Each student's share of the teacher's wrong numbers it repeats, on its training and held-out questions."""
    rows = result["rows"]
    teacher = {r["seed"]: r for r in rows if r["arm"] == "teacher"}
    train_truth = {seed: r["training truth"] for seed, r in teacher.items()}
    lines = ["teacher's mistakes repeated (of the problems the teacher gets wrong, the share where the student gives "
             "the same wrong number):"]
    shares: dict[tuple[str, str], list[float]] = {}
    for arm in ARMS:
        rs = [r for r in rows if r["arm"] == arm]
        for where, key in (("training", "training answers"), ("held-out", "held-out answers")):
            shares[arm, where] = [copied_mistakes(r[key], teacher[r["seed"]][key],
                                                  train_truth[r["seed"]] if where == "training"
                                                  else result["held-out truth"]) for r in rs]
        lines.append(f"{arm:>18}  training questions {mean_sd_text(shares[arm, 'training'])}   held-out "
                     f"{mean_sd_text(shares[arm, 'held-out'])}")
    wrong = [sum(t is not None and t != a for t, a in zip(teacher[s]["training answers"], train_truth[s]))
             for s in sorted(teacher)]
    lines.append(f"(the teacher is wrong on {', '.join(map(str, wrong))} of {len(train_truth[min(train_truth)])} "
                 "training questions, per seed)")
    for arm in ARMS[1:]:
        for where in ("training", "held-out"):
            gaps = [100 * (a - h) for a, h in zip(shares[arm, where], shares["hard labels", where])]
            lines.append(f"{arm} - hard labels, {where} mistakes repeated (points, paired by seed): "
                         f"{paired_text(gaps)}")
    return lines


def report(result: dict) -> str:
    """The table of a run: each arm's mean and spread over seeds, each KD arm minus hard labels, the order per seed."""
    rows, before, settings = result["rows"], result["pre-trained student"], result["settings"]
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"teacher: {settings['teacher_steps']} LoRA steps; students: {settings['steps']} LoRA steps x "
             f"{settings['batch']}, lr {settings['lr']}, T = {settings['temperature']}; {settings['n_test']} held-out "
             f"problems",
             f"pre-trained student: lenient {before['lenient']:.3f}, strict {before['strict']:.3f}, held-out loss "
             f"{before['held-out loss']:.3f}",
             f"{'arm':>18}  {'lenient':>15}  {'strict':>15}  {'held-out loss':>15}   mean ± sd over {len(seeds)} seeds"]
    for arm in ("teacher", *ARMS):
        rs = [r for r in rows if r["arm"] == arm]
        lines.append(f"{arm:>18}  " + "  ".join(f"{mean_sd_text(r[k] for r in rs):>15}"
                                                for k in ("lenient", "strict", "held-out loss")))
    hard = [r for r in rows if r["arm"] == "hard labels"]
    for arm in ARMS[1:]:
        for key, scale, unit, digits in (("lenient", 100, "points", 1), ("held-out loss", 1, "nats", 3)):
            gaps = [scale * (r[key] - h[key]) for r, h in zip([r for r in rows if r["arm"] == arm], hard)]
            lines.append(f"{arm} - hard labels, {key} ({unit}, paired by seed): {paired_text(gaps, digits)}")
    for seed in seeds:
        accuracy = {a: next(r["lenient"] for r in rows if r["arm"] == a and r["seed"] == seed) for a in ARMS}
        order = sorted(ARMS, key=lambda a: -accuracy[a])
        text = order[0]
        for previous, arm in zip(order, order[1:]):
            text += (" = " if accuracy[arm] == accuracy[previous] else " > ") + arm
        lines.append(f"seed {seed}, lenient accuracy: {text}")
    if "held-out truth" in result:  # runs before this measure was added have no answers
        lines += mistakes_report(result)
    return "\n".join(lines)


def arguments(description: str) -> argparse.ArgumentParser:
    """The options of the KD benchmarks (this one and kd_temperature.py): lab 04's quick profile by default."""
    parser = run_parser(description, model_help=None)  # a teacher and a student model instead
    parser.add_argument("--teacher-steps", type=int, default=14)
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps of each student")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="for the teacher and every student")
    parser.add_argument("--n-test", type=int, default=128)
    parser.add_argument("--teacher-model", default=None,
                        help="default: SmolLM2-360M-Instruct (offline: SmolLM2-135M-Instruct)")
    parser.add_argument("--student-model", default=INSTRUCT_MODEL)
    return parser


def setup(args):
    """The tokenizer, the teacher's and the student's pre-trained models, lab 04's answers (from its solution) and
    the held-out problems."""
    device = pick_device()
    tokenizer = load_tokenizer(args.teacher_model or TEACHER_MODEL)
    teacher_base = load_model(args.teacher_model or TEACHER_MODEL, device=device).eval()
    student_base = load_model(args.student_model, device=device, verbose=False).eval()
    sol = load_answers("04", torch=torch, IGNORE_INDEX=IGNORE_INDEX, generate=generate, encode_example=encode_example,
                       plain_prompt=plain_prompt, tokenizer=tokenizer, MAX_NEW_TOKENS=MAX_NEW_TOKENS)
    return tokenizer, teacher_base, student_base, sol, arithmetic_problems(args.n_test, seed=HELD_OUT_SEED)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--temperature", type=float, default=2.0)
    args = parser.parse_args()
    if print_saved_report(args, report):
        return
    tokenizer, teacher_base, student_base, sol, test = setup(args)
    before = measure(student_base, tokenizer, test)
    print(json.dumps({"arm": "pre-trained student", **before}), flush=True)
    rows = [row for seed in args.seeds for row in one_seed(teacher_base, student_base, tokenizer, sol, test, args,
                                                           seed)]
    finish_run(args, {"pre-trained student": before, "held-out truth": [p["answer"] for p in test], "rows": rows},
               report)


if __name__ == "__main__":
    main()
