"""The augmented teacher (lab 04, section 3) against its controls, over seeds: does the verifier A(x, y) matter, or
does any fine-tuning on the model's own samples give the gain?

    python benchmarks/augmented_teacher.py --out benchmarks/results/augmented_teacher.json   # the committed run
    python benchmarks/augmented_teacher.py --seeds 0 --n-test 32                              # one quick point

For each seed, the pre-trained model samples K answers to each of AUG_PROBLEMS questions (lab 04's quick profile:
4 x 16, temperature 0.8), and three LoRA copies of it train for the same steps, batch and learning rate on the same
number of examples, differing only in which samples they get:

* verified:   the samples the verifier accepts (the last number is the sum), duplicates dropped: q ∝ p_LLM · A;
* unfiltered: as many samples drawn at random from all of them, right or wrong (A ≡ 1);
* greedy:     the model's greedy answer to as many questions, unchecked.

Held-out accuracy is measured on one fixed set of problems for every seed, two ways: lenient (the last number of the
answer is the sum, what lab 04 reports) and strict (the answer ends in "The answer is N.", the gold solutions' form).
Prints one JSON line per run and the mean and spread over seeds of each arm and of verified minus unfiltered.
--report FILE prints the table of a saved run again.
"""
from __future__ import annotations

import copy
import json
import random
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

from anlp_ft import distill
from anlp_ft.assignments.labspec import load_answers
from anlp_ft.data.arithmetic import arithmetic_problems, is_correct
from anlp_ft.evaluate import generate
from anlp_ft.formatting import encode_example, plain_prompt
from anlp_ft.models import TEACHER_MODEL, load_model, load_tokenizer
from anlp_ft.runtime import pick_device, seed_everything
from anlp_ft.train import TrainConfig, fit

HELD_OUT_SEED = 10_000
MAX_NEW_TOKENS = 40  # as lab 04: a step-by-step solution of a 2-digit sum is about 35 tokens
LORA = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
keep_verified = load_answers("04", torch=torch).keep_verified  # lab 04's ex4, from its solution


def accuracies(model, tokenizer, test: list[dict]) -> dict:
    outputs = generate(model, tokenizer, [plain_prompt(p["question"]) for p in test], max_new_tokens=MAX_NEW_TOKENS,
                       batch_size=64)
    return {"lenient": statistics.mean(is_correct(o, p["answer"]) for o, p in zip(outputs, test)),
            "strict": statistics.mean(is_correct(o, p["answer"], strict=True) for o, p in zip(outputs, test))}


def tune(base, tokenizer, pairs: list[tuple[str, str]], args, seed: int) -> dict:
    seed_everything(seed)
    model = get_peft_model(copy.deepcopy(base), LORA)
    data = [encode_example(tokenizer, plain_prompt(q), " " + a) for q, a in pairs]
    fit(model, data, TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, warmup_steps=2, seed=seed,
                                 progress=False), pad_token_id=tokenizer.pad_token_id)
    return model


def one_seed(base, tokenizer, test: list[dict], args, seed: int) -> list[dict]:
    exclude = [p["question"] for p in test]
    problems = arithmetic_problems(args.problems, seed=seed, exclude=exclude)
    questions = [p["question"] for p in problems]
    samples = distill.sample_solutions(base, tokenizer, questions, k=args.k, temperature=0.8,
                                       max_new_tokens=MAX_NEW_TOKENS, batch_size=64, seed=seed)
    verified = keep_verified(problems, samples, is_correct)
    n = len(verified)
    pool = [(q, s.strip()) for q, outs in zip(questions, samples) for s in outs if s.strip()]
    greedy = generate(base, tokenizer, [plain_prompt(q) for q in questions], max_new_tokens=MAX_NEW_TOKENS,
                      batch_size=64)
    rng = random.Random(seed)
    arms = {"verified": [(v["question"], v["solution"]) for v in verified],
            "unfiltered": rng.sample(pool, n),
            "greedy": [(q, g.strip()) for q, g in list(zip(questions, greedy))[:n]]}
    if n == 0:
        raise SystemExit(f"seed {seed}: no sample was verified; sample more (--k, --problems)")
    answer_of = {p["question"]: p["answer"] for p in problems}
    rows = []
    for arm, pairs in arms.items():
        right = sum(is_correct(a, answer_of[q]) for q, a in pairs)
        model = tune(base, tokenizer, pairs, args, seed)
        rows.append({"arm": arm, "seed": seed, "examples": n, "right examples": right, **accuracies(model, tokenizer,
                                                                                                  test)})
        print(json.dumps(rows[-1]), flush=True)
        del model
    return rows


def report(result: dict) -> str:
    before, rows, seeds = result["pre-trained"], result["rows"], result["settings"]["seeds"]
    lines = [f"pre-trained: lenient {before['lenient']:.3f}, strict {before['strict']:.3f} "
             f"({result['settings']['n_test']} held-out problems)",
             f"{'arm':>10}  {'lenient':>15}  {'strict':>15}  examples (right)   mean ± sd over {len(seeds)} seeds"]
    for arm in ("verified", "unfiltered", "greedy"):
        rs = [r for r in rows if r["arm"] == arm]
        cells = [mean_sd_text(r[key] for r in rs) for key in ("lenient", "strict")]
        lines.append(f"{arm:>10}  {cells[0]:>15}  {cells[1]:>15}  " + " ".join(f"{r['examples']}({r['right examples']})"
                                                                               for r in rs))
    for key in ("lenient", "strict"):
        gaps = [100 * (v[key] - u[key]) for v, u in zip([r for r in rows if r["arm"] == "verified"],
                                                        [r for r in rows if r["arm"] == "unfiltered"])]
        lines.append(f"verified - unfiltered, {key} (points, paired by seed): {paired_text(gaps)}")
    return "\n".join(lines)


def main() -> None:
    parser = run_parser(__doc__, model_help="default: SmolLM2-360M-Instruct (offline: SmolLM2-135M-Instruct)")
    parser.add_argument("--k", type=int, default=4, help="samples per problem")
    parser.add_argument("--problems", type=int, default=16, help="problems the model samples answers for")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--n-test", type=int, default=128)
    args = parser.parse_args()
    if print_saved_report(args, report):
        return
    tokenizer = load_tokenizer(args.model or TEACHER_MODEL)
    base = load_model(args.model or TEACHER_MODEL, device=pick_device()).eval()
    test = arithmetic_problems(args.n_test, seed=HELD_OUT_SEED)
    before = accuracies(base, tokenizer, test)
    print(json.dumps({"arm": "pre-trained", **before}), flush=True)
    rows = [row for seed in args.seeds for row in one_seed(base, tokenizer, test, args, seed)]
    finish_run(args, {"pre-trained": before, "rows": rows}, report)


if __name__ == "__main__":
    main()
