"""anlp_ft.assignments.reports: feedback, Gradescope results, the Canvas import file and the lab summary."""
import csv
import io

from anlp_ft.assignments.gradebook import Row
from anlp_ft.assignments.reports import (
    canvas_csv,
    feedback_markdown,
    gradescope_results,
    public_message,
    summary_markdown,
    write_histogram,
)

EXERCISES = {"ex1": 2.0, "ex2": 1.0}
PARTS = [
    {"exercises": ["ex1"], "cell": "ex1-hidden", "title": "part 1", "passed": True, "error": ""},
    {"exercises": ["ex1"], "cell": "ex1-hidden", "title": "shapes", "passed": False,
     "error": "CheckFailed: lora_A should have shape (4, 24)"},
    {"exercises": ["ex2"], "cell": "ex2-hidden", "title": "part 1", "passed": False,
     "error": "AssertionError: expected 42 == secret_reference(7)"},
]
ROW = Row("subs/alice.ipynb", {"ex1": 1.0, "ex2": 0.0}, 1.0, 3.0, "ok")


def test_public_message_keeps_check_messages_and_hides_everything_else():
    assert public_message("CheckFailed: use alpha / r") == "use alpha / r"
    hidden = public_message("AssertionError: expected 42 == secret_reference(7)")
    assert hidden.startswith("AssertionError")
    assert "secret_reference" not in hidden
    assert public_message("") == "did not report a result"


def test_feedback_lists_points_parts_and_public_messages_only():
    text = feedback_markdown("06", ROW, EXERCISES, PARTS)
    assert "**1 / 3 points (33.3%)**" in text
    assert "| ex1 | 1 / 2 | 1 / 2 |" in text
    assert "| ex2 | 0 / 1 | 0 / 1 |" in text
    assert "ex1, shapes: lora_A should have shape (4, 24)" in text
    assert "secret_reference" not in text


def test_gradescope_results_have_one_test_per_exercise():
    results = gradescope_results(ROW, EXERCISES, PARTS)
    assert (results["score"], results["max_score"]) == (1.0, 3.0)
    assert [(t["name"], t["score"], t["max_score"]) for t in results["tests"]] == [("ex1", 1.0, 2.0),
                                                                                     ("ex2", 0.0, 1.0)]
    assert "secret_reference" not in str(results)


def test_canvas_csv_has_the_import_columns_and_reads_canvas_download_names():
    rows = [ROW, Row("dl/smithjane_late_12345_67890_lab06.ipynb", {"ex1": 2.0, "ex2": 1.0}, 3.0, 3.0, "ok")]
    table = list(csv.reader(io.StringIO(canvas_csv(rows, "Lab 06"))))
    assert table[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Lab 06"]
    assert table[1] == ["    Points Possible", "", "", "", "", "3"]
    assert table[2] == ["smithjane", "12345", "", "", "", "3"]  # Canvas's own file name: its user ID
    assert table[3] == ["alice", "", "alice", "", "", "1"]  # any other name: the stem as the SIS user ID


def test_summary_gives_per_exercise_means_and_the_histogram(tmp_path):
    rows = [ROW, Row("b.ipynb", {"ex1": 2.0, "ex2": 1.0}, 3.0, 3.0, "ok")]
    text = summary_markdown("06", rows, EXERCISES, "h.png")
    assert "| ex1 | 2 | 1.50 | 1 of 2 |" in text
    assert "| ex2 | 1 | 0.50 | 1 of 2 |" in text
    assert "![percent histogram](h.png)" in text
    write_histogram(rows, tmp_path / "h.png", "lab 06")
    write_histogram(rows, tmp_path / "h2.png", "lab 06")
    assert (tmp_path / "h.png").read_bytes() == (tmp_path / "h2.png").read_bytes()  # same rows, same file
