"""How lab 01's fine-tuning depends on its length: LoRA (rank 16 on every linear layer, lr 2e-3, 3 warmup steps) on
step-by-step solutions of 2-digit sums, for several step counts and seeds, on one held-out set per seed; and lab 01's
format symptom over the same runs: its first 32 held-out problems asked in the training format, reworded inside the
training frame ("Question: Add 23 and 45." then "Answer:") and reworded without it ("Add 23 and 45."), before and
after tuning.

    python benchmarks/finetune_steps.py --out benchmarks/results/finetune_steps.json   # 32 and 40 steps x seeds 0 1 2

Lab 01 asserts a held-out accuracy after its quick profile's training; one seed cannot say how much of that number
is the step count and how much the draw of data and LoRA initialisation. Each seed draws its own training problems
(shorter runs train on a prefix of the longer runs' problems) and held-out set, and seeds the LoRA initialisation.
Seed 0 is lab 01's own run, number for number: the same problems, and the notebook too draws its LoRA
initialisation just after torch is seeded with 0 (by the generation before it). Prints one JSON line per run, then
held-out accuracy per step count and the symptom table (mean ± sd over seeds); with --out, writes the rows, and
--report FILE prints their tables again.
"""
from __future__ import annotations

import copy
import json
import re
import time

from peft import LoraConfig, get_peft_model
from seeds import (  # benchmarks/seeds.py: run as scripts, the folder is on the path
    finish_run,
    mean_sd_text,
    paired_text,
    print_saved_report,
    run_parser,
)

from anlp_ft.data.arithmetic import is_correct, train_test_problems
from anlp_ft.evaluate import accuracy
from anlp_ft.formatting import encode_example, plain_prompt
from anlp_ft.models import load_model, load_tokenizer
from anlp_ft.runtime import pick_device, seed_everything
from anlp_ft.train import TrainConfig, fit

N_VARIANTS = 32  # lab 01's paraphrase cell: the first 32 held-out problems


def variants(test: list[dict]) -> dict[str, tuple[list[str], list[str]]]:
    """Lab 01's three prompts of the same problems (prompts, answers): the training format, reworded in the frame,
    reworded without it."""
    def reworded(question: str) -> str:
        a, b = re.findall(r"\d+", question)
        return f"Add {a} and {b}."

    problems = test[:N_VARIANTS]
    answers = [p["answer"] for p in problems]
    return {"training format": ([plain_prompt(p["question"]) for p in problems], answers),
            "reworded, same frame": ([plain_prompt(reworded(p["question"])) for p in problems], answers),
            "reworded, no frame": ([reworded(p["question"]) for p in problems], answers)}


def variant_accuracy(model, tokenizer, test: list[dict]) -> dict[str, float]:
    """Each variant's accuracy, all three in one generation batch."""
    sets = variants(test)
    prompts = [q for qs, _ in sets.values() for q in qs]
    answers = [a for _, ans in sets.values() for a in ans]
    parts = accuracy(model, tokenizer, prompts, answers, is_correct, max_new_tokens=48, batch_size=96).split(N_VARIANTS)
    return {name: part.accuracy for name, part in zip(sets, parts)}


def run(base, steps: int, seed: int, args, tokenizer) -> dict:
    train, test = train_test_problems(max(args.steps) * args.batch, args.n_test, seed=seed)
    data = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"])
            for p in train[:steps * args.batch]]
    seed_everything(seed)
    model = get_peft_model(copy.deepcopy(base), LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                           target_modules="all-linear", task_type="CAUSAL_LM"))
    history = fit(model, data, TrainConfig(steps=steps, batch_size=args.batch, lr=args.lr, warmup_steps=3, seed=seed,
                                           progress=False), pad_token_id=tokenizer.pad_token_id)
    tic = time.perf_counter()
    acc = accuracy(model, tokenizer, [plain_prompt(p["question"]) for p in test], [p["answer"] for p in test],
                   is_correct, max_new_tokens=48, batch_size=64).accuracy
    return {"steps": steps, "seed": seed, "accuracy": acc, "variants": variant_accuracy(model, tokenizer, test),
            "final_loss": history.final_loss, "train_seconds": round(history.seconds, 1),
            "tokens_per_s": round(history.tokens_per_s), "eval_seconds": round(time.perf_counter() - tic, 1)}


def before_tuning(base, seed: int, args, tokenizer) -> dict:
    """The pre-trained model on the same seed's held-out problems and variants."""
    _, test = train_test_problems(max(args.steps) * args.batch, args.n_test, seed=seed)
    acc = accuracy(base, tokenizer, [plain_prompt(p["question"]) for p in test], [p["answer"] for p in test],
                   is_correct, max_new_tokens=48, batch_size=64).accuracy
    return {"steps": 0, "seed": seed, "accuracy": acc, "variants": variant_accuracy(base, tokenizer, test)}


def report(result: dict) -> str:
    """Held-out accuracy per step count (mean ± sd over seeds), each count against the longest paired by seed, and
    the symptom table (0 steps: the pre-trained model)."""
    rows, settings = result["rows"], result["settings"]
    longest = max(settings["steps"])
    acc = {s: {r["seed"]: r["accuracy"] for r in rows if r["steps"] == s} for s in sorted(settings["steps"])}
    lines = [f"batch {settings['batch']}, lr {settings['lr']}, {settings['n_test']} held-out problems; held-out "
             "accuracy (lenient: the last number), mean ± sd over seeds; training time on this machine",
             f"{'steps':>5}  {'accuracy':>13}  {'per seed':<20}  {'train s':>7}  minus {longest} steps (points)"]
    for steps, by_seed in acc.items():
        seconds = [r["train_seconds"] for r in rows if r["steps"] == steps]
        per_seed = " ".join(f"{100 * by_seed[s]:.1f}" for s in sorted(by_seed))
        gap = paired_text([100 * (by_seed[s] - acc[longest][s]) for s in sorted(by_seed)]) if steps != longest else ""
        lines.append(f"{steps:>5}  {mean_sd_text(by_seed.values()):>13}  {per_seed:<20}  "
                     f"{sum(seconds) / len(seconds):>7.0f}  {gap}")
    names = list(rows[0]["variants"])
    lines += ["", f"the first {N_VARIANTS} held-out problems, three ways (accuracy, mean ± sd over seeds; per seed)",
              f"{'steps':>5}  " + "  ".join(f"{n:>28}" for n in names)]
    for steps in sorted({r["steps"] for r in rows}):
        cells = []
        for name in names:
            values = [r["variants"][name] for r in sorted(rows, key=lambda r: r["seed"]) if r["steps"] == steps]
            cells.append(f"{mean_sd_text(values)} ({' '.join(f'{100 * v:.0f}' for v in values)})")
        lines.append(f"{steps:>5}  " + "  ".join(f"{c:>28}" for c in cells))
    for steps in settings["steps"]:
        by_seed = {r["seed"]: r["variants"] for r in rows if r["steps"] == steps}
        words = [100 * (v["training format"] - v["reworded, same frame"]) for _, v in sorted(by_seed.items())]
        frame = [100 * (v["reworded, same frame"] - v["reworded, no frame"]) for _, v in sorted(by_seed.items())]
        lines += [f"{steps} steps, what the words cost (training format minus reworded in the frame, points): "
                  + paired_text(words),
                  f"{steps} steps, what the frame costs (reworded in the frame minus without it, points): "
                  + paired_text(frame)]
    return "\n".join(lines)


def main() -> None:
    parser = run_parser(__doc__)
    parser.add_argument("--steps", nargs="*", type=int, default=[32, 40], help="optimizer steps (lab 01 quick: 32)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--n-test", type=int, default=64, help="held-out problems (lab 01 quick: 64)")
    args = parser.parse_args()
    if print_saved_report(args, report):
        return
    tokenizer = load_tokenizer(args.model)
    base = load_model(args.model, device=pick_device(), verbose=False).eval()
    rows = []
    for seed in args.seeds:
        rows.append(before_tuning(base, seed, args, tokenizer))
        print(json.dumps(rows[-1]), flush=True)
        for steps in args.steps:
            rows.append(run(base, steps, seed, args, tokenizer))
            print(json.dumps(rows[-1]), flush=True)
    finish_run(args, {"rows": rows}, report)


if __name__ == "__main__":
    main()
