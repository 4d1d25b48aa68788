"""anlp_ft.data.arithmetic: seeded problems, step-by-step solutions that are right, disjoint splits, and the
answer verifier (lenient and strict)."""
import pytest

from anlp_ft.data import arithmetic


def test_arithmetic_reproducible_under_seed():
    assert arithmetic.arithmetic_problems(20, seed=1) == arithmetic.arithmetic_problems(20, seed=1)
    assert arithmetic.arithmetic_problems(20, seed=1) != arithmetic.arithmetic_problems(20, seed=2)


def test_step_by_step_solutions_are_right():
    p = arithmetic.make_problem(23, "+", 45)
    assert p["solution"] == "Let's think step-by-step. 23 + 40 = 63. 63 + 5 = 68. The answer is 68."
    for p in arithmetic.arithmetic_problems(200, seed=0, ops=("+", "-", "*")):
        assert arithmetic.is_correct(p["solution"], p["answer"], strict=True)
        assert str(eval(p["question"].removeprefix("What is ").rstrip("?"))) == p["answer"]


def test_train_and_test_are_disjoint():
    train, test = arithmetic.train_test_problems(500, 100, seed=0)
    assert not {p["question"] for p in train} & {p["question"] for p in test}


def test_too_many_problems_is_an_error():
    with pytest.raises(ValueError, match="only 100 exist"):
        arithmetic.arithmetic_problems(101, seed=0, digits=1)


def test_arithmetic_verifier_rejects_wrong_answers():
    assert not arithmetic.is_correct("The answer is 67.", "68")
    assert not arithmetic.is_correct("no number here", "68")
    assert arithmetic.is_correct("23 + 45 is 68", "68")  # lenient: the last number
    assert not arithmetic.is_correct("23 + 45 is 68", "68", strict=True)  # strict: the trained format only
    assert not arithmetic.is_correct("The answer is 68. Also 12.", "68")
