"""Lab 02's "more training families, more transfer?" without its confound: the lab adds families in one fixed order
(addition, counting, uppercase, reversal), so how many moves together with which. Here every subset of each size of
those four families trains for the same steps, batch, learning rate and number of examples, and the held-out family
(last word) is scored zero-shot, exact (the bare answer) and lenient (the answer anywhere). The mean over all
subsets of a size, and over seeds, is the effect of the number; the spread within a size is the effect of which.

    python benchmarks/family_count.py --out benchmarks/results/family_count.json   # the committed run
    python benchmarks/family_count.py --seeds 0 --sizes 1 4 --n-test 32              # one quick point

Each seed draws its own mixtures (lab 02's ex2, `build_mixture`) and LoRA initialisation (ex3, `instruction_tune`),
both taken from lab 02's solution; the held-out examples (the library's templates) are the same for every run.
Prints one JSON line per run, then per size the mean ± sd over subsets and seeds; each family trained alone (the same
steps and examples on one task's bare answers: the control for lab 02's "transfer", which format alone would give),
exact and lenient over seeds; and per family the mean of the runs that include it against those that do not (at sizes
1 and 2, where both exist). --report FILE prints the table of a saved run again.
"""
from __future__ import annotations

import copy
import itertools
import json
import statistics

from seeds import finish_run, mean_sd_text, print_saved_report  # benchmarks/seeds.py: the folder is on the path
from template_diversity import HELD_OUT, HELD_OUT_SEED, TRAIN_FAMILIES, lab02_parser, lab02_solution, scores

from anlp_ft.data.flan import FAMILIES, task_examples
from anlp_ft.models import load_model, load_tokenizer
from anlp_ft.runtime import pick_device, seed_everything


def report(result: dict) -> str:
    before, rows, settings = result["pre-trained"], result["rows"], result["settings"]
    sizes = settings["sizes"]
    lines = [f"held-out family {HELD_OUT!r}, {settings['n_test']} examples; pre-trained: exact {before['exact']:.3f}, "
             f"lenient {before['lenient']:.3f}",
             f"{'families':>9} {'runs':>5} {'exact':>15} {'lenient':>15}   mean ± sd over subsets and seeds "
             f"({len(settings['seeds'])} seeds)"]
    for size in sizes:
        rs = [r for r in rows if r["size"] == size]
        lines.append(f"{size:>9} {len(rs):>5} {mean_sd_text(r['exact'] for r in rs):>15} "
                     f"{mean_sd_text(r['lenient'] for r in rs):>15}")
    if 1 in sizes:
        lines += ["", "one family alone, mean ± sd over seeds:"]
        for family in TRAIN_FAMILIES:
            rs = [r for r in rows if r["families"] == [family]]
            lines.append(f"  {family:>10}: exact {mean_sd_text(r['exact'] for r in rs)}, "
                         f"lenient {mean_sd_text(r['lenient'] for r in rs)}")
    for size in [s for s in sizes if s < len(TRAIN_FAMILIES)]:
        lines += ["", f"size {size}: mean exact accuracy of the subsets with / without each family"]
        rs = [r for r in rows if r["size"] == size]
        for family in TRAIN_FAMILIES:
            with_f = [r["exact"] for r in rs if family in r["families"]]
            without = [r["exact"] for r in rs if family not in r["families"]]
            lines.append(f"  {family:>10}: {statistics.mean(with_f):.3f} with, {statistics.mean(without):.3f} without")
    return "\n".join(lines)


def main() -> None:
    parser = lab02_parser(__doc__)
    parser.add_argument("--sizes", nargs="*", type=int, default=[1, 2, 4], help="numbers of training families")
    args = parser.parse_args()
    if print_saved_report(args, report):
        return
    if not args.sizes or min(args.sizes) < 1 or max(args.sizes) > len(TRAIN_FAMILIES):
        parser.error(f"--sizes must lie between 1 and {len(TRAIN_FAMILIES)} (the training families), got {args.sizes}")
    tokenizer = load_tokenizer(args.model)
    base = load_model(args.model, device=pick_device()).eval()
    held_out = task_examples(HELD_OUT, args.n_test, seed=HELD_OUT_SEED)
    before = scores(base, tokenizer, held_out)
    print(json.dumps({"families": [], **before}), flush=True)
    examples = args.steps * args.batch
    rows = []
    for seed in args.seeds:
        sol = lab02_solution(base, tokenizer, args, seed)
        for size in args.sizes:
            for subset in itertools.combinations(TRAIN_FAMILIES, size):
                # The same number of examples for every subset: each family gets an equal share of them.
                mixture = sol.build_mixture([FAMILIES[f] for f in subset], -(-examples // size), seed, False)[:examples]
                seed_everything(seed)
                model, history = sol.instruction_tune(copy.deepcopy(base), mixture)
                rows.append({"seed": seed, "size": size, "families": list(subset), "examples": len(mixture),
                             "final loss": history.final_loss, **scores(model, tokenizer, held_out)})
                print(json.dumps(rows[-1]), flush=True)
                del model
    finish_run(args, {"pre-trained": before, "rows": rows}, report)


if __name__ == "__main__":
    main()
