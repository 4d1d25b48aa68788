"""The grader: hidden tests, scores recorded out of students' reach, limits, tamper checks, bad submissions.

One batch grades a tiny fixture lab (three exercises, no model) against a solution, a blank lab and a
set of bad submissions; the tests then read its gradebook. Kernels take a few seconds each.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from anlp_ft.assignments.assemble import course_code, student_code
from anlp_ft.assignments.grade import GradingError, assemble, grade, load_lab, usable_cores
from anlp_ft.assignments.gradebook import read_gradebook
from anlp_ft.assignments.markers import render_lab
from tests.conftest import processes_with, worker_cores

FIXTURES = Path(__file__).parent / "fixtures" / "grading"
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}
TIMEOUT = 25  # seconds per submission; the fixture needs ~2 s once its kernel is up
MEMORY_MB = 1536

SOLUTIONS = {
    "ex1": "def add(a, b):\n    # BEGIN SOLUTION\n    return a + b\n    # END SOLUTION",
    "ex2": "def mean(xs):\n    # BEGIN SOLUTION\n    return sum(xs) / len(xs)\n    # END SOLUTION",
    "ex3": "def shout(s):\n    # BEGIN SOLUTION\n    return s.upper() + \"!\"\n    # END SOLUTION",
}
ANSWERS = {  # what a student who solved everything writes into the lab
    "ex1": "def add(a, b):\n    return a + b",
    "ex2": "def mean(xs):\n    return sum(xs) / len(xs)",
    "ex3": "def shout(s):\n    return s.upper() + \"!\"",
}


def exercise(name: str, points: int) -> dict:
    return {"anlp_ft": {"exercise": name, "points": points}}


def hidden(name: str) -> dict:
    return {"anlp_ft": {"hidden_tests_for": name}, "tags": ["hidden-tests"]}


def fixture_solution() -> nbformat.NotebookNode:
    """Lab 90: ex1 (2 points, 2 parts), ex2 (3 points, 3 parts), ex3 (1 point, 1 part)."""
    nb = new_notebook(metadata={"kernelspec": KERNELSPEC,
                                "anlp_ft": {"public_checks": str(FIXTURES / "lab90_checks.py")}})
    cells = [
        ("title", new_markdown_cell("# Lab 90: grading fixture")),
        ("setup", new_code_cell(
            "import importlib, sys\n"
            f"sys.path.insert(0, {str(FIXTURES)!r})\n"
            "from anlp_ft.assignments import MISSING, Checker, attempt\n"
            'sys.modules.setdefault("anlp_ft.assignments.public.lab90", importlib.import_module("lab90_checks"))\n'
            'check = Checker("90")')),
        ("parameters", new_code_cell("PROFILE = None\nSEED = 0\nGRADING = False", metadata={"tags": ["parameters"]})),
        ("ex1", new_code_cell(SOLUTIONS["ex1"], metadata=exercise("ex1", 2))),
        ("ex1-check", new_code_cell('check("ex1", add)')),
        ("ex1-hidden", new_code_cell(
            "from anlp_ft.assignments.public import lab90\nlab90.ex1(add)\n"
            "# PART negative and fractional numbers\nassert add(-1, 1) == 0\nassert add(0.5, 0.25) == 0.75",
            metadata=hidden("ex1"))),
        ("ex2", new_code_cell(SOLUTIONS["ex2"], metadata=exercise("ex2", 3))),
        ("ex2-check", new_code_cell('check("ex2", mean)')),
        ("use", new_code_cell('m = attempt("ex2", mean, [1, 2, 3])\nprint("mean:", m)')),
        ("ex2-hidden", new_code_cell(
            'check("ex2", mean)\n# PART\nassert m == 2\n# PART\nassert mean([4]) == 4', metadata=hidden("ex2"))),
        ("ex3", new_code_cell(SOLUTIONS["ex3"], metadata=exercise("ex3", 1))),
        ("ex3-hidden", new_code_cell('assert shout("hi") == "HI!"', metadata=hidden("ex3"))),
        ("results", new_code_cell('print("done")')),
    ]
    for cell_id, cell in cells:
        cell.id = cell_id
    nb.cells = [cell for _, cell in cells]
    return nb


def lab_notebook() -> nbformat.NotebookNode:
    return nbformat.reads(render_lab(fixture_solution(), "solutions/90_grading_fixture.ipynb"), as_version=4)


def cell(nb: nbformat.NotebookNode, cell_id: str) -> nbformat.NotebookNode:
    return next(c for c in nb.cells if c.get("id") == cell_id)


def submission(answers: dict[str, str] | None = None, edit=None) -> nbformat.NotebookNode:
    """The lab with some exercises answered; ``edit(nb)`` then mutates it like a student would."""
    nb = lab_notebook()
    for name, source in (ANSWERS if answers is None else answers).items():
        cell(nb, name).source = source
    if edit:
        edit(nb)
    return nb


def _without(cell_id: str):
    def edit(nb):
        nb.cells = [c for c in nb.cells if c.get("id") != cell_id]
    return edit


def _strip_ids(nb):  # what an editor that drops nbformat 4.5 cell ids hands in
    nb.nbformat_minor = 4
    for c in nb.cells:
        c.pop("id", None)
    nb.metadata.pop("anlp_ft", None)


FAKE_SCORE = ('print("Score: 6/6 (100%)")\n'
              'print("0" * 32 + \' {"exercise": "ex1", "parts": [{"passed": true}, {"passed": true}]}\')\n'
              "def add(a, b):\n    return a - b")
MONKEYPATCH = ("def add(a, b):\n    return a - b\n"
               "check = lambda *args, **kwargs: True\n"
               "public = sys.modules['anlp_ft.assignments.public.lab90']\n"
               "public.ex1 = lambda *args, **kwargs: None\n"
               "import anlp_ft.assignments.checks as checks\n"
               "checks.Checker.__call__ = lambda self, *args, **kwargs: True")

# Where pytest puts the fixture's solution (with pytest-xdist, under the worker's popen-gwN folder).
SOLUTION_GLOB = "/tmp/pytest-of-*/pytest-*/**/course*/solutions/90_grading_fixture.ipynb"
# Finds the solution on disk and runs its exercise cells (a student who read the grader's source could).
READ_SOLUTION = ("import glob, json\n"
                 f"found = glob.glob({SOLUTION_GLOB!r}, recursive=True)\n"
                 "cells = json.load(open(found[0]))['cells'] if found else []\n"
                 "for c in cells:\n"
                 "    if c.get('id') in ('ex1', 'ex2', 'ex3'):\n"
                 "        exec(''.join(c['source']))")
ORPHAN_MARK = "301.25"  # a sleep length no other process uses: how the test finds the orphans
ORPHANS = (ANSWERS["ex1"] + "\nimport subprocess\nfor _ in range(3):\n"
           f"    subprocess.Popen(['sleep', '{ORPHAN_MARK}'], start_new_session=True)")

BAD: dict[str, object] = {
    "solution": submission(),
    "blank": lab_notebook(),
    "no_ids": submission(edit=_strip_ids),
    "invalid_json": b'{"cells": [ this is not json',
    "empty": new_notebook(),
    "infinite_loop": submission({**ANSWERS, "ex2": "while True:\n    pass"}),
    "memory_bomb": submission({**ANSWERS, "ex2": ANSWERS["ex2"] + "\nhog = b'x' * (4 << 30)"}),
    "kernel_death": submission({**ANSWERS, "ex2": "import os\nos._exit(1)"}),
    "deleted_check": submission(edit=_without("ex1-check")),
    "edited_check": submission(edit=lambda nb: setattr(cell(nb, "ex1-check"), "source", 'print("✓ ex1 passed")')),
    "monkeypatched_check": submission({"ex1": MONKEYPATCH}),
    "fake_score": submission({"ex1": FAKE_SCORE}),
    "huge_output": submission({**ANSWERS, "ex1": ANSWERS["ex1"] + "\nfor _ in range(200):\n    print('x' * 100_000)"}),
    "missing_exercise": submission(edit=_without("ex3")),
    "exception": submission({**ANSWERS, "ex2": ANSWERS["ex2"] + "\nraise ValueError('oops')"}),
    "reads_solution": submission({"ex1": READ_SOLUTION}),
    "orphans": submission({**ANSWERS, "ex1": ORPHANS}),
    "other_lab": submission(
        edit=lambda nb: nb.metadata["anlp_ft"].update(generated_from="solutions/05_memory_accounting.ipynb")),
}


def write_submissions(folder: Path, names: list[str]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        content = BAD[name]
        path = folder / f"{name}.ipynb"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(json.dumps(content, indent=1), encoding="utf-8")  # nbformat.write would validate ids
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def solution_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("course") / "solutions" / "90_grading_fixture.ipynb"
    path.parent.mkdir()
    nbformat.write(fixture_solution(), str(path))
    return path


@pytest.fixture(scope="module")
def batch(solution_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("batch")
    paths = write_submissions(root / "submitted", list(BAD))
    before = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}
    rows = grade(solution_path, paths, root / "gradebook.csv", timeout=TIMEOUT, memory_mb=MEMORY_MB, workers=2,
                 output_dir=root / "runs", quiet=True)
    book = {Path(r["submission"]).stem: r for r in read_gradebook(root / "gradebook.csv")}
    return {"rows": rows, "book": book, "root": root, "paths": paths, "before": before}


def scores(row: dict) -> tuple[float, float, float]:
    return float(row["ex1"]), float(row["ex2"]), float(row["ex3"])


def test_one_row_per_submission_with_the_gradebook_columns(batch) -> None:
    with open(batch["root"] / "gradebook.csv", encoding="utf-8", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["submission", "ex1", "ex2", "ex3", "total", "max_total", "percent", "status"]
    assert sorted(batch["book"]) == sorted(BAD)
    assert all(row["max_total"] == "6" for row in batch["book"].values())
    pandas = pytest.importorskip("pandas")
    frame = pandas.read_csv(batch["root"] / "gradebook.csv")
    assert len(frame) == len(BAD)
    assert frame["percent"].dtype.kind == "f"


def test_two_workers_kernels_share_the_cores_this_process_may_use(batch) -> None:
    logs = [json.loads(p.read_text()) for p in (batch["root"] / "runs").glob("*/grading.json")]
    threads = {log["protections"]["threads"] for log in logs if "threads" in log.get("protections", {})}
    assert threads == {max(1, usable_cores() // 2)}, threads


def test_each_test_worker_takes_its_own_share_of_the_cores() -> None:
    assert worker_cores("gw0", 2, [0, 1]) == [0] and worker_cores("gw1", 2, [0, 1]) == [1]
    assert worker_cores("gw1", 2, [0, 1, 2, 3]) == [1, 3]
    assert worker_cores("gw2", 3, [4, 5]) == [4]  # more workers than cores: one core, shared
    if os.environ.get("PYTEST_XDIST_WORKER"):  # under `make test`: this worker's affinity, threads and kernels' env
        assert torch.get_num_threads() == usable_cores() == int(os.environ["OMP_NUM_THREADS"])
        assert usable_cores() <= -(-(os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))


def test_solution_scores_full_marks_and_blank_lab_zero(batch) -> None:
    book = batch["book"]
    assert (book["solution"]["percent"], book["solution"]["status"]) == ("100", "ok")
    assert (book["blank"]["percent"], book["blank"]["status"]) == ("0", "ok")
    assert (book["no_ids"]["percent"], book["no_ids"]["status"]) == ("100", "ok")


@pytest.mark.parametrize("name, status", [("invalid_json", "invalid notebook: not JSON"),
                                          ("empty", "invalid notebook: no code cells"),
                                          ("other_lab", "invalid notebook: a notebook of solutions/05_memory")])
def test_unreadable_or_foreign_notebooks_are_invalid_and_score_zero(batch, name, status) -> None:
    row = batch["book"][name]
    assert row["status"].startswith(status)
    assert row["total"] == "0"


def test_infinite_loop_times_out_keeping_points_of_tests_that_ran(batch) -> None:
    row = batch["book"]["infinite_loop"]
    assert row["status"] == "timeout"
    assert scores(row) == (2, 0, 0)


def test_memory_bomb_is_stopped_by_the_memory_cap(batch) -> None:
    row = batch["book"]["memory_bomb"]
    assert row["status"] == "memory"
    assert scores(row) == (2, 3, 1)  # the cap raised MemoryError; the rest of the notebook still ran


def test_kernel_death_is_an_error_and_later_exercises_score_zero(batch) -> None:
    row = batch["book"]["kernel_death"]
    assert row["status"] == "error: the kernel died"
    assert scores(row) == (2, 0, 0)


@pytest.mark.parametrize("name, status", [("deleted_check", "tampered: ex1-check (deleted)"),
                                          ("edited_check", "tampered: ex1-check (edited)")])
def test_tampered_protected_cells_are_named_and_the_original_runs(batch, name, status) -> None:
    row = batch["book"][name]
    assert row["status"] == status
    assert row["percent"] == "100"  # the answers are right; the original check ran


def test_monkeypatched_check_earns_nothing_and_is_flagged(batch) -> None:
    row = batch["book"]["monkeypatched_check"]
    assert scores(row) == (0, 0, 0)
    assert row["status"].startswith("suspicious: patches ")  # evidence for a human, points unchanged
    assert "(ex1)" in row["status"]


def test_printed_fake_score_earns_nothing(batch) -> None:
    row = batch["book"]["fake_score"]
    assert scores(row) == (0, 0, 0)
    assert row["status"] == "ok"


def test_huge_output_is_capped_and_graded(batch) -> None:
    row = batch["book"]["huge_output"]
    assert (row["percent"], row["status"]) == ("100", "ok")
    executed = next((batch["root"] / "runs").glob("huge_output-*/executed.ipynb"))
    assert executed.stat().st_size < 4 << 20  # 20 MB printed, about 1 MB kept


def test_missing_exercise_scores_zero_for_it_only(batch) -> None:
    row = batch["book"]["missing_exercise"]
    assert scores(row) == (2, 3, 0)
    assert row["status"] == "ok"


def test_exception_inside_an_exercise_is_reported_and_grading_goes_on(batch) -> None:
    row = batch["book"]["exception"]
    assert row["status"] == "error: ValueError in cell ex2"
    assert scores(row) == (2, 3, 1)


def test_submission_files_are_never_modified_and_runs_are_kept(batch) -> None:
    after = {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in batch["paths"]}
    assert after == batch["before"]
    run = next((batch["root"] / "runs").glob("solution-*"))
    assert (run / "executed.ipynb").is_file()
    assert (run / "grading.json").is_file()
    executed = nbformat.read(str(run / "executed.ipynb"), as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


def test_cells_after_the_last_graded_one_are_not_run_and_are_named(batch) -> None:
    run = next((batch["root"] / "runs").glob("solution-*"))
    executed = nbformat.read(str(run / "executed.ipynb"), as_version=4)
    ids = [c.get("id") for c in executed.cells]
    assert "results" not in ids  # the fixture's last cell, after the last hidden test
    assert ids[-1] == "grader-skipped"
    assert "results" in executed.cells[-1].source


def test_grading_is_deterministic_and_never_overwrites_a_gradebook(solution_path, batch) -> None:
    # Grade some of the batch's own files again: their gradebook lines must be byte for byte the same.
    names = ["solution", "monkeypatched_check", "missing_exercise", "invalid_json"]
    paths = [p for p in batch["paths"] if Path(p).stem in names]
    again = batch["root"] / "again.csv"
    grade(solution_path, paths, again, timeout=TIMEOUT, memory_mb=MEMORY_MB, workers=2,
          output_dir=batch["root"] / "runs-again", quiet=True)
    first = (batch["root"] / "gradebook.csv").read_text(encoding="utf-8").splitlines()
    second = again.read_text(encoding="utf-8").splitlines()
    assert second[0] == first[0]
    assert set(second[1:]) <= set(first[1:])
    assert len(second) == len(names) + 1
    with pytest.raises(FileExistsError, match="never overwrites"):
        grade(solution_path, paths, again, quiet=True)
    assert again.read_text(encoding="utf-8").splitlines() == second


def test_hidden_tests_never_reach_the_lab_and_nonce_only_in_injected_cells(solution_path) -> None:
    spec = load_lab(solution_path)
    assert spec.exercises == {"ex1": 2.0, "ex2": 3.0, "ex3": 1.0}
    assert {cid: len(h.parts) for cid, h in spec.hidden.items()} == {"ex1-hidden": 2, "ex2-hidden": 3, "ex3-hidden": 1}
    assert "lab90.ex1(add)" not in json.dumps(spec.lab)
    data = json.dumps(submission()).encode()
    graded = assemble(spec, data, nonce="feedface" * 4).notebook
    holders = [c.id for c in graded.cells if "feedface" in c.source]
    assert holders == ["ex1-hidden-graded", "ex2-hidden-graded", "ex3-hidden-graded"]


def _write_solution(nb: nbformat.NotebookNode, folder: Path, name: str = "90_grading_fixture.ipynb") -> Path:
    path = folder / "solutions" / name
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def test_a_lab_without_any_test_for_an_exercise_is_refused(tmp_path) -> None:
    nb = fixture_solution()
    nb.cells = [c for c in nb.cells if c.id != "ex3-hidden"]  # and ex3 has no check(...) call either
    with pytest.raises(GradingError, match="no hidden-tests cell and no check.* for ex3"):
        load_lab(_write_solution(nb, tmp_path))


def _judged_ex3(judge: str) -> nbformat.NotebookNode:
    nb = fixture_solution()
    cell(nb, "ex3-hidden").source = ('import random\n'
                                     'words = [random.Random(GRADER_SEED + i).choice(["a", "bc"]) for i in range(3)]\n'
                                     f'emit("shouted", [shout(w) for w in words])\n# JUDGE\n{judge}')
    return nb


def test_a_judged_exercise_is_scored_in_the_grader_against_a_reference_run(tmp_path) -> None:
    path = _write_solution(_judged_ex3('same(submitted["shouted"], ref["shouted"])'), tmp_path)
    wrong = submission({**ANSWERS, "ex3": "def shout(s):\n    return s.upper()"})
    patch_json = new_code_cell(  # every part reported as passed: under in-kernel judging, full marks
        "import json\n_d = json.dumps\njson.dumps = lambda o, *a, **k: _d({**o, 'parts': [{'passed': True}] * "
        "len(o['parts'])} if isinstance(o, dict) and 'parts' in o else o, *a, **k)")
    forged = submission({**ANSWERS, "ex3": "def shout(s):\n    return s"},
                        edit=lambda nb: nb.cells.insert(3, patch_json))
    paths = []
    for name, nb in {"right": submission(), "wrong": wrong, "forged": forged}.items():
        paths.append(tmp_path / f"{name}.ipynb")
        paths[-1].write_text(json.dumps(nb), encoding="utf-8")
    rows = {Path(r.submission).stem: r for r in grade(path, paths, tmp_path / "book.csv", timeout=TIMEOUT,
                                                      memory_mb=MEMORY_MB, output_dir=tmp_path / "runs", quiet=True)}
    assert rows["right"].scores["ex3"] == 1.0
    assert rows["wrong"].scores["ex3"] == 0.0
    assert rows["forged"].scores["ex3"] == 0.0
    assert (tmp_path / "runs" / "_reference" / "executed.ipynb").is_file()
    summary = (tmp_path / "book-summary.md").read_text()
    assert "Judged inside the student's kernel (a submission can forge these verdicts): ex1, ex2." in summary


def test_a_judge_that_rejects_the_solution_stops_the_batch(tmp_path) -> None:
    path = _write_solution(_judged_ex3('assert submitted["shouted"] == ["nothing"]'), tmp_path)
    solved = tmp_path / "solved.ipynb"
    solved.write_text(json.dumps(submission()), encoding="utf-8")
    with pytest.raises(GradingError, match="the solution fails its own hidden tests"):
        grade(path, [solved], tmp_path / "book.csv", timeout=TIMEOUT, memory_mb=MEMORY_MB,
              output_dir=tmp_path / "runs", quiet=True)
    assert not (tmp_path / "book.csv").exists()


def test_exercise_without_hidden_tests_is_graded_by_its_public_check_calls(tmp_path) -> None:
    nb = fixture_solution()
    nb.cells = [c for c in nb.cells if c.id != "ex1-hidden"]
    spec = load_lab(_write_solution(nb, tmp_path))
    fallback = spec.hidden["ex1-check-ex1-checks"]
    assert (fallback.exercises, fallback.parts, fallback.after) == (("ex1",), ['check("ex1", add)'], "ex1-check")
    graded = assemble(spec, json.dumps(submission()).encode(), nonce="0" * 32).notebook
    ids = [c.id for c in graded.cells]
    assert ids[ids.index("ex1-check") + 1] == "ex1-check-ex1-checks-graded"


def test_demo_cells_are_not_run_but_a_students_added_cell_after_one_is(tmp_path) -> None:
    nb = fixture_solution()
    cell(nb, "use").metadata["tags"] = ["demo"]
    spec = load_lab(_write_solution(nb, tmp_path))
    assert spec.demos == {"use"}
    added = new_code_cell("print('mine')")
    data = json.dumps(submission(edit=lambda lab: lab.cells.insert(
        lab.cells.index(cell(lab, "use")) + 1, added))).encode()
    graded = assemble(spec, data, nonce="0" * 32).notebook
    ids = [c.id for c in graded.cells]
    assert "use" not in ids and "ex2-hidden-graded" in ids
    assert any(i.startswith("added-") for i in ids[ids.index("ex2-check"):ids.index("ex2-hidden-graded")])
    assert ids[-1] == "grader-skipped" and "use, results" in graded.cells[-1].source
    # What the suspicious scan reads: the student's cells, and the course's (whose imports the student may use).
    assert [label.split("-")[0] for label, _ in student_code(graded)] == ["ex1", "ex2", "added", "ex3"]
    course = course_code(graded)
    assert any("from anlp_ft.assignments import MISSING" in src for src in course)
    assert not any("print('mine')" in src or "nonce" in src for src in course)


@pytest.mark.parametrize("cell_id", ["ex1", "ex1-hidden"])
def test_an_exercise_or_hidden_test_tagged_demo_is_refused(tmp_path, cell_id) -> None:
    nb = fixture_solution()
    cell(nb, cell_id).metadata.setdefault("tags", []).append("demo")
    with pytest.raises(GradingError, match="tagged 'demo' but are not demonstrations"):
        load_lab(_write_solution(nb, tmp_path))


def test_hidden_cell_without_metadata_grades_the_exercises_named_in_its_id(tmp_path) -> None:
    nb = fixture_solution()
    for c in nb.cells:
        if c.id == "ex3-hidden":
            c.id, c.metadata = "lab-ex23-hidden", {"tags": ["hidden-tests"]}
    spec = load_lab(_write_solution(nb, tmp_path))
    assert spec.hidden["lab-ex23-hidden"].exercises == ("ex2", "ex3")


def test_feedback_and_gradescope_results_per_submission_show_no_hidden_code(batch) -> None:
    run = next((batch["root"] / "runs").glob("missing_exercise-*"))
    feedback = (run / "feedback.md").read_text(encoding="utf-8")
    assert "**5 / 6 points (83.3%)**" in feedback
    assert "| ex3 | 0 / 1 | 0 / 1 |" in feedback
    assert 'shout("hi")' not in feedback  # the hidden test's code never reaches the student
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    assert (results["score"], results["max_score"]) == (5.0, 6.0)
    assert [(t["name"], t["score"], t["max_score"]) for t in results["tests"]] == [
        ("ex1", 2.0, 2.0), ("ex2", 3.0, 3.0), ("ex3", 0.0, 1.0)]


def test_a_failed_public_check_shows_its_message_in_the_feedback(batch) -> None:
    run = next((batch["root"] / "runs").glob("monkeypatched_check-*"))
    feedback = (run / "feedback.md").read_text(encoding="utf-8")
    assert "## What did not pass" in feedback
    assert "negative and fractional numbers" in feedback  # the part's title, not its code


def test_summary_and_histogram_beside_the_gradebook(batch) -> None:
    summary = (batch["root"] / "gradebook-summary.md").read_text(encoding="utf-8")
    assert f"{len(BAD)} submissions" in summary
    assert "| ex1 | 2 |" in summary
    assert (batch["root"] / "gradebook-histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


SMALL = ["blank", "invalid_json", "solution"]  # two kernels and one invalid file: a batch in seconds


@pytest.fixture(scope="module")
def uninterrupted(solution_path, tmp_path_factory) -> tuple[list[str], bytes]:
    """The small batch's submissions (the gradebook names them by path, so the others grade the same files) and
    the gradebook one uninterrupted run writes."""
    root = tmp_path_factory.mktemp("uninterrupted")
    paths = write_submissions(root / "submitted", SMALL)
    grade(solution_path, paths, root / "book.csv", timeout=TIMEOUT, memory_mb=MEMORY_MB, quiet=True)
    return paths, (root / "book.csv").read_bytes()


def test_two_shards_merged_equal_one_run_byte_for_byte(solution_path, uninterrupted, tmp_path, capsys) -> None:
    from anlp_ft.cli import main

    paths, expected = uninterrupted
    for k in (1, 2):
        grade(solution_path, paths, tmp_path / f"part{k}.csv", timeout=TIMEOUT, memory_mb=MEMORY_MB, quiet=True,
              shard=f"{k}/2", output_dir=tmp_path / "runs")
    sizes = [len((tmp_path / f"part{k}.csv").read_text().splitlines()) - 1 for k in (1, 2)]
    assert sizes == [2, 1]
    assert main(["grade-merge", str(tmp_path / "part1.csv"), str(tmp_path / "part2.csv"),
                 "--out", str(tmp_path / "all.csv")]) == 0
    assert (tmp_path / "all.csv").read_bytes() == expected
    assert main(["grade-merge", str(tmp_path / "part1.csv"), str(tmp_path / "part1.csv"),
                 "--out", str(tmp_path / "twice.csv")]) == 2
    assert "graded in two of the gradebooks" in capsys.readouterr().err


def test_bad_shard_is_a_clear_error(solution_path, tmp_path) -> None:
    with pytest.raises(GradingError, match="K/N"):
        grade(solution_path, [], tmp_path / "x.csv", shard="3/2", quiet=True)


def test_a_batch_killed_half_way_and_run_again_equals_one_run(solution_path, uninterrupted, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    paths, expected = uninterrupted
    out, runs = tmp_path / "book.csv", tmp_path / "runs"
    command = [sys.executable, "-m", "anlp_ft.cli", "grade", str(solution_path), *paths, "--out", str(out),
               "--timeout", str(TIMEOUT), "--memory-mb", str(MEMORY_MB), "--output-dir", str(runs)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list(runs.glob("blank-*/grading.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)  # as a CI timeout or a closed terminal would
    proc.wait(timeout=60)
    assert not out.exists(), "the interrupted run must not leave a gradebook"
    done_before = {p.parent.name.split("-")[0] for p in runs.glob("*/grading.json")}
    assert "blank" in done_before
    assert "solution" not in done_before
    blank_record = next(runs.glob("blank-*/grading.json"))
    stamp = blank_record.stat().st_mtime_ns
    rows = grade(solution_path, paths, out, timeout=TIMEOUT, memory_mb=MEMORY_MB, output_dir=runs, quiet=True)
    assert len(rows) == len(SMALL)
    assert blank_record.stat().st_mtime_ns == stamp, "a submission graded before the kill was graded again"
    assert out.read_bytes() == expected


def test_the_solution_on_disk_is_out_of_the_kernels_reach(batch, solution_path) -> None:
    import glob

    assert str(solution_path) in glob.glob(SOLUTION_GLOB, recursive=True), "the cheat must find the solution"
    row = batch["book"]["reads_solution"]
    assert scores(row) == (0, 0, 0)
    assert "suspicious" in row["status"]


def test_processes_a_submission_starts_end_with_its_grading(batch) -> None:
    assert processes_with(ORPHAN_MARK) == []
    row = batch["book"]["orphans"]
    assert row["percent"] == "100"
    assert row["status"].startswith("suspicious: starts processes")


def test_each_run_reports_its_protections(batch) -> None:
    record = json.loads(next((batch["root"] / "runs").glob("solution-*/grading.json")).read_text())
    shield = record["protections"]
    assert shield["network"] == "off"
    assert shield["processes"] == "pid namespace"
    assert shield["masked"].startswith("applied")
