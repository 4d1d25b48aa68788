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

Prints one JSON line per run and each arm's mean and spread over seeds.
"""
from __future__ import annotations

import json
from pathlib import Path

from kd_ranking import arguments, lora_fit, measure, save, setup, teacher_and_data  # benchmarks/: run as scripts
from seeds import mean_sd_text, paired_text


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


def one_seed(teacher_base, student_base, tokenizer, sol, test: list[dict], args, seed: int) -> list[dict]:
    teacher, _, gold = teacher_and_data(teacher_base, tokenizer, test, args, seed)
    pad = tokenizer.pad_token_id
    rows = []
    for name, temperature, factor in arms(args.temperatures):
        loss_fn = sol.make_token_kd_loss(teacher, temperature)
        student = lora_fit(student_base, gold[:args.steps * args.batch], args.steps, args, seed, pad,
                           loss_fn=loss_fn if factor else without_factor(loss_fn, temperature),
                           max_grad_norm=args.max_grad_norm or None)
        rows.append({"arm": name, "temperature": temperature, "T² factor": factor, "seed": seed,
                     **measure(student, tokenizer, test)})
        print(json.dumps(rows[-1]), flush=True)
        del student
    return rows


def report(result: dict) -> str:
    rows, settings = result["rows"], result["settings"]
    seeds = sorted({r["seed"] for r in rows})
    lines = [f"teacher: {settings['teacher_steps']} LoRA steps; token-level KD students: {settings['steps']} LoRA "
             f"steps x {settings['batch']}, lr {settings['lr']}, gradient clipping "
             f"{settings.get('max_grad_norm', 1.0) or 'none'}; {settings['n_test']} held-out problems",
             f"{'arm':>14}  {'lenient':>15}  {'strict':>15}  {'held-out loss':>15}   mean ± sd over {len(seeds)} seeds"]
    names = list(dict.fromkeys(r["arm"] for r in rows))
    for name in names:
        rs = [r for r in rows if r["arm"] == name]
        lines.append(f"{name:>14}  " + "  ".join(f"{mean_sd_text(r[k] for r in rs):>15}"
                                                for k in ("lenient", "strict", "held-out loss")))
    by = {(r["arm"], r["seed"]): r for r in rows}
    for t in sorted({r["temperature"] for r in rows if not r["T² factor"]}):
        with_, without = f"T = {t:g}", f"T = {t:g}, no T²"
        gaps = [100 * (by[(with_, s)]["lenient"] - by[(without, s)]["lenient"]) for s in seeds]
        lines.append(f"T = {t:g}: with minus without T², lenient (points, paired by seed): {paired_text(gaps)}")
    reference = f"T = {settings['temperatures'][0]:g}"
    for name in names:
        if name != reference and not name.endswith("no T²"):
            gaps = [100 * (by[(name, s)]["lenient"] - by[(reference, s)]["lenient"]) for s in seeds]
            lines.append(f"{name} minus {reference}, lenient (points, paired by seed): {paired_text(gaps)}")
    return "\n".join(lines)


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--temperatures", nargs="*", type=float, default=[1.0, 2.0, 4.0])
    parser.add_argument("--max-grad-norm", type=float, default=1.0,
                        help="the students' gradient clipping (0: none); the teacher is always clipped at 1.0")
    args = parser.parse_args()
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return
    tokenizer, teacher_base, student_base, sol, test = setup(args)
    rows = [row for seed in args.seeds for row in one_seed(teacher_base, student_base, tokenizer, sol, test, args,
                                                           seed)]
    save({"settings": {k: v for k, v in vars(args).items() if k not in ("out", "report")}, "rows": rows}, args,
         report)

if __name__ == "__main__":
    main()
