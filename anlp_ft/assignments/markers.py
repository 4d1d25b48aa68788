"""Turn a solution notebook into the student lab: the assignment format's single implementation.

A solution notebook marks what students must not see:

* code between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` lines becomes ``# YOUR CODE HERE`` /
  ``raise NotImplementedError`` at the indentation of the BEGIN marker;
* markdown between ``<!-- BEGIN SOLUTION -->`` and ``<!-- END SOLUTION -->`` lines becomes
  ``*Your answer here.*``;
* lines between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` are dropped, and so are
  whole cells tagged ``hidden-tests`` (the grader runs them; students never see them).

The lab is rendered to text deterministically, so regenerating it is byte-for-byte identical and a
CI check can compare files instead of parsing them.
"""

from __future__ import annotations

import copy
import hashlib
import re

import nbformat

__all__ = [
    "DEMO_TAG",
    "HIDDEN_TESTS_TAG",
    "MarkerError",
    "build_lab",
    "render_lab",
    "strip_code_solutions",
    "strip_hidden_tests",
    "strip_markdown_solutions",
]

HIDDEN_TESTS_TAG = "hidden-tests"
DEMO_TAG = "demo"  # a demonstration (training runs, plots): the grader does not run it, no verdict depends on it
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError")
MARKDOWN_STUB = ("*Your answer here.*",)

# Per-cell metadata written by executors; it changes on every run and would make labs churn.
_VOLATILE_CELL_KEYS = ("execution", "papermill", "ExecuteTime")

_SP = r"[ \t]*"
# (BEGIN line, END line, any mention of the keyword, canonical BEGIN marker for error messages)
_CODE_MARKERS = (
    re.compile(rf"^(?P<indent>{_SP})#+{_SP}BEGIN SOLUTION{_SP}$"),
    re.compile(rf"^{_SP}#+{_SP}END SOLUTION{_SP}$"),
    re.compile(r"\b(?:BEGIN|END)\s+SOLUTION\b"),
    "# BEGIN SOLUTION",
)
_MD_MARKERS = (
    re.compile(rf"^(?P<indent>{_SP})<!--{_SP}BEGIN SOLUTION{_SP}-->{_SP}$"),
    re.compile(rf"^{_SP}<!--{_SP}END SOLUTION{_SP}-->{_SP}$"),
    re.compile(r"\b(?:BEGIN|END)\s+SOLUTION\b"),
    "<!-- BEGIN SOLUTION -->",
)
_HIDDEN_MARKERS = (
    re.compile(rf"^(?P<indent>{_SP})#+{_SP}BEGIN HIDDEN TESTS{_SP}$"),
    re.compile(rf"^{_SP}#+{_SP}END HIDDEN TESTS{_SP}$"),
    re.compile(r"\b(?:BEGIN|END)\s+HIDDEN\s+TESTS\b"),
    "### BEGIN HIDDEN TESTS",
)
# Last line of defence: a marker the cell type does not support (hidden tests in markdown, anything
# in a raw cell) would otherwise silently leak into the lab.
_ANY_MARKER = re.compile(r"\b(?:BEGIN|END)\s+(?:SOLUTION|HIDDEN\s+TESTS)\b")


class MarkerError(ValueError):
    """A solution notebook's markers are unmatched, nested or malformed."""


def _replace_blocks(
    source: str,
    markers: tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str], str],
    stub: tuple[str, ...],
    where: str,
) -> str:
    """Replace each BEGIN..END line block (markers included) by ``stub`` at BEGIN's indentation."""
    begin, end, mention, example = markers
    out: list[str] = []
    open_line: int | None = None
    indent = ""
    # split("\n"), not splitlines(): that one also splits on \x0c, \u2028... inside strings.
    for number, line in enumerate(source.split("\n"), start=1):
        text = line.rstrip("\r")
        if match := begin.match(text):
            if open_line is not None:
                raise MarkerError(
                    f"{where}: nested {text.strip()!r} on line {number} "
                    f"(the block opened on line {open_line} is not closed yet)"
                )
            open_line, indent = number, match["indent"]
        elif end.match(text):
            if open_line is None:
                raise MarkerError(f"{where}: {text.strip()!r} on line {number} has no BEGIN marker")
            out.extend(indent + s for s in stub)
            open_line = None
        elif mention.search(text):
            # A typo'd marker would otherwise surface as a confusing "no BEGIN marker" later, or
            # leak the answer into the lab.
            raise MarkerError(
                f"{where}: malformed marker {text.strip()!r} on line {number}; "
                f"markers must be alone on their line, e.g. {example!r}"
            )
        elif open_line is None:
            out.append(line)
    if open_line is not None:
        raise MarkerError(f"{where}: the block opened on line {open_line} has no END marker")
    result = "\n".join(out)
    # A block removed at the very end must not leave a dangling newline the solution did not have.
    if not source.endswith("\n"):
        result = result.rstrip("\n")
    return result


def strip_code_solutions(source: str, where: str = "cell") -> str:
    """Replace ``# BEGIN SOLUTION`` .. ``# END SOLUTION`` blocks by the student stub."""
    return _replace_blocks(source, _CODE_MARKERS, CODE_STUB, where)


def strip_markdown_solutions(source: str, where: str = "cell") -> str:
    """Replace ``<!-- BEGIN SOLUTION -->`` .. ``<!-- END SOLUTION -->`` blocks by a prompt."""
    return _replace_blocks(source, _MD_MARKERS, MARKDOWN_STUB, where)


def strip_hidden_tests(source: str, where: str = "cell") -> str:
    """Drop ``### BEGIN HIDDEN TESTS`` .. ``### END HIDDEN TESTS`` line ranges entirely."""
    return _replace_blocks(source, _HIDDEN_MARKERS, (), where)


def _source_text(cell: nbformat.NotebookNode) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _is_hidden_tests_cell(cell: nbformat.NotebookNode) -> bool:
    return HIDDEN_TESTS_TAG in cell.get("metadata", {}).get("tags", [])


def _derived_id(source_name: str, index: int) -> str:
    # Old (nbformat < 4.5) solutions have no cell ids; a hash of the position keeps lab ids stable
    # across regenerations, unlike nbformat's own random repair.
    return hashlib.sha1(f"{source_name}:{index}".encode()).hexdigest()[:8]


def _lab_cell(
    cell: nbformat.NotebookNode, index: int, source_name: str
) -> nbformat.NotebookNode:
    where = f"{source_name}, cell {index}"
    if cell.get("id"):
        where += f" (id {cell['id']})"
    lab = copy.deepcopy(cell)
    source = _source_text(cell)
    if cell.cell_type == "code":
        source = strip_code_solutions(strip_hidden_tests(source, where), where)
        lab.outputs = []
        lab.execution_count = None
    elif cell.cell_type == "markdown":
        source = strip_markdown_solutions(source, where)
    if leak := _ANY_MARKER.search(source):
        raise MarkerError(
            f"{where}: unrecognised marker {leak.group(0)!r} left in the lab; markers must be "
            "alone on their line ('# BEGIN SOLUTION', '<!-- BEGIN SOLUTION -->', "
            "'### BEGIN HIDDEN TESTS' and the matching END)"
        )
    lab.source = source
    for key in _VOLATILE_CELL_KEYS:
        lab.metadata.pop(key, None)
    if not lab.get("id"):
        lab.id = _derived_id(source_name, index)
    return lab


def build_lab(solution_nb: nbformat.NotebookNode, source_name: str) -> nbformat.NotebookNode:
    """Return the student version of ``solution_nb`` (which is left untouched).

    ``source_name`` is the solution's path relative to the course root, e.g.
    ``"solutions/01_sft.ipynb"``; it is recorded in the lab and names the notebook in errors.
    """
    if solution_nb.get("nbformat") != 4:
        raise ValueError(f"{source_name}: expected an nbformat 4 notebook")
    ids = [cell.get("id") for cell in solution_nb.cells if cell.get("id")]
    if duplicates := sorted({i for i in ids if ids.count(i) > 1}):
        # nbformat would "repair" these with random ids, making the lab differ on every run.
        raise ValueError(f"{source_name}: duplicate cell ids {duplicates}")

    lab = nbformat.v4.new_notebook()
    lab.nbformat_minor = max(solution_nb.get("nbformat_minor", 5), 5)  # 4.5+ carries cell ids
    lab.metadata = copy.deepcopy(solution_nb.get("metadata", {}))
    for key in ("papermill", "widgets"):  # the solution's last run (widget state churns on every run)
        lab.metadata.pop(key, None)
    lab.metadata.setdefault("anlp_ft", {})["generated_from"] = source_name
    lab.cells = [
        _lab_cell(cell, index, source_name)
        for index, cell in enumerate(solution_nb.cells)
        if not _is_hidden_tests_cell(cell)
    ]
    return lab


def render_lab(solution_nb: nbformat.NotebookNode, source_name: str) -> str:
    """Return the exact file text of the student lab generated from ``solution_nb``."""
    text = nbformat.writes(build_lab(solution_nb, source_name))  # indent=1, sorted keys
    return text if text.endswith("\n") else text + "\n"
