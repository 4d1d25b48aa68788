"""Public checks for lab 02, instruction tuning (labs/02_instruction_tuning.ipynb).

Each function checks one exercise and raises CheckFailed with what to fix; a returned string is shown
after the tick. They use the FLAN-style task families, and for Self-Instruct stored expected values (EXPECTED,
computed once from the solution: the package holds no reference answer), so they run in a second (ex3 reads the
results of a training run instead).
"""
from __future__ import annotations

import random
import string
from collections import Counter

from ...data.flan import FAMILIES
from ...self_instruct import rouge_l
from ..checks import CheckFailed
from ..checks import require as _require

__all__ = ["EXPECTED", "ex1", "ex2", "ex3", "ex4", "ex5"]

# What the solution returns on the cases of ex4 and ex5 below (tests/public/test_lab02.py recomputes them from it).
EX4_POOL = [f"Instruction number {i} of the pool." for i in range(10)]
EX5_POOL = ["Sort these numbers from smallest to largest.", "Write the given word in capital letters."]
EX5_CANDIDATES = ["Sort the numbers from smallest to largest.",  # near-copy of the pool's first
                  "Name an animal that lives in the sea.",  # new
                  "Name an animal that lives in the sea!",  # a copy of the previous, now in the pool
                  "Write a haiku about autumn leaves."]  # new
EXPECTED: dict = {
    "ex4": ("Come up with a series of tasks:\nTask 1: Instruction number 3 of the pool.\n"
            "Task 2: Instruction number 8 of the pool.\nTask 3: Instruction number 2 of the pool.\n"
            "Task 4: Instruction number 7 of the pool.\nTask 5:"),
    "ex5": (["Name an animal that lives in the sea.", "Write a haiku about autumn leaves."],
            [("Sort the numbers from smallest to largest.", 0.8571428571428571,
              "Sort these numbers from smallest to largest."),
             ("Name an animal that lives in the sea!", 1.0, "Name an animal that lives in the sea.")]),
}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


# ex1: FLAN-style templates for one family ---------------------------------------------------------------------
def ex1(templates, family: str = "last_word", threshold: float = 0.7) -> str:
    """templates: the list, or the student's function returning it."""
    _require(family in FAMILIES, f"unknown family {family!r}")
    if callable(templates):
        templates = templates()
    _require(isinstance(templates, (list, tuple)) and all(isinstance(t, str) for t in templates),
             "templates must be a list of strings such as 'What is the last word in this list? {items}'")
    _require(len(templates) >= 3, f"write at least 3 templates (FLAN uses about 10 per task), got {len(templates)}")
    fields, _ = FAMILIES[family].sample(random.Random(0))
    for t in templates:
        try:
            used = _fields(t)
        except ValueError as e:
            raise CheckFailed(f"{t!r} is not a valid format string ({e}); write fields as {{items}}") from None
        _require(used == set(fields), f"{t!r} uses the fields {sorted(used)}; each template must use exactly the "
                                      f"family's fields {sorted(fields)}, written as {{name}}")
        _require(len(t.format(**fields).split()) >= 3, f"{t!r} is too short to be an instruction")
    for i, a in enumerate(templates):
        for b in templates[i + 1:]:
            score = rouge_l(a, b)
            _require(score < threshold, f"{a!r} and {b!r} are near-copies (ROUGE-L {score:.2f} >= {threshold}): "
                                        "phrase each template differently, as FLAN does")
    copied = [t for t in templates if t in FAMILIES[family].templates]
    _require(len(copied) < len(templates), "all your templates are copies of the library's: write your own")
    return f"{len(templates)} distinct templates, e.g. {templates[0].format(**fields)!r}"


# ex2: a multi-task mixture ------------------------------------------------------------------------------------
def ex2(build_mixture) -> str:
    fams = [FAMILIES["addition"], FAMILIES["reversal"], FAMILIES["uppercase"]]
    n = 8
    mix = build_mixture(fams, n, seed=1)
    _require(isinstance(mix, list) and all(isinstance(e, dict) for e in mix),
             "build_mixture must return a list of examples (dicts from family.example(rng, template))")
    _require(len(mix) == n * len(fams), f"expected {n} examples per family, {n * len(fams)} in all; got {len(mix)}")
    _require(all({"family", "template", "prompt", "answer"} <= set(e) for e in mix),
             "each example must be a dict with family, template, prompt and answer: use family.example(rng, template)")
    counts = Counter(e["family"] for e in mix)
    _require(all(counts[f.name] == n for f in fams), f"each family must have {n} examples, got {dict(counts)}")
    for f in fams:
        used = Counter(e["template"] for e in mix if e["family"] == f.name)
        want = Counter(i % len(f.templates) for i in range(n))
        _require(used == want, f"{f.name}: the i-th example of a family must use template i % {len(f.templates)} "
                               f"(template counts {dict(want)}), got {dict(used)}")
    families_in_order = [e["family"] for e in mix]
    _require(families_in_order[:n] != [fams[0].name] * n,
             "the mixture is not shuffled: shuffle it with random.Random(seed) so each batch mixes the families")
    _require(build_mixture(fams, n, seed=1) == mix, "the same seed must give the same mixture")
    _require(build_mixture(fams, n, seed=2) != mix, "a different seed must give a different mixture")
    single = build_mixture(fams, n, seed=1, single_template=True)
    _require(len(single) == len(mix) and all(e["template"] == 0 for e in single),
             "with single_template=True every example must use template 0")
    return f"{len(mix)} examples, {n} per family, templates cycled, shuffled"


# ex3: instruction tuning runs and transfers to the held-out family -------------------------------------------------
def ex3(history, held_out_gain: float, at_least: float = 0.15) -> str:
    _require(history is not None and len(getattr(history, "loss", [])) > 1,
             "instruction_tune must return (model, history), the History that fit() returns")
    first, last = history.loss[0], history.final_loss
    _require(last < first / 2, f"the training loss went from {first:.3f} to only {last:.3f}: train on prompt "
                               "plain_prompt(example['prompt']) and response ' ' + example['answer'] with the given "
                               "LoRA config, steps and learning rate")
    _require(held_out_gain >= at_least, f"zero-shot exact match on the held-out family rose by only "
                                        f"{held_out_gain:+.1%} (expected at least {at_least:.0%}): train on the "
                                        "mixture as described, with the response ' ' + answer and end-of-sequence")
    return f"loss {first:.2f} -> {last:.2f}; held-out exact match {held_out_gain:+.1%}"


# ex4: the Self-Instruct prompt --------------------------------------------------------------------------------
def ex4(self_instruct_prompt) -> str:
    got = self_instruct_prompt(list(EX4_POOL), 4, random.Random(3))
    want = EXPECTED["ex4"]
    _require(isinstance(got, str), "self_instruct_prompt must return the prompt as one string")
    _require(got.startswith("Come up with a series of tasks:"), "the prompt must start with the header line "
                                                               "'Come up with a series of tasks:'")
    _require(got.rstrip().endswith("Task 5:"), "the prompt must end with 'Task 5:' (k + 1) so that the model "
                                               "writes the next task; do not add a space or newline after it")
    shown = [line for line in got.splitlines() if line.startswith("Task ") and line.rstrip() != "Task 5:"]
    _require(len(shown) == 4,
             f"show exactly k = 4 tasks from the pool, one per line as 'Task i: ...'; got {len(shown)}")
    _require(got == want, f"expected\n{want}\ngot\n{got}\ndraw the tasks with rng.sample(pool, k), number them from 1, "
                          "join the lines with '\\n'")
    return "the expected prompt"


# ex5: the ROUGE-L filter --------------------------------------------------------------------------------------
def ex5(novel_instructions) -> str:
    pool, candidates = list(EX5_POOL), list(EX5_CANDIDATES)
    got = novel_instructions(candidates, pool)
    _require(isinstance(got, tuple) and len(got) == 2, "novel_instructions must return (kept, rejected)")
    kept, rejected = got
    want_kept, want_rejected = EXPECTED["ex5"]
    _require(pool == EX5_POOL,
             "do not modify the pool you are given: copy it (list(pool)) and grow the copy")
    _require(candidates[0] not in kept, f"{candidates[0]!r} has ROUGE-L {rouge_l(candidates[0], pool[0]):.2f} with "
                                        f"{pool[0]!r}: it must be rejected (>= 0.7)")
    _require(candidates[1] in kept, f"{candidates[1]!r} is new and must be kept")
    _require(candidates[2] not in kept, "a kept instruction joins the pool at once: a near-copy of it later in the "
                                        "same batch must be rejected")
    _require(list(kept) == want_kept, f"kept {kept}, expected {want_kept}")
    _require(len(rejected) == len(want_rejected) and all(len(r) == 3 for r in rejected),
             "rejected must hold one (candidate, score, nearest pool instruction) triple per rejected candidate")
    for (c, s, n), (wc, ws, wn) in zip(rejected, want_rejected):
        _require(c == wc and n == wn and abs(float(s) - ws) < 1e-6,
                 f"rejected {(c, s, n)}, expected {(wc, round(ws, 3), wn)}: the score is the highest ROUGE-L "
                 "F-measure against the pool, and the nearest is the pool instruction that reaches it")
    return f"kept {len(kept)}, rejected {len(rejected)}, as expected"
