"""anlp_ft.assignments.markers: a solution notebook rendered to its lab (solution blocks to stubs, hidden tests
dropped, outputs and volatile metadata cleared, deterministic JSON) and marker errors that name cell and
notebook."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from anlp_ft.assignments.markers import MarkerError, build_lab, render_lab


def lab_of(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    return nbformat.reads(render_lab(nb, "solutions/01_test.ipynb"), as_version=4)


def test_code_solution_blocks_become_stubs_at_marker_indentation(solution_notebook) -> None:
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


def test_markdown_solution_block_becomes_answer_prompt(solution_notebook) -> None:
    lab = lab_of(solution_notebook())
    assert lab.cells[2].source == "Why does this work?\n*Your answer here.*\nEnd."


def test_hidden_tests_cells_and_line_ranges_are_removed(solution_notebook) -> None:
    sol = solution_notebook()
    lab = lab_of(sol)
    assert len(lab.cells) == len(sol.cells) - 1
    assert all("hidden-tests" not in c.metadata.get("tags", []) for c in lab.cells)
    assert lab.cells[3].source == "z = 1\nprint(z)"
    assert lab.cells[4].source == "w = 2"  # no dangling newline from a block at the end
    assert "double(5)" not in render_lab(sol, "solutions/01_test.ipynb")


def test_outputs_cleared_and_metadata_cleaned(solution_notebook) -> None:
    sol = solution_notebook()
    lab = lab_of(sol)
    exercise = lab.cells[1]
    assert exercise.outputs == []
    assert exercise.execution_count is None
    assert exercise.metadata == {"anlp_ft": {"exercise": "ex1", "points": 2}}
    assert "papermill" not in lab.metadata
    assert "widgets" not in lab.metadata  # the solution's last run's widget state
    assert lab.metadata.kernelspec == {"name": "python3", "display_name": "Python 3", "language": "python"}
    assert lab.metadata.anlp_ft == {"generated_from": "solutions/01_test.ipynb"}
    # Cell ids follow the solution's, so diffs of regenerated labs stay small.
    kept = [c for c in sol.cells if "hidden-tests" not in c.metadata.get("tags", [])]
    assert [c.id for c in lab.cells] == [c.id for c in kept]
    # The solution itself is left untouched.
    assert sol.cells[1].outputs
    assert "papermill" in sol.metadata and "widgets" in sol.metadata


def test_render_is_deterministic_json(solution_notebook) -> None:
    sol = solution_notebook()
    text = render_lab(sol, "solutions/01_test.ipynb")
    assert text == render_lab(sol, "solutions/01_test.ipynb")
    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=1, sort_keys=True, ensure_ascii=False) + "\n"


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
