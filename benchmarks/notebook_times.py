"""Each notebook's time in the quick profile against the 3-minute budget, and against a named baseline measured in
the same run: the calibration, lab 01's LoRA training (SmolLM2, r=16 on all linear layers, 8 steps x 8 of its
step-by-step sums, after one untimed step), run before and after the notebooks.

    python benchmarks/notebook_times.py                       # every lecture and solution (`anlp-ft course`)
    python benchmarks/notebook_times.py --only 01_ 04_        # those whose file name contains one of these
    python benchmarks/notebook_times.py --out benchmarks/results/notebook_times.json

CPU machines of the same kind differ by 1.5x in speed from one day to the next (lab 01's LoRA has trained at 141
to 229 tokens/s on 2 cores), so a time alone does not say whether a notebook fits its budget. The ratio of a
notebook's cell time to the calibration's does, to the extent the notebook's work scales with the calibration's
(training and generation on the same model do): the table prints that ratio and the calibration speed at which
the notebook would take exactly the budget. Run it with nothing else on the machine; notebooks run one at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from anlp_ft.cli import course_notebooks, execute_notebook

BUDGET_S = 180.0  # each notebook, quick profile, 2 CPU cores (CONTRIBUTING, Profiles)
ROOT = Path(__file__).resolve().parent.parent


def calibrate() -> dict:
    """Lab 01's LoRA training on the CPU: tokens/s over 8 timed steps (the notebook's model, data, LoRA and lr)."""
    from peft import LoraConfig, get_peft_model

    from anlp_ft.data.arithmetic import train_test_problems
    from anlp_ft.formatting import encode_example, plain_prompt
    from anlp_ft.models import load_model, load_tokenizer
    from anlp_ft.train import TrainConfig, fit

    tokenizer = load_tokenizer(None)
    problems, _ = train_test_problems(72, 64, seed=0)
    data = [encode_example(tokenizer, plain_prompt(p["question"]), " " + p["solution"]) for p in problems]
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(load_model(None, device="cpu", verbose=False), lora)
    config = dict(batch_size=8, lr=2e-3, seed=0, progress=False)
    fit(model, data[:8], TrainConfig(steps=1, **config), pad_token_id=tokenizer.pad_token_id)  # warm-up, not timed
    history = fit(model, data[8:], TrainConfig(steps=8, **config), pad_token_id=tokenizer.pad_token_id)
    return {"seconds": round(history.seconds, 2), "tokens_per_s": round(history.tokens_per_s, 1)}


def run_calibration() -> dict:
    """In its own process, as the notebooks' kernels are: nothing it loads stays in memory."""
    out = subprocess.run([sys.executable, __file__, "--calibrate"], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})  # the offline model, whatever the network
    return json.loads(out.stdout.strip().splitlines()[-1])


def cell_seconds(notebook: Path) -> tuple[float, list[tuple[str, float]]]:
    """The sum of the executed cells' times (kernel start excluded) and the three longest cells."""
    cells = []
    for cell in json.loads(notebook.read_text())["cells"]:
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            cells.append((cell.get("id", "?"), (end - start).total_seconds()))
    longest = sorted(cells, key=lambda c: -c[1])[:3]
    return sum(s for _, s in cells), longest


def report(run: dict) -> str:
    calib = run["calibration"]
    speeds = [c["tokens_per_s"] for c in calib]
    base_s = statistics.mean(c["seconds"] for c in calib)
    lines = [f"calibration (lab 01's LoRA, 8 steps x 8): before {calib[0]['seconds']:.1f} s "
             f"({speeds[0]:.0f} tokens/s), after {calib[1]['seconds']:.1f} s ({speeds[1]:.0f} tokens/s)",
             f"budget {BUDGET_S:.0f} s per notebook; 'fits at' is the calibration speed at which the cells would take "
             "exactly the budget",
             "",
             f"{'notebook':<46} {'cells s':>8} {'wall s':>7} {'/ calib':>8} {'budget':>7} {'fits at':>13}"
             "  longest cells"]
    speed = statistics.mean(speeds)
    for row in run["notebooks"]:
        verdict = "FAILED" if row["status"] != "ok" else ("under" if row["cells_s"] <= BUDGET_S else "OVER")
        fits_at = speed * row["cells_s"] / BUDGET_S
        longest = ", ".join(f"{name} {s:.0f}" for name, s in row["longest"])
        lines.append(f"{row['notebook']:<46} {row['cells_s']:>8.0f} {row['wall_s']:>7.0f} "
                     f"{row['cells_s'] / base_s:>8.1f} {verdict:>7} {fits_at:>6.0f} tok/s  {longest}")
    total = sum(r["cells_s"] for r in run["notebooks"])
    lines.append(f"{'all':<46} {total:>8.0f} {sum(r['wall_s'] for r in run['notebooks']):>7.0f} "
                 f"{total / base_s:>8.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", help="notebooks whose file name contains one of these (default: all)")
    parser.add_argument("--out", help="write the run (calibrations and rows) to this JSON file")
    parser.add_argument("--report", help="print the table of a run written with --out, and stop")
    parser.add_argument("--calibrate", action="store_true", help=argparse.SUPPRESS)  # the calibration's own process
    args = parser.parse_args()
    if args.calibrate:
        print(json.dumps(calibrate()))
        return
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return

    notebooks = course_notebooks(ROOT, args.only)
    calibration = [run_calibration()]
    print(f"calibration before: {calibration[0]}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as out:
        for nb in notebooks:  # as `anlp-ft course` runs them: papermill, from the notebook's folder
            status, wall = execute_notebook(nb, Path(out), "quick")
            executed = Path(out) / nb.parent.name / nb.name
            cells, longest = cell_seconds(executed) if executed.exists() else (wall, [])
            rows.append({"notebook": f"{nb.parent.name}/{nb.name}", "status": status, "cells_s": round(cells, 1),
                         "wall_s": round(wall, 1), "longest": longest})
            print(f"{rows[-1]['notebook']}: {status}, cells {cells:.0f} s, wall {wall:.0f} s", flush=True)
    calibration.append(run_calibration())
    run = {"calibration": calibration, "notebooks": rows, "cpu_count": len(os.sched_getaffinity(0))}
    print("\n" + report(run))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(run, indent=1) + "\n")


if __name__ == "__main__":
    main()
