"""anlp_ft.assignments.public.lab02 (instruction tuning): each public check passes a right answer and fails a
wrong one with a message that says what to fix."""
from __future__ import annotations

import random

import pytest

from anlp_ft.assignments.checks import CheckFailed
from anlp_ft.assignments.public import lab02
from anlp_ft.data.flan import FAMILIES
from anlp_ft.self_instruct import rouge_l
from anlp_ft.train import History
from tests.conftest import solution_answers

SOL = solution_answers("02", random=random, rouge_l=rouge_l)  # the reference answers, from the solution


def _mixture(families, n_per_family, seed, single_template=False):
    rng, out = random.Random(seed), []
    for fam in families:
        out += [fam.example(rng, 0 if single_template else i % len(fam.templates)) for i in range(n_per_family)]
    rng.shuffle(out)
    return out


def test_lab02_ex1_templates():
    good = ["What is the final word here? {items}", "{items}. Which word closes this list?",
            "Tell me the word at the end of: {items}"]
    assert "distinct" in lab02.ex1(good)
    with pytest.raises(CheckFailed, match="at least 3"):
        lab02.ex1(good[:2])
    with pytest.raises(CheckFailed, match="fields"):
        lab02.ex1(good[:2] + ["Which word comes last? {words}"])
    with pytest.raises(CheckFailed, match="near-copies"):
        lab02.ex1(good + ["What is the final word here? {items}!"])
    with pytest.raises(CheckFailed, match="copies of the library"):
        lab02.ex1(list(FAMILIES["last_word"].templates))


def test_lab02_ex2_mixture():
    assert "shuffled" in lab02.ex2(_mixture)
    with pytest.raises(CheckFailed, match="not shuffled"):
        lab02.ex2(lambda fams, n, seed, single_template=False: [f.example(random.Random(seed), i % len(f.templates))
                                                                 for f in fams for i in range(n)])
    with pytest.raises(CheckFailed, match="template"):
        lab02.ex2(lambda fams, n, seed, single_template=False: _mixture(fams, n, seed, single_template=True))


def test_lab02_ex3_reads_the_history():
    assert "loss" in lab02.ex3(History(steps=[0, 1], loss=[2.0, 0.5]), 0.8)
    with pytest.raises(CheckFailed, match="training loss"):
        lab02.ex3(History(steps=[0, 1], loss=[2.0, 1.5]), 0.8)
    with pytest.raises(CheckFailed, match="held-out"):
        lab02.ex3(History(steps=[0, 1], loss=[2.0, 0.5]), 0.05)


def test_lab02_expected_values_are_the_solutions():
    assert SOL.self_instruct_prompt(list(lab02.EX4_POOL), 4, random.Random(3)) == lab02.EXPECTED["ex4"]
    kept, rejected = SOL.novel_instructions(list(lab02.EX5_CANDIDATES), list(lab02.EX5_POOL))
    assert (kept, rejected) == lab02.EXPECTED["ex5"], f"update lab02.EXPECTED['ex5'] to {(kept, rejected)!r}"


def test_lab02_ex4_prompt():
    prompt = SOL.self_instruct_prompt
    assert "expected" in lab02.ex4(prompt)
    with pytest.raises(CheckFailed, match="Task 5"):
        lab02.ex4(lambda pool, k, rng: prompt(pool, k, rng) + " ")
    with pytest.raises(CheckFailed):
        lab02.ex4(lambda pool, k, rng: prompt(pool[:k] + pool[k:], k, random.Random(0)))


def test_lab02_ex5_filter():
    def no_growth(candidates, pool, threshold=0.7):
        nearest = {c: max(((rouge_l(c, p), p) for p in pool), key=lambda pair: pair[0]) for c in candidates}
        kept = [c for c in candidates if nearest[c][0] < threshold]
        return kept, [(c, *nearest[c]) for c in candidates if c not in kept]

    assert "as expected" in lab02.ex5(SOL.novel_instructions)
    with pytest.raises(CheckFailed, match="joins the pool"):
        lab02.ex5(no_growth)
