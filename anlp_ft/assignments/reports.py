"""What grading hands back besides the gradebook: one feedback file per submission (markdown, for the student), a
Gradescope-style `results.json`, a Canvas gradebook-import CSV, and a summary of the lab (per-exercise means and a
histogram of the percentages) for the instructor. Hidden test code never appears in any of them: a failed part
shows its title and, for a failed public check, the check's own message.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .gradebook import Row

__all__ = ["canvas_csv", "feedback_markdown", "gradescope_results", "summary_markdown", "write_histogram", "write_json"]

# Canvas's "Download submissions" names files `name_[late_]userid_submissionid_original.ipynb`.
CANVAS_NAME = re.compile(r"^(?P<name>[a-z]+)_(?:late_)?(?P<user>\d+)_(?P<submission>\d+)_")


def public_message(error: str) -> str:
    """What a student may see of a failed part: a public check's message, else only the kind of error."""
    kind, _, message = error.partition(": ")
    if kind == "CheckFailed":
        return message
    return f"{kind} (details are in the hidden tests)" if kind else "did not report a result"


def feedback_markdown(lab: str, row: Row, exercises: dict[str, float], parts: Sequence[dict[str, Any]]) -> str:
    """The student's feedback: points per exercise, each graded part passed or not, and public messages."""
    lines = [f"# Feedback: lab {lab}", "", f"Submission: `{Path(row.submission).name}`", "",
             f"**{row.total:g} / {row.max_total:g} points ({row.percent:g}%)**, status: {row.status}", "",
             "| exercise | points | parts passed |", "|---|---|---|"]
    for name, points in exercises.items():
        mine = [p for p in parts if name in p["exercises"]]
        passed = sum(p["passed"] for p in mine)
        lines.append(f"| {name} | {row.scores.get(name, 0.0):g} / {points:g} | {passed} / {len(mine)} |")
    failed = [p for p in parts if not p["passed"]]
    if failed:
        lines += ["", "## What did not pass", ""]
        lines += [f"- {'+'.join(p['exercises'])}, {p['title']}: {public_message(p['error'])}" for p in failed]
    return "\n".join(lines) + "\n"


def gradescope_results(row: Row, exercises: dict[str, float], parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Gradescope's autograder `results.json` shape: a score and one test per exercise."""
    tests = []
    for name, points in exercises.items():
        mine = [p for p in parts if name in p["exercises"]]
        output = "\n".join(f"{p['title']}: {'passed' if p['passed'] else public_message(p['error'])}" for p in mine)
        tests.append({"name": name, "score": row.scores.get(name, 0.0), "max_score": points, "output": output})
    return {"score": row.total, "max_score": row.max_total, "tests": tests, "output": f"status: {row.status}"}


def canvas_csv(rows: Sequence[Row], assignment: str) -> str:
    """Canvas's gradebook-import columns (Student, ID, SIS User ID, SIS Login ID, Section, then the assignment),
    with the "Points Possible" row. Files named as Canvas's download names them give the Canvas user ID; for other
    names the file's stem goes into SIS User ID, so name submissions by it."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(["Student", "ID", "SIS User ID", "SIS Login ID", "Section", assignment])
    writer.writerow(["    Points Possible", "", "", "", "", f"{rows[0].max_total:g}" if rows else ""])
    for row in sorted(rows, key=lambda r: r.submission):
        stem = Path(row.submission).stem
        match = CANVAS_NAME.match(stem)
        if match:
            writer.writerow([match["name"], match["user"], "", "", "", f"{row.total:g}"])
        else:
            writer.writerow([stem, "", stem, "", "", f"{row.total:g}"])
    return buffer.getvalue()


def summary_markdown(lab: str, rows: Sequence[Row], exercises: dict[str, float], histogram: str | None,
                     in_kernel: Sequence[str] = ()) -> str:
    """Per-exercise mean points and the spread of percentages, for the instructor; `in_kernel` names the
    exercises whose verdict came from the student's kernel (forgeable)."""
    lines = [f"# Lab {lab}: {len(rows)} submissions", ""]
    if in_kernel:
        names = ", ".join(in_kernel)
        lines += [f"Judged inside the student's kernel (a submission can forge these verdicts): {names}. "
                  "Every other exercise is judged by the grader on the data the kernel handed over.", ""]
    if rows:
        percents = [r.percent for r in rows]
        lines += [f"Percent: mean {statistics.fmean(percents):.1f}, median {statistics.median(percents):.1f}, "
                  f"min {min(percents):g}, max {max(percents):g}; "
                  f"{sum(r.status == 'ok' for r in rows)} with status ok.", "",
                  "| exercise | max | mean | full marks |", "|---|---|---|---|"]
        for name, points in exercises.items():
            got = [r.scores.get(name, 0.0) for r in rows]
            lines.append(f"| {name} | {points:g} | {statistics.fmean(got):.2f} | "
                         f"{sum(g >= points for g in got)} of {len(rows)} |")
    if histogram:
        lines += ["", f"![percent histogram]({histogram})"]
    return "\n".join(lines) + "\n"


def write_histogram(rows: Sequence[Row], path: Path, title: str) -> None:
    """A PNG histogram of the submissions' percentages (10-point bins)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a grading server
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist([r.percent for r in rows], bins=list(range(0, 101, 10)), color="tab:blue", edgecolor="white")
    ax.set(xlabel="percent", ylabel="submissions", title=title, xlim=(0, 100))
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: the same rows, the same bytes
    plt.close(fig)


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1, sort_keys=True) + "\n", encoding="utf-8")
