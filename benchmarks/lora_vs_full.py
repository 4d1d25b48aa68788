"""Full fine-tuning against LoRA, each at its own tuned learning rate, and QLoRA's gap, over seeds: lab 06's
comparison (2-digit sums, short answers, 24 steps x batch 8, peft rank 8 on all seven projections) made fair.

    python benchmarks/lora_vs_full.py --out benchmarks/results/lora_vs_full.json      # the committed run
    python benchmarks/lora_vs_full.py --seeds 0 --full-lrs 1e-4 --lora-lrs 2e-3        # one quick point

With --out, runs already in that file (same method, lr and seed, same settings) are read back instead of trained
again, so a grid can be extended run by run.

A learning rate tuned for one method is not tuned for the other (LoRA's adapters start at zero and need a larger
one), so comparing the two at one pair of hand-picked rates can make either look better. Each method is swept
over a grid at equal steps, data and seeds; its rate is chosen on a validation set, and the comparison is
reported on a separate test set at each method's chosen rate. QLoRA then runs at LoRA's chosen rate (only the
4-bit base differs). Prints one JSON line per run, the sweep table and the comparison (mean and spread over seeds).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

from peft import LoraConfig, get_peft_model
from seeds import mean_sd  # benchmarks/seeds.py: run as scripts, the folder is on the path

from anlp_ft.data.arithmetic import arithmetic_problems, is_correct
from anlp_ft.evaluate import generate
from anlp_ft.formatting import encode_example, plain_prompt
from anlp_ft.lora import LORA_TARGETS
from anlp_ft.models import load_model, load_tokenizer
from anlp_ft.runtime import pick_device, seed_everything
from anlp_ft.train import TrainConfig, fit

warnings.filterwarnings("ignore", message=".*gemv_4bit.*")
HELD_OUT_SEED = 10_000  # one validation and one test set for every run, disjoint from every training set


def held_out(n_val: int, n_test: int) -> tuple[list[dict], list[dict]]:
    problems = arithmetic_problems(n_val + n_test, seed=HELD_OUT_SEED)
    return problems[:n_val], problems[n_val:]


def run(method: str, lr: float, seed: int, args, tokenizer, val: list[dict], test: list[dict]) -> dict:
    exclude = [p["question"] for p in val + test]
    train = arithmetic_problems(args.steps * args.batch, seed=seed, exclude=exclude)
    data = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["answer"]) for p in train]
    seed_everything(seed)
    start = time.perf_counter()
    model = load_model(args.model, device=pick_device(), quantization="nf4" if method == "QLoRA" else None,
                       verbose=False)
    if method != "full":
        model = get_peft_model(model, LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0,
                                                 target_modules=list(LORA_TARGETS)))
    history = fit(model, data, TrainConfig(steps=args.steps, batch_size=args.batch, lr=lr, warmup_steps=2,
                                           seed=seed, progress=False), pad_token_id=tokenizer.pad_token_id)
    problems = val + test
    outputs = generate(model, tokenizer, [plain_prompt(p["question"]) for p in problems], max_new_tokens=6,
                       batch_size=64)
    correct = [is_correct(o, p["answer"]) for o, p in zip(outputs, problems)]
    return {"method": method, "lr": lr, "seed": seed, "val": sum(correct[:len(val)]) / len(val),
            "test": sum(correct[len(val):]) / len(test), "last_loss": round(history.loss[-1], 4),
            "seconds": round(time.perf_counter() - start, 1)}


def best_lr(rows: list[dict], method: str) -> float:
    """The method's learning rate with the highest mean validation accuracy over seeds."""
    lrs = {r["lr"] for r in rows if r["method"] == method}
    return max(lrs, key=lambda lr: statistics.mean(r["val"] for r in rows if r["method"] == method and r["lr"] == lr))


def report(rows: list[dict], seeds: list[int]) -> None:
    print(f"\n{'method':>6}  {'lr':>8}  {'validation':>16}  {'test':>16}   (mean ± sd over {len(seeds)} seeds)")
    best = {}
    for method in ("full", "LoRA"):
        by_lr: dict[float, list[dict]] = {}
        for r in rows:
            if r["method"] == method:
                by_lr.setdefault(r["lr"], []).append(r)
        for lr, rs in sorted(by_lr.items()):
            (vm, vs), (tm, ts) = mean_sd([r["val"] for r in rs]), mean_sd([r["test"] for r in rs])
            print(f"{method:>6}  {lr:8.0e}  {vm:8.3f} ± {vs:.3f}  {tm:8.3f} ± {ts:.3f}")
        best[method] = best_lr(rows, method)
    print("\nat each method's best validation lr (test accuracy):")
    test = {}
    for method in ("full", "LoRA", "QLoRA"):
        lr = best.get(method, best["LoRA"])
        rs = {r["seed"]: r for r in rows if r["method"] == method and r["lr"] == lr}
        if not rs:
            continue
        test[method] = {s: rs[s]["test"] for s in seeds if s in rs}
        m, s = mean_sd(list(test[method].values()))
        print(f"{method:>6}  lr {lr:.0e}  {m:.3f} ± {s:.3f}   per seed " +
              " ".join(f"{v:.3f}" for v in test[method].values()))
    for a, b in (("LoRA", "full"), ("QLoRA", "LoRA")):
        if a in test and b in test:
            gaps = [100 * (test[a][s] - test[b][s]) for s in seeds if s in test[a] and s in test[b]]
            m, s = mean_sd(gaps)
            print(f"{a} - {b} (points, paired by seed): {m:+.1f} ± {s:.1f}   per seed " +
                  " ".join(f"{g:+.1f}" for g in gaps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full-lrs", nargs="*", type=float, default=[1e-5, 3e-5, 1e-4, 3e-4, 1e-3])
    parser.add_argument("--lora-lrs", nargs="*", type=float, default=[2e-4, 5e-4, 1e-3, 2e-3, 5e-3])
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--n-val", type=int, default=256)
    parser.add_argument("--n-test", type=int, default=256)
    parser.add_argument("--no-qlora", action="store_true", help="skip QLoRA at LoRA's chosen lr")
    parser.add_argument("--model", default=None, help="default: SmolLM2-135M (offline: SmolLM2-135M-Instruct)")
    parser.add_argument("--out", help="write the settings and rows to this JSON file")
    args = parser.parse_args()
    tokenizer = load_tokenizer(args.model)
    val, test = held_out(args.n_val, args.n_test)
    same_runs = {k: v for k, v in vars(args).items()
                 if k in ("steps", "batch", "rank", "n_val", "n_test", "model")}  # what makes two rows comparable
    done: dict[tuple, dict] = {}
    if args.out and Path(args.out).is_file():
        saved = json.loads(Path(args.out).read_text())
        if saved["settings"] != same_runs:
            raise SystemExit(f"{args.out} holds runs with other settings ({saved['settings']}): pass another --out")
        done = {(r["method"], r["lr"], r["seed"]): r for r in saved["rows"]}
    rows: list[dict] = list(done.values())

    def measure(method: str, lr: float, seed: int) -> None:
        if (method, lr, seed) in done:
            return
        rows.append(run(method, lr, seed, args, tokenizer, val, test))
        print(json.dumps(rows[-1]), flush=True)
        if args.out:  # after every run: an interrupted sweep loses one run at most
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({"settings": same_runs, "rows": rows}, indent=1) + "\n")

    for method, lrs in (("full", args.full_lrs), ("LoRA", args.lora_lrs)):
        for lr in lrs:
            for seed in args.seeds:
                measure(method, lr, seed)
    if not args.no_qlora:
        lr = best_lr(rows, "LoRA")
        for seed in args.seeds:
            measure("QLoRA", lr, seed)
    report(rows, args.seeds)


if __name__ == "__main__":
    main()
