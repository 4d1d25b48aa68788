"""Token-level KD's temperature and its T² factor over seeds: lab 04's token-level KD student at T = 1, 2 and 4, each
with the T² factor (as lecture 03 writes the loss) and without it, at equal steps, batch, learning rate and data.

    python benchmarks/kd_temperature.py --out benchmarks/results/kd_temperature.json   # the committed run
    python benchmarks/kd_temperature.py --seeds 0 --n-test 32                          # one quick point

The lecture: soften both distributions with T (about 1-2) and multiply the KL by T², so that the gradients keep their
size as T grows (Hinton et al.: the soft targets' gradients scale as 1/T²). The teacher, the students, the held-out set
and the measures are benchmarks/kd_ranking.py's (same seeds: its token-level KD arm is this script's T = 2 with T²);
only the temperature and the factor differ. With T = 1 the factor is 1, so that arm is run once. fit() optimises with
AdamW and clips the gradient norm at 1.0: AdamW's update barely depends on a constant factor in the loss, so the
factor can only act through the clipping and AdamW's epsilon; this script measures whether it does, and
`--max-grad-norm 0` (the students unclipped) tells the two apart:

    python benchmarks/kd_temperature.py --temperatures 4 --max-grad-norm 0 \
        --out benchmarks/results/kd_temperature_no_clipping.json

Under SGD the step is the lr times the gradient, so there the factor acts directly, as Hinton et al.'s argument
assumes. `--optimizer sgd` (momentum 0.9, unclipped with `--max-grad-norm 0`) trains the students that way, at
`--student-lr` (the teacher still trains with AdamW at `--lr`), at a rate where T = 1 learns and at a higher one:

    python benchmarks/kd_temperature.py --optimizer sgd --student-lr 0.05 --max-grad-norm 0 \
        --out benchmarks/results/kd_temperature_sgd.json
    python benchmarks/kd_temperature.py --optimizer sgd --student-lr 0.3 --max-grad-norm 0 --temperatures 1 4 \
        --out benchmarks/results/kd_temperature_sgd_lr_0.3.json

Each run also records the norm of the loss's gradient at the student's first step (a fresh adapter, the first batch):
the 1/T² argument says that without the factor it shrinks about 16x from T = 1 to T = 4, and with it stays similar.

Under SGD (no weight decay) the loss without the factor at lr η takes exactly the steps of the loss with it at η / T²,
so each T has one curve over the lr and the factor only moves along it. --sweep FILE ... puts saved SGD runs on that
one scale (the lr with the factor) and prints each T's curve: the lecture's argument holds if every T has its best lr
where T = 1 has it. The committed sweep adds lr 0.1, T = 2 at lr 0.1 and 0.3, lr 0.6 for T = 1, and one seed at lr
1.6 whose arm without the factor is the lr 0.1 run's T = 4 arm again (the sweep prints both):

    python benchmarks/kd_temperature.py --optimizer sgd --student-lr 0.1 --max-grad-norm 0 --temperatures 1 4 \
        --out benchmarks/results/kd_temperature_sgd_lr_0.1.json
    python benchmarks/kd_temperature.py --optimizer sgd --student-lr 0.1 --max-grad-norm 0 --temperatures 2 \
        --out benchmarks/results/kd_temperature_sgd_lr_0.1_t2.json
    python benchmarks/kd_temperature.py --optimizer sgd --student-lr 0.3 --max-grad-norm 0 --temperatures 2 \
        --out benchmarks/results/kd_temperature_sgd_lr_0.3_t2.json
    python benchmarks/kd_temperature.py --optimizer sgd --student-lr 0.6 --max-grad-norm 0 --temperatures 1 \
        --out benchmarks/results/kd_temperature_sgd_lr_0.6.json
    python benchmarks/kd_temperature.py --optimizer sgd --student-lr 1.6 --max-grad-norm 0 --temperatures 4 --seeds 0 \
        --out benchmarks/results/kd_temperature_sgd_lr_1.6_seed_0.json
    python benchmarks/kd_temperature.py --sweep benchmarks/results/kd_temperature_sgd*.json

Prints one JSON line per run and each arm's mean and spread over seeds.
"""
from __future__ import annotations

import copy
import json
import math
import statistics
from pathlib import Path

from kd_ranking import LORA, arguments, lora_fit, measure, setup, teacher_and_data  # benchmarks/: run as scripts
from peft import get_peft_model
from seeds import finish_run, mean_sd_text, paired_text, print_saved_report

from anlp_ft.formatting import Collator
from anlp_ft.runtime import seed_everything


def arms(temperatures: list[float]) -> list[tuple[str, float, bool]]:
    """(name, T, with the T² factor); T = 1 once, its factor being 1."""
    out = []
    for t in temperatures:
        out.append((f"T = {t:g}", t, True))
        if t != 1:
            out.append((f"T = {t:g}, no T²", t, False))
    return out


def without_factor(loss_fn, temperature: float):
    """The same loss divided by T²: the lab's kd_loss multiplies by it."""
    return lambda student, batch: loss_fn(student, batch) / temperature ** 2


def first_gradient_norm(student_base, examples: list[dict], loss_fn, pad_token_id: int, seed: int) -> float:
    """The norm of the loss's gradient over a fresh adapter's trainable weights on the first batch: the size of the
    first step SGD takes (times the lr), the quantity Hinton et al.'s 1/T² argument is about."""
    seed_everything(seed)
    model = get_peft_model(copy.deepcopy(student_base), LORA)
    loss_fn(model, Collator(pad_token_id)(examples)).backward()
    return math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None))


def one_seed(teacher_base, student_base, tokenizer, sol, test: list[dict], args, seed: int) -> list[dict]:
    teacher, _, gold = teacher_and_data(teacher_base, tokenizer, test, args, seed)
    pad = tokenizer.pad_token_id
    rows = []
    for name, temperature, factor in arms(args.temperatures):
        loss_fn = sol.make_token_kd_loss(teacher, temperature)
        loss_fn = loss_fn if factor else without_factor(loss_fn, temperature)
        grad_norm = first_gradient_norm(student_base, gold[:args.batch], loss_fn, pad, seed)
        student = lora_fit(student_base, gold[:args.steps * args.batch], args.steps, args, seed, pad,
                           loss_fn=loss_fn, max_grad_norm=args.max_grad_norm or None, optimizer=args.optimizer,
                           lr=args.student_lr)
        rows.append({"arm": name, "temperature": temperature, "T² factor": factor, "seed": seed,
                     "first gradient norm": grad_norm, **measure(student, tokenizer, test)})
        print(json.dumps(rows[-1]), flush=True)
        del student
    return rows


def report(result: dict) -> str:
    rows, settings = result["rows"], result["settings"]
    seeds = sorted({r["seed"] for r in rows})
    optimizer = settings.get("optimizer", "adamw")
    grad = all("first gradient norm" in r for r in rows)  # runs before it was recorded lack it
    keys = ("lenient", "strict", "held-out loss") + (("first gradient norm",) if grad else ())
    lines = [f"teacher: {settings['teacher_steps']} LoRA steps; token-level KD students: {settings['steps']} LoRA "
             f"steps x {settings['batch']}, {'SGD (momentum 0.9)' if optimizer == 'sgd' else 'AdamW'}, "
             f"lr {settings.get('student_lr') or settings['lr']}, gradient clipping "
             f"{settings.get('max_grad_norm', 1.0) or 'none'}; {settings['n_test']} held-out problems",
             f"{'arm':>14}  {'lenient':>15}  {'strict':>15}  {'held-out loss':>15}"
             + (f"  {'1st grad norm':>15}" if grad else "") + f"   mean ± sd over {len(seeds)} seeds"]
    names = list(dict.fromkeys(r["arm"] for r in rows))
    for name in names:
        rs = [r for r in rows if r["arm"] == name]
        lines.append(f"{name:>14}  " + "  ".join(f"{mean_sd_text(r[k] for r in rs):>15}" for k in keys))
    by = {(r["arm"], r["seed"]): r for r in rows}
    for t in sorted({r["temperature"] for r in rows if not r["T² factor"]}):
        with_, without = f"T = {t:g}", f"T = {t:g}, no T²"
        gaps = [100 * (by[(with_, s)]["lenient"] - by[(without, s)]["lenient"]) for s in seeds]
        lines.append(f"T = {t:g}: with minus without T², lenient (points, paired by seed): {paired_text(gaps)}")
        gaps = [by[(with_, s)]["held-out loss"] - by[(without, s)]["held-out loss"] for s in seeds]
        lines.append(f"T = {t:g}: with minus without T², held-out loss (paired by seed): {paired_text(gaps, 3)}")
    reference = f"T = {settings['temperatures'][0]:g}"
    for name in names:
        if name != reference and not name.endswith("no T²"):
            gaps = [100 * (by[(name, s)]["lenient"] - by[(reference, s)]["lenient"]) for s in seeds]
            lines.append(f"{name} minus {reference}, lenient (points, paired by seed): {paired_text(gaps)}")
    if grad:  # the 1/T² argument: each arm's first gradient over the reference arm's, per seed
        for name in names:
            if name != reference:
                ratios = [by[(name, s)]["first gradient norm"] / by[(reference, s)]["first gradient norm"]
                          for s in seeds]
                lines.append(f"{name}: first gradient norm / {reference}'s (paired by seed): {paired_text(ratios, 3)}")
    return "\n".join(lines)


def sweep_report(results: list[dict]) -> str:
    """Saved unclipped SGD runs on one lr scale, the lr of the loss with the T² factor (an arm without it at lr η sits
    at η / T²), each T's points in order of that lr: where does each T's held-out loss stop falling?"""
    points: dict[tuple[float, float], list[tuple[str, list[dict]]]] = {}
    for result in results:
        settings = result["settings"]
        if settings.get("optimizer") != "sgd" or settings.get("max_grad_norm"):
            raise SystemExit("--sweep takes unclipped SGD runs only (--optimizer sgd --max-grad-norm 0): under AdamW "
                             "or clipping the factor is not a change of lr")
        lr = settings["student_lr"]
        for name in dict.fromkeys(r["arm"] for r in result["rows"]):
            rows = [r for r in result["rows"] if r["arm"] == name]
            t, factor = rows[0]["temperature"], rows[0]["T² factor"]
            run = f"lr {lr:g}" + ("" if factor or t == 1 else ", no T²")
            points.setdefault((t, lr if factor else lr / t ** 2), []).append((run, rows))
    lines = [f"{'T':>3}  {'lr with T²':>10}  {'run':>16}  {'held-out loss':>17}  {'lenient':>15}  {'strict':>15}  "
             f"{'seeds':>5}   (SGD, momentum 0.9, unclipped; mean ± sd over seeds)"]
    for t in sorted({t for t, _ in points}):
        best_loss = min((statistics.mean(r["held-out loss"] for r in rows), lr)
                        for (tt, lr), runs in points.items() if tt == t for _, rows in runs)[1]
        for lr in sorted(lr for tt, lr in points if tt == t):
            for run, rows in points[(t, lr)]:
                marks = " <- lowest loss" * (lr == best_loss)  # accuracy's spread is too wide to rank by
                lines.append(f"{t:>3g}  {lr:>10.4g}  {run:>16}  {mean_sd_text(r['held-out loss'] for r in rows):>17}  "
                             f"{mean_sd_text(r['lenient'] for r in rows):>15}  "
                             f"{mean_sd_text(r['strict'] for r in rows):>15}  {len(rows):>5}{marks}")
    for (t, lr), runs in points.items():  # one point reached two ways: the same steps, so the same numbers
        for (run_a, rows_a), (run_b, rows_b) in zip(runs, runs[1:]):
            for a in rows_a:
                for b in (b for b in rows_b if b["seed"] == a["seed"]):
                    lines.append(f"T = {t:g} at lr {lr:g} with T²: {run_a} and {run_b}, seed {a['seed']}: "
                                 f"held-out loss {a['held-out loss']:.6f} and {b['held-out loss']:.6f}, "
                                 f"lenient {a['lenient']:.4f} and {b['lenient']:.4f}")
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--temperatures", nargs="*", type=float, default=[1.0, 2.0, 4.0])
    parser.add_argument("--max-grad-norm", type=float, default=1.0,
                        help="the students' gradient clipping (0: none); the teacher is always clipped at 1.0")
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw",
                        help="the students' optimizer (sgd: momentum 0.9); the teacher always trains with AdamW")
    parser.add_argument("--student-lr", type=float, default=None, help="the students' lr (default: --lr)")
    parser.add_argument("--sweep", nargs="+", metavar="FILE",
                        help="print saved unclipped SGD runs as one lr sweep per T, and stop")
    args = parser.parse_args()
    if args.sweep:
        print(sweep_report([json.loads(Path(f).read_text()) for f in args.sweep]))
        return
    if print_saved_report(args, report):
        return
    tokenizer, teacher_base, student_base, sol, test = setup(args)
    rows = [row for seed in args.seeds for row in one_seed(teacher_base, student_base, tokenizer, sol, test, args,
                                                           seed)]
    finish_run(args, {"rows": rows}, report)


if __name__ == "__main__":
    main()
