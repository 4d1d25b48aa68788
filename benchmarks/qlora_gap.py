"""How far QLoRA trails LoRA as training gets longer: lab 06's comparison (2-digit sums, short answers, peft rank
8 on all seven projections, LoRA's tuned lr 1e-3, batch 8) repeated for several training lengths and seeds, on one
held-out set.

    python benchmarks/qlora_gap.py --out benchmarks/results/qlora_gap.json   # 24, 48, 96 steps x seeds 0 1 2
    python benchmarks/qlora_gap.py --steps 24 48 --seeds 0 --n-test 256

The lecture's claim is that QLoRA's adapters recover what 4-bit weights lose (QLoRA within a few points of
16-bit LoRA). Lab 06's quick profile trains 24 steps, too few for that on a 135M model whose offline copy was
stored in 4 bits (Q4_1) before NF4 quantises it again; this script measures how the gap closes with training.
Prints one JSON line per run and a table of the gap per training length (mean ± sd over seeds); with --out, writes
the rows, and --report FILE prints their table again.
"""
from __future__ import annotations

import json
import time
import warnings

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
from anlp_ft.lora import LORA_TARGETS
from anlp_ft.models import load_model, load_tokenizer
from anlp_ft.runtime import pick_device, seed_everything
from anlp_ft.train import TrainConfig, fit

warnings.filterwarnings("ignore", message=".*gemv_4bit.*")


def run(method: str, steps: int, seed: int, args, tokenizer) -> dict:
    # Training sets of different lengths share a prefix; the held-out set is the same for every run.
    train, test = train_test_problems(max(args.steps) * args.batch, args.n_test, seed=seed)
    data = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["answer"])
            for p in train[:steps * args.batch]]
    seed_everything(seed)
    start = time.perf_counter()
    model = load_model(args.model, device=pick_device(), quantization="nf4" if method == "QLoRA" else None,
                       verbose=False)
    model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                             target_modules=list(LORA_TARGETS)))
    history = fit(model, data, TrainConfig(steps=steps, batch_size=args.batch, lr=args.lr, warmup_steps=2,
                                           seed=seed, progress=False), pad_token_id=tokenizer.pad_token_id)
    acc = accuracy(model, tokenizer, [plain_prompt(p["question"]) for p in test], [p["answer"] for p in test],
                   is_correct, max_new_tokens=6, batch_size=64).accuracy
    return {"method": method, "steps": steps, "seed": seed, "accuracy": acc, "first_loss": history.loss[0],
            "last_loss": history.loss[-1], "seconds": round(time.perf_counter() - start, 1)}


def report(result: dict) -> str:
    """Each method's held-out accuracy (mean ± sd over seeds) per training length, and QLoRA minus LoRA by seed."""
    rows, settings = result["rows"], result["settings"]
    lines = [f"batch {settings['batch']}, rank {settings['rank']}, lr {settings['lr']}, {settings['n_test']} held-out "
             "problems; held-out accuracy, mean ± sd over seeds",
             f"{'steps':>5}  {'LoRA':>13}  {'QLoRA':>13}  QLoRA - LoRA (points, paired by seed)"]
    for steps in sorted({r["steps"] for r in rows}):
        acc = {m: {r["seed"]: r["accuracy"] for r in rows if r["steps"] == steps and r["method"] == m}
               for m in ("LoRA", "QLoRA")}
        gaps = [100 * (acc["QLoRA"][s] - acc["LoRA"][s]) for s in sorted(acc["LoRA"])]
        lines.append(f"{steps:>5}  {mean_sd_text(acc['LoRA'].values()):>13}  "
                     f"{mean_sd_text(acc['QLoRA'].values()):>13}  " + paired_text(gaps))
    return "\n".join(lines)


def main() -> None:
    parser = run_parser(__doc__)
    parser.add_argument("--steps", nargs="*", type=int, default=[24, 48, 96])
    parser.add_argument("--n-test", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3, help="lab 06's LoRA rate (benchmarks/lora_vs_full.py)")
    args = parser.parse_args()
    if print_saved_report(args, report):
        return
    tokenizer = load_tokenizer(args.model)
    rows = []
    for steps in args.steps:
        for seed in args.seeds:
            for method in ("LoRA", "QLoRA"):
                rows.append(run(method, steps, seed, args, tokenizer))
                print(json.dumps(rows[-1]), flush=True)
    finish_run(args, {"rows": rows}, report)


if __name__ == "__main__":
    main()
