"""anlp_ft.assignments.checks: the Checker that runs a lab's public checks (pass, stub reported, CheckFailed
raised with its message, unknown exercises and labs named) and attempt(), which skips a stub's downstream cells."""

from __future__ import annotations

import sys
import types

import pytest

from anlp_ft.assignments import MISSING, Checker, CheckFailed, attempt

FAKE_LAB = '''
from anlp_ft.assignments.checks import CheckFailed
import math  # imported names are not exercises

def ex1(fn):
    if fn(2) != 4:
        raise CheckFailed(f"double(2) should be 4, got {fn(2)}")
    return "double(2) == 4"

def ex2(fn):
    fn(1)

def ex3(fn):
    fn(1)

def _helper():
    pass
'''


@pytest.fixture
def checker(monkeypatch: pytest.MonkeyPatch) -> Checker:
    name = "anlp_ft.assignments.public.lab98"
    module = types.ModuleType(name)
    exec(FAKE_LAB, module.__dict__)
    monkeypatch.setitem(sys.modules, name, module)
    return Checker("98")


def stub(x: int) -> int:
    # YOUR CODE HERE
    raise NotImplementedError


def test_check_passes(checker: Checker, capsys: pytest.CaptureFixture[str]) -> None:
    assert checker("ex1", lambda x: 2 * x) is True
    assert capsys.readouterr().out == "✓ ex1 passed: double(2) == 4\n"
    assert checker("ex2", lambda x: x) is True
    assert capsys.readouterr().out == "✓ ex2 passed\n"


def test_check_not_implemented_is_reported_not_raised(
    checker: Checker, capsys: pytest.CaptureFixture[str]
) -> None:
    assert checker("ex1", stub) is False
    assert capsys.readouterr().out == "… ex1 is not implemented yet (0 points so far)\n"


def test_library_not_implemented_error_is_a_real_error(checker: Checker) -> None:
    def uses_missing_op(x: int) -> int:
        raise NotImplementedError("aten::foo is not implemented for the MPS backend")

    with pytest.raises(NotImplementedError, match="MPS"):
        checker("ex3", uses_missing_op)


def test_check_failed_propagates_with_message(checker: Checker) -> None:
    with pytest.raises(CheckFailed, match=r"^double\(2\) should be 4, got 5$"):
        checker("ex1", lambda x: x + 3)


def test_unknown_exercise_lists_available(checker: Checker) -> None:
    with pytest.raises(ValueError, match=r"no exercise 'ex9'; available: ex1, ex2, ex3$"):
        checker("ex9")
    assert checker.exercises == ["ex1", "ex2", "ex3"]


def test_unknown_lab(checker: Checker) -> None:
    with pytest.raises(ValueError, match=r"unknown lab '97'.*98"):
        Checker("97")
    assert Checker("lab98").lab == "98"
    assert Checker("98").lab == "98"


def test_attempt(capsys: pytest.CaptureFixture[str]) -> None:
    assert attempt("ex1", stub, 3, default=-1) == -1
    assert capsys.readouterr().out == "… ex1 not implemented: stub skipped, using the default\n"
    assert attempt("ex1", lambda x, k=0: x + k, 3, k=1, default=-1) == 4
    assert attempt("ex1", stub, 3) is MISSING
    capsys.readouterr()
    # A MISSING input means an earlier exercise is a stub: skip without calling, and say why.
    assert attempt("ex2", lambda x: x + 1, MISSING) is MISSING
    assert "needs the result of an exercise that is not implemented yet" in capsys.readouterr().out
