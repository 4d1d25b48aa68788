"""Data efficiency over seeds: held-out loss and accuracy of a pre-trained and a randomly initialised model of the
same configuration, trained on n examples for the same number of optimizer steps (lecture 01's ULMFiT claim: starting
from a pre-trained model reaches a given quality with far fewer labelled examples).

    python benchmarks/data_efficiency.py --out benchmarks/results/data_efficiency.json   # the committed run
    python benchmarks/data_efficiency.py --lr 1e-4 --out benchmarks/results/data_efficiency_lr_1e-4.json
    python benchmarks/data_efficiency.py --seeds 0 --sizes 8 64 --steps 16               # one quick point

Lab 01's section 5 in more steps and on the whole model: its quick profile trains every n for 8 steps x 8 on 6 of
the 30 layers, too few steps for 64 examples to show more than 8 do, so its table shows the initialisation and not a
curve in n. Here every run takes `--steps` optimizer steps of `--batch` examples (by default 64 x 8: one epoch of
the largest set, 64 epochs of 8 examples), full fine-tuning at the lab's lr 5e-4 (`--lr 1e-4`: the lr at which the
whole pre-trained model learns to add, as `forgetting.py`'s full fine-tuning does; random weights learn less at it
than at 5e-4), on the first n of each seed's draw of 2-digit sums with short answers
(`Question: What is 23 + 45?\\nAnswer: 68`). Across n only the number of distinct examples differs; between the two
models at one n only the initial weights. Both keep `--layers` of SmolLM2's 30 layers (0, the default: all of them,
as in the lab's full profile; 6: the lab's quick profile). Every run is scored on the same held-out problems: the
held-out loss (the mean cross-entropy over their answers, as the lab measures) and exact accuracy (the first number
the model writes, greedy, is the sum).

Prints one JSON line per run, then each model's mean and spread over seeds at each n, and the difference paired by
seed; --report FILE prints the table of a saved run again.
"""
from __future__ import annotations

import copy
import json
import math
import re
import statistics

from seeds import (  # benchmarks/seeds.py: run as scripts, the folder is on the path
    finish_run,
    mean_sd_text,
    paired_text,
    print_saved_report,
    run_parser,
)

from anlp_ft.data.arithmetic import arithmetic_problems
from anlp_ft.evaluate import accuracy, perplexity
from anlp_ft.formatting import encode_example, plain_prompt
from anlp_ft.models import load_model, load_tokenizer, student_from_teacher
from anlp_ft.runtime import pick_device, seed_everything
from anlp_ft.train import TrainConfig, fit

HELD_OUT_SEED = 10_000
INITS = ("pre-trained", "random init")


def encode(tokenizer, problems: list[dict]) -> list[dict]:
    return [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["answer"]) for p in problems]


def first_number_is(output: str, answer: str) -> bool:
    """Exact: the first number the model writes is the sum (a tuned model answers " 68" and stops)."""
    return re.findall(r"-?\d+", output)[:1] == [answer]


def train_and_measure(base, init: str, train: list[dict], held_out: list[dict], args, seed: int, tokenizer) -> dict:
    seed_everything(seed)
    model = copy.deepcopy(base) if init == "pre-trained" else type(base)(base.config).to(base.device)
    pad = tokenizer.pad_token_id
    fit(model, encode(tokenizer, train),
        TrainConfig(steps=args.steps, batch_size=args.batch, lr=args.lr, seed=seed, progress=False), pad_token_id=pad)
    model.eval()
    loss = math.log(perplexity(model, encode(tokenizer, held_out), pad_token_id=pad))
    acc = accuracy(model, tokenizer, [plain_prompt(p["question"]) for p in held_out], [p["answer"] for p in held_out],
                   first_number_is, max_new_tokens=6, batch_size=64).accuracy
    return {"loss": loss, "accuracy": acc}


def report(result: dict) -> str:
    rows, settings = result["rows"], result["settings"]
    sizes, seeds = settings["sizes"], settings["seeds"]

    def values(init: str, n: int, key: str) -> list[float]:
        return [next(r[key] for r in rows if r["init"] == init and r["n"] == n and r["seed"] == s) for s in seeds]

    lines = [f"mean ± sd over {len(seeds)} seeds, {settings['steps']} steps x {settings['batch']} for every n, "
             f"lr {settings['lr']:g}, {settings['layers'] or 'all 30'} layers, {settings['n_test']} held-out problems; "
             "the last column is random minus pre-trained, paired by seed"]
    for key, digits, unit in (("loss", 3, 1), ("accuracy", 1, 100)):
        lines.append(f"\n{'held-out ' + key:>18}  {'pre-trained':>13}  {'random init':>13}")
        for n in sizes:
            pre = [unit * v for v in values("pre-trained", n, key)]
            rand = [unit * v for v in values("random init", n, key)]
            lines.append(f"{n:>9} examples  {mean_sd_text(pre, digits):>13}  {mean_sd_text(rand, digits):>13}   "
                         f"{paired_text([r - p for p, r in zip(pre, rand)], digits=digits)}")
    lines.append("")
    for init in INITS:
        first, last = values(init, sizes[0], "loss"), values(init, sizes[-1], "loss")
        lines.append(f"{init}, held-out loss at {sizes[-1]} minus {sizes[0]} examples: "
                     f"{paired_text([b - a for a, b in zip(first, last)], digits=3)}")
    best = min(sizes, key=lambda n: statistics.mean(values("random init", n, "loss")))
    lines.append(f"pre-trained at {sizes[0]} examples: {mean_sd_text(values('pre-trained', sizes[0], 'loss'))}; "
                 f"random init at its best n ({best}): {mean_sd_text(values('random init', best, 'loss'))}")
    return "\n".join(lines)


def main() -> None:
    parser = run_parser(__doc__)
    parser.add_argument("--sizes", nargs="*", type=int, default=[8, 32, 128, 512], help="training-set sizes n")
    parser.add_argument("--steps", type=int, default=64, help="optimizer steps, the same for every n")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--layers", type=int, default=0, help="layers kept in both models (0: all 30)")
    parser.add_argument("--n-test", type=int, default=128, help="held-out problems")
    args = parser.parse_args()
    if print_saved_report(args, report):
        return
    tokenizer = load_tokenizer(args.model)
    base = load_model(args.model, device=pick_device()).eval()
    base = student_from_teacher(base, args.layers) if args.layers else base
    held_out = arithmetic_problems(args.n_test, seed=HELD_OUT_SEED)
    rows = []
    for seed in args.seeds:
        train = arithmetic_problems(max(args.sizes), seed=seed, exclude=[p["question"] for p in held_out])
        for n in args.sizes:
            for init in INITS:
                rows.append({"init": init, "n": n, "seed": seed,
                             **train_and_measure(base, init, train[:n], held_out, args, seed, tokenizer)})
                print(json.dumps(rows[-1]), flush=True)
    finish_run(args, {"rows": rows}, report)


if __name__ == "__main__":
    main()
