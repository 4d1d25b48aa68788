"""anlp-ft: run the course, generate student labs, grade submissions, prepare the offline model, fine-tune."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

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
    """Fine-tune from a recipe (Axolotl's keys) with fit(); runs unchanged under `accelerate launch`, where
    micro_batch_size is per process. A recipe that fails its checks exits 2 with the reason, writing nothing."""
    import yaml

    from .recipe import RecipeError, load_recipe
    from .recipe_run import run_recipe

    flags = {"max_steps": args.max_steps, "output_dir": args.output_dir, "micro_batch_size": args.micro_batch_size,
             "learning_rate": args.learning_rate, "seed": args.seed}
    overrides = {k: v for k, v in flags.items() if v is not None}
    try:
        for item in args.set or []:  # --set key=value, the value read as YAML (null removes the key)
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise RecipeError(f"--set {item}: expected KEY=VALUE, e.g. --set lora_r=8 or --set verifier=null")
            try:
                overrides[key.strip()] = yaml.safe_load(value)
            except yaml.YAMLError:
                raise RecipeError(f"--set {item}: {value!r} is not a YAML value") from None
        recipe = load_recipe(args.recipe, overrides)
        return run_recipe(recipe, check=args.check, preview_rows=args.preview, overwrite=args.overwrite)
    except RecipeError as e:  # the user's recipe, data or machine: the message says what to fix; no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def cmd_data(args: argparse.Namespace) -> int:
    """Write a course task as train.jsonl and test.jsonl, the files the recipes in recipes/ read."""
    from .recipe_data import course_data, write_jsonl

    sizes = {"arithmetic": (512, 64), "chat": (160, 64)}[args.task]  # labs 01 and 03, quick profile
    train, test = course_data(args.task, args.train or sizes[0], args.test or sizes[1], args.seed)
    out = Path(args.out)
    write_jsonl(train, out / "train.jsonl")
    write_jsonl(test, out / "test.jsonl")
    print(f"wrote {len(train)} rows to {out / 'train.jsonl'} and {len(test)} to {out / 'test.jsonl'}")
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


def cmd_release(args: argparse.Namespace) -> int:
    """Write the student release (or, with --check, only check one); exit 1 listing what leaked, files kept."""
    from .release import ReleaseError, check_release, write_release

    try:
        if args.check:
            problems = check_release(Path(args.out), _root(args.root))
        elif not args.repo_url:
            raise ReleaseError("--repo-url is required, e.g. --repo-url https://github.com/OWNER/NAME")
        else:
            problems = write_release(_root(args.root), Path(args.out), args.repo_url, args.ref)
    except ReleaseError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if problems:
        print(f"{args.out}: NOT fit to publish, {len(problems)} problem(s):", file=sys.stderr)
        print("\n".join(f"  {p}" for p in problems), file=sys.stderr)
        return 1
    print(f"{args.out}: " + ("no leaks found" if args.check else f"release written for {args.repo_url}@{args.ref}, "
                              "no leaks found"))
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    from .assignments.grade import GradingError, grade

    # `kill` or a CI timeout: exit through grade()'s clean-up, which stops the workers and kernels.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        rows = grade(args.lab, args.submissions, args.out, timeout=args.timeout, memory_mb=args.memory_mb,
                     workers=args.workers, output_dir=args.output_dir, shard=args.shard, formats=args.format or ())
    except (GradingError, FileExistsError) as error:
        print(f"anlp-ft grade: {error}", file=sys.stderr)
        return 2
    return 0 if rows else 1


def cmd_merge(args: argparse.Namespace) -> int:
    from .assignments.gradebook import merge_gradebooks

    try:
        count = merge_gradebooks(args.parts, args.out)
    except (ValueError, FileExistsError, OSError) as error:
        print(f"anlp-ft grade-merge: {error}", file=sys.stderr)
        return 2
    print(f"{count} rows from {len(args.parts)} gradebooks: {args.out}")
    return 0


def add_grade_parser(subparsers: Any) -> None:
    """``anlp-ft grade`` and ``anlp-ft grade-merge``."""
    from .assignments.grade import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S

    p = subparsers.add_parser("grade", help="grade submissions of a lab into a gradebook CSV",
                              description="Run each submission in its own limited kernel with the lab's hidden tests "
                                          "and write one gradebook row per submission.")
    p.add_argument("lab", metavar="LAB", help="lab number (01..06) or a solution notebook's path")
    p.add_argument("submissions", metavar="SUBMISSION", nargs="+", help="submitted notebooks (never modified)")
    p.add_argument("--out", required=True, help="gradebook CSV to create (an existing file is never overwritten)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                   help=f"wall-clock seconds per submission (default {DEFAULT_TIMEOUT_S})")
    p.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB,
                   help=f"address-space cap of each kernel in MiB (default {DEFAULT_MEMORY_MB})")
    p.add_argument("--workers", type=int, default=1, help="submissions graded at once (default 1)")
    p.add_argument("--output-dir", default=None, help="executed notebooks and logs (default: <out>-runs/)")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="grade only the K-th of N deterministic parts of the batch (join them with grade-merge)")
    p.add_argument("--format", action="append", choices=["canvas"],
                   help="also write <out>-canvas.csv for Canvas's gradebook import")
    p.set_defaults(func=cmd_grade)
    m = subparsers.add_parser("grade-merge", help="join the gradebooks of --shard runs into one",
                              description="Join gradebooks of one lab (from `anlp-ft grade --shard K/N`) into the "
                                          "gradebook a single run writes.")
    m.add_argument("parts", metavar="GRADEBOOK", nargs="+", help="the shards' gradebook CSVs")
    m.add_argument("--out", required=True, help="gradebook CSV to create (never overwritten)")
    m.set_defaults(func=cmd_merge)


def course_notebooks(root: Path, only: list[str] | None = None) -> list[Path]:
    """The lectures and solutions, in course order; with `only`, those whose file name contains one of its keys."""
    notebooks = [p for d in NOTEBOOK_DIRS for p in sorted((root / d).glob("*.ipynb"))]
    return [p for p in notebooks if not only or any(key in p.name for key in only)]


def execute_notebook(nb: Path, out: Path, profile: str | None) -> tuple[str, float]:
    """Run one notebook from its folder into out/<its folder>/ with papermill: ("ok" or the failure, seconds)."""
    import papermill

    name = f"{nb.parent.name}/{nb.name}"
    tic = time.perf_counter()
    os.environ[NOTEBOOK_ENV] = name  # the kernel inherits it: outcomes are filed under this notebook
    (out / nb.parent.name).mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(str(nb), str(out / nb.parent.name / nb.name), cwd=str(nb.parent),
                                   parameters={"PROFILE": profile} if profile else {},
                                   progress_bar=False, kernel_name="python3")
        return "ok", time.perf_counter() - tic
    except Exception as e:  # the caller keeps going: one broken notebook must not hide the others' results
        return (f"FAILED: {type(e).__name__}: {str(e).strip().splitlines()[-1][:200]}",
                time.perf_counter() - tic)


def cmd_course(args: argparse.Namespace) -> int:
    """Execute every lecture and solution notebook into an output folder and print their measured outcomes."""
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = out / "outcomes.jsonl"
    results.unlink(missing_ok=True)
    os.environ[RESULTS_ENV] = str(results)
    notebooks = course_notebooks(_root(args.root), args.only)
    if not notebooks:
        print("no notebooks to run")
        return 1
    status: dict[str, tuple[str, float]] = {}
    for nb in notebooks:
        name = f"{nb.parent.name}/{nb.name}"
        print(f"\n=== {name}", flush=True)
        status[name] = execute_notebook(nb, out, args.profile)
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
    p.add_argument("--profile", choices=["quick", "full"],
                   help="default: quick (full is opt-in until it has run on a GPU)")
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
    p = sub.add_parser("train", help="fine-tune from a recipe file (Axolotl's keys; works under `accelerate launch`)")
    p.add_argument("recipe", help="the recipe, a YAML file (see recipes/)")
    p.add_argument("--check", action="store_true",
                   help="run every check and preview examples with the trained-on tokens marked; train nothing")
    p.add_argument("--preview", type=int, default=0, metavar="N", help="print the first N examples, trained tokens "
                   "in [brackets] (default 3 with --check)")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in output_dir")
    p.add_argument("--max-steps", type=int, help="override max_steps")
    p.add_argument("--output-dir", help="override output_dir")
    p.add_argument("--micro-batch-size", type=int, help="override micro_batch_size (per process)")
    p.add_argument("--learning-rate", type=float, help="override learning_rate")
    p.add_argument("--seed", type=int, help="override seed")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override any recipe key, the value read as YAML (repeatable; null removes the key)")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("data", help="write a course task as train.jsonl / test.jsonl for a recipe")
    p.add_argument("task", choices=["arithmetic", "chat"], help="arithmetic: lab 01's problems (alpaca rows); "
                   "chat: lab 03's system-rule chats (messages rows)")
    p.add_argument("--out", required=True, help="folder for train.jsonl and test.jsonl")
    p.add_argument("--train", type=int, help="training rows (default: the lab's quick size, 512 / 160)")
    p.add_argument("--test", type=int, help="held-out rows (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_data)
    p = sub.add_parser("release", help="write the student release (no solutions, Colab links to --repo-url)")
    p.add_argument("out", help="folder to write (must be empty or absent), or with --check the release to check")
    p.add_argument("--repo-url", help="the public repository, https://github.com/OWNER/NAME")
    p.add_argument("--ref", default="main", help="branch, tag or commit the links and installs pin (default main)")
    p.add_argument("--check", action="store_true", help="write nothing; check OUT for leaks (exit 1 listing them)")
    p.add_argument("--root", help="course repository (default: current folder)")
    p.set_defaults(func=cmd_release)
    add_grade_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
