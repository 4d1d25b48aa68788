"""Self-Instruct plumbing (anlp_ft.self_instruct) and lab 02's public checks: right answers pass, wrong ones fail
with a message that says what to fix."""
from __future__ import annotations

import random

import pytest

from anlp_ft.assignments.checks import CheckFailed
from anlp_ft.assignments.public import lab02
from anlp_ft.data.flan import FAMILIES
from anlp_ft.self_instruct import (HEADER, SEED_INSTRUCTIONS, instruction_prompt, most_similar, parse_instruction,
                                   rouge_filter, rouge_l)


def test_rouge_l_is_one_for_the_same_text_and_zero_for_disjoint():
    assert rouge_l("sort the numbers", "sort the numbers") == pytest.approx(1.0)
    assert rouge_l("sort the numbers", "write a poem") == 0.0
    assert 0.7 <= rouge_l("Sort these numbers from smallest to largest.",
                          "Sort the numbers from smallest to largest.") < 1.0


def test_instruction_prompt_numbers_k_pool_tasks_and_asks_for_the_next():
    prompt = instruction_prompt(SEED_INSTRUCTIONS, 3, random.Random(0))
    lines = prompt.split("\n")
    assert lines[0] == HEADER and lines[-1] == "Task 4:" and len(lines) == 5
    assert all(line.split(": ", 1)[1] in SEED_INSTRUCTIONS for line in lines[1:4])
    assert prompt == instruction_prompt(SEED_INSTRUCTIONS, 3, random.Random(0))  # seeded
    with pytest.raises(ValueError):
        instruction_prompt(["one task"], 2, random.Random(0))


@pytest.mark.parametrize("text, want", [
    (" Write a story about a dog.\nTask 5: more", "Write a story about a dog."),
    (" List three colours. Task 6: Name a city.", "List three colours."),
    (" 12345 is a number", None),
    (" Hi", None),
    ("", None),
])
def test_parse_instruction_keeps_the_first_usable_line(text, want):
    assert parse_instruction(text) == want


def test_rouge_filter_rejects_near_copies_including_ones_kept_earlier_in_the_batch():
    pool = ["Sort these numbers from smallest to largest."]
    result = rouge_filter(["Sort the numbers from smallest to largest.", "Name a red fruit.", "Name a red fruit!",
                           "Explain how rain forms."], pool)
    assert result.kept == ["Name a red fruit.", "Explain how rain forms."]
    assert [r[0] for r in result.rejected] == ["Sort the numbers from smallest to largest.", "Name a red fruit!"]
    assert result.rejected[1][2] == "Name a red fruit." and result.rejected[1][1] >= 0.7
    assert pool == ["Sort these numbers from smallest to largest."]  # the caller's pool is not modified
    assert most_similar("anything", []) == (0.0, "")


def test_seed_instructions_are_themselves_novel():
    assert rouge_filter(SEED_INSTRUCTIONS, []).kept == list(SEED_INSTRUCTIONS)


# lab 02 public checks -----------------------------------------------------------------------------------------
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
    from anlp_ft.train import History

    assert "loss" in lab02.ex3(History(steps=[0, 1], loss=[2.0, 0.5]), 0.8)
    with pytest.raises(CheckFailed, match="training loss"):
        lab02.ex3(History(steps=[0, 1], loss=[2.0, 1.5]), 0.8)
    with pytest.raises(CheckFailed, match="held-out"):
        lab02.ex3(History(steps=[0, 1], loss=[2.0, 0.5]), 0.05)


def test_lab02_ex4_prompt():
    assert "reference" in lab02.ex4(instruction_prompt)
    with pytest.raises(CheckFailed, match="Task 5"):
        lab02.ex4(lambda pool, k, rng: instruction_prompt(pool, k, rng) + " ")
    with pytest.raises(CheckFailed):
        lab02.ex4(lambda pool, k, rng: instruction_prompt(pool[:k] + pool[k:], k, random.Random(0)))


def test_lab02_ex5_filter():
    def good(candidates, pool, threshold=0.7):
        r = rouge_filter(candidates, pool, threshold)
        return r.kept, r.rejected

    def no_growth(candidates, pool, threshold=0.7):
        kept = [c for c in candidates if most_similar(c, pool)[0] < threshold]
        return kept, [(c, *most_similar(c, pool)) for c in candidates if c not in kept]

    assert "as the reference" in lab02.ex5(good)
    with pytest.raises(CheckFailed, match="joins the pool"):
        lab02.ex5(no_growth)
