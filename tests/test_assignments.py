"""The assignment format: solution -> lab rendering, labs/ sync, and the public checks."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from anlp_ft.assignments import MISSING, CheckFailed, Checker, attempt, render_lab, sync_labs
from anlp_ft.assignments.markers import MarkerError, build_lab

EXERCISE_MD = {"anlp_ft": {"exercise": "ex1", "points": 2}}
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def solution_notebook(answer: str = "return x * 2") -> nbformat.NotebookNode:
    nb = new_notebook(metadata={"kernelspec": KERNELSPEC, "papermill": {"duration": 1.0}})
    nb.cells = [
        new_markdown_cell("# Lab 01\nIntro."),
        new_code_cell(
            "def double(x):\n"
            '    """Double x."""\n'
            "    # BEGIN SOLUTION\n"
            f"    {answer}\n"
            "    # END SOLUTION\n"
            "\n"
            "# BEGIN SOLUTION\n"
            "y = double(3)\n"
            "# END SOLUTION\n"
            "check('ex1', double)",
            metadata={
                **EXERCISE_MD,
                "execution": {"iopub.execute_input": "2025-01-01T00:00:00Z"},
                "papermill": {"status": "completed"},
            },
            execution_count=7,
            outputs=[new_output("stream", name="stdout", text="✓ ex1 passed\n")],
        ),
        new_markdown_cell(
            "Why does this work?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->\nEnd."
        ),
        new_code_cell("assert double(2) == 4", metadata={"tags": ["hidden-tests"]}),
        new_code_cell(
            "z = 1\n### BEGIN HIDDEN TESTS\nassert double(5) == 10\n### END HIDDEN TESTS\nprint(z)"
        ),
        new_code_cell("w = 2\n### BEGIN HIDDEN TESTS\nassert w == 2\n### END HIDDEN TESTS"),
    ]
    return nb


def lab_of(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return nbformat.reads(render_lab(nb, "solutions/01_test.ipynb"), as_version=4)


def test_code_solution_blocks_become_stubs_at_marker_indentation() -> None:
    lab = lab_of(solution_notebook())
    assert lab.cells[1].source == (
        "def double(x):\n"
        '    """Double x."""\n'
        "    # YOUR CODE HERE\n"
        "    raise NotImplementedError\n"
        "\n"
        "# YOUR CODE HERE\n"
        "raise NotImplementedError\n"
        "check('ex1', double)"
    )


def test_markdown_solution_block_becomes_answer_prompt() -> None:
    lab = lab_of(solution_notebook())
    assert lab.cells[2].source == "Why does this work?\n*Your answer here.*\nEnd."


def test_hidden_tests_cells_and_line_ranges_are_removed() -> None:
    sol = solution_notebook()
    lab = lab_of(sol)
    assert len(lab.cells) == len(sol.cells) - 1
    assert all("hidden-tests" not in c.metadata.get("tags", []) for c in lab.cells)
    assert lab.cells[3].source == "z = 1\nprint(z)"
    assert lab.cells[4].source == "w = 2"  # no dangling newline from a block at the end
    assert "double(5)" not in render_lab(sol, "solutions/01_test.ipynb")


def test_outputs_cleared_and_metadata_cleaned() -> None:
    sol = solution_notebook()
    lab = lab_of(sol)
    exercise = lab.cells[1]
    assert exercise.outputs == [] and exercise.execution_count is None
    assert exercise.metadata == EXERCISE_MD
    assert "papermill" not in lab.metadata
    assert lab.metadata.kernelspec == KERNELSPEC
    assert lab.metadata.anlp_ft == {"generated_from": "solutions/01_test.ipynb"}
    # Cell ids follow the solution's, so diffs of regenerated labs stay small.
    kept = [c for c in sol.cells if "hidden-tests" not in c.metadata.get("tags", [])]
    assert [c.id for c in lab.cells] == [c.id for c in kept]
    # The solution itself is left untouched.
    assert sol.cells[1].outputs and "papermill" in sol.metadata


def test_render_is_deterministic_json() -> None:
    sol = solution_notebook()
    text = render_lab(sol, "solutions/01_test.ipynb")
    assert text == render_lab(sol, "solutions/01_test.ipynb")
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def test_missing_cell_ids_are_derived_stably(tmp_path: Path) -> None:
    data = json.loads(nbformat.writes(solution_notebook()))
    data["nbformat_minor"] = 4
    for cell in data["cells"]:
        del cell["id"]
    (tmp_path / "solutions").mkdir()
    (tmp_path / "solutions" / "01_old.ipynb").write_text(json.dumps(data))
    assert sync_labs(tmp_path, check=False) == [tmp_path / "labs" / "01_old.ipynb"]
    first = (tmp_path / "labs" / "01_old.ipynb").read_bytes()
    lab = nbformat.reads(first.decode(), as_version=4)
    assert lab.nbformat_minor >= 5 and all(c.get("id") for c in lab.cells)
    (tmp_path / "labs" / "01_old.ipynb").unlink()
    sync_labs(tmp_path, check=False)
    assert (tmp_path / "labs" / "01_old.ipynb").read_bytes() == first


@pytest.mark.parametrize(
    "source, problem",
    [
        ("x = 1\n# BEGIN SOLUTION\nx = 2", "no END marker"),
        ("x = 1\n# END SOLUTION", "no BEGIN marker"),
        ("# BEGIN SOLUTION\n# BEGIN SOLUTION\n# END SOLUTION\n# END SOLUTION", "nested"),
        ("### BEGIN HIDDEN TESTS\nassert True", "no END marker"),
        ("# BEGIN SOLUTION:\nx = 2\n# END SOLUTION", "malformed marker"),
        ("<!-- BEGIN SOLUTION -->\nx = 2", "malformed marker"),
        ("x = 1\n# BEGIN SOLUTION:\nx = 2", "malformed marker"),
    ],
)
def test_bad_markers_name_notebook_and_cell(source: str, problem: str) -> None:
    nb = new_notebook(cells=[new_markdown_cell("intro"), new_code_cell(source)])
    with pytest.raises(ValueError, match=problem) as info:
        render_lab(nb, "solutions/02_bad.ipynb")
    assert isinstance(info.value, MarkerError)
    assert "solutions/02_bad.ipynb, cell 1" in str(info.value)


def test_marker_in_unsupported_cell_type_is_an_error() -> None:
    hidden = "### BEGIN HIDDEN TESTS\nsecret\n### END HIDDEN TESTS"
    nb = new_notebook(cells=[new_markdown_cell(hidden)])
    with pytest.raises(ValueError, match=r"cell 0 .*unrecognised marker 'BEGIN HIDDEN TESTS'"):
        render_lab(nb, "solutions/03_md.ipynb")


def test_unmatched_markdown_marker() -> None:
    nb = new_notebook(cells=[new_markdown_cell("<!-- BEGIN SOLUTION -->\nsecret")])
    with pytest.raises(ValueError, match=r"solutions/03_md\.ipynb, cell 0"):
        build_lab(nb, "solutions/03_md.ipynb")


def write_solution(root: Path, name: str, nb: nbformat.NotebookNode) -> Path:
    path = root / "solutions" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def test_sync_labs_writes_checks_and_reports(tmp_path: Path) -> None:
    sol = solution_notebook()
    write_solution(tmp_path, "01_a.ipynb", sol)
    lab = tmp_path / "labs" / "01_a.ipynb"

    assert sync_labs(tmp_path, check=True) == [lab]  # missing
    assert not lab.exists()  # check mode writes nothing
    assert sync_labs(tmp_path, check=False) == [lab]
    assert sync_labs(tmp_path, check=True) == []
    assert sync_labs(tmp_path, check=False) == []  # unchanged labs are not rewritten
    assert lab.read_text(encoding="utf-8") == render_lab(sol, "solutions/01_a.ipynb")

    # Editing only the hidden answer leaves the lab as it is ...
    sol.cells[1].source = sol.cells[1].source.replace("return x * 2", "return x + x")
    write_solution(tmp_path, "01_a.ipynb", sol)
    assert sync_labs(tmp_path, check=True) == []
    # ... while a visible edit makes it stale.
    sol.cells[0].source = "# Lab 01, revised"
    write_solution(tmp_path, "01_a.ipynb", sol)
    assert sync_labs(tmp_path, check=True) == [lab]

    # An orphan lab (its solution is gone) is reported, never deleted.
    orphan = tmp_path / "labs" / "09_gone.ipynb"
    orphan.write_text("{}")
    assert sync_labs(tmp_path, check=True) == [lab, orphan]
    assert sync_labs(tmp_path, check=False) == [lab]
    assert sync_labs(tmp_path, check=True) == [orphan]
    orphan.unlink()
    assert sync_labs(tmp_path, check=True) == []


def test_sync_labs_requires_solutions_dir(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        sync_labs(tmp_path, check=True)


# --- public checks -------------------------------------------------------------------------

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
    assert Checker("lab98").lab == Checker("98").lab == "98"


def test_attempt(capsys: pytest.CaptureFixture[str]) -> None:
    assert attempt("ex1", stub, 3, default=-1) == -1
    assert capsys.readouterr().out == "… ex1 not implemented: stub skipped, using the default\n"
    assert attempt("ex1", lambda x, k=0: x + k, 3, k=1, default=-1) == 4
    assert attempt("ex1", stub, 3) is MISSING
    capsys.readouterr()
    # A MISSING input means an earlier exercise is a stub: skip without calling, and say why.
    assert attempt("ex2", lambda x: x + 1, MISSING) is MISSING
    assert "needs the result of an exercise that is not implemented yet" in capsys.readouterr().out


def test_expect_reports_missing_and_fails_real_misses(capsys: pytest.CaptureFixture[str]) -> None:
    from anlp_ft.results import expect

    expect("accuracy", MISSING, at_least=0.9)
    assert "not checked, its exercise is not implemented yet" in capsys.readouterr().out
    expect("accuracy", 0.95, at_least=0.9)
    with pytest.raises(AssertionError, match="accuracy = 0.5, expected at least 0.9"):
        expect("accuracy", 0.5, at_least=0.9)
