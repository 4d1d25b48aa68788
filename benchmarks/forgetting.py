"""What fine-tuning on one task costs elsewhere, over seeds: zero-shot and few-shot accuracy on three other tasks
before and after tuning the pre-trained model on arithmetic (lecture 01's "other tasks may degrade" and "few-shot
ability is lost").

    python benchmarks/forgetting.py --out benchmarks/results/forgetting.json   # the committed run
    python benchmarks/forgetting.py --seeds 0 --n-test 16                      # one quick point

Each seed tunes the pre-trained model on its own draw of 2-digit sums with short answers (`Question: What is 23 +
45?\nAnswer: 68`), two ways: lecture 01's LoRA run (24 steps x 16, lr 1e-3) and full fine-tuning for longer (96 steps
x 16, lr 1e-4), the setting where forgetting is likelier. Every model, and the untuned one, answers the same held-out
prompts of three other task families (uppercase, last word, comparison) in the same plain format:

* zero-shot: the question alone; lenient (the answer appears in the output), as lecture 01 scores it;
* few-shot: three solved examples of the same family before the question (the in-context learning the lecture says
  fine-tuning can lose); exact (the first line of the output is the answer) and lenient.

Prints one JSON line per run and the mean and spread over seeds of each arm and of each change from the untuned model.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
from pathlib import Path

from peft import LoraConfig, get_peft_model
from seeds import mean_sd_text  # benchmarks/seeds.py: run as scripts, the folder is on the path

from anlp_ft.data.arithmetic import arithmetic_problems, is_correct
from anlp_ft.data.flan import task_examples, verify
from anlp_ft.evaluate import accuracy, generate
from anlp_ft.formatting import encode_example, plain_prompt
from anlp_ft.models import load_model, load_tokenizer
from anlp_ft.runtime import pick_device, seed_everything
from anlp_ft.train import TrainConfig, fit

FAMILIES = ("uppercase", "last_word", "comparison")  # lecture 01's other tasks
HELD_OUT_SEED = 10_000
SHOTS = 3
ARMS = {"LoRA, 24 steps": {"lora": True, "steps": 24, "lr": 1e-3},
        "full, 96 steps": {"lora": False, "steps": 96, "lr": 1e-4}}


def few_shot_prompt(demos: list[dict], question: str) -> str:
    return "\n\n".join([plain_prompt(d["prompt"]) + " " + d["answer"] for d in demos] + [plain_prompt(question)])


def measure(model, tokenizer, tasks: list[dict], arithmetic: list[dict]) -> dict:
    zero = generate(model, tokenizer, [plain_prompt(t["prompt"]) for t in tasks], max_new_tokens=12, batch_size=64)
    few = generate(model, tokenizer, [t["few-shot prompt"] for t in tasks], max_new_tokens=12, batch_size=32)
    first_lines = [o.strip().split("\n")[0] for o in few]
    sums = accuracy(model, tokenizer, [plain_prompt(p["question"]) for p in arithmetic],
                    [p["answer"] for p in arithmetic], is_correct, max_new_tokens=10, batch_size=64).accuracy
    return {"arithmetic": sums,
            "zero-shot lenient": statistics.mean(verify(o, t["answer"], strict=False) for o, t in zip(zero, tasks)),
            "few-shot exact": statistics.mean(verify(o, t["answer"]) for o, t in zip(first_lines, tasks)),
            "few-shot lenient": statistics.mean(verify(o, t["answer"], strict=False) for o, t in zip(few, tasks))}


def tune(base, tokenizer, problems: list[dict], arm: dict, batch: int, seed: int):
    seed_everything(seed)
    model = copy.deepcopy(base)
    if arm["lora"]:
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    data = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["answer"]) for p in problems]
    fit(model, data, TrainConfig(steps=arm["steps"], batch_size=batch, lr=arm["lr"], warmup_steps=2, seed=seed,
                                 progress=False), pad_token_id=tokenizer.pad_token_id)
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=32, help="held-out prompts per task family")
    parser.add_argument("--model", default=None, help="default: SmolLM2-135M (offline: SmolLM2-135M-Instruct)")
    parser.add_argument("--out", help="write the settings and rows to this JSON file")
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.model)
    base = load_model(args.model, device=pick_device()).eval()
    rng = random.Random(HELD_OUT_SEED)
    tasks = []
    for i, family in enumerate(FAMILIES):
        demos = task_examples(family, SHOTS, seed=HELD_OUT_SEED + 100 + i)
        for t in task_examples(family, args.n_test, seed=HELD_OUT_SEED + i):
            # the same three solved examples for every prompt of a family, in an order drawn per prompt
            tasks.append({**t, "few-shot prompt": few_shot_prompt(rng.sample(demos, SHOTS), t["prompt"])})
    arithmetic = arithmetic_problems(64, seed=HELD_OUT_SEED)  # the task tuned on, held out
    before = measure(base, tokenizer, tasks, arithmetic)
    print(json.dumps({"arm": "pre-trained", **before}), flush=True)
    rows = []
    for seed in args.seeds:
        train = arithmetic_problems(max(a["steps"] for a in ARMS.values()) * args.batch, seed=seed,
                                    exclude=[p["question"] for p in arithmetic])
        for name, arm in ARMS.items():
            model = tune(base, tokenizer, train[:arm["steps"] * args.batch], arm, args.batch, seed)
            rows.append({"arm": name, "seed": seed, **measure(model, tokenizer, tasks, arithmetic)})
            print(json.dumps(rows[-1]), flush=True)
            del model
    keys = list(before)
    print(f"\n{'arm':>16}  " + "  ".join(f"{k:>17}" for k in keys) + f"   mean ± sd over {len(args.seeds)} seeds, "
          f"{args.n_test} prompts x {len(FAMILIES)} families")
    print(f"{'pre-trained':>16}  " + "  ".join(f"{before[k]:>17.3f}" for k in keys))
    for name in ARMS:
        rs = [r for r in rows if r["arm"] == name]
        print(f"{name:>16}  " + "  ".join(f"{mean_sd_text(r[k] for r in rs):>17}" for k in keys))
    for name in ARMS:
        rs = [r for r in rows if r["arm"] == name]
        print(f"{name} minus pre-trained (points): " + ", ".join(
            f"{k} {statistics.mean(100 * (r[k] - before[k]) for r in rs):+.1f}" for k in keys))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        settings = {k: v for k, v in vars(args).items() if k != "out"}
        Path(args.out).write_text(json.dumps({"settings": {**settings, "arms": ARMS, "shots": SHOTS},
                                              "pre-trained": before, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
