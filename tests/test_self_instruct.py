"""anlp_ft.self_instruct: ROUGE-L and parsing the generated instruction; with lab 02's reference answers from its
solution (the in-context prompt of k pool tasks, the ROUGE-L filter against the growing pool) checked against them."""
from __future__ import annotations

import random

import pytest

from anlp_ft.self_instruct import HEADER, SEED_INSTRUCTIONS, THRESHOLD, parse_instruction, rouge_l
from tests.conftest import solution_answers

SOL = solution_answers("02", random=random, rouge_l=rouge_l)  # the reference answers, from the solution


def test_rouge_l_is_one_for_the_same_text_and_zero_for_disjoint():
    assert rouge_l("sort the numbers", "sort the numbers") == pytest.approx(1.0)
    assert rouge_l("sort the numbers", "write a poem") == 0.0
    assert 0.7 <= rouge_l("Sort these numbers from smallest to largest.",
                          "Sort the numbers from smallest to largest.") < 1.0


def test_instruction_prompt_numbers_k_pool_tasks_and_asks_for_the_next():
    prompt = SOL.self_instruct_prompt(list(SEED_INSTRUCTIONS), 3, random.Random(0))
    lines = prompt.split("\n")
    assert lines[0] == HEADER
    assert lines[-1] == "Task 4:"
    assert len(lines) == 5
    assert all(line.split(": ", 1)[1] in SEED_INSTRUCTIONS for line in lines[1:4])
    assert prompt == SOL.self_instruct_prompt(list(SEED_INSTRUCTIONS), 3, random.Random(0))  # seeded


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
    kept, rejected = SOL.novel_instructions(["Sort the numbers from smallest to largest.", "Name a red fruit.",
                                             "Name a red fruit!", "Explain how rain forms."], pool)
    assert kept == ["Name a red fruit.", "Explain how rain forms."]
    assert [r[0] for r in rejected] == ["Sort the numbers from smallest to largest.", "Name a red fruit!"]
    assert rejected[1][2] == "Name a red fruit."
    assert rejected[1][1] >= THRESHOLD
    assert pool == ["Sort these numbers from smallest to largest."]  # the caller's pool is not modified


def test_seed_instructions_are_themselves_novel():
    kept, rejected = SOL.novel_instructions(list(SEED_INSTRUCTIONS[1:]), list(SEED_INSTRUCTIONS[:1]))
    assert kept == list(SEED_INSTRUCTIONS[1:]) and rejected == []
