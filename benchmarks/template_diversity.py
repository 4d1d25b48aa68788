"""Lab 02's "one template or many?" over seeds: the same four task families, examples, steps and learning rate, with
every example phrased by its family's templates in turn (many) or by template 0 only (single). Zero-shot accuracy on
the held-out family, exact (the bare answer: format and content) and lenient (the answer anywhere: content alone).

    python benchmarks/template_diversity.py --out benchmarks/results/template_diversity.json   # the committed run
    python benchmarks/template_diversity.py --seeds 0 --n-test 32                               # one quick point

Each seed draws its own training mixture (lab 02's ex2, `build_mixture`) and LoRA initialisation (ex3,
`instruction_tune`), both taken from lab 02's solution; the held-out examples are the same for every seed, in two
sets: the library's templates of the held-out family, and three templates no run trains on (the solution's ex1).
Prints one JSON line per run and the mean and spread over seeds of each arm and of many minus single. --report FILE
prints the table of a saved run again.
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import statistics

from peft import LoraConfig, get_peft_model
from seeds import (  # benchmarks/seeds.py: run as scripts, the folder is on the path
    finish_run,
    mean_sd_text,
    paired_text,
    print_saved_report,
    run_parser,
)

from anlp_ft.assignments.labspec import load_answers
from anlp_ft.data.flan import FAMILIES, TaskFamily, task_examples, verify
from anlp_ft.evaluate import generate
from anlp_ft.formatting import encode_example, plain_prompt
from anlp_ft.models import load_model, load_tokenizer
from anlp_ft.runtime import pick_device, seed_everything
from anlp_ft.train import TrainConfig, fit

HELD_OUT = "last_word"
TRAIN_FAMILIES = ["addition", "counting", "uppercase", "reversal"]  # lab 02's main multi-task run
HELD_OUT_SEED = 10_000
MAX_NEW_TOKENS = 8  # as lab 02: answers are one word or a short number


def scores(model, tokenizer, examples: list[dict]) -> dict:
    outputs = generate(model, tokenizer, [plain_prompt(e["prompt"]) for e in examples], max_new_tokens=MAX_NEW_TOKENS,
                       batch_size=64)
    return {"exact": statistics.mean(verify(o, e["answer"]) for o, e in zip(outputs, examples)),
            "lenient": statistics.mean(verify(o, e["answer"], strict=False) for o, e in zip(outputs, examples))}


def measure(model, tokenizer, sets: dict[str, list[dict]]) -> dict:
    return {f"{name} {k}": v for name, examples in sets.items() for k, v in scores(model, tokenizer, examples).items()}


def lab02_solution(base, tokenizer, args: argparse.Namespace, seed: int):
    """Lab 02's solution (its ex1-ex3) with the set-up names it reads: lab 02's LoRA, and args' steps, batch and lr.
    ex3 reads SEED from the lab's set-up, so each seed loads it anew."""
    n = base.config.num_hidden_layers

    def lora_config() -> LoraConfig:  # lab 02's
        return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                          target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
                          layers_to_transform=list(range(n // 2, n)))

    given = {"random": random, "TaskFamily": TaskFamily, "tokenizer": tokenizer, "encode_example": encode_example,
             "plain_prompt": plain_prompt, "get_peft_model": get_peft_model, "lora_config": lora_config,
             "TrainConfig": TrainConfig, "fit": fit, "STEPS": args.steps, "BATCH": args.batch, "LR": args.lr}
    return load_answers("02", **given, SEED=seed)


def lab02_parser(description: str) -> argparse.ArgumentParser:
    """The options every seeded run shares, and lab 02's quick training run and held-out size."""
    parser = run_parser(description)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--n-test", type=int, default=128, help="held-out examples in each set")
    return parser


def report(result: dict) -> str:
    before, rows, seeds = result["pre-trained"], result["rows"], result["settings"]["seeds"]
    keys = list(before)
    lines = [f"{'arm':>12}  " + "  ".join(f"{k:>28}" for k in keys) + f"   mean ± sd over {len(seeds)} seeds",
             f"{'pre-trained':>12}  " + "  ".join(f"{before[k]:>28.3f}" for k in keys)]
    for arm in ("many", "single"):
        rs = [r for r in rows if r["arm"] == arm]
        lines.append(f"{arm:>12}  " + "  ".join(f"{mean_sd_text(r[k] for r in rs):>28}" for k in keys))
    many, single = [r for r in rows if r["arm"] == "many"], [r for r in rows if r["arm"] == "single"]
    for k in keys:
        gaps = [100 * (m[k] - s[k]) for m, s in zip(many, single)]
        lines.append(f"many - single, {k} (points, paired by seed): {paired_text(gaps)}")
    return "\n".join(lines)


def main() -> None:
    args = lab02_parser(__doc__).parse_args()
    if print_saved_report(args, report):
        return
    tokenizer = load_tokenizer(args.model)
    base = load_model(args.model, device=pick_device()).eval()
    own_templates = tuple(lab02_solution(base, tokenizer, args, seed=0).my_templates())
    own = TaskFamily(HELD_OUT, own_templates, FAMILIES[HELD_OUT].sample)
    rng = random.Random(HELD_OUT_SEED + 1)
    sets = {"library templates": task_examples(HELD_OUT, args.n_test, seed=HELD_OUT_SEED),
            "unseen templates": [own.example(rng, i % len(own_templates)) for i in range(args.n_test)]}
    before = measure(base, tokenizer, sets)
    print(json.dumps({"arm": "pre-trained", **before}), flush=True)
    per_family = -(-args.steps * args.batch // len(TRAIN_FAMILIES))
    rows = []
    for seed in args.seeds:
        sol = lab02_solution(base, tokenizer, args, seed)
        for arm, single in (("many", False), ("single", True)):
            mixture = sol.build_mixture([FAMILIES[f] for f in TRAIN_FAMILIES], per_family, seed, single)
            seed_everything(seed)
            model, history = sol.instruction_tune(copy.deepcopy(base), mixture)
            rows.append({"arm": arm, "seed": seed, "examples": len(mixture), "final loss": history.final_loss,
                         **measure(model, tokenizer, sets)})
            print(json.dumps(rows[-1]), flush=True)
            del model
    finish_run(args, {"unseen templates": list(own_templates), "pre-trained": before, "rows": rows}, report)


if __name__ == "__main__":
    main()
