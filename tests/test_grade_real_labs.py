"""The grader on the course's real labs: the solution scores 100%, the generated blank lab 0% with status ok.

A lab whose solution is not written yet is skipped with a visible reason; once it exists, it is graded
here in CI. Each lab runs twice in the quick profile (solution and blank), so this takes minutes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest

from anlp_ft.assignments.grade import grade, load_lab
from anlp_ft.assignments.markers import render_lab
from anlp_ft.assignments.sync import read_solution

ROOT = Path(__file__).resolve().parents[1]
# CI grades these two (the cheapest); `make grade-all` sets ANLP_FT_GRADE_LABS="01 02 03 04 05 06".
LABS = os.environ.get("ANLP_FT_GRADE_LABS", "05 06").split()
TIMEOUT_S = 1800  # generous: CI machines are slow and shared; the quick profile needs about 3 minutes


def _solution(number: str) -> Path:
    found = sorted((ROOT / "solutions").glob(f"{number}_*.ipynb"))
    if not found:
        pytest.skip(f"solutions/{number}_*.ipynb does not exist yet")
    return found[0]


def _perfect_submission(solution: Path) -> nbformat.NotebookNode:
    """The lab as a student who solved every exercise hands it in: the solution's code in each exercise cell."""
    spec = load_lab(solution)
    lab = nbformat.reads(render_lab(read_solution(solution), spec.source_name), as_version=4)
    answers = {c.get("id"): c.source for c in spec.solution_nb.cells
               if c.cell_type == "code" and "exercise" in c.get("metadata", {}).get("anlp_ft", {})}
    for cell in lab.cells:
        if cell.get("id") in answers:
            cell.source = answers[cell.id]
    return lab


@pytest.mark.parametrize("number", LABS)
def test_solution_scores_100_and_blank_lab_0(number: str, tmp_path: Path) -> None:
    solution = _solution(number)
    spec = load_lab(solution)
    solved, blank = tmp_path / f"{number}_solved.ipynb", tmp_path / f"{number}_blank.ipynb"
    solved.write_text(json.dumps(_perfect_submission(solution), indent=1), encoding="utf-8")
    blank.write_text(render_lab(spec.solution_nb, spec.source_name), encoding="utf-8")
    rows = {Path(r.submission).name: r for r in
            grade(solution, [solved, blank], tmp_path / "gradebook.csv", timeout=TIMEOUT_S, workers=1,
                  output_dir=tmp_path / "runs", quiet=True)}
    logs = {p.parent.name: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/grading.json")}
    for name, log in sorted(logs.items()):
        print(f"lab {number} {name.rsplit('-', 1)[0]}: {log['status']}, {log['wall_s']:.0f} s")
    good, empty = rows[solved.name], rows[blank.name]
    assert (good.percent, good.status) == (100.0, "ok"), (good, logs)
    assert (empty.percent, empty.status) == (0.0, "ok"), (empty, logs)
