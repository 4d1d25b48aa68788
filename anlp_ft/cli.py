"""anlp-ft: run the course, generate student labs, grade submissions, prepare the offline model, fine-tune."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .results import NOTEBOOK_ENV, RESULTS_ENV, outcome_table, read_outcomes

NOTEBOOK_DIRS = ("lectures", "solutions")


def _root(path: str | None) -> Path:
    root = Path(path or ".").resolve()
    if not (root / "solutions").is_dir():
        raise SystemExit(f"{root} has no solutions/ folder: run from the course repository or pass --root")
    return root


def cmd_model(args: argparse.Namespace) -> int:
    from .models import load_model, load_tokenizer

    load_tokenizer(args.name)
    load_model(args.name, device="cpu")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Fine-tune on step-by-step arithmetic with fit(); runs unchanged under `accelerate launch` (one process per
    GPU, or gloo processes on CPU), where --batch-size is per process."""
    import json

    from accelerate import PartialState
    from peft import LoraConfig, get_peft_model

    from .data.arithmetic import arithmetic_problems
    from .formatting import encode_example, plain_prompt
    from .models import load_model, load_tokenizer
    from .train import TrainConfig, fit

    tokenizer = load_tokenizer(args.model)
    model = load_model(args.model, device="cpu", verbose=False)  # fit() moves it to this process's device
    if args.lora_r:
        model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    problems = arithmetic_problems(args.examples, seed=args.seed)
    data = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"]) for p in problems]
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
                         warmup_steps=min(2, args.steps - 1), seed=args.seed, mixed_precision=args.mixed_precision,
                         compile=args.compile)
    history = fit(model, data, config)
    state = PartialState()
    if state.is_main_process:
        print(f"{state.num_processes} process(es), global batch {args.batch_size * args.grad_accum * state.num_processes}:"
              f" loss {history.loss[0]:.4f} -> {history.final_loss:.4f}, {history.tokens_per_s:.0f} tokens/s "
              f"({history.precision})")
        if args.out:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            model.save_pretrained(out)
            tokenizer.save_pretrained(out)
            record = {"num_processes": state.num_processes, "loss": history.loss, "tokens": history.tokens,
                      "seconds": history.seconds, "precision": history.precision}
            (out / "history.json").write_text(json.dumps(record))
            print(f"saved the model and history.json to {out}")
    return 0


def cmd_assign(args: argparse.Namespace) -> int:
    from .assignments import sync_labs

    root = _root(args.root)
    changed = sync_labs(root, check=args.check)
    names = ", ".join(str(p.relative_to(root)) for p in changed)
    if args.check:
        if changed:
            print(f"labs/ is out of sync with solutions/: {names}. Run `anlp-ft assign` and commit labs/.")
            return 1
        print("labs/ is in sync with solutions/")
        return 0
    print(f"wrote {names}" if changed else "labs/ already up to date")
    return 0


def cmd_course(args: argparse.Namespace) -> int:
    """Execute every lecture and solution notebook into an output folder and print their measured outcomes."""
    import papermill

    root = _root(args.root)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = out / "outcomes.jsonl"
    results.unlink(missing_ok=True)
    os.environ[RESULTS_ENV] = str(results)
    notebooks = [p for d in NOTEBOOK_DIRS for p in sorted((root / d).glob("*.ipynb"))]
    if args.only:
        notebooks = [p for p in notebooks if any(key in p.name for key in args.only)]
    if not notebooks:
        print("no notebooks to run")
        return 1
    status: dict[str, tuple[str, float]] = {}
    for nb in notebooks:
        name = f"{nb.parent.name}/{nb.name}"
        print(f"\n=== {name}", flush=True)
        tic = time.perf_counter()
        os.environ[NOTEBOOK_ENV] = name  # the kernel inherits it: outcomes are filed under this notebook
        (out / nb.parent.name).mkdir(exist_ok=True)
        try:
            papermill.execute_notebook(str(nb), str(out / nb.parent.name / nb.name), cwd=str(nb.parent),
                                       parameters={"PROFILE": args.profile} if args.profile else {},
                                       progress_bar=False, kernel_name="python3")
            status[name] = ("ok", time.perf_counter() - tic)
        except Exception as e:  # keep going: one broken notebook must not hide the others' results
            status[name] = (f"FAILED: {type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}",
                            time.perf_counter() - tic)
        print(f"{status[name][0]} in {status[name][1]:.0f} s", flush=True)
    outcomes = read_outcomes(results)
    print("\n=== Measured outcomes")
    for name, (state, seconds) in status.items():
        print(f"\n{name}: {state}, {seconds:.0f} s")
        if name in outcomes:
            print(outcome_table(outcomes[name]))
    print(f"\nExecuted notebooks are in {out}")
    return 0 if all(s == "ok" for s, _ in status.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anlp-ft", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("course", help="run every lecture and solution notebook and print their outcomes")
    p.add_argument("--out", default="out/course", help="folder for executed notebooks (default out/course)")
    p.add_argument("--profile", choices=["quick", "full"], help="default: quick on CPU, full on GPU")
    p.add_argument("--only", nargs="*", help="run only notebooks whose file name contains one of these")
    p.add_argument("--root", help="course repository (default: current folder)")
    p.set_defaults(func=cmd_course)
    p = sub.add_parser("assign", help="regenerate labs/ from solutions/")
    p.add_argument("--check", action="store_true", help="write nothing; fail when labs/ is out of sync")
    p.add_argument("--root", help="course repository (default: current folder)")
    p.set_defaults(func=cmd_assign)
    p = sub.add_parser("model", help="prepare (and cache) a model and its tokenizer, printing the source")
    p.add_argument("name", nargs="?", default=None, help="local path or hub id (default: SmolLM2-135M)")
    p.set_defaults(func=cmd_model)
    p = sub.add_parser("train", help="fine-tune on step-by-step arithmetic (works under `accelerate launch`)")
    p.add_argument("--model", default=None, help="local path or hub id (default: SmolLM2-135M)")
    p.add_argument("--examples", type=int, default=512, help="training problems (default 512)")
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=16, help="examples per micro-batch, per process")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank; 0 for full fine-tuning")
    p.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for the trained model and history.json")
    p.set_defaults(func=cmd_train)
    from .assignments.grade import add_grade_parser

    add_grade_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
